import Glibc
@testable import ImgSystem
import Testing
import TestSupport

/// The staged copy of a region and the undo file that makes writing its changes undoable: what is
/// compared, what is saved, and what recovery puts back, on ordinary files (no root needed).
struct UndoFileTests {
    /// A 1 MiB image whose region [64 KiB, 64 KiB + 256 KiB) holds a pattern in its first 40 KiB
    /// and holes after.
    func makeImage(_ scratch: Scratch) throws -> (path: String, offset: UInt64, length: UInt64) {
        let path = scratch.file("image with space.img")
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        defer { close(fd) }
        #expect(ftruncate(fd, 1 << 20) == 0)
        let pattern = (0..<40 * 1024).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        try writeFully(fd, pattern, at: 64 * 1024, path: path)
        return (path, 64 * 1024, 256 * 1024)
    }

    func bytes(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
        let h = try FileHandle(path: path, flags: O_RDONLY)
        var b = [UInt8](repeating: 0, count: count)
        let n = try readFully(h.fd, into: &b, count: count, at: offset, path: path)
        return Array(b.prefix(n))
    }

    @Test("the staged copy reads as the region; changes are the blocks written, old and new, holes included")
    func stagedChanges() throws {
        let scratch = try Scratch()
        let (image, offset, length) = try makeImage(scratch)
        let region = try StagedRegion(image: image, offset: offset, length: length)
        #expect(try bytes(region.path, at: 0, count: Int(length)) == (try bytes(image, at: offset, count: Int(length))))
        #expect(try StagedRegion(image: image, offset: offset, length: length).changes(against: FileHandle(path: image, flags: O_RDONLY), base: offset).isEmpty)

        // One byte in the data, a block in the holes, through the path a child process would use.
        let h = try FileHandle(path: region.path, flags: O_RDWR)
        try writeFully(h.fd, [0xAA], at: 5000, path: region.path)
        try writeFully(h.fd, [UInt8](repeating: 0x55, count: 100), at: 200 * 1024 + 10, path: region.path)
        let changes = try region.changes(against: FileHandle(path: image, flags: O_RDONLY), base: offset)
        #expect(changes.map(\.offset) == [4096, 200 * 1024])
        #expect(changes[0].old == (try bytes(image, at: offset + 4096, count: 4096)) && changes[0].new[5000 - 4096] == 0xAA)
        #expect(changes[1].old == [UInt8](repeating: 0, count: 4096))
    }

    @Test("recover puts the saved blocks back into the image and removes the file; a file without trailer touches nothing")
    func recoverRestores() throws {
        let scratch = try Scratch()
        let (image, offset, _) = try makeImage(scratch)
        let before = try sha256(image)
        let old = try bytes(image, at: offset + 8192, count: 4096)
        let undoPath = scratch.file("x.undo")
        let undo = try UndoFile.create(at: undoPath, image: image, imageOffset: offset, blocks: [.init(offset: 8192, bytes: old)])
        #expect(try UndoFile.read(undoPath)?.blocks == undo.blocks)
        // The write that was stopped halfway.
        let h = try FileHandle(path: image, flags: O_WRONLY)
        try writeFully(h.fd, [UInt8](repeating: 0xEE, count: 4096), at: offset + 8192, path: image)
        #expect(try sha256(image) != before)
        #expect(try UndoFile.recover(undoPath) == 1)
        #expect(try sha256(image) == before && access(undoPath, F_OK) != 0)

        // Killed before the trailer: the image was never written, and only the file goes.
        let tornPath = scratch.file("torn.undo")
        try UndoFile.create(at: tornPath, image: image, imageOffset: offset, blocks: [.init(offset: 0, bytes: [1, 2, 3])])
        try writeFile(tornPath, Array(try readFile(tornPath).dropLast(1)))
        #expect(try UndoFile.read(tornPath) == nil)
        #expect(try UndoFile.recover(tornPath) == 0)
        #expect(try sha256(image) == before && access(tornPath, F_OK) != 0)
    }

    @Test("an image replaced since the write began is not written; the undo file stays and the error says where")
    func replacedImage() throws {
        let scratch = try Scratch()
        let (image, offset, _) = try makeImage(scratch)
        let undoPath = scratch.file("z.undo")
        try UndoFile.create(at: undoPath, image: image, imageOffset: offset, blocks: [.init(offset: 0, bytes: [9])])
        try run(["cp", image, image + ".new"])
        try run(["mv", image + ".new", image])
        let before = try sha256(image)
        #expect {
            try UndoFile.recover(undoPath)
        } throws: { error in
            "\(error)".contains("no longer the image") && "\(error)".contains(undoPath)
        }
        #expect(try sha256(image) == before && access(undoPath, F_OK) == 0)
        #expect(throws: UndoFile.RecoveryError.self) { try UndoFile.read(scratch.file("image with space.img")) }
    }
}
