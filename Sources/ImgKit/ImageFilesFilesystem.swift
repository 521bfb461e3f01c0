import Glibc
import ImgFormats
import ImgSystem

extension ImageFiles {
    /// A filesystem `imgtool ls` and `imgtool cat` read, with one set of calls for all of them: the
    /// entries come as `Ext2Filesystem.Entry` values (name, kind, size, mode, inode, mtime, uid, gid)
    /// and path errors as `Ext2Filesystem.Error`, whatever the filesystem.
    ///
    /// - ext2/3/4: through libext2fs (`Ext2Filesystem`), exactly as before.
    /// - FAT12/16/32 (`FATFilesystem`): VFAT long names, looked up case-insensitively (long or 8.3
    ///   name) as Linux's vfat does. Attributes as `mount -t vfat` shows them with its defaults
    ///   (umask 022 for fmask and dmask, no `showexec`): directories 0755 and files 0755 too, files
    ///   with the read-only attribute 0555 (the attribute does not apply to directories, as without
    ///   `rodir`); owner and group 0. The mtime is the FAT date and time taken as UTC (FAT records
    ///   the writer's local time and no zone). The inode is the first cluster (0 for empty files and
    ///   for the FAT12/16 root), stable for as long as the file is not rewritten. A directory's size
    ///   is its clusters times the cluster size, as Linux reports it.
    /// - ISO 9660 (`ISO9660Filesystem`): Rock Ridge, else Joliet, else the primary names (see there).
    ///   The inode is PX's serial number, else the first data block.
    public enum Filesystem: Sendable {
        /// ext2, ext3 or ext4 through libext2fs.
        case ext(Ext2Filesystem)
        /// FAT12, FAT16 or FAT32.
        case fat(FATFilesystem)
        /// ISO 9660 with Rock Ridge or Joliet when present.
        case iso(ISO9660Filesystem)

        /// Why a call failed: a path problem in the same terms for every filesystem, or a
        /// filesystem too damaged to read there (`reason` is the reader's message).
        public enum Failure: Swift.Error, Sendable, Equatable {
            /// The path is missing, not a directory, a directory, a link loop, ...
            case path(Ext2Filesystem.Error)
            /// The FAT or ISO 9660 structures on the way are damaged or lie outside the volume.
            case damaged(String)
        }

        /// What the filesystem is, for messages: "ext2/3/4", "FAT32", "ISO 9660 (Rock Ridge)".
        public var name: String {
            switch self {
            case .ext: return "ext2/3/4"
            case .fat(let fat): return fat.kind.rawValue
            case .iso(let iso): return iso.names == .primary ? "ISO 9660" : "ISO 9660 (\(iso.names.rawValue))"
            }
        }

        /// What `path` is; a final symbolic link is followed unless `followSymlinks` is false (lstat).
        public func stat(_ path: String, followSymlinks: Bool = true) throws(Failure) -> Ext2Filesystem.Entry {
            switch self {
            case .ext(let fs):
                do { return try fs.stat(path, followSymlinks: followSymlinks) } catch { throw .path(error) }
            case .fat(let fat):
                let (entry, walked) = try Self.resolve(fat, path)
                return try Self.entry(fat, entry, name: Self.lastComponent(path), path: walked)
            case .iso(let iso):
                let file = try Self.iso { () throws(ISO9660Filesystem.Problem) in try iso.lookup(path, followFinal: followSymlinks) }
                return Self.entry(file, name: Self.lastComponent(path))
            }
        }

        /// The entries of the directory at `path` (links followed), without "." and "..", sorted by
        /// name (byte order).
        public func list(_ path: String) throws(Failure) -> [Ext2Filesystem.Entry] {
            try entries(path).map(\.file)
        }

        /// The target of the symbolic link at `path`. FAT has no links.
        public func readLink(_ path: String) throws(Failure) -> String {
            switch self {
            case .ext(let fs):
                do { return try fs.readLink(path) } catch { throw .path(error) }
            case .fat:
                _ = try stat(path)
                throw .path(.notASymlink(path))
            case .iso(let iso):
                let file = try Self.iso { () throws(ISO9660Filesystem.Problem) in try iso.lookup(path, followFinal: false) }
                guard let target = file.target else { throw .path(.notASymlink(path)) }
                return target
            }
        }

        /// Streams the regular file at `path` (links followed) to `chunk`, at most 64 KiB at a time;
        /// memory does not grow with the file. Throws a `Failure`, or what `chunk` threw (which stops the read).
        public func read(_ path: String, chunk: (UnsafeRawBufferPointer) throws -> Void) throws {
            var chunkError: (any Swift.Error)?
            func deliver(_ bytes: ArraySlice<UInt8>) -> Bool {
                do {
                    try bytes.withUnsafeBytes { try chunk($0) }
                    return true
                } catch {
                    chunkError = error
                    return false
                }
            }
            switch self {
            case .ext(let fs):
                do { try fs.read(path, chunk: chunk) } catch let error as Ext2Filesystem.Error { throw Failure.path(error) }
                return
            case .fat(let fat):
                let (entry, walked) = try Self.resolve(fat, path)
                guard !entry.isDirectory else { throw Failure.path(.isADirectory(path)) }
                do {
                    try fat.stream(entry, path: walked) { piece in
                        // One cluster at a time (up to 64 KiB, the largest FAT cluster).
                        var rest = piece
                        while !rest.isEmpty {
                            guard deliver(rest.prefix(Ext2Filesystem.chunkBytes)) else { return false }
                            rest = rest.dropFirst(Ext2Filesystem.chunkBytes)
                        }
                        return true
                    }
                } catch {
                    throw Self.fatFailure(error)
                }
            case .iso(let iso):
                let file = try Self.iso { () throws(ISO9660Filesystem.Problem) in try iso.lookup(path) }
                try Self.iso { () throws(ISO9660Filesystem.Problem) in try iso.stream(file, path: path, deliver) }
            }
            if let chunkError { throw chunkError }
        }

        /// `list`, with symbolic links' targets.
        func entries(_ path: String) throws(Failure) -> [Listing.Entry] {
            let entries: [Listing.Entry]
            switch self {
            case .ext(let fs):
                do {
                    entries = try fs.list(path).map { entry in
                        Listing.Entry(entry, target: entry.kind == .symlink ? try? fs.readLink(join(path, entry.name)) : nil)
                    }
                } catch { throw .path(error) }
                return entries
            case .fat(let fat):
                let (directory, walked) = try Self.resolve(fat, path)
                guard directory.isDirectory else { throw .path(.notADirectory(path, component: path)) }
                let children: [FATFilesystem.Entry]
                do { children = try fat.list(directory, path: walked) } catch { throw Self.fatFailure(error) }
                var result: [Listing.Entry] = []
                for child in children {
                    result.append(Listing.Entry(try Self.entry(fat, child, name: child.name, path: join(walked, child.name))))
                }
                entries = result
            case .iso(let iso):
                entries = try Self.iso { () throws(ISO9660Filesystem.Problem) in
                    let directory = try iso.lookup(path)
                    guard directory.kind == .directory else { throw .notADirectory(path, component: path) }
                    return try iso.list(directory, path: path).map { Listing.Entry(Self.entry($0, name: $0.name), target: $0.target) }
                }
            }
            return entries.sorted { $0.file.name.utf8.lexicographicallyPrecedes($1.file.name.utf8) }
        }

        // MARK: FAT

        /// Walks `path` from the root; "." and ".." are taken lexically (FAT has no links). Returns
        /// the entry and the path spelled with the names found on disk.
        private static func resolve(_ fat: FATFilesystem, _ path: String) throws(Failure) -> (FATFilesystem.Entry, String) {
            var parts: [Substring] = []
            for part in path.split(separator: "/") where part != "." {
                if part == ".." { _ = parts.popLast() } else { parts.append(part) }
            }
            guard parts.count <= FATFilesystem.maximumPathDepth else { throw .damaged(FATFilesystem.Problem.pathTooDeep(path).description) }
            var current = fat.root
            var stack: [FATFilesystem.Entry] = []
            for part in parts {
                let walked = "/" + stack.map(\.name).joined(separator: "/")
                guard current.isDirectory else { throw .path(.notADirectory(path, component: walked)) }
                let children: [FATFilesystem.Entry]
                do { children = try fat.list(current, path: walked) } catch { throw fatFailure(error) }
                let wanted = part.lowercased()
                guard let child = children.first(where: { $0.name.lowercased() == wanted || $0.shortName.lowercased() == wanted }) else {
                    throw .path(.notFound(path, missing: join(walked, String(part))))
                }
                stack.append(child)
                current = child
            }
            if path.hasSuffix("/"), !current.isDirectory { throw .path(.notADirectory(path, component: path)) }
            return (current, "/" + stack.map(\.name).joined(separator: "/"))
        }

        /// A FAT entry in `ls` terms (see the type's documentation for the choices).
        private static func entry(_ fat: FATFilesystem, _ entry: FATFilesystem.Entry, name: String, path: String) throws(Failure)
            -> Ext2Filesystem.Entry {
            if entry.isDirectory {
                let bytes: UInt64
                do { bytes = try fat.directoryBytes(entry, path: path) } catch { throw fatFailure(error) }
                let isRoot = entry.shortName == "/" && entry.firstCluster == fat.rootCluster
                return Ext2Filesystem.Entry(name: name, kind: .directory, size: bytes, mode: UInt16(S_IFDIR) | 0o755,
                                            inode: entry.firstCluster, modified: isRoot ? 0 : entry.modified, uid: 0, gid: 0)
            }
            return Ext2Filesystem.Entry(name: name, kind: .file, size: UInt64(entry.size),
                                        mode: UInt16(S_IFREG) | (entry.isReadOnly ? 0o555 : 0o755),
                                        inode: entry.firstCluster, modified: entry.modified, uid: 0, gid: 0)
        }

        private static func fatFailure(_ problem: FATFilesystem.Problem) -> Failure {
            switch problem {
            case .notFound(let p): return .path(.notFound(p, missing: p))
            case .notADirectory(let p): return .path(.notADirectory(p, component: p))
            case .isADirectory(let p): return .path(.isADirectory(p))
            default: return .damaged(problem.description)
            }
        }

        // MARK: ISO 9660

        private static func entry(_ file: ISO9660Filesystem.File, name: String) -> Ext2Filesystem.Entry {
            let kind: Ext2Filesystem.Entry.Kind
            switch file.kind {
            case .file: kind = .file
            case .directory: kind = .directory
            case .symlink: kind = .symlink
            case .other: kind = .other
            }
            return Ext2Filesystem.Entry(name: name, kind: kind, size: file.size, mode: UInt16(truncatingIfNeeded: file.mode),
                                        inode: file.inode, modified: file.modified, uid: file.uid, gid: file.gid)
        }

        /// Runs an ISO 9660 call, its problems in `Failure` terms.
        private static func iso<T>(_ body: () throws(ISO9660Filesystem.Problem) -> T) throws(Failure) -> T {
            do {
                return try body()
            } catch {
                switch error {
                case .notFound(let p, let missing): throw .path(.notFound(p, missing: missing))
                case .notADirectory(let p, let component): throw .path(.notADirectory(p, component: component))
                case .isADirectory(let p): throw .path(.isADirectory(p))
                case .notARegularFile(let p): throw .path(.notARegularFile(p))
                case .notASymlink(let p): throw .path(.notASymlink(p))
                case .symlinkLoop(let p): throw .path(.symlinkLoop(p))
                default: throw .damaged(error.description)
                }
            }
        }

        private static func lastComponent(_ path: String) -> String {
            path.split(separator: "/").last.map(String.init) ?? "/"
        }
    }

    static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}
