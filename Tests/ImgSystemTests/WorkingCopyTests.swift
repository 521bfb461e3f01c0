import Glibc
@testable import ImgSystem
import Testing
import TestSupport

/// The working copy that offline writes go to: a sparse, unnamed copy until it replaces the image
/// in one rename.
struct WorkingCopyTests {
    /// A 256 MiB sparse image with 3 MiB of data in two places, mode 0640.
    func makeImage(_ scratch: Scratch) throws -> String {
        let image = scratch.file("a disk.img")
        try run(["truncate", "-s", "256M", image])
        try run(["dd", "status=none", "conv=notrunc", "if=/dev/urandom", "of=\(image)", "bs=1M", "count=2", "seek=1"])
        try run(["dd", "status=none", "conv=notrunc", "if=/dev/urandom", "of=\(image)", "bs=1M", "count=1", "seek=200"])
        #expect(chmod(image, 0o640) == 0)
        return image
    }

    func allocatedBytes(_ fd: Int32) throws -> Int {
        Int(try fileStatus(fd: fd, path: "copy").st_blocks) * 512
    }

    @Test("the copy has the image's bytes, holes and mode; nothing is named until commit, which replaces the image")
    func copyAndCommit() throws {
        let scratch = try Scratch()
        let image = try makeImage(scratch)
        let before = try sha256(image)
        let oldInode = try fileStatus(image).st_ino
        let copy = try WorkingCopy(of: image)
        #expect(try sha256(copy.path) == before)
        #expect(copy.cloned || copy.copiedBytes == 3 << 20)
        #expect(try allocatedBytes(copy.file.fd) <= 4 << 20, "holes stay holes")
        #expect(try fileStatus(fd: copy.file.fd, path: "copy").st_mode & 0o7777 == 0o640)
        #expect(try listDirectory(scratch.path) == ["a disk.img"])

        try writeFully(copy.file.fd, Array("changed".utf8), at: 512, path: copy.path)
        #expect(try sha256(image) == before, "the image is untouched until commit")
        try copy.commit(tag: "0a1b2c3d")
        #expect(try listDirectory(scratch.path) == ["a disk.img"])
        let after = try fileStatus(image)
        #expect(after.st_ino != oldInode && after.st_mode & 0o7777 == 0o640)
        #expect(try readFileBytes(image, limit: 519).suffix(7) == Array("changed".utf8))
    }

    @Test("a copy dropped without commit leaves the image and its directory as they were")
    func dropped() throws {
        let scratch = try Scratch()
        let image = try makeImage(scratch)
        let before = try sha256(image)
        do {
            let copy = try WorkingCopy(of: image)
            try writeFully(copy.file.fd, [1, 2, 3], at: 0, path: copy.path)
        }
        #expect(try sha256(image) == before && (try listDirectory(scratch.path)) == ["a disk.img"])
    }

    @Test("a name a killed commit left beside the image is removed; other names are not")
    func leftovers() throws {
        let scratch = try Scratch()
        let image = try makeImage(scratch)
        for name in [".a disk.img.imgtool-0a1b2c3d", ".a disk.img.imgtool-later", ".other.img.imgtool-0a1b2c3d"] {
            try writeFile(scratch.file(name), [1])
        }
        #expect(WorkingCopy.removeLeftovers(of: image) == [scratch.file(".a disk.img.imgtool-0a1b2c3d")])
        #expect(try listDirectory(scratch.path).sorted() == [".a disk.img.imgtool-later", ".other.img.imgtool-0a1b2c3d", "a disk.img"])
    }

    @Test("a directory or a device is not replaced")
    func notARegularFile() throws {
        #expect(throws: SystemError.self) { try WorkingCopy(of: "/dev/null") }
        let scratch = try Scratch()
        #expect(throws: SystemError.self) { try WorkingCopy(of: scratch.path) }
    }
}
