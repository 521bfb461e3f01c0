import CExt2fs
import Glibc

extension Ext2Writer {
    /// Why filling a filesystem from a tree failed: reading the tree, or writing the filesystem.
    public enum PopulateError: Swift.Error, CustomStringConvertible, Sendable {
        /// Reading the tree failed.
        case source(TreeSource.Error)
        /// Writing into the filesystem failed.
        case filesystem(Ext2Writer.Error)
        /// A signal asked to stop (`Interruption`); what was written is incomplete.
        case interrupted(signal: Int32)

        /// The contents do not fit: a bigger filesystem would hold them.
        public var isOutOfSpace: Bool {
            if case .filesystem(let error) = self { return error.isOutOfSpace }
            return false
        }

        public var description: String {
            switch self {
            case .source(let error): "\(error)"
            case .filesystem(let error) where error.isOutOfSpace:
                "\(error) (the contents do not fit in the filesystem; make it bigger)"
            case .filesystem(let error): "\(error)"
            case .interrupted(let signal): "interrupted by signal \(signal)"
            }
        }
    }

    /// Writes every entry of `source` under `targetDirectory` (made if missing, root's, 0755):
    /// kind, permission bits, owner, mtime (atime and ctime the same; with `clamp`, later times
    /// become `clamp`, as SOURCE_DATE_EPOCH asks), extended attributes, contents. The tree's top
    /// gives its attributes to `targetDirectory`.
    ///
    /// What is there already: a directory is kept and given the entry's attributes (the root,
    /// lost+found); a regular file is replaced by a regular file's entry, in place, as cp(1) does
    /// (its earlier extended attributes stay); anything else is refused (EEXIST), as is an entry
    /// under something that is not a directory.
    ///
    /// File data goes through the write-back channel, written out every 256 MiB to bound memory:
    /// a writer dropped after that has written data blocks into free space, but no metadata.
    /// `interruption`, checked before each entry, stops it early.
    public func populate(from source: TreeSource, into targetDirectory: String = "/", clamp: Int64? = nil,
                         interruption: Interruption? = nil) throws(PopulateError) {
        let reader: any TreeReader
        do { reader = try source.makeReader() } catch { throw .source(error) }
        try populate(from: reader, into: targetDirectory, clamp: clamp, interruption: interruption)
    }

    /// `populate(from:into:clamp:interruption:)` from entries already being read.
    public func populate(from reader: any TreeReader, into targetDirectory: String = "/", clamp: Int64? = nil,
                         interruption: Interruption? = nil) throws(PopulateError) {
        let top = try filesystem { () throws(Error) in try makeDirectories(targetDirectory) }
        var directories: [String: ext2_ino_t] = ["": top]
        var others: [String: ext2_ino_t] = [:]
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.chunk, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            if let signal = interruption?.signal { throw .interrupted(signal: signal) }
            let next: TreeEntry?
            do { next = try reader.next() } catch { throw .source(error) }
            guard var entry = next else { break }
            if let clamp { entry.mtime = min(entry.mtime, clamp) }
            let shown = targetDirectory.hasSuffix("/") ? targetDirectory + entry.path : targetDirectory + "/" + entry.path
            if entry.path.isEmpty {
                guard entry.kind == .directory else {
                    throw .filesystem(Error("\(shown): the tree's top is not a directory", errcode_t(ENOTDIR)))
                }
                try filesystem { () throws(Error) in try finish(top, entry, mode: UInt16(LINUX_S_IFDIR), path: shown) }
                continue
            }
            let (parentPath, name) = entry.parentAndName
            guard let parent = directories[parentPath] else {
                throw .filesystem(Error("\(shown): \(parentPath) is not a directory in the tree", errcode_t(ENOTDIR)))
            }
            let existing = madeDirectories[parent].map { $0.contains(name) } ?? true ? lookup(name, in: parent) : nil
            switch entry.kind {
            case .directory:
                directories[entry.path] = try filesystem { () throws(Error) in
                    try directory(entry, named: name, in: parent, existing: existing, path: shown)
                }
            case .regularFile:
                others[entry.path] = try regularFile(entry, named: name, in: parent, existing: existing, path: shown,
                                                     reader: reader, buffer: buffer)
            case .hardLink(let target):
                try filesystem { () throws(Error) in
                    try refuse(existing, path: shown)
                    guard let ino = others[target] else {
                        throw Error("\(shown): a hard link to \(target), which is not a file given before it", EXT2_ET_FILE_NOT_FOUND)
                    }
                    try hardLink(ino, named: name, in: parent, path: shown)
                }
            case .symbolicLink(let target):
                others[entry.path] = try filesystem { () throws(Error) in
                    try refuse(existing, path: shown)
                    return try symbolicLink(entry, to: target, named: name, in: parent, path: shown)
                }
            case .characterDevice(let major, let minor), .blockDevice(let major, let minor):
                let type = entry.kind == .characterDevice(major: major, minor: minor) ? LINUX_S_IFCHR : LINUX_S_IFBLK
                others[entry.path] = try filesystem { () throws(Error) in
                    try special(entry, type: type, device: (major, minor), named: name, in: parent, existing: existing, path: shown)
                }
            case .fifo, .socket:
                let type = entry.kind == .fifo ? LINUX_S_IFIFO : LINUX_S_IFSOCK
                others[entry.path] = try filesystem { () throws(Error) in
                    try special(entry, type: type, device: nil, named: name, in: parent, existing: existing, path: shown)
                }
            }
            if case .directory = entry.kind {} else { madeDirectories[parent]?.insert(name) }
        }
    }

    /// File data read and written at once.
    static var chunk: Int { 1 << 20 }
    /// Data kept by the write-back channel before it is written out.
    static var flushEvery: Int { 256 << 20 }

    // MARK: Entries

    private func directory(_ entry: TreeEntry, named name: String, in parent: ext2_ino_t, existing: ext2_ino_t?,
                           path: String) throws(Error) -> ext2_ino_t {
        let ino: ext2_ino_t
        if let existing {
            guard ext2fs_check_directory(fs, existing) == 0 else {
                throw Error("\(path): there is already something other than a directory by that name", errcode_t(EEXIST))
            }
            ino = existing
        } else {
            // The inode chosen here, so that no lookup has to find it after ext2fs_mkdir.
            var made: ext2_ino_t = 0
            var err = ext2fs_new_inode(fs, parent, Int32(LINUX_S_IFDIR | 0o755), nil, &made)
            guard err == 0 else { throw Error("ext2fs_new_inode \(path)", err) }
            err = ext2fs_mkdir(fs, parent, made, name)
            if err == EXT2_ET_DIR_NO_SPACE {
                err = ext2fs_expand_dir(fs, parent)
                if err == 0 { err = ext2fs_mkdir(fs, parent, made, name) }
            }
            guard err == 0 else { throw Error("ext2fs_mkdir \(path)", err) }
            madeDirectories[parent]?.insert(name)
            madeDirectories[made] = []
            ino = made
        }
        try finish(ino, entry, mode: UInt16(LINUX_S_IFDIR), path: path)
        return ino
    }

    private func regularFile(_ entry: TreeEntry, named name: String, in parent: ext2_ino_t, existing: ext2_ino_t?, path: String,
                             reader: any TreeReader, buffer: UnsafeMutableRawBufferPointer) throws(PopulateError) -> ext2_ino_t {
        let mode = UInt16(LINUX_S_IFREG) | entry.permissions
        let ino = try filesystem { () throws(Error) -> ext2_ino_t in
            guard let existing else { return try newInode(named: name, in: parent, mode: mode, path: path) }
            var inode = ext2_inode()
            let err = ext2fs_read_inode(fs, existing, &inode)
            guard err == 0 else { throw Error("ext2fs_read_inode \(path)", err) }
            guard Int32(inode.i_mode) & LINUX_S_IFMT == LINUX_S_IFREG else {
                throw Error("\(path): there is already something other than a regular file by that name", errcode_t(EEXIST))
            }
            try truncate(existing, path: path)
            return existing
        }
        if entry.sparseDataBytes != nil {
            try writeSparseContents(of: ino, size: entry.size, path: path, reader: reader, buffer: buffer)
        } else {
            try writeContents(of: ino, size: entry.size, path: path, reader: reader, buffer: buffer)
        }
        try filesystem { () throws(Error) in try finish(ino, entry, mode: UInt16(LINUX_S_IFREG), size: entry.size, path: path) }
        return ino
    }

    private func symbolicLink(_ entry: TreeEntry, to target: String, named name: String, in parent: ext2_ino_t,
                              path: String) throws(Error) -> ext2_ino_t {
        guard target.utf8.count < Int(fs.pointee.blocksize), !target.isEmpty, !target.utf8.contains(0) else {
            throw Error("\(path): a symbolic link's target must be 1 to \(fs.pointee.blocksize - 1) bytes (it has \(target.utf8.count))",
                        errcode_t(ENAMETOOLONG))
        }
        var ino: ext2_ino_t = 0
        var err = ext2fs_new_inode(fs, parent, Int32(LINUX_S_IFLNK | 0o777), nil, &ino)
        guard err == 0 else { throw Error("ext2fs_new_inode \(path)", err) }
        // Linked here, where a full directory grows; ext2fs_symlink would leave the inode
        // allocated and unlinked on EXT2_ET_DIR_NO_SPACE.
        try link(name, in: parent, to: ino, mode: UInt16(LINUX_S_IFLNK), path: path)
        err = target.withCString { ext2fs_symlink(fs, parent, ino, nil, UnsafeMutablePointer(mutating: $0)) }
        guard err == 0 else { throw Error("ext2fs_symlink \(path)", err) }
        try finish(ino, entry, mode: UInt16(LINUX_S_IFLNK), path: path)
        return ino
    }

    private func special(_ entry: TreeEntry, type: Int32, device: (UInt32, UInt32)?, named name: String, in parent: ext2_ino_t,
                         existing: ext2_ino_t?, path: String) throws(Error) -> ext2_ino_t {
        try refuse(existing, path: path)
        let mode = UInt16(type) | entry.permissions
        let ino = try newInode(named: name, in: parent, mode: mode, path: path, device: device)
        try finish(ino, entry, mode: UInt16(type), path: path)
        return ino
    }

    /// One more name for `ino`: a directory entry and a link count. Wraps ext2fs_link(3),
    /// ext2fs_read_inode(3) and ext2fs_write_inode(3).
    private func hardLink(_ ino: ext2_ino_t, named name: String, in parent: ext2_ino_t, path: String) throws(Error) {
        var inode = ext2_inode()
        var err = ext2fs_read_inode(fs, ino, &inode)
        guard err == 0 else { throw Error("ext2fs_read_inode \(path)", err) }
        try link(name, in: parent, to: ino, mode: inode.i_mode, path: path)
        inode.i_links_count += 1
        err = ext2fs_write_inode(fs, ino, &inode)
        guard err == 0 else { throw Error("ext2fs_write_inode \(path)", err) }
    }

    private func refuse(_ existing: ext2_ino_t?, path: String) throws(Error) {
        guard existing == nil else {
            throw Error("\(path): there is already a file by that name; imgtool replaces only a regular file with a regular file",
                        errcode_t(EEXIST))
        }
    }

    /// Extended attributes, then owner, permission bits of `type` and times, last: setting an
    /// attribute writes the inode.
    private func finish(_ ino: ext2_ino_t, _ entry: TreeEntry, mode type: UInt16, size: UInt64? = nil, path: String) throws(Error) {
        if !entry.xattrs.isEmpty { try setExtendedAttributes(ino, entry.xattrs, path: path) }
        try setAttributes(ino, mode: type | entry.permissions, owner: Owner(uid: entry.uid, gid: entry.gid), size: size, mtime: entry.mtime)
    }

    /// Wraps ext2fs_xattrs_open(3), ext2fs_xattrs_read(3), ext2fs_xattr_set(3) and
    /// ext2fs_xattrs_close(3).
    private func setExtendedAttributes(_ ino: ext2_ino_t, _ attributes: [TreeEntry.ExtendedAttribute], path: String) throws(Error) {
        var handle: OpaquePointer?
        var err = ext2fs_xattrs_open(fs, ino, &handle)
        guard err == 0, handle != nil else { throw Error("ext2fs_xattrs_open \(path)", err) }
        defer { ext2fs_xattrs_close(&handle) }
        err = ext2fs_xattrs_read(handle)
        guard err == 0 else { throw Error("ext2fs_xattrs_read \(path)", err) }
        for attribute in attributes {
            err = attribute.value.withUnsafeBytes { ext2fs_xattr_set(handle, attribute.name, $0.baseAddress, $0.count) }
            guard err == 0 else { throw Error("ext2fs_xattr_set \(attribute.name) on \(path)", err) }
        }
    }

    /// The file's `size` bytes from `reader`, into blocks allocated at once (ext2fs_fallocate) and
    /// written through the channel a chunk at a time, as `writeFile` does with bytes in memory.
    private func writeContents(of ino: ext2_ino_t, size: UInt64, path: String, reader: any TreeReader,
                               buffer: UnsafeMutableRawBufferPointer) throws(PopulateError) {
        let blockSize = Int(fs.pointee.blocksize)
        let count = Int((size + UInt64(blockSize) - 1) / UInt64(blockSize))
        guard count > 0 else { return }
        let runs = try filesystem { () throws(Error) in
            let flags = EXT2_FALLOCATE_FORCE_INIT | EXT2_FALLOCATE_INIT_BEYOND_EOF
            let err = ext2fs_fallocate(fs, Int32(flags), ino, nil, ~blk64_t(0), 0, blk64_t(count))
            guard err == 0 else { throw Error("ext2fs_fallocate \(path)", err) }
            return try mappedRuns(of: ino, count: count, path: path)
        }
        var offset: UInt64 = 0
        let perChunk = buffer.count / blockSize
        for run in runs {
            var done = 0
            while done < run.length {
                let blocks = min(run.length - done, perChunk)
                let wanted = Int(min(UInt64(blocks * blockSize), size - offset))
                try fill(buffer, count: wanted, from: reader, at: offset, of: size, path: path)
                if wanted < blocks * blockSize {
                    (buffer.baseAddress! + wanted).initializeMemory(as: UInt8.self, repeating: 0, count: blocks * blockSize - wanted)
                }
                let err = io_channel_write_blk64(fs.pointee.io, run.physical + blk64_t(done), Int32(blocks), buffer.baseAddress)
                guard err == 0 else { throw .filesystem(Error("io_channel_write_blk64 \(path)", err)) }
                offset += UInt64(wanted)
                done += blocks
                try wrote(blocks * blockSize)
            }
        }
    }

    /// A sparse file's `size` bytes from `reader`, through ext2fs_file_write(3), leaving out the
    /// source's holes and any other blocks of zeros, which stay holes (as mke2fs -d leaves
    /// them). libext2fs then allocates and maps block by block: slower than `writeContents`, and
    /// only for files with holes.
    /// Wraps ext2fs_file_open(3), ext2fs_file_llseek(3), ext2fs_file_write(3) and
    /// ext2fs_file_close(3).
    private func writeSparseContents(of ino: ext2_ino_t, size: UInt64, path: String, reader: any TreeReader,
                                     buffer: UnsafeMutableRawBufferPointer) throws(PopulateError) {
        let blockSize = Int(fs.pointee.blocksize)
        var opened: ext2_file_t?
        var err = ext2fs_file_open(fs, ino, EXT2_FILE_WRITE, &opened)
        guard err == 0, let file = opened else { throw .filesystem(Error("ext2fs_file_open \(path)", err)) }
        var closed = false
        defer { if !closed { ext2fs_file_close(file) } }
        let chunk = buffer.count / blockSize * blockSize
        // `offset` stays on a block boundary: every chunk but the file's last is whole blocks.
        var offset: UInt64 = 0
        while offset < size {
            // The source's holes are skipped without reading them; the zeros between the block
            // boundary and where the data goes on are put back.
            let data: UInt64
            do { data = try reader.skipHole(at: offset) } catch { throw .source(error) }
            guard data < size else { break }
            let start = max(offset, data / UInt64(blockSize) * UInt64(blockSize))
            let lead = Int(data - start)
            let wanted = Int(min(UInt64(chunk), size - start))
            buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: lead)
            try fill(UnsafeMutableRawBufferPointer(rebasing: buffer[lead...]), count: wanted - lead, from: reader, at: data, of: size, path: path)
            // Runs of blocks that hold something, each written at its offset.
            var at = 0
            while at < wanted {
                let end = min(at + blockSize, wanted)
                if Self.allZero(UnsafeRawBufferPointer(rebasing: buffer[at..<end])) {
                    at = end
                    continue
                }
                var runEnd = end
                while runEnd < wanted, !Self.allZero(UnsafeRawBufferPointer(rebasing: buffer[runEnd..<min(runEnd + blockSize, wanted)])) {
                    runEnd = min(runEnd + blockSize, wanted)
                }
                err = ext2fs_file_llseek(file, start + UInt64(at), EXT2_SEEK_SET, nil)
                guard err == 0 else { throw .filesystem(Error("ext2fs_file_llseek \(path)", err)) }
                var written: UInt32 = 0
                err = ext2fs_file_write(file, buffer.baseAddress! + at, UInt32(runEnd - at), &written)
                guard err == 0, written == UInt32(runEnd - at) else { throw .filesystem(Error("ext2fs_file_write \(path)", err)) }
                try wrote(runEnd - at)
                at = runEnd
            }
            offset = start + UInt64(wanted)
        }
        closed = true
        err = ext2fs_file_close(file)
        guard err == 0 else { throw .filesystem(Error("ext2fs_file_close \(path)", err)) }
    }

    /// Whether every byte of `bytes` is zero.
    static func allZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        // Eight bytes at a time where the buffer allows, then the rest one by one.
        while index + 8 <= bytes.count {
            if bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) != 0 { return false }
            index += 8
        }
        while index < bytes.count {
            if bytes[index] != 0 { return false }
            index += 1
        }
        return true
    }

    /// Reads `count` bytes of the current file, which is at `offset` of `size`, into `buffer`.
    private func fill(_ buffer: UnsafeMutableRawBufferPointer, count wanted: Int, from reader: any TreeReader, at offset: UInt64,
                      of size: UInt64, path: String) throws(PopulateError) {
        var filled = 0
        while filled < wanted {
            let n: Int
            do { n = try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<wanted])) } catch { throw .source(error) }
            guard n > 0 else {
                throw .source(TreeSource.Error("read", on: path, message: "the contents ended at \(offset + UInt64(filled)) of \(size) bytes"))
            }
            filled += n
        }
    }

    /// Counts bytes written through the channel, which keeps them until a flush: one every
    /// `flushEvery` bytes bounds its memory.
    private func wrote(_ bytes: Int) throws(PopulateError) {
        unflushedBytes += bytes
        guard unflushedBytes >= Self.flushEvery else { return }
        let io = fs.pointee.io!
        let err = io.pointee.manager.pointee.flush(io)  // io_channel_flush, a macro
        guard err == 0 else { throw .filesystem(Error("io_channel_flush \(name)", err)) }
        unflushedBytes = 0
    }

    private func filesystem<T>(_ body: () throws(Error) -> T) throws(PopulateError) -> T {
        do { return try body() } catch { throw .filesystem(error) }
    }
}
