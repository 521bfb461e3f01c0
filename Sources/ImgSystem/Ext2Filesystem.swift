import CExt2fs
import CExt2fsFdIO
import Glibc
import ImgFormats
import Synchronization

/// An ext2/3/4 filesystem inside an image, opened read-only through libext2fs: no mount, no root,
/// no writes.
///
/// Paths are resolved inside the filesystem only: symbolic links are followed with the
/// filesystem's own root as "/", so a link to /etc/passwd in the image never reaches the host's.
/// The image may be hostile: sizes read from it never size an allocation, symbolic links have a
/// hop limit and directories an entry limit.
public final class Ext2Filesystem: @unchecked Sendable {
    private var handle: ext2_filsys?
    private let fs: ext2_filsys
    /// libext2fs keeps caches (inodes, blocks) in the handle; calls must not overlap.
    private let lock = Mutex(())

    /// Symbolic links followed while resolving one path before giving up, as Linux does (ELOOP).
    public static let maxSymlinkHops = 40
    /// The default bound on the entries `list` returns.
    public static let defaultEntryLimit = 1_000_000
    /// The longest symbolic link target read (PATH_MAX); Linux itself stores at most a block.
    public static let maxLinkTargetBytes = 4096
    /// The unit of streaming reads.
    public static let chunkBytes = 64 * 1024

    /// What libext2fs reads through (see CExt2fsFdIO): the image's descriptor, or a byte source
    /// behind a callback. Released after ext2fs_close_free, when the stored properties go.
    private let reader: Reader

    private enum Reader {
        case file(FileHandle)
        case byteSource(FileByteSource)
        case callback(CallbackSource)
    }

    /// Opens the filesystem at byte `offset` of `image`, read-only. Wraps ext2fs_open2(3) with an
    /// I/O manager that reads through this descriptor and can neither write nor fsync.
    public convenience init(image: String, offset: UInt64) throws(SystemError) {
        let file = try FileHandle(path: image, flags: O_RDONLY)
        try self.init(channel: "fd:\(file.fd):\(offset)", manager: imgtool_fd_io_manager(), reader: .file(file),
                      name: image, offset: offset)
    }

    /// Opens the filesystem at byte `offset` of `source`, read-only: a raw image through its
    /// descriptor, anything else (a container's virtual disk) through a callback into its reads.
    /// `name` is what errors call the image. Wraps ext2fs_open2(3).
    public convenience init(source: any ByteSource, offset: UInt64, name: String) throws(SystemError) {
        if let file = source as? FileByteSource {
            try self.init(channel: "fd:\(file.fd):\(offset)", manager: imgtool_fd_io_manager(), reader: .byteSource(file),
                          name: name, offset: offset)
        } else {
            let callback = CallbackSource(source)
            let address = String(UInt(bitPattern: callback.cSource), radix: 16)
            try self.init(channel: "src:\(address):\(offset)", manager: imgtool_source_io_manager(), reader: .callback(callback),
                          name: name, offset: offset)
        }
    }

    private init(channel: String, manager: io_manager?, reader: Reader, name: String, offset: UInt64) throws(SystemError) {
        self.reader = reader
        let err = ext2fs_open2(channel, nil, 0, 0, 0, manager, &handle)
        guard err == 0, let fs = handle else {
            throw SystemError("ext2fs_open2 at offset \(offset) (\(Self.message(err)))", on: name, errno: EIO)
        }
        self.fs = fs
    }

    /// A byte source as the C struct the "src:" channel calls; owns the struct.
    private final class CallbackSource {
        let source: any ByteSource
        let cSource: UnsafeMutablePointer<imgtool_read_source>

        init(_ source: any ByteSource) {
            self.source = source
            cSource = .allocate(capacity: 1)
            cSource.initialize(to: imgtool_read_source(context: nil, read: { context, offset, buffer, count in
                guard let context, let buffer, count <= UInt64(Int.max) else { return EINVAL }
                let box = Unmanaged<CallbackSource>.fromOpaque(context).takeUnretainedValue()
                guard let bytes = try? box.source.read(at: offset, count: Int(count)) else { return EIO }
                bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                return 0
            }, size: source.size))
            cSource.pointee.context = Unmanaged.passUnretained(self).toOpaque()
        }

        deinit { cSource.deallocate() }
    }

    deinit {
        ext2fs_close_free(&handle)
    }

    // MARK: Queries

    /// Whether `path` (absolute, e.g. "/boot/grub") exists, without following a final symbolic
    /// link. Wraps ext2fs_namei(3).
    public func exists(_ path: String) -> Bool {
        lock.withLock { _ in
            var ino: ext2_ino_t = 0
            return ext2fs_namei(fs, ext2_ino_t(EXT2_ROOT_INO), ext2_ino_t(EXT2_ROOT_INO), path, &ino) == 0
        }
    }

    /// Free bytes according to the superblock, the root reserve included (grub-install runs as root).
    public var freeBytes: UInt64 {
        lock.withLock { _ in
            UInt64(ext2fs_free_blocks_count(fs.pointee.super)) * UInt64(fs.pointee.blocksize)
        }
    }

    /// What `path` is. Follows symbolic links, including a final one unless `followSymlinks` is
    /// false (then a link describes itself, as lstat(2) does). Wraps ext2fs_lookup(3) and
    /// ext2fs_read_inode_full(3).
    public func stat(_ path: String, followSymlinks: Bool = true) throws(Error) -> Entry {
        try lock.withLock { _ throws(Error) in
            let node = try resolve(path, followFinal: followSymlinks)
            return Entry(name: Self.lastComponent(path), ino: node.ino, inode: node.inode, fs: fs)
        }
    }

    /// The entries of the directory at `path` (symbolic links followed), without "." and "..",
    /// sorted by name (byte order). An entry whose inode cannot be read is still listed, with kind
    /// `.other` and mode 0, as ls shows "?---------" for what it cannot stat. Throws `.tooLarge`
    /// beyond `limit` entries. Wraps ext2fs_dir_iterate2(3).
    public func list(_ path: String, limit: Int = defaultEntryLimit) throws(Error) -> [Entry] {
        try lock.withLock { _ throws(Error) in
            let dir = try resolve(path, followFinal: true)
            guard dir.kind == .directory else { throw .notADirectory(path, component: path) }
            let collector = DirectoryCollector(limit: limit)
            // Flags 0: DIRENT_FLAG_INCLUDE_INLINE_DATA is libext2fs-internal (it makes the iterator
            // take its buffer for inline data, so block directories read as corrupt); inline
            // directories are walked without it.
            let err = ext2fs_dir_iterate2(
                fs, dir.ino, 0, nil,
                { _, _, dirent, _, _, _, context in
                    guard let dirent, let context else { return DIRENT_ABORT }
                    let collector = Unmanaged<DirectoryCollector>.fromOpaque(context).takeUnretainedValue()
                    return collector.add(dirent) ? 0 : DIRENT_ABORT
                },
                Unmanaged.passUnretained(collector).toOpaque())
            if collector.overflowed { throw .tooLarge(path, limit: limit) }
            if err != 0 { throw Self.libraryError("ext2fs_dir_iterate2", path, err) }
            return collector.found.map { name, ino in
                if let inode = try? readInode(ino) {
                    return Entry(name: name, ino: ino, inode: inode, fs: fs)
                }
                return Entry(name: name, kind: .other, size: 0, mode: 0, inode: ino, modified: 0, uid: 0, gid: 0)
            }.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        }
    }

    /// The target of the symbolic link at `path` (earlier components' links are followed), as
    /// stored: from the inode itself for a fast link, else from its data block or inline data.
    /// Wraps ext2fs_file_read(3).
    public func readLink(_ path: String) throws(Error) -> String {
        try lock.withLock { _ throws(Error) in
            let node = try resolve(path, followFinal: false)
            guard node.kind == .symlink else { throw .notASymlink(path) }
            return try linkTarget(node, path: path)
        }
    }

    /// The first `maxBytes` bytes of the regular file at `path` (symbolic links followed); the
    /// whole file when it is shorter. Memory grows with what is read, never with the size the
    /// inode claims. Wraps ext2fs_file_read(3).
    public func read(_ path: String, maxBytes: Int) throws(Error) -> [UInt8] {
        try lock.withLock { _ throws(Error) in
            let node = try resolve(path, followFinal: true)
            try Self.requireFile(node, path)
            var bytes: [UInt8] = []
            bytes.reserveCapacity(min(max(maxBytes, 0), Int(clamping: node.size), Self.chunkBytes))
            try readFile(node, path: path, limit: max(maxBytes, 0)) { chunk in
                bytes.append(contentsOf: chunk)
                return true
            }
            return bytes
        }
    }

    /// Streams the regular file at `path` (symbolic links followed) to `chunk`, at most 64 KiB at a
    /// time, for files too big to hold. Errors from `chunk` stop the read and are rethrown; `chunk`
    /// must not call back into this filesystem (the handle is locked meanwhile).
    /// Wraps ext2fs_file_read(3).
    public func read(_ path: String, chunk: (UnsafeRawBufferPointer) throws -> Void) throws {
        var chunkError: (any Swift.Error)?
        try lock.withLock { _ throws(Error) in
            let node = try resolve(path, followFinal: true)
            try Self.requireFile(node, path)
            try readFile(node, path: path, limit: .max) { bytes in
                do {
                    try chunk(bytes)
                    return true
                } catch {
                    chunkError = error
                    return false
                }
            }
        }
        if let chunkError { throw chunkError }
    }

    // MARK: Types

    /// One file, directory or link, as its inode describes it.
    public struct Entry: Sendable, Equatable {
        /// What kind of inode the entry is.
        public enum Kind: String, Sendable {
            /// A regular file, a directory, a symbolic link, or anything else (device node, FIFO, socket).
            case file, directory, symlink, other
        }

        /// The directory entry's name; bytes that are not UTF-8 appear as U+FFFD.
        public let name: String
        /// The inode's type, from the type bits of `mode`.
        public let kind: Kind
        /// Bytes, as the inode records them (i_size with i_size_high).
        public let size: UInt64
        /// The type and permission bits (st_mode).
        public let mode: UInt16
        /// The inode number.
        public let inode: UInt32
        /// Last modification, seconds since the epoch, with ext4's extra epoch bits.
        public let modified: Int64
        /// The owner's user ID (the 32-bit value, i_uid with its high half).
        public let uid: UInt32
        /// The owner's group ID (the 32-bit value, i_gid with its high half).
        public let gid: UInt32

        /// Makes an entry as a directory listing returns it, for tests and reports.
        public init(name: String, kind: Kind, size: UInt64, mode: UInt16, inode: UInt32, modified: Int64,
                    uid: UInt32, gid: UInt32) {
            self.name = name
            self.kind = kind
            self.size = size
            self.mode = mode
            self.inode = inode
            self.modified = modified
            self.uid = uid
            self.gid = gid
        }

        fileprivate init(name: String, ino: ext2_ino_t, inode: ext2_inode_large, fs: ext2_filsys) {
            var modified = Int64(Int32(bitPattern: inode.i_mtime))
            // i_mtime_extra exists only in inodes larger than 128 bytes that declare it; its low
            // two bits extend the 32-bit seconds past 2038.
            let extraEnd = MemoryLayout.offset(of: \ext2_inode_large.i_mtime_extra)! + 4
            if Int(fs.pointee.super.pointee.s_inode_size) >= extraEnd,
               Int(EXT2_GOOD_OLD_INODE_SIZE) + Int(inode.i_extra_isize) >= extraEnd {
                modified += Int64(inode.i_mtime_extra & 3) << 32
            }
            self.init(name: name, kind: Kind(mode: inode.i_mode),
                      size: UInt64(inode.i_size) | UInt64(inode.i_size_high) << 32,
                      mode: inode.i_mode, inode: ino, modified: modified,
                      uid: UInt32(inode.i_uid) | UInt32(inode.osd2.linux2.l_i_uid_high) << 16,
                      gid: UInt32(inode.i_gid) | UInt32(inode.osd2.linux2.l_i_gid_high) << 16)
        }
    }

    /// Why a path could not be read. `description` is a complete sentence about the path inside
    /// the filesystem; callers add which image and partition.
    public enum Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        /// `path` leads to `missing`, which does not exist (the same unless a link led elsewhere).
        case notFound(String, missing: String)
        /// `path` needs `component` to be a directory, and it is not.
        case notADirectory(String, component: String)
        /// Reading needs a file, and `path` is a directory.
        case isADirectory(String)
        /// Reading needs a regular file; `path` is a device, FIFO or socket.
        case notARegularFile(String)
        /// Reading a link target needs a symbolic link, and `path` is none.
        case notASymlink(String)
        /// Following the links of `path` went past the link limit (a loop, or too long a chain).
        case symlinkLoop(String)
        /// A directory with more than `limit` entries, or a link target longer than `limit` bytes.
        case tooLarge(String, limit: Int)
        /// libext2fs failed: `operation` on `path`, with its com_err code and message.
        case library(operation: String, path: String, code: Int, message: String)

        public var description: String {
            switch self {
            case .notFound(let path, let missing):
                if missing == path { return "\(path) does not exist in the filesystem." }
                return "\(path) does not exist in the filesystem: it leads to \(missing), which is missing."
            case .notADirectory(let path, let component):
                if component == path { return "\(path) is not a directory." }
                return "\(path) cannot be reached: \(component) is not a directory."
            case .isADirectory(let path):
                return "\(path) is a directory, not a file."
            case .notARegularFile(let path):
                return "\(path) is not a regular file (a device, FIFO or socket), so it has no contents to read."
            case .notASymlink(let path):
                return "\(path) is not a symbolic link."
            case .symlinkLoop(let path):
                return "\(path) cannot be resolved: more than \(Ext2Filesystem.maxSymlinkHops) symbolic links in a row (a loop?)."
            case .tooLarge(let path, let limit):
                return "\(path) is too large to read: it exceeds the limit of \(limit) (entries for a directory, bytes for a link target)."
            case .library(let operation, let path, let code, let message):
                return "libext2fs could not read \(path) (\(operation): \(message), error \(code)); the filesystem may be damaged (e2fsck -n would say more)."
            }
        }
    }

    // MARK: Resolution

    /// An inode and its number.
    private struct Node {
        let ino: ext2_ino_t
        let inode: ext2_inode_large
        var kind: Entry.Kind { Entry.Kind(mode: inode.i_mode) }
        var size: UInt64 { UInt64(inode.i_size) | UInt64(inode.i_size_high) << 32 }
    }

    /// Walks `path` from the filesystem's root one component at a time, as the kernel's namei
    /// does: a symbolic link's target replaces it, absolute ones from this filesystem's root and
    /// relative ones from the link's directory, at most `maxSymlinkHops` times. ".." comes from the
    /// directory itself, so the root's ".." is the root: nothing leads outside the filesystem.
    private func resolve(_ path: String, followFinal: Bool) throws(Error) -> Node {
        let root = try readNode(ext2_ino_t(EXT2_ROOT_INO), path: "/")
        // A trailing slash asks for a directory, so a final link is followed (as in Linux).
        let followFinal = followFinal || path.hasSuffix("/")
        var pending: [Substring] = path.split(separator: "/").reversed()  // next component last
        var current = root
        var walked: [Substring] = []  // where `current` is, for messages
        var hops = 0
        func walkedPath(_ extra: Substring? = nil) -> String {
            "/" + (walked + (extra.map { [$0] } ?? [])).joined(separator: "/")
        }
        while let name = pending.popLast() {
            if name == "." { continue }
            guard current.kind == .directory else { throw .notADirectory(path, component: walkedPath()) }
            var child: ext2_ino_t = 0
            // By length, not NUL-terminated: a name with a NUL in it must not match a shorter one.
            let err = Array(name.utf8).withUnsafeBufferPointer {
                $0.withMemoryRebound(to: CChar.self) {
                    ext2fs_lookup(fs, current.ino, $0.baseAddress, Int32(clamping: $0.count), nil, &child)
                }
            }
            if err == EXT2_ET_FILE_NOT_FOUND { throw .notFound(path, missing: walkedPath(name)) }
            if err != 0 { throw Self.libraryError("ext2fs_lookup(\(name))", walkedPath(), err) }
            let node = try readNode(child, path: walkedPath(name))
            if node.kind == .symlink && (!pending.isEmpty || followFinal) {
                hops += 1
                guard hops <= Self.maxSymlinkHops else { throw .symlinkLoop(path) }
                let target = try linkTarget(node, path: walkedPath(name))
                // An empty target names nothing (ENOENT in Linux).
                guard !target.isEmpty else { throw .notFound(path, missing: walkedPath(name)) }
                if target.hasPrefix("/") {
                    current = root
                    walked = []
                }
                pending.append(contentsOf: target.split(separator: "/").reversed())
                continue
            }
            if name == ".." {
                _ = walked.popLast()
            } else {
                walked.append(name)
            }
            current = node
        }
        if path.hasSuffix("/") && current.kind != .directory { throw .notADirectory(path, component: walkedPath()) }
        return current
    }

    private func readNode(_ ino: ext2_ino_t, path: String) throws(Error) -> Node {
        do {
            return Node(ino: ino, inode: try readInode(ino))
        } catch {
            throw Self.libraryError("ext2fs_read_inode_full(\(ino))", path, error.code)
        }
    }

    private struct LibraryCode: Swift.Error { let code: errcode_t }

    /// The whole on-disk inode (up to the large layout), zeroed beyond what the filesystem stores.
    /// Wraps ext2fs_read_inode_full(3).
    private func readInode(_ ino: ext2_ino_t) throws(LibraryCode) -> ext2_inode_large {
        var inode = ext2_inode_large()
        let err = withUnsafeMutablePointer(to: &inode) { large in
            large.withMemoryRebound(to: ext2_inode.self, capacity: 1) {
                ext2fs_read_inode_full(fs, ino, $0, Int32(MemoryLayout<ext2_inode_large>.size))
            }
        }
        if err != 0 { throw LibraryCode(code: err) }
        return inode
    }

    private func linkTarget(_ node: Node, path: String) throws(Error) -> String {
        guard node.size <= UInt64(Self.maxLinkTargetBytes) else { throw .tooLarge(path, limit: Self.maxLinkTargetBytes) }
        var inode = node.inode
        let fast = withUnsafeMutablePointer(to: &inode) {
            $0.withMemoryRebound(to: ext2_inode.self, capacity: 1) { ext2fs_is_fast_symlink($0) != 0 }
        }
        if fast {
            // A fast link's target sits in i_block itself (60 bytes), which bounds the copy.
            let bytes = withUnsafeBytes(of: node.inode.i_block) { Array($0.prefix(Int(node.size))) }
            return String(decoding: bytes, as: UTF8.self)
        }
        var bytes: [UInt8] = []
        try readFile(node, path: path, limit: Self.maxLinkTargetBytes) { chunk in
            bytes.append(contentsOf: chunk)
            return true
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: Reading

    private static func requireFile(_ node: Node, _ path: String) throws(Error) {
        switch node.kind {
        case .file: return
        case .directory: throw .isADirectory(path)
        case .symlink, .other: throw .notARegularFile(path)
        }
    }

    /// Reads `node` through an ext2_file_t, handing over at most `limit` bytes in chunks of at
    /// most `chunkBytes` until `body` returns false. Holes read as zeros. Wraps ext2fs_file_read(3).
    private func readFile(_ node: Node, path: String, limit: Int,
                          _ body: (UnsafeRawBufferPointer) -> Bool) throws(Error) {
        var file: ext2_file_t?
        let err = ext2fs_file_open(fs, node.ino, 0, &file)
        guard err == 0, let file else { throw Self.libraryError("ext2fs_file_open", path, err) }
        defer { ext2fs_file_close(file) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        // ext2fs_file_read stops at i_size for block-mapped files, but for inline data it returns
        // the whole inline area (60 bytes and more), padding included: cap at i_size ourselves.
        var remaining = Int(clamping: min(UInt64(max(limit, 0)), node.size))
        while remaining > 0 {
            var got: UInt32 = 0
            let want = UInt32(min(remaining, Self.chunkBytes))
            let err = ext2fs_file_read(file, buffer.baseAddress, want, &got)
            if err != 0 { throw Self.libraryError("ext2fs_file_read", path, err) }
            if got == 0 { return }
            let n = min(Int(got), Int(want))
            guard body(UnsafeRawBufferPointer(rebasing: buffer[..<n])) else { return }
            remaining -= n
        }
    }

    // MARK: Helpers

    private static func lastComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? "/"
    }

    private static func message(_ code: errcode_t) -> String {
        _ = errorTableRegistered
        return String(cString: error_message(code))
    }

    /// error_message(3) knows libext2fs's codes only once their table is registered; opening a
    /// filesystem does not do that ("Unknown code ext2 35" otherwise).
    private static let errorTableRegistered: Void = initialize_ext2_error_table()

    private static func libraryError(_ operation: String, _ path: String, _ code: errcode_t) -> Error {
        .library(operation: operation, path: path, code: Int(code), message: message(code))
    }
}

extension Ext2Filesystem.Entry.Kind {
    init(mode: UInt16) {
        switch Int32(mode) & LINUX_S_IFMT {
        case LINUX_S_IFREG: self = .file
        case LINUX_S_IFDIR: self = .directory
        case LINUX_S_IFLNK: self = .symlink
        default: self = .other
        }
    }
}

/// Collects a directory's entries for ext2fs_dir_iterate2's C callback, which gets it through
/// its context pointer; stops once there are more than `limit`.
private final class DirectoryCollector {
    let limit: Int
    var found: [(String, ext2_ino_t)] = []
    var overflowed = false

    init(limit: Int) { self.limit = limit }

    /// False to stop the iteration.
    func add(_ dirent: UnsafeMutablePointer<ext2_dir_entry>) -> Bool {
        // The low byte of name_len is the length (the high byte is the file type); libext2fs has
        // checked that it fits in the record.
        let length = Int(dirent.pointee.name_len & 0xFF)
        let nameStart = UnsafeRawPointer(dirent) + MemoryLayout.offset(of: \ext2_dir_entry.name)!
        let name = String(decoding: UnsafeRawBufferPointer(start: nameStart, count: length), as: UTF8.self)
        if name == "." || name == ".." { return true }
        guard found.count < limit else {
            overflowed = true
            return false
        }
        found.append((name, dirent.pointee.inode))
        return true
    }
}
