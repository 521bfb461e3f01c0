import CArchive
import Glibc

/// Reads a tar archive (ustar, pax, GNU; plain or gzip, xz, zstd, bzip2) through libarchive, one
/// entry at a time, contents streamed. Paths are made relative ("./a", "/a" and "a" are one entry);
/// a ".." component is refused. Directories an entry needs and the archive left out come first,
/// root's, mode 0755, at `implicitDirectoryTime`.
final class ArchiveTreeReader: TreeReader {
    private let archive: OpaquePointer
    private let path: String
    private let implicitDirectoryTime: Int64
    /// Entries to return before reading on: the implicit directories, then the entry that needs them.
    private var pending: [TreeEntry] = []
    private var directories: Set<String> = [""]
    /// The current regular file's contents: where the next read starts, its size, and the block
    /// libarchive gave last (with the offset it belongs at: a sparse file's holes lie between).
    private var dataEntry: (path: String, size: UInt64)?
    private var position: UInt64 = 0
    private var block: (bytes: UnsafeRawPointer, count: Int, offset: UInt64, used: Int)?
    private var dataEnded = false

    /// Opens `path` for reading. Wraps archive_read_new(3), archive_read_support_filter_*(3),
    /// archive_read_support_format_tar(3) and archive_read_open_filename(3).
    init(path: String, implicitDirectoryTime: Int64) throws(TreeSource.Error) {
        guard let archive = archive_read_new() else {
            throw TreeSource.Error("archive_read_new", on: path, message: "out of memory", errno: ENOMEM)
        }
        self.archive = archive
        self.path = path
        self.implicitDirectoryTime = implicitDirectoryTime
        // Only what a root filesystem comes as: `_all` would link every format into the static CLI.
        // A filter missing from libarchive's build runs as an external program, with ARCHIVE_WARN.
        _ = archive_read_support_filter_none(archive)
        _ = archive_read_support_filter_gzip(archive)
        _ = archive_read_support_filter_xz(archive)
        _ = archive_read_support_filter_zstd(archive)
        _ = archive_read_support_filter_bzip2(archive)
        _ = archive_read_support_format_tar(archive)  // ustar, pax and GNU tar: one reader
        _ = archive_read_support_format_gnutar(archive)
        guard archive_read_open_filename(archive, path, 1 << 16) == ARCHIVE_OK else {
            throw failure("archive_read_open_filename", on: path)
        }
    }

    deinit { archive_read_free(archive) }

    func next() throws(TreeSource.Error) -> TreeEntry? {
        if !pending.isEmpty { return pending.removeFirst() }
        dataEntry = nil
        block = nil
        var header: OpaquePointer?
        let r = archive_read_next_header(archive, &header)
        if r == ARCHIVE_EOF { return nil }
        guard r == ARCHIVE_OK || r == ARCHIVE_WARN, let header else { throw failure("archive_read_next_header", on: path) }
        let raw = Self.string(archive_entry_pathname_utf8(header)) ?? Self.string(archive_entry_pathname(header)) ?? ""
        let name = try normalise(raw, entry: raw)
        var entry = TreeEntry(path: name, kind: .regularFile, permissions: UInt16(archive_entry_perm(header) & 0o7777),
                              uid: UInt32(truncatingIfNeeded: archive_entry_uid(header)),
                              gid: UInt32(truncatingIfNeeded: archive_entry_gid(header)),
                              mtime: Int64(archive_entry_mtime(header)))
        var count = archive_entry_xattr_reset(header)
        while count > 0 {
            count -= 1
            var key: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            guard archive_entry_xattr_next(header, &key, &value, &size) == ARCHIVE_OK, let key else { break }
            let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
            entry.xattrs.append(.init(name: String(cString: key), value: bytes))
        }
        let (major, minor) = (UInt32(truncatingIfNeeded: archive_entry_rdevmajor(header)),
                              UInt32(truncatingIfNeeded: archive_entry_rdevminor(header)))
        if let target = Self.string(archive_entry_hardlink_utf8(header)) ?? Self.string(archive_entry_hardlink(header)) {
            entry.kind = .hardLink(to: try normalise(target, entry: raw))
        } else {
            switch mode_t(archive_entry_filetype(header)) {
            case S_IFDIR: entry.kind = .directory
            case S_IFLNK:
                let target = Self.string(archive_entry_symlink_utf8(header)) ?? Self.string(archive_entry_symlink(header)) ?? ""
                entry.kind = .symbolicLink(target: target)
            case S_IFCHR: entry.kind = .characterDevice(major: major, minor: minor)
            case S_IFBLK: entry.kind = .blockDevice(major: major, minor: minor)
            case S_IFIFO: entry.kind = .fifo
            case S_IFSOCK: entry.kind = .socket
            case S_IFREG:
                entry.size = UInt64(max(0, archive_entry_size(header)))
                entry.sparseDataBytes = Self.sparseDataBytes(header, size: entry.size)
                dataEntry = (name, entry.size)
                position = 0
                dataEnded = false
            default:
                throw TreeSource.Error("archive_read_next_header", on: "\(path): \(raw)",
                                       message: "an entry of unknown type \(archive_entry_filetype(header))")
            }
        }
        // Parents the archive has not given yet, outermost first.
        var parent = entry.parentAndName.parent
        var missing: [String] = []
        while !directories.contains(parent) {
            missing.append(parent)
            parent = TreeEntry(path: parent, kind: .directory, permissions: 0).parentAndName.parent
        }
        for directory in missing.reversed() {
            directories.insert(directory)
            pending.append(TreeEntry(path: directory, kind: .directory, permissions: 0o755, mtime: implicitDirectoryTime))
        }
        if entry.kind == .directory { directories.insert(name) }
        pending.append(entry)
        return pending.removeFirst()
    }

    /// Wraps archive_read_data_block(3); zeros where a sparse file has holes.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(TreeSource.Error) -> Int {
        guard pending.isEmpty, let dataEntry, position < dataEntry.size, buffer.count > 0 else { return 0 }
        while true {
            if let block {
                let at = block.offset + UInt64(block.used)
                if position < at {  // a hole before the block
                    let n = Int(min(UInt64(buffer.count), at - position, dataEntry.size - position))
                    buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: n)
                    position += UInt64(n)
                    return n
                }
                if block.used < block.count {
                    let n = min(buffer.count, block.count - block.used, Int(dataEntry.size - position))
                    guard n > 0 else { break }
                    buffer.baseAddress!.copyMemory(from: block.bytes + block.used, byteCount: n)
                    self.block!.used += n
                    position += UInt64(n)
                    return n
                }
            }
            if dataEnded { break }
            try nextBlock(of: dataEntry.path)
        }
        // A hole at the end, or an archive that ended early.
        guard dataEnded else { return 0 }
        if position < dataEntry.size {
            let n = Int(min(UInt64(buffer.count), dataEntry.size - position))
            buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: n)
            position += UInt64(n)
            return n
        }
        return 0
    }

    /// The next block libarchive has of the current file, or `dataEnded`. Wraps
    /// archive_read_data_block(3).
    private func nextBlock(of entry: String) throws(TreeSource.Error) {
        var bytes: UnsafeRawPointer?
        var count = 0
        var offset: la_int64_t = 0
        let r = archive_read_data_block(archive, &bytes, &count, &offset)
        if r == ARCHIVE_EOF {
            dataEnded = true
            block = nil
            return
        }
        guard r == ARCHIVE_OK || r == ARCHIVE_WARN else { throw failure("archive_read_data_block", on: "\(path): \(entry)") }
        block = bytes.map { ($0, count, UInt64(max(0, offset)), 0) }
    }

    /// The next block's offset, where libarchive's sparse map says the data goes on.
    func skipHole(at offset: UInt64) throws(TreeSource.Error) -> UInt64 {
        guard pending.isEmpty, let dataEntry, position == offset else { return offset }
        while position < dataEntry.size {
            if let block, block.used < block.count {
                position = max(position, min(block.offset + UInt64(block.used), dataEntry.size))
                return position
            }
            if dataEnded {
                position = dataEntry.size
                break
            }
            try nextBlock(of: dataEntry.path)
        }
        return position
    }

    /// `raw` relative and without "." components; an entry that would climb out with ".." is refused.
    private func normalise(_ raw: String, entry: String) throws(TreeSource.Error) -> String {
        var components: [Substring] = []
        for component in raw.split(separator: "/", omittingEmptySubsequences: true) {
            if component == "." { continue }
            if component == ".." {
                throw TreeSource.Error("path", on: "\(path): \(entry)",
                                       message: "the entry's path climbs out of the tree with \"..\"; imgtool writes nothing outside the target directory")
            }
            components.append(component)
        }
        return components.joined(separator: "/")
    }

    private func failure(_ operation: String, on what: String) -> TreeSource.Error {
        let code = archive_errno(archive)
        let message = Self.string(archive_error_string(archive)) ?? "libarchive failed"
        return TreeSource.Error(operation, on: what, message: message, errno: code == 0 ? nil : code)
    }

    /// The data bytes of a sparse member (GNU or pax sparse), from the map libarchive read with its
    /// header; nil for a member without holes. Wraps archive_entry_sparse_reset(3) and
    /// archive_entry_sparse_next(3).
    private static func sparseDataBytes(_ header: OpaquePointer, size: UInt64) -> UInt64? {
        guard archive_entry_sparse_reset(header) > 0 else { return nil }
        var data: UInt64 = 0
        var offset: la_int64_t = 0, length: la_int64_t = 0
        while archive_entry_sparse_next(header, &offset, &length) == ARCHIVE_OK {
            data += UInt64(max(0, length))
        }
        return data < size ? data : nil
    }

    private static func string(_ pointer: UnsafePointer<CChar>?) -> String? {
        pointer.map { String(cString: $0) }
    }
}
