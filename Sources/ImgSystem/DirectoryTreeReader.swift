import CLinuxShim
import Glibc

/// Walks a directory depth first, parents before children, each directory's names sorted by
/// their bytes (readdir's order is the filesystem's, and differs between two copies of a tree).
/// Nothing is followed: entries are read with fstatat(AT_SYMLINK_NOFOLLOW), directories opened
/// with O_NOFOLLOW relative to their parent's descriptor.
final class DirectoryTreeReader: TreeReader {
    private struct Level {
        let directory: FileHandle
        /// Relative to the root; "" for the root.
        let path: String
        let names: [String]
        var index = 0
    }

    private let root: String
    private let callerIDs: (uid: UInt32, gid: UInt32)?
    private var levels: [Level] = []
    private var started = false
    /// The first path seen for each inode with more than one link: later ones are hard links.
    private var linked: [InodeKey: String] = [:]
    /// The current regular file: its directory's descriptor and name, and once read, its contents.
    private var current: (directory: Int32, name: String, path: String, size: UInt64)?
    private var contents: FileHandle?
    private var remaining: UInt64 = 0

    private struct InodeKey: Hashable {
        let device: UInt64, inode: UInt64
    }

    init(root: String, callerIDs: (uid: UInt32, gid: UInt32)?) throws(TreeSource.Error) {
        self.root = root
        self.callerIDs = callerIDs
    }

    func next() throws(TreeSource.Error) -> TreeEntry? {
        current = nil
        contents = nil
        do {
            guard started else {
                started = true
                let handle = try FileHandle(path: root, flags: O_RDONLY | O_DIRECTORY)
                let status = try fileStatus(fd: handle.fd, path: root)
                levels.append(Level(directory: handle, path: "", names: try sortedNames(handle, path: root)))
                return try entry(status, path: "", directory: handle.fd, name: ".")
            }
            while var level = levels.popLast() {
                guard level.index < level.names.count else { continue }
                let name = level.names[level.index]
                level.index += 1
                levels.append(level)
                let path = level.path.isEmpty ? name : level.path + "/" + name
                var status = stat()
                try systemCall("fstatat", on: display(path)) { fstatat(level.directory.fd, name, &status, AT_SYMLINK_NOFOLLOW) }
                let made = try entry(status, path: path, directory: level.directory.fd, name: name)
                if made.kind == .directory {
                    let fd = try systemCall("openat", on: display(path)) {
                        openat(level.directory.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    }
                    let handle = FileHandle(adopting: fd, path: display(path))
                    levels.append(Level(directory: handle, path: path, names: try sortedNames(handle, path: display(path))))
                } else if made.kind == .regularFile {
                    current = (level.directory.fd, name, path, made.size)
                }
                return made
            }
            return nil
        } catch {
            throw TreeSource.Error(converting: error)
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(TreeSource.Error) -> Int {
        guard let current else { return 0 }
        do {
            try openContents(current)
            guard remaining > 0, let contents else { return 0 }
            // No more than fstatat said: the entry's size is what the filesystem was told.
            let wanted = Int(min(UInt64(buffer.count), remaining))
            let n = try readFully(contents.fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<wanted]), path: contents.path)
            guard n == wanted else {
                throw TreeSource.Error("read", on: contents.path, message: "the file shrank while it was being read (\(current.size) bytes when listed)")
            }
            remaining -= UInt64(n)
            return n
        } catch {
            throw TreeSource.Error(converting: error)
        }
    }

    /// Wraps lseek(2) SEEK_DATA, which also moves the position read(2) goes on from. A filesystem
    /// that does not know its holes says the data goes on at once: the hole reads as zeros then.
    func skipHole(at offset: UInt64) throws(TreeSource.Error) -> UInt64 {
        guard let current else { return offset }
        do {
            try openContents(current)
            guard remaining > 0, let contents else { return offset }
            let data: UInt64
            do {
                data = UInt64(try systemCall("lseek(SEEK_DATA)", on: contents.path) { lseek(contents.fd, off_t(offset), IMGTOOL_SEEK_DATA) })
            } catch where error.errno == ENXIO {
                data = current.size  // only a hole is left
            }
            let at = min(max(data, offset), current.size)
            if at != data { _ = try systemCall("lseek", on: contents.path) { lseek(contents.fd, off_t(at), SEEK_SET) } }
            remaining = current.size - at
            return at
        } catch {
            throw TreeSource.Error(converting: error)
        }
    }

    /// Opens the current file on its first read. Wraps openat(2).
    private func openContents(_ current: (directory: Int32, name: String, path: String, size: UInt64)) throws(SystemError) {
        guard contents == nil else { return }
        let fd = try systemCall("openat", on: display(current.path)) {
            openat(current.directory, current.name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        }
        contents = FileHandle(adopting: fd, path: display(current.path))
        remaining = current.size
    }

    private func display(_ path: String) -> String { path.isEmpty ? root : root + "/" + path }

    /// The names in the directory open at `handle`, sorted by their bytes. Wraps fdopendir(3) on a
    /// duplicate (closedir closes the descriptor it was given) and readdir(3).
    private func sortedNames(_ handle: FileHandle, path: String) throws(TreeSource.Error) -> [String] {
        let copy: Int32
        do { copy = try systemCall("dup", on: path) { dup(handle.fd) } } catch { throw TreeSource.Error(error) }
        guard let dir = fdopendir(copy) else {
            let e = errno
            closeDescriptor(copy)
            throw TreeSource.Error("fdopendir", on: path, message: String(cString: strerror(e)), errno: e)
        }
        defer { _ = closedir(dir) }
        var names: [[UInt8]] = []
        while true {
            errno = 0
            guard let e = readdir(dir) else {
                if errno != 0 { throw TreeSource.Error("readdir", on: path, message: String(cString: strerror(errno)), errno: errno) }
                break
            }
            let name = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name != [UInt8(ascii: ".")] && name != [UInt8(ascii: "."), UInt8(ascii: ".")] { names.append(name) }
        }
        names.sort { $0.lexicographicallyPrecedes($1) }
        var result: [String] = []
        for name in names {
            guard let valid = String(validating: name, as: UTF8.self) else {
                throw TreeSource.Error("readdir", on: path, message: "a name is not valid UTF-8 (\(String(decoding: name, as: UTF8.self))); rename it")
            }
            result.append(valid)
        }
        return result
    }

    /// The entry for what `status` describes, `name` in the directory open at `directory`.
    private func entry(_ status: stat, path: String, directory: Int32, name: String) throws(SystemError) -> TreeEntry {
        var uid = status.st_uid, gid = status.st_gid
        if let callerIDs {
            if uid == callerIDs.uid { uid = 0 }
            if gid == callerIDs.gid { gid = 0 }
        }
        var entry = TreeEntry(path: path, kind: .regularFile, permissions: UInt16(status.st_mode & 0o7777), uid: uid, gid: gid,
                              mtime: Int64(status.st_mtim.tv_sec), xattrs: try extendedAttributes(display(path)))
        let (major, minor) = deviceNumbers(UInt64(status.st_rdev))
        switch status.st_mode & S_IFMT {
        case S_IFDIR: entry.kind = .directory
        case S_IFLNK:
            var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = try systemCall("readlinkat", on: display(path)) { readlinkat(directory, name, &buffer, buffer.count) }
            entry.kind = .symbolicLink(target: String(decoding: buffer[..<n], as: UTF8.self))
        case S_IFCHR: entry.kind = .characterDevice(major: major, minor: minor)
        case S_IFBLK: entry.kind = .blockDevice(major: major, minor: minor)
        case S_IFIFO: entry.kind = .fifo
        case S_IFSOCK: entry.kind = .socket
        default:
            entry.size = UInt64(status.st_size)
            // Fewer blocks than the size needs: holes (or a filesystem that compresses or packs
            // tails; either way, blocks of zeros are all the copy leaves out).
            let allocated = UInt64(max(0, status.st_blocks)) * 512
            if allocated < entry.size { entry.sparseDataBytes = allocated }
        }
        if status.st_nlink > 1, entry.kind != .directory {
            let key = InodeKey(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
            if let first = linked[key] {
                entry.kind = .hardLink(to: first)
                entry.size = 0
                entry.sparseDataBytes = nil
            } else {
                linked[key] = path
            }
        }
        return entry
    }

    /// The extended attributes of `path` itself (a link's, not its target's), sorted by name; none
    /// where the filesystem has none. Wraps llistxattr(2) and lgetxattr(2).
    private func extendedAttributes(_ path: String) throws(SystemError) -> [TreeEntry.ExtendedAttribute] {
        var size = llistxattr(path, nil, 0)
        if size < 0, errno == ENOTSUP { return [] }
        size = try systemCall("llistxattr", on: path) { llistxattr(path, nil, 0) }
        guard size > 0 else { return [] }
        var list = [CChar](repeating: 0, count: size)
        size = try systemCall("llistxattr", on: path) { llistxattr(path, &list, list.count) }
        let names = list[..<size].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }.sorted {
            Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8))
        }
        var attributes: [TreeEntry.ExtendedAttribute] = []
        for name in names {
            let length = try systemCall("lgetxattr \(name)", on: path) { lgetxattr(path, name, nil, 0) }
            var value = [UInt8](repeating: 0, count: length)
            let n = try systemCall("lgetxattr \(name)", on: path) { lgetxattr(path, name, &value, value.count) }
            attributes.append(.init(name: name, value: Array(value[..<n])))
        }
        return attributes
    }
}
