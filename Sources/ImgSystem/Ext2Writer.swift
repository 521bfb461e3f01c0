import CExt2fs
import CExt2fsFdIO
import Glibc

/// Writes directories and files into an ext2/3/4 filesystem inside an image file, through
/// libext2fs: no mount, no loop device, no root. What it makes is owned by whoever the caller says
/// (root, as grub-install leaves GRUB's files), whatever user runs it. `populate` (Ext2Populator.swift)
/// fills it from a whole tree, a directory or a tar archive, for `imgtool create`.
///
/// libext2fs writes without the filesystem's journal, so a crash in the middle leaves metadata
/// half written; callers write into a copy and replace the image when it is done. A filesystem
/// whose journal still needs replaying, or that records errors, is refused: writing past either
/// would build on something e2fsck has yet to repair.
/// Not Sendable: one owner, one thread.
public final class Ext2Writer {
    /// Why a write failed: the libext2fs call, what it was about, and libext2fs's message.
    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        /// What was being done ("ext2fs_link /boot/grub/grub.cfg").
        public let operation: String
        /// The libext2fs error code (an errcode_t; errno values below 256).
        public let code: Int
        /// libext2fs's message for `code`.
        public let message: String
        public var description: String { "\(operation): \(message)" }

        /// The filesystem has no free block or inode left for what was being written: a bigger one
        /// would hold it (an xattr too big for one inode is not this).
        public var isOutOfSpace: Bool {
            [EXT2_ET_BLOCK_ALLOC_FAIL, EXT2_ET_INODE_ALLOC_FAIL, EXT2_ET_DIR_NO_SPACE_FOR_CSUM, errcode_t(ENOSPC)].contains(errcode_t(code))
        }

        init(_ operation: String, _ code: errcode_t) {
            self.operation = operation
            self.code = Int(code)
            message = String(cString: error_message(code))
        }
    }

    /// Who owns what is written, its permission bits come per call.
    public struct Owner: Sendable, Equatable {
        /// User and group ids.
        public let uid: UInt32, gid: UInt32
        /// root:root.
        public static let root = Owner(uid: 0, gid: 0)
        /// Makes an owner.
        public init(uid: UInt32, gid: UInt32) {
            self.uid = uid
            self.gid = gid
        }
    }

    private var handle: ext2_filsys?
    let fs: ext2_filsys
    let name: String
    /// What libext2fs writes through (see CExt2fsFdIO's write-back manager); closed after it.
    private let file: FileHandle
    /// Times given to what is written (seconds since the epoch), and libext2fs's own clock: the
    /// inodes' creation times and the superblock's last write time (fs->now), so that the same
    /// inputs at the same `time` give the same bytes.
    public var time: UInt32 {
        didSet { fs.pointee.now = time_t(time) }
    }
    /// The names written into each directory this writer made: nothing else is in it, so a name
    /// not among them needs no lookup (a scan of the whole directory, per file).
    var madeDirectories: [ext2_ino_t: Set<String>] = [:]
    /// File data written through the channel since it last wrote out what it keeps (see populate).
    var unflushedBytes = 0
    /// Directories' inodes by path, once looked up or made: a writer never removes or renames one.
    private var directoryInodes: [String: ext2_ino_t] = [:]

    /// Opens the filesystem at byte `offset` of `image` for writing. Wraps open(2), ext2fs_open2(3)
    /// with an I/O manager that keeps written blocks until the close and writes them in order
    /// (unix_io's block-at-a-time writes were most of an offline install's time), and
    /// ext2fs_read_bitmaps(3). `verifyChecksums` false: for a filesystem the caller has just made
    /// (create), metadata_csum checksums are still written but not checked on every read: each
    /// new name's ext2fs_link reads the directory's blocks back and checked their crc32c, a sixth
    /// of create's instructions on a tree of 5,000 files.
    public init(image: String, offset: UInt64, time: UInt32 = UInt32(truncatingIfNeeded: Glibc.time(nil)),
                verifyChecksums: Bool = true) throws(Error) {
        name = image
        self.time = time
        do { file = try FileHandle(path: image, flags: O_RDWR) } catch { throw Error("open \(image)", errcode_t(error.errno)) }
        let flags = EXT2_FLAG_RW | EXT2_FLAG_64BITS
        var err = ext2fs_open2("wb:\(file.fd):\(offset)", nil, Int32(flags), 0, 0, imgtool_write_back_io_manager(), &handle)
        guard err == 0, let fs = handle else { throw Error("ext2fs_open2 \(image) at offset \(offset)", err) }
        self.fs = fs
        fs.pointee.now = time_t(time)
        if ext2fs_has_feature_journal_needs_recovery(fs.pointee.super) != 0 {
            throw Error("\(image) at offset \(offset): its journal needs replaying (run e2fsck -f on it first)", errcode_t(EROFS))
        }
        if fs.pointee.super.pointee.s_state & UInt16(EXT2_ERROR_FS) != 0 {
            throw Error("\(image) at offset \(offset): the filesystem records errors (run e2fsck -f on it first)", errcode_t(EROFS))
        }
        err = ext2fs_read_bitmaps(fs)
        guard err == 0 else { throw Error("ext2fs_read_bitmaps \(image)", err) }
        if !verifyChecksums { fs.pointee.flags |= Int32(EXT2_FLAG_IGNORE_CSUM_ERRORS) }
    }

    /// Makes `path` and every missing directory above it (mkdir -p), with `mode`'s permission
    /// bits and `owner`; existing directories are left as they are. Returns its inode. Wraps
    /// ext2fs_mkdir(3) and ext2fs_expand_dir(3).
    @discardableResult
    public func makeDirectories(_ path: String, mode: mode_t = 0o755, owner: Owner = .root) throws(Error) -> ext2_ino_t {
        var parent = ext2_ino_t(EXT2_ROOT_INO)
        for component in path.split(separator: "/").map(String.init) {
            if let ino = lookup(component, in: parent) {
                // Never through a symbolic link: the image's links must not steer writes.
                guard ext2fs_check_directory(fs, ino) == 0 else {
                    throw Error("\(path): \(component) is not a directory (a symbolic link or a file); imgtool will not follow or replace it",
                                errcode_t(ENOTDIR))
                }
                parent = ino
                continue
            }
            var err = ext2fs_mkdir(fs, parent, 0, component)
            if err == EXT2_ET_DIR_NO_SPACE {
                err = ext2fs_expand_dir(fs, parent)
                if err == 0 { err = ext2fs_mkdir(fs, parent, 0, component) }
            }
            guard err == 0 else { throw Error("ext2fs_mkdir \(component) in \(path)", err) }
            guard let ino = lookup(component, in: parent) else { throw Error("ext2fs_lookup \(component) in \(path)", EXT2_ET_FILE_NOT_FOUND) }
            try setAttributes(ino, mode: UInt16(LINUX_S_IFDIR) | UInt16(mode & 0o7777), owner: owner)
            madeDirectories[parent]?.insert(component)
            madeDirectories[ino] = []
            parent = ino
        }
        return parent
    }

    /// Writes `contents` to `path` (its directory must exist): a new file, or an existing one's
    /// contents replaced in place, as cp(1) does. Wraps ext2fs_new_inode(3), ext2fs_link(3),
    /// ext2fs_write_new_inode(3) and ext2fs_fallocate(3).
    public func writeFile(_ path: String, contents: [UInt8], mode: mode_t = 0o644, owner: Owner = .root) throws(Error) {
        let (directory, leaf) = Self.split(path)
        if directoryInodes[directory] == nil { directoryInodes[directory] = try lookupPath(directory) }
        guard let parent = directoryInodes[directory] else { throw Error("ext2fs_namei \(directory)", EXT2_ET_FILE_NOT_FOUND) }
        let regular = UInt16(LINUX_S_IFREG) | UInt16(mode & 0o7777)
        let ino: ext2_ino_t
        if madeDirectories[parent]?.contains(leaf) == false {
            ino = try newInode(named: leaf, in: parent, mode: regular, path: path)
            madeDirectories[parent]!.insert(leaf)
        } else if let existing = lookup(leaf, in: parent) {
            ino = existing
            try truncate(ino, path: path)
        } else {
            ino = try newInode(named: leaf, in: parent, mode: regular, path: path)
        }
        // Every block at once, initialised, then written straight through the I/O channel:
        // through ext2fs_file_write, block by block, libext2fs changed the extent tree and wrote
        // the inode for each, and mapped each block twice (most of an offline install's
        // instructions, which TCG runs at a few hundred million a second in the isolated VM).
        let blocks = (contents.count + Int(fs.pointee.blocksize) - 1) / Int(fs.pointee.blocksize)
        if blocks > 0 {
            let flags = EXT2_FALLOCATE_FORCE_INIT | EXT2_FALLOCATE_INIT_BEYOND_EOF
            let err = ext2fs_fallocate(fs, Int32(flags), ino, nil, ~blk64_t(0), 0, blk64_t(blocks))
            guard err == 0 else { throw Error("ext2fs_fallocate \(path)", err) }
            try writeBlocks(of: ino, contents, count: blocks, path: path)
        }
        try setAttributes(ino, mode: regular, owner: owner, size: UInt64(contents.count))
    }

    /// Frees every block of `ino` and sets its size to 0. Wraps ext2fs_file_open(3),
    /// ext2fs_file_set_size2(3) and ext2fs_file_close(3).
    func truncate(_ ino: ext2_ino_t, path: String) throws(Error) {
        var file: ext2_file_t?
        let err = ext2fs_file_open(fs, ino, EXT2_FILE_WRITE, &file)
        guard err == 0, let file else { throw Error("ext2fs_file_open \(path)", err) }
        let truncated = ext2fs_file_set_size2(file, 0)
        let closed = ext2fs_file_close(file)
        guard truncated == 0 else { throw Error("ext2fs_file_set_size2 \(path)", truncated) }
        guard closed == 0 else { throw Error("ext2fs_file_close \(path)", closed) }
    }

    /// Writes `contents` into the first `count` blocks `ino` maps, runs of consecutive blocks at
    /// once, the last block padded with zeros. Wraps io_channel_write_blk64(3).
    private func writeBlocks(of ino: ext2_ino_t, _ contents: [UInt8], count: Int, path: String) throws(Error) {
        let blockSize = Int(fs.pointee.blocksize)
        let whole = contents.count / blockSize
        let tail = whole < count ? Array(contents[(whole * blockSize)...]) + [UInt8](repeating: 0, count: count * blockSize - contents.count) : []
        for run in try mappedRuns(of: ino, count: count, path: path) {
            let full = max(0, min(run.logical + run.length, whole) - run.logical)
            var err: errcode_t = 0
            if full > 0 {
                err = contents.withUnsafeBytes {
                    io_channel_write_blk64(fs.pointee.io, run.physical, Int32(full), $0.baseAddress! + run.logical * blockSize)
                }
            }
            if err == 0, full < run.length {
                err = io_channel_write_blk64(fs.pointee.io, run.physical + blk64_t(full), 1, tail)
            }
            guard err == 0 else { throw Error("io_channel_write_blk64 \(path)", err) }
        }
    }

    /// Where `ino`'s first `count` logical blocks are, as runs of consecutive blocks in logical
    /// order; every one of them must be mapped and initialised. From the extent tree's leaves
    /// (ext2fs_bmap2 reopened the tree for each block), else (ext2, ext3) block by block. Wraps
    /// ext2fs_extent_open2(3), ext2fs_extent_get(3) and ext2fs_bmap2(3).
    func mappedRuns(of ino: ext2_ino_t, count: Int, path: String) throws(Error) -> [(logical: Int, physical: blk64_t, length: Int)] {
        var inode = ext2_inode()
        var err = ext2fs_read_inode(fs, ino, &inode)
        guard err == 0 else { throw Error("ext2fs_read_inode \(path)", err) }
        var runs: [(logical: Int, physical: blk64_t, length: Int)] = []
        if inode.i_flags & UInt32(EXT4_EXTENTS_FL) != 0 {
            var handle: ext2_extent_handle_t?
            err = ext2fs_extent_open2(fs, ino, &inode, &handle)
            guard err == 0, let handle else { throw Error("ext2fs_extent_open2 \(path)", err) }
            defer { ext2fs_extent_free(handle) }
            var extent = ext2fs_extent()
            var operation = EXT2_EXTENT_ROOT
            while true {
                err = ext2fs_extent_get(handle, Int32(operation), &extent)
                if err == EXT2_ET_EXTENT_NO_NEXT || err == EXT2_ET_EXTENT_NO_DOWN { break }
                guard err == 0 else { throw Error("ext2fs_extent_get \(path)", err) }
                operation = EXT2_EXTENT_NEXT_LEAF
                guard extent.e_flags & UInt32(EXT2_EXTENT_FLAGS_LEAF) != 0, extent.e_len > 0 else { continue }
                guard extent.e_flags & UInt32(EXT2_EXTENT_FLAGS_UNINIT) == 0 else {
                    throw Error("\(path): block \(extent.e_lblk) is allocated uninitialised", EXT2_ET_BAD_BLOCK_NUM)
                }
                runs.append((Int(extent.e_lblk), extent.e_pblk, Int(extent.e_len)))
            }
        } else {
            for logical in 0..<count {
                var physical: blk64_t = 0
                err = ext2fs_bmap2(fs, ino, &inode, nil, 0, blk64_t(logical), nil, &physical)
                guard err == 0 else { throw Error("ext2fs_bmap2 \(path) block \(logical)", err) }
                if let last = runs.last, last.logical + last.length == logical, last.physical + blk64_t(last.length) == physical {
                    runs[runs.count - 1].length += 1
                } else {
                    runs.append((logical, physical, 1))
                }
            }
        }
        // Exactly 0..<count, in order, nowhere block 0: anything else is not what fallocate made.
        var next = 0
        runs = runs.compactMap { run in
            let end = min(run.logical + run.length, count)
            guard run.logical < count else { return nil }
            return (run.logical, run.physical, end - run.logical)
        }
        for run in runs {
            guard run.logical == next, run.physical != 0 else {
                throw Error("\(path): block \(next) is not mapped", EXT2_ET_BAD_BLOCK_NUM)
            }
            next += run.length
        }
        guard next == count else { throw Error("\(path): block \(next) is not mapped", EXT2_ET_BAD_BLOCK_NUM) }
        return runs
    }

    /// What is at `path` (absolute, no symbolic link followed): nil for nothing, else whether it is
    /// a directory. Wraps ext2fs_lookup(3) and ext2fs_check_directory(3).
    public func kind(of path: String) throws(Error) -> Kind? {
        guard let ino = try lookupPath(path) else { return nil }
        return ext2fs_check_directory(fs, ino) == 0 ? .directory : .other
    }

    /// What `kind(of:)` finds.
    public enum Kind: Sendable {
        /// A directory.
        case directory
        /// Anything else: a file, a symbolic link, a device node.
        case other
    }

    /// Writes the superblock, group descriptors and bitmaps, and closes. Wraps ext2fs_close2(3).
    public func close() throws(Error) {
        guard handle != nil else { return }
        let err = ext2fs_close2(fs, 0)
        handle = nil
        guard err == 0 else { throw Error("ext2fs_close2 \(name)", err) }
    }

    deinit {
        // Not closed: an error stopped the writer. Free without writing what was half done (the
        // channel's kept blocks would otherwise be written when ext2fs_free closes it).
        if handle != nil {
            imgtool_write_back_discard(fs.pointee.io)
            ext2fs_free(fs)
        }
    }

    // MARK: Inodes

    /// A new inode of `mode` linked as `leaf` in `parent`, with one link and the writer's time.
    /// `device` goes into i_block for a device node (and, like a fifo's or a socket's, without an
    /// extent tree, which the kernel would reject there). Wraps ext2fs_new_inode(3),
    /// ext2fs_link(3) and ext2fs_write_new_inode(3).
    func newInode(named leaf: String, in parent: ext2_ino_t, mode: UInt16, path: String,
                  device: (major: UInt32, minor: UInt32)? = nil) throws(Error) -> ext2_ino_t {
        var ino: ext2_ino_t = 0
        var err = ext2fs_new_inode(fs, parent, Int32(mode), nil, &ino)
        guard err == 0 else { throw Error("ext2fs_new_inode \(path)", err) }
        try link(leaf, in: parent, to: ino, mode: mode, path: path)
        ext2fs_inode_alloc_stats2(fs, ino, 1, 0)
        var inode = ext2_inode()
        inode.i_mode = mode
        inode.i_links_count = 1
        inode.i_atime = time
        inode.i_ctime = time
        inode.i_mtime = time
        let special = [LINUX_S_IFCHR, LINUX_S_IFBLK, LINUX_S_IFIFO, LINUX_S_IFSOCK].contains(Int32(mode) & LINUX_S_IFMT)
        if let device {
            // As the kernel's ext4_write_inode: the old encoding where it fits, else the new one.
            if device.major < 256 && device.minor < 256 {
                inode.i_block.0 = device.major << 8 | device.minor
            } else {
                inode.i_block.1 = (device.minor & 0xff) | (device.major << 8) | ((device.minor & ~0xff) << 12)
            }
        } else if !special, ext2fs_has_feature_extents(fs.pointee.super) != 0 {
            // An empty extent tree in i_block, the flag set, as mke2fs -d makes a file.
            var extents: ext2_extent_handle_t?
            err = ext2fs_extent_open2(fs, ino, &inode, &extents)
            guard err == 0 else { throw Error("ext2fs_extent_open2 \(path)", err) }
            ext2fs_extent_free(extents)
        }
        err = ext2fs_write_new_inode(fs, ino, &inode)
        guard err == 0 else { throw Error("ext2fs_write_new_inode \(path)", err) }
        return ino
    }

    /// Adds the name `leaf` for `ino` (of `mode`) to `parent`, which grows by a block when full.
    /// Wraps ext2fs_link(3) and ext2fs_expand_dir(3).
    func link(_ leaf: String, in parent: ext2_ino_t, to ino: ext2_ino_t, mode: UInt16, path: String) throws(Error) {
        let type: Int32 = switch Int32(mode) & LINUX_S_IFMT {
        case LINUX_S_IFDIR: Int32(EXT2_FT_DIR)
        case LINUX_S_IFLNK: Int32(EXT2_FT_SYMLINK)
        case LINUX_S_IFCHR: Int32(EXT2_FT_CHRDEV)
        case LINUX_S_IFBLK: Int32(EXT2_FT_BLKDEV)
        case LINUX_S_IFIFO: Int32(EXT2_FT_FIFO)
        case LINUX_S_IFSOCK: Int32(EXT2_FT_SOCK)
        default: Int32(EXT2_FT_REG_FILE)
        }
        if madeDirectories[parent] != nil, try append(leaf, in: parent, to: ino, type: type, path: path) { return }
        var err = ext2fs_link(fs, parent, leaf, ino, type)
        if err == EXT2_ET_DIR_NO_SPACE {
            err = ext2fs_expand_dir(fs, parent)
            if err == 0 { err = ext2fs_link(fs, parent, leaf, ino, type) }
        }
        guard err == 0 else { throw Error("ext2fs_link \(path)", err) }
    }

    /// Adds the name after the last entry of `parent`'s last block, which grows by a block when
    /// full. For the directories this writer made, where no entry is ever removed, so there is no
    /// gap worth a search: ext2fs_link(3) reads every block of the directory for one, which makes
    /// filling a directory quadratic in its size. Returns false where it does not apply (inline
    /// data, a block that is not as expected), with no entry changed, for ext2fs_link to do it.
    /// Wraps ext2fs_bmap2(3), ext2fs_read_dir_block4(3), ext2fs_write_dir_block4(3) and
    /// ext2fs_expand_dir(3).
    private func append(_ leaf: String, in parent: ext2_ino_t, to ino: ext2_ino_t, type: Int32, path: String) throws(Error) -> Bool {
        let name = Array(leaf.utf8)
        guard !name.isEmpty, name.count <= Int(EXT2_NAME_LEN) else { return false }
        let blockSize = Int(fs.pointee.blocksize)
        // metadata_csum keeps the block's checksum in a 12-byte entry at its end.
        let tail = ext2fs_has_feature_metadata_csum(fs.pointee.super) != 0 ? 12 : 0
        let needed = (8 + name.count + 3) & ~3
        var block = [UInt8](repeating: 0, count: blockSize)
        for attempt in 0..<2 {
            var inode = ext2_inode()
            var err = ext2fs_read_inode(fs, parent, &inode)
            guard err == 0 else { throw Error("ext2fs_read_inode \(path)", err) }
            guard inode.i_flags & UInt32(EXT4_INLINE_DATA_FL) == 0 else { return false }
            let size = UInt64(inode.i_size) | UInt64(inode.i_size_high) << 32
            guard size >= UInt64(blockSize), size % UInt64(blockSize) == 0 else { return false }
            var physical: blk64_t = 0
            err = ext2fs_bmap2(fs, parent, &inode, nil, 0, blk64_t(size / UInt64(blockSize) - 1), nil, &physical)
            guard err == 0, physical != 0 else { return false }
            err = ext2fs_read_dir_block4(fs, physical, &block, 0, parent)
            guard err == 0 else { throw Error("ext2fs_read_dir_block4 \(path)", err) }
            // The last entry before the tail, and how much of its record its name uses.
            var offset = 0, last = -1
            while offset < blockSize - tail {
                var length: UInt32 = 0
                err = block.withUnsafeMutableBytes { ext2fs_get_rec_len(fs, $0.baseAddress!.advanced(by: offset).assumingMemoryBound(to: ext2_dir_entry.self), &length) }
                guard err == 0, length >= 8, length % 4 == 0 else { return false }
                last = offset
                offset += Int(length)
            }
            guard offset == blockSize - tail, last >= 0 else { return false }
            let record = blockSize - tail - last
            let lastInode = block[last..<last + 4].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let used = lastInode == 0 ? 0 : (8 + Int(block[last + 6]) + 3) & ~3
            if record - used >= needed {
                if used > 0 { try setRecordLength(used, at: last, in: &block, path: path) }
                let at = last + used
                for i in 0..<4 { block[at + i] = UInt8(truncatingIfNeeded: ino >> (8 * i)) }
                try setRecordLength(record - used, at: at, in: &block, path: path)
                block[at + 6] = UInt8(name.count)
                block[at + 7] = ext2fs_has_feature_filetype(fs.pointee.super) != 0 ? UInt8(type) : 0
                block.replaceSubrange(at + 8..<at + 8 + name.count, with: name)
                for i in at + 8 + name.count..<at + needed { block[i] = 0 }
                err = ext2fs_write_dir_block4(fs, physical, &block, 0, parent)
                guard err == 0 else { throw Error("ext2fs_write_dir_block4 \(path)", err) }
                return true
            }
            guard attempt == 0 else { return false }
            err = ext2fs_expand_dir(fs, parent)
            guard err == 0 else { throw Error("ext2fs_expand_dir \(path)", err) }
        }
        return false
    }

    /// Sets the record length of the entry at `offset` of a directory block. Wraps
    /// ext2fs_set_rec_len(3), which encodes lengths of 64 KiB blocks.
    private func setRecordLength(_ length: Int, at offset: Int, in block: inout [UInt8], path: String) throws(Error) {
        let err = block.withUnsafeMutableBytes {
            ext2fs_set_rec_len(fs, UInt32(length), $0.baseAddress!.advanced(by: offset).assumingMemoryBound(to: ext2_dir_entry.self))
        }
        guard err == 0 else { throw Error("ext2fs_set_rec_len \(path)", err) }
    }

    /// Sets mode, owner, the times and, when given, the size of `ino`: atime, ctime and mtime to
    /// `mtime` (the writer's time when nil), the creation time to the writer's time, nanoseconds
    /// to 0 (libext2fs leaves them as it found them). Wraps ext2fs_read_inode_full(3),
    /// ext2fs_inode_size_set(3) and ext2fs_write_inode_full(3).
    func setAttributes(_ ino: ext2_ino_t, mode: UInt16, owner: Owner, size: UInt64? = nil, mtime: Int64? = nil) throws(Error) {
        var large = ext2_inode_large()
        let inodeSize = Int(fs.pointee.super.pointee.s_rev_level) == 0 ? 128 : Int(fs.pointee.super.pointee.s_inode_size)
        let length = Int32(min(MemoryLayout<ext2_inode_large>.size, inodeSize))
        let err = withUnsafeMutablePointer(to: &large) { pointer -> Error? in
            pointer.withMemoryRebound(to: ext2_inode.self, capacity: 1) { inode -> Error? in
                var err = ext2fs_read_inode_full(fs, ino, inode, length)
                guard err == 0 else { return Error("ext2fs_read_inode_full \(ino)", err) }
                if let size {
                    err = ext2fs_inode_size_set(fs, inode, ext2_off64_t(size))
                    guard err == 0 else { return Error("ext2fs_inode_size_set \(ino)", err) }
                }
                inode.pointee.i_mode = mode
                inode.pointee.i_uid = UInt16(truncatingIfNeeded: owner.uid)
                inode.pointee.osd2.linux2.l_i_uid_high = UInt16(truncatingIfNeeded: owner.uid >> 16)
                inode.pointee.i_gid = UInt16(truncatingIfNeeded: owner.gid)
                inode.pointee.osd2.linux2.l_i_gid_high = UInt16(truncatingIfNeeded: owner.gid >> 16)
                let (seconds, epoch) = Self.encode(mtime ?? Int64(time))
                inode.pointee.i_atime = seconds
                inode.pointee.i_ctime = seconds
                inode.pointee.i_mtime = seconds
                // The fields past the first 128 bytes that the inode has room for (i_extra_isize).
                if length > 128, 128 + Int(pointer.pointee.i_extra_isize) >= MemoryLayout<ext2_inode_large>.offset(of: \.i_version_hi)! {
                    pointer.pointee.i_atime_extra = epoch
                    pointer.pointee.i_ctime_extra = epoch
                    pointer.pointee.i_mtime_extra = epoch
                    (pointer.pointee.i_crtime, pointer.pointee.i_crtime_extra) = Self.encode(Int64(time))
                }
                err = ext2fs_write_inode_full(fs, ino, inode, length)
                guard err == 0 else { return Error("ext2fs_write_inode_full \(ino)", err) }
                return nil
            }
        }
        if let err { throw err }
    }

    /// A time as ext4 stores it: the low 32 bits, and the epoch bits of the *_extra field
    /// (nanoseconds 0), so that times before 1970 and after 2038 survive.
    static func encode(_ time: Int64) -> (seconds: UInt32, extra: UInt32) {
        let low = Int32(truncatingIfNeeded: time)
        return (UInt32(bitPattern: low), UInt32(truncatingIfNeeded: ((time - Int64(low)) >> 32) & 3))
    }

    // MARK: Names

    func lookup(_ name: String, in directory: ext2_ino_t) -> ext2_ino_t? {
        var ino: ext2_ino_t = 0
        let err = ext2fs_lookup(fs, directory, name, Int32(name.utf8.count), nil, &ino)
        return err == 0 ? ino : nil
    }

    func lookupPath(_ path: String) throws(Error) -> ext2_ino_t? {
        var ino = ext2_ino_t(EXT2_ROOT_INO)
        for component in path.split(separator: "/") {
            guard let next = lookup(String(component), in: ino) else { return nil }
            ino = next
        }
        return ino
    }

    private static func split(_ path: String) -> (directory: String, leaf: String) {
        let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
        guard let slash = trimmed.lastIndex(of: "/") else { return ("/", trimmed) }
        return (String(trimmed[..<slash]), String(trimmed[trimmed.index(after: slash)...]))
    }
}
