import Glibc
import ImgFormats

/// The previous contents of the blocks a write into an image is about to change, saved (and
/// fsynced) before the first of them is written, so that a write stopped anywhere can be undone:
/// by its own run when it fails, by `recover` after the run was killed. A FAT filesystem has no
/// journal, and no order of writes keeps it consistent at every instant; this makes the change
/// whole or absent once recovery has run.
///
/// Format: one text line `imgtool-undo 1 <image> <st_dev> <st_ino> <offset>` (the image's path
/// percent-escaped as in `SessionJournal`, absolute), then per block its offset in the region (8
/// bytes, little-endian), its length (4 bytes) and its old bytes, then a 24-byte trailer: the
/// block count (8 bytes) and `IMGTOOL-UNDO-END`. The trailer is written after the blocks are
/// durable, and nothing is written into the image before it is: a file without one is a run
/// killed before the image was touched.
public struct UndoFile: Sendable {
    /// One block's old contents, at `offset` from the region's start.
    public struct Block: Sendable, Equatable {
        /// Where the block starts, in bytes from the region's start.
        public let offset: UInt64
        /// What the block held before the write.
        public let bytes: [UInt8]
        /// Makes a block record.
        public init(offset: UInt64, bytes: [UInt8]) {
            self.offset = offset
            self.bytes = bytes
        }
    }

    /// Why a recovery could not put the old blocks back; the undo file stays.
    public struct RecoveryError: Error, CustomStringConvertible, Sendable {
        /// What went wrong and what to do.
        public let description: String
    }

    /// Where the file is.
    public let path: String
    /// The image's absolute path, and its identity when the write began.
    public let image: String
    /// The image's st_dev and st_ino: a file renamed over it since is not the image written to.
    public let device: UInt64, inode: UInt64
    /// Where the region starts in the image, in bytes.
    public let imageOffset: UInt64
    /// The old contents.
    public let blocks: [Block]

    static let header = "imgtool-undo 1"
    static let trailerMagic = Array("IMGTOOL-UNDO-END".utf8)

    /// Saves `blocks` of the region at `imageOffset` in `image` into a new file at `path`: the
    /// blocks, fsync, the trailer, fsync. Wraps open(2), write(2), fsync(2) and realpath(3).
    @discardableResult
    public static func create(at path: String, image: String, imageOffset: UInt64,
                              blocks: [Block]) throws(SystemError) -> UndoFile {
        let absolute = try realPath(image)
        let st = try fileStatus(absolute)
        let undo = UndoFile(path: path, image: absolute, device: UInt64(st.st_dev), inode: UInt64(st.st_ino),
                            imageOffset: imageOffset, blocks: blocks)
        var body = Array("\(header) \(SessionJournal.escape(absolute)) \(undo.device) \(undo.inode) \(imageOffset)\n".utf8)
        for block in blocks {
            body += littleEndian(block.offset) + littleEndian(UInt32(block.bytes.count)) + block.bytes
        }
        let file = try FileHandle(path: path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        try writeFully(file.fd, body, path: path)
        try systemCall("fsync", on: path) { fsync(file.fd) }
        try writeFully(file.fd, littleEndian(UInt64(blocks.count)) + trailerMagic, path: path)
        try systemCall("fsync", on: path) { fsync(file.fd) }
        return undo
    }

    /// The undo file at `path`; nil when it has no trailer (its run never wrote into the image).
    /// Throws when it cannot be read or is not an undo file. Wraps open(2) and read(2).
    public static func read(_ path: String) throws(RecoveryError) -> UndoFile? {
        let bytes: [UInt8]
        do { bytes = try readFile(path) } catch { throw RecoveryError(description: error.description) }
        func bad(_ why: String) -> RecoveryError { RecoveryError(description: "\(path) is not an imgtool undo file: \(why)") }
        guard let newline = bytes.firstIndex(of: 0x0A) else {
            if bytes.isEmpty || Array(header.utf8).starts(with: bytes) { return nil }  // killed while writing the header
            throw bad("no header line")
        }
        let fields = String(decoding: bytes[..<newline], as: UTF8.self).split(separator: " ").map(String.init)
        guard fields.count == 6, "\(fields[0]) \(fields[1])" == header,
              let device = UInt64(fields[3]), let inode = UInt64(fields[4]), let offset = UInt64(fields[5]) else {
            throw bad("the header line is not `\(header) <image> <dev> <ino> <offset>`")
        }
        let body = Array(bytes[(newline + 1)...])
        guard body.count >= 24, Array(body.suffix(16)) == trailerMagic else { return nil }
        let count = body.le64(body.count - 24)
        var blocks: [Block] = [], position = 0
        while position < body.count - 24 {
            guard position + 12 <= body.count - 24 else { throw bad("a block record is cut short") }
            let at = body.le64(position), length = Int(body.le32(position + 8))
            guard position + 12 + length <= body.count - 24 else { throw bad("a block record is cut short") }
            blocks.append(Block(offset: at, bytes: Array(body[(position + 12)..<(position + 12 + length)])))
            position += 12 + length
        }
        guard UInt64(blocks.count) == count else { throw bad("the trailer counts \(count) blocks, the file holds \(blocks.count)") }
        return UndoFile(path: path, image: SessionJournal.unescape(fields[2]), device: device, inode: inode,
                        imageOffset: offset, blocks: blocks)
    }

    /// Writes the old blocks back through `fd`, where the region starts at `base`, and fsyncs;
    /// `name` names the target in errors. Wraps pwrite(2) and fsync(2).
    public func restore(fd: Int32, base: UInt64, name: String) throws(SystemError) {
        for block in blocks { try writeFully(fd, block.bytes, at: base + block.offset, path: name) }
        try systemCall("fsync", on: name) { fsync(fd) }
    }

    /// Removes the file; one already gone is fine. Wraps unlink(2).
    public static func remove(_ path: String) throws(SystemError) {
        do { try systemCall("unlink", on: path) { unlink(path) } } catch where error.errno == ENOENT {}
    }

    /// After a run was killed: puts the old blocks back into the image (when the file is complete,
    /// the image is the same file, and no other process holds its `ImageLock`), then removes the
    /// file. Returns how many blocks were restored (0 for a file without trailer). Loop devices
    /// over the image must be gone first: a write through one that the dead run left in the page
    /// cache is flushed when its last descriptor closes, which has happened once it is detached.
    @discardableResult
    public static func recover(_ path: String) throws(RecoveryError) -> Int {
        guard let undo = try read(path) else {
            do { try remove(path) } catch { throw RecoveryError(description: error.description) }
            return 0
        }
        let keep = "; the old blocks stay in \(path)"
        guard let st = try? fileStatus(undo.image), UInt64(st.st_dev) == undo.device, UInt64(st.st_ino) == undo.inode else {
            throw RecoveryError(description: "\(undo.image) is no longer the image that was being written (moved, replaced or removed)" + keep)
        }
        // Ours when this process holds it (install-grub recovering before its own run).
        let lock: ImageLock?
        do { lock = try ImageLock(path: undo.image) } catch {
            guard case .held(_, let pid) = error, pid == getpid() else { throw RecoveryError(description: error.description + keep) }
            lock = nil
        }
        defer { withExtendedLifetime(lock) {} }
        do {
            let file = try FileHandle(path: undo.image, flags: O_WRONLY)
            try undo.restore(fd: file.fd, base: undo.imageOffset, name: undo.image)
            try remove(path)
        } catch {
            throw RecoveryError(description: error.description + keep)
        }
        return undo.blocks.count
    }
}

/// `value`'s bytes, least significant first.
func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}
