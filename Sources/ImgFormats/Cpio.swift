/// Writes a cpio archive in the "new ASCII" (newc, magic "070701") format, the one the Linux kernel
/// unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
///
/// Only what an initramfs needs: directories, regular files and symlinks (device nodes come from
/// devtmpfs). The output is deterministic: mtime 0, owner 0:0, inode numbers 1, 2, ... in the order
/// the entries were added, no hard links. Missing parent directories are added (mode 0755) before
/// their first child, because the kernel's unpacker creates no parents of its own.
///
/// Each entry is a 110-byte header of "070701" and 13 eight-digit hex fields (ino, mode, uid, gid,
/// nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize with its NUL, check),
/// the name and its NUL padded to a multiple of 4, then the data padded to a multiple of 4. The
/// archive ends with the entry "TRAILER!!!".
public struct CpioWriter: Sendable {
    /// Why an entry cannot be added. `description` is the message the user reads.
    public enum Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        /// Empty, "." or "..", a NUL byte, or longer than PATH_MAX.
        case invalidPath(String)
        /// The path was already added (a parent directory added implicitly counts).
        case duplicate(String)
        /// newc sizes are 32-bit.
        case tooLarge(String, size: Int)
        /// The path's parent exists in the archive but is not a directory.
        case parentNotDirectory(String)

        public var description: String {
            switch self {
            case .invalidPath(let p): return "\"\(p)\" cannot be a path in a cpio archive."
            case .duplicate(let p): return "\"\(p)\" is already in the cpio archive."
            case .tooLarge(let p, let size): return "\"\(p)\" is \(size) bytes, more than a newc cpio entry can hold (4 GiB - 1)."
            case .parentNotDirectory(let p): return "The parent of \"\(p)\" is in the cpio archive but is not a directory."
            }
        }
    }

    /// What an entry is: the file-type bits of its mode.
    public enum Kind: Sendable, Equatable {
        /// A directory (S_IFDIR), a regular file (S_IFREG) or a symbolic link (S_IFLNK, whose data is the target).
        case directory, file, symlink
        var typeBits: UInt32 {
            switch self {
            case .directory: return 0o040000
            case .file: return 0o100000
            case .symlink: return 0o120000
            }
        }
    }

    /// The archive so far, without its trailer.
    public private(set) var bytes: [UInt8] = []
    /// Path (without leading "/") to kind, for duplicate and parent checks.
    private var kinds: [String: Kind] = [:]
    private var nextInode: UInt32 = 1

    /// An empty archive.
    public init() {}

    /// The paths added so far, in archive order.
    public private(set) var paths: [String] = []

    /// Whether `path` (with or without a leading "/") is in the archive, implicit parent directories included.
    public func contains(_ path: String) -> Bool { kinds[Self.normalize(path) ?? ""] != nil }

    /// What is at `path`, if anything.
    public func kind(of path: String) -> Kind? { Self.normalize(path).flatMap { kinds[$0] } }

    /// Adds a directory. Adding one that exists already (explicitly or as a parent) is not an error
    /// when it is a directory: the first mode wins.
    public mutating func addDirectory(_ path: String, mode: UInt32 = 0o755) throws(Error) {
        guard let name = Self.normalize(path) else { throw .invalidPath(path) }
        if let existing = kinds[name] {
            if existing == .directory { return }
            throw .duplicate(path)
        }
        try addParents(of: name, original: path)
        append(name: name, kind: .directory, mode: mode, data: [])
    }

    /// Adds a regular file with `data` as its contents; `mode` is the permission bits (07777).
    public mutating func addFile(_ path: String, data: [UInt8], mode: UInt32 = 0o644) throws(Error) {
        try addEntry(path, kind: .file, mode: mode, data: data)
    }

    /// Adds a symbolic link to `target` (stored as the entry's data, without a NUL).
    public mutating func addSymlink(_ path: String, target: String) throws(Error) {
        guard !target.isEmpty, !target.utf8.contains(0) else { throw .invalidPath(target) }
        try addEntry(path, kind: .symlink, mode: 0o777, data: Array(target.utf8))
    }

    /// The complete archive: the entries and the trailer.
    public func finish() -> [UInt8] {
        var out = bytes
        Self.appendEntry(to: &out, name: "TRAILER!!!", inode: 0, mode: 0, nlink: 1, data: [])
        return out
    }

    // MARK: Internals

    private mutating func addEntry(_ path: String, kind: Kind, mode: UInt32, data: [UInt8]) throws(Error) {
        guard let name = Self.normalize(path) else { throw .invalidPath(path) }
        guard kinds[name] == nil else { throw .duplicate(path) }
        guard data.count <= Int(UInt32.max) else { throw .tooLarge(path, size: data.count) }
        try addParents(of: name, original: path)
        append(name: name, kind: kind, mode: mode, data: data)
    }

    private mutating func addParents(of name: String, original: String) throws(Error) {
        let components = name.split(separator: "/")
        var prefix = ""
        for component in components.dropLast() {
            prefix += prefix.isEmpty ? String(component) : "/" + component
            switch kinds[prefix] {
            case .directory: continue
            case .some: throw .parentNotDirectory(original)
            case nil: append(name: prefix, kind: .directory, mode: 0o755, data: [])
            }
        }
    }

    private mutating func append(name: String, kind: Kind, mode: UInt32, data: [UInt8]) {
        Self.appendEntry(to: &bytes, name: name, inode: nextInode, mode: kind.typeBits | (mode & 0o7777),
                         nlink: kind == .directory ? 2 : 1, data: data)
        nextInode += 1
        kinds[name] = kind
        paths.append(name)
    }

    /// "a/b" from "/a//b/", "./a/b"; nil for paths with no name, "." or ".." components, or a NUL.
    static func normalize(_ path: String) -> String? {
        guard !path.utf8.contains(0), path.utf8.count < 4096 else { return nil }
        let components = path.split(separator: "/").filter { $0 != "." }
        guard !components.isEmpty, !components.contains("..") else { return nil }
        return components.joined(separator: "/")
    }

    private static func appendEntry(to out: inout [UInt8], name: String, inode: UInt32, mode: UInt32,
                                    nlink: UInt32, data: [UInt8]) {
        let nameBytes = Array(name.utf8)
        out += Array("070701".utf8)
        let fields: [UInt32] = [
            inode, mode, 0, 0, nlink, 0,          // ino, mode, uid, gid, nlink, mtime
            UInt32(data.count), 0, 0, 0, 0,       // filesize, devmajor, devminor, rdevmajor, rdevminor
            UInt32(nameBytes.count + 1), 0,       // namesize (with the NUL), check
        ]
        for field in fields { appendHex8(field, to: &out) }
        out += nameBytes
        out.append(0)
        pad(&out)
        out += data
        pad(&out)
    }

    private static func appendHex8(_ value: UInt32, to out: inout [UInt8]) {
        let digits = Array("0123456789ABCDEF".utf8)
        for shift in stride(from: 28, through: 0, by: -4) {
            out.append(digits[Int((value >> UInt32(shift)) & 0xF)])
        }
    }

    /// Zero bytes up to the next multiple of 4 (of the archive offset, which is what newc aligns).
    private static func pad(_ out: inout [UInt8]) {
        while out.count % 4 != 0 { out.append(0) }
    }
}
