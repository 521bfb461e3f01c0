import Glibc
import ImgFormats
import ImgSystem
import Logging

// `imgtool ls` and `imgtool cat` as library calls: values and a byte stream, which is what an
// isolated VM can hand back (an `Opened` filesystem cannot leave the VM).
extension ImageFiles {
    /// What `list` found at a path: a directory's entries, or the one entry a path that is not a
    /// directory names (with the path as its name).
    public struct Listing: Sendable, Equatable {
        /// One entry, and where a symbolic link points.
        public struct Entry: Sendable, Equatable {
            /// The inode's fields, as the directory lists them.
            public var file: Ext2Filesystem.Entry
            /// A symbolic link's target; nil for anything else, and for a link that cannot be read.
            public var target: String?

            /// An entry, for tests and reports.
            public init(_ file: Ext2Filesystem.Entry, target: String? = nil) {
                self.file = file
                self.target = target
            }
        }

        /// The path listed.
        public var path: String
        /// True when `path` is a directory and `entries` are its entries.
        public var isDirectory: Bool
        /// The entries, in directory order.
        public var entries: [Entry]

        /// A listing, for tests and reports.
        public init(path: String, isDirectory: Bool, entries: [Entry]) {
            self.path = path
            self.isDirectory = isDirectory
            self.entries = entries
        }
    }

    /// Lists `path` in the filesystem `options` choose: its entries if it is a directory (links
    /// followed inside the image), else the entry itself. Symbolic links carry their targets.
    public static func list(_ options: Options, path: String,
                            logger: Logger = Logger(label: "imgtool.files")) throws(Error) -> Listing {
        if let isolation = options.isolation {
            return try IsolatedRequest(.list(local(options), path: path), logLevel: logger.logLevel)
                .send(through: isolation, logger: logger, errors: Error.self, decode: Listing.init(json:))
        }
        let opened = try run(options)
        let fs = opened.filesystem
        do {
            if try fs.stat(path).kind == .directory {
                return Listing(path: path, isDirectory: true, entries: try fs.entries(path))
            }
            let entry = try fs.stat(path, followSymlinks: false)
            let named = Ext2Filesystem.Entry(name: path, kind: entry.kind, size: entry.size, mode: entry.mode,
                                             inode: entry.inode, modified: entry.modified, uid: entry.uid, gid: entry.gid)
            return Listing(path: path, isDirectory: false,
                           entries: [Listing.Entry(named, target: entry.kind == .symlink ? try? fs.readLink(path) : nil)])
        } catch {
            throw failure(error, opened, options)
        }
    }

    /// A filesystem failure as the error `list` and `read` throw.
    private static func failure(_ failure: Filesystem.Failure, _ opened: Opened, _ options: Options) -> Error {
        switch failure {
        case .path(let error): return .file(error, image: options.image, partition: opened.location.partition)
        case .damaged(let reason):
            return .unreadableFilesystem(path: options.image, partition: opened.location.partition,
                                         filesystem: opened.filesystem.name, reason: reason)
        }
    }

    /// Streams the file at `path` (links followed inside the image) to `output`, in chunks of at
    /// most 64 KiB, so files of any size work. An error from `output` stops the copy and comes
    /// back as `Error.output`.
    public static func read(_ options: Options, path: String, logger: Logger = Logger(label: "imgtool.files"),
                            to output: (UnsafeRawBufferPointer) throws(SystemError) -> Void) throws(Error) {
        if let isolation = options.isolation {
            // The bytes arrive in the response's data frames, in order, before its end.
            let request = IsolatedRequest(.read(local(options), path: path), logLevel: logger.logLevel)
            let _: Bool = try request.send(through: isolation, logger: logger, errors: Error.self,
                                           decode: { $0.boolValue }) { chunk throws(Error) in
                var failure: SystemError?
                chunk.withUnsafeBytes { bytes in
                    do throws(SystemError) { try output(bytes) } catch { failure = error }
                }
                if let failure { throw .output(path: path, failure) }
            }
            return
        }
        let opened = try run(options)
        do {
            try opened.filesystem.read(path) { chunk in try output(chunk) }
        } catch let error as Filesystem.Failure {
            throw failure(error, opened, options)
        } catch let error as SystemError {
            throw .output(path: path, error)
        } catch {
            // Unreachable: the reader throws its own errors and `output`'s, which are SystemErrors.
            throw .output(path: path, SystemError("write", on: path, errno: EIO))
        }
    }

    /// The options the VM's imgtool runs with: the same, minus the isolation it is inside.
    private static func local(_ options: Options) -> Options {
        Options(image: options.image, partition: options.partition, logicalVolume: options.logicalVolume)
    }
}

extension ImageFiles.Listing.Entry: JSONRepresentable {
    /// `imgtool ls --json`'s element: the inode's fields and a link's target (null for others).
    public var json: JSONValue {
        .object([
            "name": .string(file.name), "kind": .string(file.kind.rawValue), "size": .uint(file.size),
            "mode": .uint(UInt64(file.mode)), "uid": .uint(UInt64(file.uid)), "gid": .uint(UInt64(file.gid)),
            "inode": .uint(UInt64(file.inode)), "modified": .int(file.modified),  // seconds since the epoch
            "target": JSONValue(target),
        ])
    }

    /// Reads back what `json` wrote; nil if it is not such an entry.
    public init?(json: JSONValue) {
        guard let name = json["name"]?.stringValue,
              let kind = json["kind"]?.stringValue.flatMap(Ext2Filesystem.Entry.Kind.init(rawValue:)),
              let size = json["size"]?.uint64Value,
              let mode = json["mode"]?.uint64Value.flatMap({ UInt16(exactly: $0) }),
              let uid = json["uid"]?.uint64Value.flatMap({ UInt32(exactly: $0) }),
              let gid = json["gid"]?.uint64Value.flatMap({ UInt32(exactly: $0) }),
              let inode = json["inode"]?.uint64Value.flatMap({ UInt32(exactly: $0) }),
              let modified = json["modified"]?.int64Value,
              let target = optional(json["target"], \.stringValue) else { return nil }
        self.init(Ext2Filesystem.Entry(name: name, kind: kind, size: size, mode: mode, inode: inode, modified: modified,
                                       uid: uid, gid: gid),
                  target: target)
    }
}

extension ImageFiles.Listing: JSONDocument {
    /// The path, whether it is a directory, and the entries as `ls --json` prints them.
    public var json: JSONValue {
        .object(["path": .string(path), "directory": .bool(isDirectory), "entries": .array(entries.map(\.json))])
    }

    public init?(json: JSONValue) {
        guard let path = json["path"]?.stringValue, let isDirectory = json["directory"]?.boolValue,
              let entries = decodeAll(json["entries"], Entry.init(json:)) else { return nil }
        self.init(path: path, isDirectory: isDirectory, entries: entries)
    }
}
