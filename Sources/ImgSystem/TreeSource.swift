import Glibc

/// Where a filesystem's contents come from: a directory on this machine, walked without following
/// symbolic links, or a tar archive (plain, gzip, xz, zstd or bzip2), read through libarchive.
/// Either gives the same `TreeEntry` values, parents before children, in an order that depends on
/// the input alone: a directory's names sorted by their bytes, an archive's entries as recorded.
public struct TreeSource: Sendable {
    /// Why reading a tree failed, as what was attempted on what.
    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        /// What was attempted ("openat", "archive_read_next_header", "path").
        public let operation: String
        /// What it was attempted on: the source, or an entry inside it ("rootfs.tar: etc/passwd").
        public let path: String
        /// What went wrong.
        public let message: String
        /// The errno value, when a system call failed.
        public let errno: Int32?
        public var description: String { "\(operation) on \(path): \(message)" }

        init(_ operation: String, on path: String, message: String, errno: Int32? = nil) {
            self.operation = operation
            self.path = path
            self.message = message
            self.errno = errno
        }

        /// A TreeSource.Error as it is, a SystemError as what was attempted on what.
        init(converting error: any Swift.Error) {
            switch error {
            case let error as TreeSource.Error: self = error
            case let error as SystemError: self.init(error)
            default: self.init("read", on: "", message: "\(error)")
            }
        }

        init(_ error: SystemError) {
            self.init(error.operation, on: error.path, message: String(cString: strerror(error.errno)), errno: error.errno)
        }
    }

    /// What kind of source `path` is.
    public enum Format: Sendable, Equatable {
        /// A directory, walked.
        case directory
        /// A tar archive, read through libarchive.
        case archive
    }

    /// Whose ids a directory's files are stored with.
    public enum Ownership: Sendable, Equatable {
        /// Files owned by the calling user (its uid, its gid) are stored as root's: a tree an
        /// unprivileged user built is meant to be root's in the image. Other ids are kept.
        case callerAsRoot
        /// The ids as the directory records them.
        case asRecorded
    }

    /// The path as given.
    public let path: String
    /// Directory or archive.
    public let format: Format
    /// For a directory source; an archive's owners are always kept as recorded.
    public let ownership: Ownership
    /// The mtime of the directories an archive leaves out but its entries need (a caller passes
    /// its clamp, SOURCE_DATE_EPOCH). Such directories are root's, mode 0755.
    public let implicitDirectoryTime: Int64

    /// A source at `path`: a directory is walked, a regular file is read as a tar archive, anything
    /// else is refused. `path` itself may be a symbolic link; nothing under it is followed. Wraps
    /// stat(2).
    public init(path: String, ownership: Ownership = .callerAsRoot, implicitDirectoryTime: Int64 = 0) throws(Error) {
        let status: stat
        do {
            status = try fileStatus(path)
        } catch {
            let reason = error.errno == ENOENT ? "there is no such file or directory to fill the filesystem from"
                : String(cString: strerror(error.errno))
            throw Error("stat", on: path, message: reason, errno: error.errno)
        }
        switch status.st_mode & S_IFMT {
        case S_IFDIR: format = .directory
        case S_IFREG: format = .archive
        default:
            throw Error("stat", on: path, message: "neither a directory nor a tar archive (a regular file); a filesystem is filled from one of those")
        }
        self.path = path
        self.ownership = ownership
        self.implicitDirectoryTime = implicitDirectoryTime
    }

    /// A reader of the entries from the start. An archive is decompressed again by each reader.
    public func makeReader() throws(Error) -> any TreeReader {
        switch format {
        case .directory:
            let ids: (uid: UInt32, gid: UInt32)? = ownership == .callerAsRoot ? (getuid(), getgid()) : nil
            return try DirectoryTreeReader(root: path, callerIDs: ids)
        case .archive:
            return try ArchiveTreeReader(path: path, implicitDirectoryTime: implicitDirectoryTime)
        }
    }

    /// What the tree needs of a filesystem with `blockSize`-byte blocks. Reads every entry but no
    /// contents: an archive is decompressed to its end once here and once more when filled in.
    public func measure(blockSize: Int) throws(Error) -> TreeSummary {
        precondition(blockSize > 0)
        let reader = try makeReader()
        var summary = TreeSummary()
        while let entry = try reader.next() { summary.add(entry, blockSize: UInt64(blockSize)) }
        return summary
    }
}

/// Entries of a tree one at a time, and the contents of the current regular file.
/// Not Sendable: one owner, one thread.
public protocol TreeReader: AnyObject {
    /// The next entry, or nil after the last.
    func next() throws(TreeSource.Error) -> TreeEntry?
    /// Reads the current entry's contents into `buffer`, from where the last read stopped;
    /// returns the count, 0 at its end. Only for a regular file, only until `next()` is called.
    /// Holes of a sparse file read as zeros.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(TreeSource.Error) -> Int
    /// Moves past the hole, if any, that starts where the last read stopped (`offset` bytes into
    /// the current file); returns where the data goes on, the file's size after a final hole.
    /// Only for a regular file whose entry has `sparseDataBytes`, only until `next()`.
    func skipHole(at offset: UInt64) throws(TreeSource.Error) -> UInt64
}

extension TreeReader {
    /// For a reader that does not know its holes: the data goes on where the last read stopped,
    /// and the holes read as zeros.
    public func skipHole(at offset: UInt64) throws(TreeSource.Error) -> UInt64 { offset }
}

/// Splits a dev_t as glibc's major(3) and minor(3) do (macros Swift does not import).
func deviceNumbers(_ dev: UInt64) -> (major: UInt32, minor: UInt32) {
    (UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))),
     UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))))
}
