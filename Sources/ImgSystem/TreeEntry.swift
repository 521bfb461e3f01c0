/// One entry of a tree a filesystem is filled from (`TreeSource`): what it is, its attributes and
/// its place, relative to the tree's top. The top itself is the entry with an empty path.
public struct TreeEntry: Sendable, Equatable {
    /// What the entry is.
    public enum Kind: Sendable, Equatable {
        /// A directory.
        case directory
        /// A regular file, whose contents the reader streams.
        case regularFile
        /// A symbolic link and what it points to.
        case symbolicLink(target: String)
        /// Another name for the earlier entry at `path` (relative, as `TreeEntry.path`).
        case hardLink(to: String)
        /// A character device node.
        case characterDevice(major: UInt32, minor: UInt32)
        /// A block device node.
        case blockDevice(major: UInt32, minor: UInt32)
        /// A named pipe.
        case fifo
        /// A socket.
        case socket
    }

    /// An extended attribute, with its namespace prefix ("user.comment", "security.capability").
    public struct ExtendedAttribute: Sendable, Equatable {
        /// The attribute's name with its namespace.
        public var name: String
        /// Its value.
        public var value: [UInt8]
        /// An attribute.
        public init(name: String, value: [UInt8]) {
            self.name = name
            self.value = value
        }
    }

    /// Relative to the tree's top, components joined by "/", no leading "/" or "./"; "" is the top.
    public var path: String
    /// What the entry is.
    public var kind: Kind
    /// Permission bits with setuid, setgid and sticky (mode & 0o7777).
    public var permissions: UInt16
    /// The owner's user id.
    public var uid: UInt32
    /// The owner's group id.
    public var gid: UInt32
    /// Modification time, seconds since the epoch.
    public var mtime: Int64
    /// In the order the source gives them (a directory's sorted by name, for a stable result).
    public var xattrs: [ExtendedAttribute]
    /// A regular file's length in bytes; 0 for everything else.
    public var size: UInt64
    /// For a regular file with holes, the bytes of it that are data; nil for a file that is all
    /// data. The filesystem keeps its blocks of zeros as holes.
    public var sparseDataBytes: UInt64?

    /// An entry; ids, time, attributes and size default to nothing.
    public init(path: String, kind: Kind, permissions: UInt16, uid: UInt32 = 0, gid: UInt32 = 0, mtime: Int64 = 0,
                xattrs: [ExtendedAttribute] = [], size: UInt64 = 0, sparseDataBytes: UInt64? = nil) {
        self.path = path
        self.kind = kind
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.xattrs = xattrs
        self.size = size
        self.sparseDataBytes = sparseDataBytes
    }

    /// The directory above (relative, "" for the top's children) and the last component.
    var parentAndName: (parent: String, name: String) {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return ("", path) }
        return (String(path[..<slash]), String(path[path.utf8.index(after: slash)...]))
    }
}

/// What a tree needs of a filesystem, for the caller to size the smallest one that holds it
/// (`TreeSource.measure`). Rounded as ext2/3/4 stores it, before metadata overheads (inode tables,
/// extent blocks, directory blocks beyond what `directoryEntryBytes` suggests, the journal).
public struct TreeSummary: Sendable, Equatable {
    /// Entries that take an inode: everything but hard links and the top (the filesystem's root
    /// or the target directory already has one).
    public var inodes: UInt64 = 0
    /// Directories below the top.
    public var directories: UInt64 = 0
    /// Regular files (hard links not counted).
    public var regularFiles: UInt64 = 0
    /// Regular files' sizes (a sparse file's data), each rounded up to the block size.
    public var dataBytes: UInt64 = 0
    /// Targets of symbolic links too long for the inode (60 bytes and more), each rounded up to
    /// the block size: they take a block each.
    public var longSymlinkBytes: UInt64 = 0
    /// Names and values of extended attributes, as given (what does not fit in the inode takes a
    /// block per inode).
    public var xattrBytes: UInt64 = 0
    /// Directory entries as ext2 records them (8 bytes and the name, rounded up to 4), "." and ".."
    /// included.
    public var directoryEntryBytes: UInt64 = 0
    /// The largest mtime, for a caller choosing a clamp.
    public var latestMtime: Int64 = .min

    /// An empty summary.
    public init() {}

    /// Adds `entry`, with data rounded to `blockSize`.
    mutating func add(_ entry: TreeEntry, blockSize: UInt64) {
        let round = { (n: UInt64) in (n + blockSize - 1) / blockSize * blockSize }
        latestMtime = max(latestMtime, entry.mtime)
        let name = UInt64(entry.parentAndName.name.utf8.count)
        if !entry.path.isEmpty { directoryEntryBytes += (8 + name + 3) / 4 * 4 }
        xattrBytes += entry.xattrs.reduce(0) { $0 + UInt64($1.name.utf8.count + $1.value.count) }
        if case .hardLink = entry.kind { return }
        if !entry.path.isEmpty { inodes += 1 }
        switch entry.kind {
        case .directory:
            directoryEntryBytes += 24  // "." and ".."
            if !entry.path.isEmpty { directories += 1 }
        case .regularFile:
            regularFiles += 1
            dataBytes += round(entry.sparseDataBytes ?? entry.size)
        case .symbolicLink(let target) where target.utf8.count >= 60:
            longSymlinkBytes += round(UInt64(target.utf8.count))
        default:
            break
        }
    }
}
