/// An ISO 9660 filesystem read the way Linux's isofs shows it by default, for listing and reading
/// files: Rock Ridge (RRIP over SUSP) when the root directory carries an SP entry, else the Joliet
/// tree of a supplementary volume descriptor, else the primary tree with isofs's `map=normal` names.
///
/// - Rock Ridge: PX (mode, uid, gid, serial), NM (alternate names, continued over several entries),
///   SL (symbolic links, component flags), TF (modification time, short and long forms), CE
///   (continuation areas, at most `maximumContinuationAreas` per record), CL/RE (relocated deep
///   directories appear where they belong; their placeholders in the relocation directory do not).
/// - Joliet: UCS-2 big-endian names (escape sequences %/@, %/C, %/E), ";1" and trailing dots dropped.
/// - Primary names as `map=normal`: lower-cased, a trailing ";1" (or ".;1") dropped, other ";" as ".".
/// - Multi-extent files (file flag bit 7): the records of one file are joined in order.
/// - Associated files (file flag bit 2) are left out, as isofs leaves them out.
///
/// Without Rock Ridge, modes are what isofs gives without `mode=`/`dmode=`: 0555 for directories
/// and for files alike (r-x: "the disc could be shared with DOS machines, so virtually anything
/// could be a valid executable"), owner and group 0.
///
/// Every block, length and offset read from the volume is checked against the volume's bytes, and
/// directories, continuation chains, paths and link chains have hard bounds, so hostile input yields
/// a `Problem`, never a trap, an unbounded loop or an unbounded allocation.
public struct ISO9660Filesystem: Sendable {
    /// Which of the volume's directory trees, and so which names, the filesystem shows.
    public enum Names: String, Sendable {
        /// The primary tree with Rock Ridge names and attributes.
        case rockRidge = "Rock Ridge"
        /// The Joliet tree of a supplementary volume descriptor (UCS-2 names).
        case joliet = "Joliet"
        /// The primary tree's ISO 9660 identifiers, mapped as isofs's `map=normal` does.
        case primary = "ISO 9660"
    }

    /// A run of blocks holding (part of) a file's data.
    public struct Extent: Sendable, Equatable {
        /// The first 2048-byte block, relative to the volume's start.
        public let block: UInt32
        /// The bytes in the extent.
        public let length: UInt32

        /// An extent of `length` bytes from `block`.
        public init(block: UInt32, length: UInt32) {
            self.block = block
            self.length = length
        }
    }

    /// One file, directory or symbolic link, with the attributes the chosen tree gives it.
    public struct File: Sendable, Equatable {
        /// What a file is, from the Rock Ridge mode (else from the directory flag).
        public enum Kind: String, Sendable {
            /// A regular file, a directory, a symbolic link, or anything else Rock Ridge records
            /// (device node, FIFO, socket).
            case file, directory, symlink, other
        }

        /// The name as the chosen tree gives it.
        public let name: String
        /// What it is.
        public let kind: Kind
        /// st_mode: Rock Ridge's PX mode, else 0555 with the type bits (isofs's defaults).
        public let mode: UInt32
        /// Bytes: the data length (all extents), or a symbolic link's target length as isofs reports it.
        public let size: UInt64
        /// Owner and group from PX; 0 without Rock Ridge.
        public let uid: UInt32, gid: UInt32
        /// PX's file serial number when the writer recorded one (RRIP 1.12), else nil.
        public let serial: UInt32?
        /// Modification time, seconds since the epoch: TF's modify stamp, else the directory
        /// record's recording date, both with their GMT offsets.
        public let modified: Int64
        /// The data (a directory's records); several extents for a multi-extent file.
        public let extents: [Extent]
        /// A symbolic link's target from its SL entries; nil for anything else.
        public let target: String?

        /// A file as `list` returns it, for tests and reports.
        public init(name: String, kind: Kind, mode: UInt32, size: UInt64, uid: UInt32, gid: UInt32, serial: UInt32?,
                    modified: Int64, extents: [Extent], target: String?) {
            self.name = name
            self.kind = kind
            self.mode = mode
            self.size = size
            self.uid = uid
            self.gid = gid
            self.serial = serial
            self.modified = modified
            self.extents = extents
            self.target = target
        }

        /// A stable number for the file: PX's serial when there is one, else its first data block
        /// (which empty files and links may share: ISO 9660 has no inode numbers).
        public var inode: UInt32 { serial ?? extents.first?.block ?? 0 }
    }

    /// Why the volume or a path in it cannot be read. `description` is the message the user reads.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// The source refused a read; holds its message.
        case readFailed(String)
        /// No primary volume descriptor ("CD001", type 1) among the descriptors from block 16.
        case noPrimaryDescriptor
        /// The primary volume descriptor gives a logical block size other than 2048.
        case unsupportedBlockSize(Int)
        /// An extent (a directory's, a file's or a continuation area's) lies past the volume's end.
        case outsideVolume(what: String, block: UInt32, bytes: UInt64, volumeBytes: UInt64)
        /// A directory is larger than `maximumDirectoryBytes`.
        case directoryTooLarge(path: String, bytes: UInt64)
        /// `path` leads to `missing`, which does not exist.
        case notFound(String, missing: String)
        /// `path` needs `component` to be a directory, and it is not.
        case notADirectory(String, component: String)
        /// Reading needs a file, and `path` is a directory.
        case isADirectory(String)
        /// Reading needs a regular file; `path` is something else (a device node, FIFO, socket).
        case notARegularFile(String)
        /// A link target was asked for, and `path` is no symbolic link.
        case notASymlink(String)
        /// Resolving `path` followed more than `maximumSymlinkHops` links.
        case symlinkLoop(String)
        /// The path has more than `maximumPathDepth` components.
        case pathTooDeep(String)

        public var description: String {
            switch self {
            case .readFailed(let message): return "reading the ISO 9660 filesystem failed: \(message)"
            case .noPrimaryDescriptor: return "no ISO 9660 primary volume descriptor (type 1, \"CD001\") follows block 16"
            case .unsupportedBlockSize(let size): return "the ISO 9660 volume's logical block size is \(size) bytes; only 2048 is read"
            case .outsideVolume(let what, let block, let bytes, let volumeBytes):
                return "\(what) (\(bytes) bytes at block \(block)) runs past the end of the ISO 9660 volume (\(volumeBytes) bytes); the image is truncated or damaged"
            case .directoryTooLarge(let path, let bytes):
                return "directory \(path) is \(bytes) bytes, more than the \(ISO9660Filesystem.maximumDirectoryBytes) read"
            case .notFound(let path, let missing):
                return missing == path ? "\(path) does not exist in the filesystem." : "\(path) does not exist in the filesystem: it leads to \(missing), which is missing."
            case .notADirectory(let path, let component):
                return component == path ? "\(path) is not a directory." : "\(path) cannot be reached: \(component) is not a directory."
            case .isADirectory(let path): return "\(path) is a directory, not a file."
            case .notARegularFile(let path): return "\(path) is not a regular file, so it has no contents to read."
            case .notASymlink(let path): return "\(path) is not a symbolic link."
            case .symlinkLoop(let path):
                return "\(path) cannot be resolved: more than \(ISO9660Filesystem.maximumSymlinkHops) symbolic links in a row (a loop?)."
            case .pathTooDeep(let path): return "\(path) has more than \(ISO9660Filesystem.maximumPathDepth) components."
            }
        }
    }

    /// The logical block size read.
    public static let blockSize = 2048
    /// Volume descriptors examined from block 16 before giving up on a terminator.
    public static let maximumDescriptors = 64
    /// The largest directory read.
    public static let maximumDirectoryBytes = 16 << 20
    /// Continuation areas (CE) followed for one directory record, as Linux's RR_MAX_CE_ENTRIES.
    public static let maximumContinuationAreas = 32
    /// Symbolic links followed while resolving one path (Linux's ELOOP limit).
    public static let maximumSymlinkHops = 40
    /// Components in a path, links' targets included.
    public static let maximumPathDepth = 256
    /// The unit of streaming reads.
    public static let chunkBytes = 64 * 1024

    /// Which tree, and so which names, the filesystem shows.
    public let names: Names
    /// The root directory.
    public let root: File
    /// The volume's bytes (its partition's, or the whole image's), the bound for every extent.
    public let volumeBytes: UInt64
    /// The volume label from the descriptor whose tree is shown, trailing spaces removed.
    public let label: String

    private let source: any ByteSource
    private let offset: UInt64
    /// Bytes skipped at the start of each System Use area (SP's LEN_SKP); nil without Rock Ridge.
    private let suspSkip: Int?

    // MARK: opening

    /// Opens the ISO 9660 volume that starts at `offset` in `source` and is `length` bytes long
    /// (a partition, or the whole image). Volume descriptors are read from `descriptorBlock` (16).
    public static func open(_ source: any ByteSource, offset: UInt64, length: UInt64,
                            descriptorBlock: UInt64 = 16) throws(Problem) -> ISO9660Filesystem {
        let (end, overflow) = offset.addingReportingOverflow(length)
        let volumeBytes = overflow || end > source.size ? source.size - min(offset, source.size) : length
        let block = UInt64(blockSize)
        var primary: [UInt8]?, joliet: [UInt8]?
        var n = descriptorBlock
        while n < descriptorBlock + UInt64(maximumDescriptors), (n + 1) * block <= volumeBytes {
            let d = try read(source, at: offset + n * block, count: blockSize)
            n += 1
            guard d[1..<6].elementsEqual("CD001".utf8) else { break }
            if d[0] == 255 { break }
            if d[0] == 1, primary == nil { primary = d }
            // Joliet: a supplementary descriptor whose escape sequences name UCS-2 level 1, 2 or 3.
            if d[0] == 2, joliet == nil, d[88] == 0x25, d[89] == 0x2F, [0x40, 0x43, 0x45].contains(d[90]) { joliet = d }
        }
        guard let primary else { throw .noPrimaryDescriptor }
        let size = Int(primary.le16(128))
        guard size == blockSize else { throw .unsupportedBlockSize(size) }

        func rootRecord(_ d: [UInt8]) -> (extent: Extent, time: Int64) {
            (Extent(block: d.le32(156 + 2) &+ UInt32(d[156 + 1]), length: d.le32(156 + 10)),
             recordingTime(d[(156 + 18)..<(156 + 25)]))
        }
        func label(_ d: [UInt8], ucs2: Bool) -> String {
            let raw = d[40..<72]
            let text = ucs2 ? decodeUCS2(raw) : String(decoding: raw, as: UTF8.self)
            return String(text.reversed().drop { $0 == " " || $0 == "\0" }.reversed())
        }

        // Rock Ridge: an SP entry at the start of the System Use area of the root's "." record.
        let (primaryRoot, primaryTime) = rootRecord(primary)
        var skip: Int?
        var rootAttributes = SystemUse()
        var base = ISO9660Filesystem(names: .primary, root: File.directory("/", primaryRoot, time: primaryTime),
                                     volumeBytes: volumeBytes, label: label(primary, ucs2: false), source: source,
                                     offset: offset, suspSkip: nil)
        if primaryRoot.length >= 34, let first = try? base.readExtent(Extent(block: primaryRoot.block, length: min(primaryRoot.length, 2048)), what: "the root directory") {
            let length = Int(first[0])
            if length >= 34, length <= first.count, first[32] == 1 {
                let area = first[34..<length]
                if area.count >= 7, area[34] == UInt8(ascii: "S"), area[35] == UInt8(ascii: "P"), area[38] == 0xBE, area[39] == 0xEF {
                    skip = Int(area[40])
                    base = ISO9660Filesystem(names: .rockRidge, root: base.root, volumeBytes: volumeBytes, label: base.label,
                                             source: source, offset: offset, suspSkip: skip)
                    rootAttributes = try base.systemUse(area, path: "/")
                }
            }
        }
        if skip != nil {
            let root = rootAttributes.file(name: "/", flags: 0x02, extents: [primaryRoot], recorded: primaryTime)
            return ISO9660Filesystem(names: .rockRidge, root: root, volumeBytes: volumeBytes, label: base.label, source: source,
                                     offset: offset, suspSkip: skip)
        }
        if let joliet {
            let (root, time) = rootRecord(joliet)
            return ISO9660Filesystem(names: .joliet, root: File.directory("/", root, time: time), volumeBytes: volumeBytes,
                                     label: label(joliet, ucs2: true), source: source, offset: offset, suspSkip: nil)
        }
        return base
    }

    private init(names: Names, root: File, volumeBytes: UInt64, label: String, source: any ByteSource, offset: UInt64,
                 suspSkip: Int?) {
        self.names = names
        self.root = root
        self.volumeBytes = volumeBytes
        self.label = label
        self.source = source
        self.offset = offset
        self.suspSkip = suspSkip
    }

    // MARK: directories

    /// The files of `directory` (found at `path`, which messages name), "." and ".." left out, in
    /// directory order; multi-extent files joined; relocated directories shown where they belong.
    public func list(_ directory: File, path: String) throws(Problem) -> [File] {
        var files: [File] = []
        guard let extent = directory.extents.first else { return [] }
        guard UInt64(extent.length) <= UInt64(Self.maximumDirectoryBytes) else {
            throw .directoryTooLarge(path: path, bytes: UInt64(extent.length))
        }
        let data = try readExtent(extent, what: "directory \(path)")
        var pending: (record: Record, extents: [Extent], size: UInt64)?
        for record in Self.records(data) {
            if var p = pending {
                // The next record of a multi-extent file carries the same name.
                p.extents.append(record.extent)
                p.size += UInt64(record.extent.length)
                if record.flags & 0x80 != 0 {
                    pending = p
                    continue
                }
                pending = nil
                if let file = try file(p.record, extents: p.extents, size: p.size, path: path) { files.append(file) }
                continue
            }
            if record.identifier == [0] || record.identifier == [1] { continue }
            if record.flags & 0x80 != 0, record.flags & 0x02 == 0 {
                pending = (record, [record.extent], UInt64(record.extent.length))
                continue
            }
            if let file = try file(record, extents: [record.extent], size: UInt64(record.extent.length), path: path) {
                files.append(file)
            }
        }
        if let p = pending, let file = try file(p.record, extents: p.extents, size: p.size, path: path) { files.append(file) }
        return files
    }

    /// The file a record describes in the chosen tree; nil for what isofs does not show
    /// (associated files, relocated directories' placeholders, records with no name).
    private func file(_ record: Record, extents: [Extent], size: UInt64, path: String) throws(Problem) -> File? {
        if record.flags & 0x04 != 0 { return nil }
        switch names {
        case .primary:
            let name = Self.primaryName(record.identifier)
            return name.isEmpty ? nil : File.plain(name, flags: record.flags, extents: extents, size: size, time: record.recorded)
        case .joliet:
            let name = Self.jolietName(record.identifier)
            return name.isEmpty ? nil : File.plain(name, flags: record.flags, extents: extents, size: size, time: record.recorded)
        case .rockRidge:
            var use = try systemUse(record.systemUse.dropFirst(suspSkip ?? 0), path: path)
            if use.relocated { return nil }
            let name = use.name.map { String(decoding: $0, as: UTF8.self) } ?? Self.primaryName(record.identifier)
            guard !name.isEmpty else { return nil }
            var extents = extents, flags = record.flags, recorded = record.recorded
            if let child = use.childLink {
                // A placeholder for a directory moved out of the way of the depth limit: the
                // directory and its attributes are at the child link, in its "." record.
                let first = try readExtent(Extent(block: child, length: 2048), what: "relocated directory \(name)")
                guard let dot = Self.records(first).first else { return nil }
                extents = [dot.extent]
                flags = 0x02
                recorded = dot.recorded
                let moved = try systemUse(dot.systemUse.dropFirst(suspSkip ?? 0), path: path)
                use.mode = moved.mode ?? use.mode
                use.uid = moved.uid ?? use.uid
                use.gid = moved.gid ?? use.gid
                use.serial = moved.serial ?? use.serial
                use.modified = moved.modified ?? use.modified
                return use.file(name: name, flags: flags, extents: extents, recorded: recorded, size: UInt64(dot.extent.length))
            }
            return use.file(name: name, flags: flags, extents: extents, recorded: recorded, size: size)
        }
    }

    /// One directory record's fields.
    struct Record {
        let identifier: ArraySlice<UInt8>
        /// The data, from the extent location plus the extended attribute record's length.
        let extent: Extent
        let flags: UInt8
        let recorded: Int64
        let systemUse: ArraySlice<UInt8>
    }

    /// The records in a directory's bytes. A record never crosses a block boundary: a length too
    /// short for a record, or one that would cross, means the rest of the block is padding.
    static func records(_ data: [UInt8]) -> [Record] {
        var records: [Record] = []
        var at = 0
        while at < data.count {
            let length = Int(data[at])
            let blockEnd = (at / blockSize + 1) * blockSize
            guard length >= 34, at + length <= min(blockEnd, data.count) else {
                at = blockEnd
                continue
            }
            let nameLength = Int(data[at + 32])
            if 33 + nameLength <= length, nameLength > 0 {
                let use = at + 33 + nameLength + (nameLength % 2 == 0 ? 1 : 0)
                records.append(Record(
                    identifier: data[(at + 33)..<(at + 33 + nameLength)],
                    extent: Extent(block: data.le32(at + 2) &+ UInt32(data[at + 1]), length: data.le32(at + 10)),
                    flags: data[at + 25], recorded: recordingTime(data[(at + 18)..<(at + 25)]),
                    systemUse: use < at + length ? data[use..<(at + length)] : data[(at + length)..<(at + length)]))
            }
            at += length
        }
        return records
    }

    /// Parses a record's System Use area and the continuation areas it chains to, at most
    /// `maximumContinuationAreas` of them, each checked against the volume.
    private func systemUse(_ area: ArraySlice<UInt8>, path: String) throws(Problem) -> SystemUse {
        var use = SystemUse()
        var next = use.parse(area)
        var areas = 0
        while let ce = next, areas < Self.maximumContinuationAreas {
            areas += 1
            guard ce.offset < UInt32(Self.blockSize), ce.length <= UInt32(Self.blockSize) else { break }
            let (start, overflow) = (UInt64(ce.block) * UInt64(Self.blockSize)).addingReportingOverflow(UInt64(ce.offset))
            guard !overflow, start <= volumeBytes, UInt64(ce.length) <= volumeBytes - start else {
                throw .outsideVolume(what: "a Rock Ridge continuation area in \(path)", block: ce.block, bytes: UInt64(ce.length),
                                     volumeBytes: volumeBytes)
            }
            let bytes = try Self.read(source, at: offset + start, count: Int(ce.length))
            next = use.parse(bytes[...])
        }
        return use
    }

    // MARK: paths

    /// The file at `path` ("/boot/grub/grub.cfg"). Symbolic links are followed inside the volume
    /// (absolute ones from its root, at most `maximumSymlinkHops`), a final one only when
    /// `followFinal`; ".." of the root is the root. Names match exactly, and when that finds
    /// nothing outside Rock Ridge, case-insensitively.
    public func lookup(_ path: String, followFinal: Bool = true) throws(Problem) -> File {
        let followFinal = followFinal || path.hasSuffix("/")
        var pending: [Substring] = path.split(separator: "/").reversed()
        guard pending.count <= Self.maximumPathDepth else { throw .pathTooDeep(path) }
        var stack: [File] = [root]  // the directories from the root down to the current one
        var walked: [String] = []
        var hops = 0
        func walkedPath(_ extra: Substring? = nil) -> String {
            "/" + (walked + (extra.map { [String($0)] } ?? [])).joined(separator: "/")
        }
        var current = root
        while let name = pending.popLast() {
            if name == "." { continue }
            guard current.kind == .directory else { throw .notADirectory(path, component: walkedPath()) }
            if name == ".." {
                if stack.count > 1 {
                    stack.removeLast()
                    walked.removeLast()
                }
                current = stack.last!
                continue
            }
            let files = try list(current, path: walkedPath())
            let wanted = String(name)
            guard let child = files.first(where: { $0.name == wanted })
                ?? (names == .rockRidge ? nil : files.first(where: { $0.name.lowercased() == wanted.lowercased() }))
            else { throw .notFound(path, missing: walkedPath(name)) }
            if child.kind == .symlink, !pending.isEmpty || followFinal {
                hops += 1
                guard hops <= Self.maximumSymlinkHops else { throw .symlinkLoop(path) }
                let target = child.target ?? ""
                guard !target.isEmpty else { throw .notFound(path, missing: walkedPath(name)) }
                if target.hasPrefix("/") {
                    stack = [root]
                    walked = []
                    current = root
                }
                pending.append(contentsOf: target.split(separator: "/").reversed())
                guard pending.count <= Self.maximumPathDepth else { throw .pathTooDeep(path) }
                continue
            }
            walked.append(child.name)
            current = child
            if child.kind == .directory { stack.append(child) }
        }
        if path.hasSuffix("/"), current.kind != .directory { throw .notADirectory(path, component: walkedPath()) }
        return current
    }

    // MARK: reading

    /// Streams the regular file `file` (found at `path`) to `body`, extent after extent, in pieces
    /// of at most `chunkBytes`, until `body` returns false. Each extent is checked against the volume.
    public func stream(_ file: File, path: String, _ body: (ArraySlice<UInt8>) -> Bool) throws(Problem) {
        switch file.kind {
        case .file: break
        case .directory: throw .isADirectory(path)
        case .symlink, .other: throw .notARegularFile(path)
        }
        for extent in file.extents {
            let start = try checked(extent, what: path)
            var done: UInt64 = 0
            while done < UInt64(extent.length) {
                let count = Int(min(UInt64(Self.chunkBytes), UInt64(extent.length) - done))
                let bytes = try Self.read(source, at: offset + start + done, count: count)
                guard body(bytes[...]) else { return }
                done += UInt64(count)
            }
        }
    }

    /// The absolute-in-volume start of `extent` after checking that it lies inside the volume.
    private func checked(_ extent: Extent, what: String) throws(Problem) -> UInt64 {
        let start = UInt64(extent.block) * UInt64(Self.blockSize)
        guard start <= volumeBytes, UInt64(extent.length) <= volumeBytes - start else {
            throw .outsideVolume(what: what, block: extent.block, bytes: UInt64(extent.length), volumeBytes: volumeBytes)
        }
        return start
    }

    private func readExtent(_ extent: Extent, what: String) throws(Problem) -> [UInt8] {
        let start = try checked(extent, what: what)
        return try Self.read(source, at: offset + start, count: Int(extent.length))
    }

    private static func read(_ source: any ByteSource, at offset: UInt64, count: Int) throws(Problem) -> [UInt8] {
        do {
            return try source.read(at: offset, count: count)
        } catch {
            throw .readFailed(String(describing: error))
        }
    }

    // MARK: names and times

    /// A primary-tree identifier as isofs's `map=normal` shows it: ASCII upper case lowered, a
    /// trailing ".;1" or ";1" dropped, any other ";" (and "/") turned into ".", stopping at a NUL.
    public static func primaryName(_ identifier: ArraySlice<UInt8>) -> String {
        let old = Array(identifier)
        var new: [UInt8] = []
        for (i, byte) in old.enumerated() {
            var c = byte
            if c == 0 { break }
            if c >= UInt8(ascii: "A"), c <= UInt8(ascii: "Z") { c |= 0x20 }
            if c == UInt8(ascii: "."), i == old.count - 3, old[i + 1] == UInt8(ascii: ";"), old[i + 2] == UInt8(ascii: "1") { break }
            if c == UInt8(ascii: ";"), i == old.count - 2, old[i + 1] == UInt8(ascii: "1") { break }
            if c == UInt8(ascii: ";") || c == UInt8(ascii: "/") { c = UInt8(ascii: ".") }
            new.append(c)
        }
        return String(decoding: new, as: UTF8.self)
    }

    /// A Joliet identifier: UCS-2 (UTF-16) big-endian, with a trailing ";1" and then trailing dots
    /// dropped, as isofs's get_joliet_filename does. An odd last byte is ignored.
    public static func jolietName(_ identifier: ArraySlice<UInt8>) -> String {
        var name = Array(decodeUCS2(identifier).unicodeScalars)
        if name.count > 2, name[name.count - 2] == ";", name[name.count - 1] == "1" { name.removeLast(2) }
        while name.count >= 2, name.last == "." { name.removeLast() }
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: name)
        return String(scalars)
    }

    static func decodeUCS2(_ bytes: ArraySlice<UInt8>) -> String {
        var units: [UInt16] = []
        var i = bytes.startIndex
        while i + 1 < bytes.endIndex {
            units.append(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]))
            i += 2
        }
        return String(decoding: units, as: UTF16.self)
    }

    /// A 7-byte recording date (ECMA-119 9.1.5: years since 1900, month, day, hour, minute,
    /// second, GMT offset in 15-minute units) in seconds since the epoch. As isofs does, an offset
    /// outside -52...52 is taken as unreliable and ignored; month and day 0 count as 1. Fewer than
    /// 7 bytes: 0.
    public static func recordingTime(_ bytes: ArraySlice<UInt8>) -> Int64 {
        guard bytes.count >= 7 else { return 0 }
        let b = Array(bytes.prefix(7))
        let days = daysFromCivil(year: 1900 + Int64(b[0]), month: min(max(1, Int64(b[1])), 12), day: max(1, Int64(b[2])))
        var t = days * 86400 + Int64(b[3]) * 3600 + Int64(b[4]) * 60 + Int64(b[5])
        let zone = Int64(Int8(bitPattern: b[6]))
        if (-52...52).contains(zone) { t -= zone * 15 * 60 }
        return t
    }

    /// A 17-byte date (ECMA-119 8.4.26.1: "YYYYMMDDHHMMSScc" in digits, then the GMT offset) in
    /// seconds since the epoch; nil when the digits are not digits or the date is all zeros ("not specified").
    public static func longTime(_ bytes: ArraySlice<UInt8>) -> Int64? {
        guard bytes.count >= 17 else { return nil }
        let b = Array(bytes.prefix(17))
        var fields: [Int64] = []
        for (start, width) in [(0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2)] {
            var v: Int64 = 0
            for c in b[start..<(start + width)] {
                guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
                v = v * 10 + Int64(c - UInt8(ascii: "0"))
            }
            fields.append(v)
        }
        guard fields[0] != 0 else { return nil }
        let days = daysFromCivil(year: fields[0], month: min(max(1, fields[1]), 12), day: max(1, fields[2]))
        var t = days * 86400 + fields[3] * 3600 + fields[4] * 60 + fields[5]
        let zone = Int64(Int8(bitPattern: b[16]))
        if (-52...52).contains(zone) { t -= zone * 15 * 60 }
        return t
    }
}

// MARK: System Use Sharing Protocol and Rock Ridge

extension ISO9660Filesystem {
    /// A continuation area (SUSP CE): where the System Use entries go on.
    public struct Continuation: Sendable, Equatable {
        /// The block, the byte offset in it, and the area's length.
        public let block: UInt32, offset: UInt32, length: UInt32
    }

    /// What a record's System Use entries say (Rock Ridge's PX, NM, SL, TF, CL, RE), gathered
    /// over the record's area and its continuation areas.
    public struct SystemUse: Sendable, Equatable {
        /// PX: st_mode, owner, group and (RRIP 1.12) the file serial number.
        public var mode: UInt32?, uid: UInt32?, gid: UInt32?, serial: UInt32?
        /// NM: the alternate name's bytes, joined over continued entries; nil without NM.
        public var name: [UInt8]?
        /// SL: the link target's components; see `target`.
        public var components: [Component] = []
        /// Whether an SL entry was seen.
        public var isSymlink = false
        /// TF: the modification time.
        public var modified: Int64?
        /// CL: the block of the directory this placeholder stands for.
        public var childLink: UInt32?
        /// RE: the record is a relocated directory, shown at its placeholder instead.
        public var relocated = false

        /// One SL component record: text, or a flag for ".", ".." or "/".
        public struct Component: Sendable, Equatable {
            /// The component flags: 0x01 continues in the next component, 0x02 ".", 0x04 "..", 0x08 the root.
            public let flags: UInt8
            /// The component's bytes (empty for the flagged kinds).
            public let text: [UInt8]
        }

        private var nameDone = false
        private var linkDone = false

        /// Nothing recorded yet.
        public init() {}

        /// The symbolic link's target as isofs assembles it: components joined with "/", a
        /// continued component joined to the next without one, "/" for the root flag.
        public var target: String? {
            guard isSymlink else { return nil }
            var out: [UInt8] = []
            for (i, c) in components.enumerated() {
                var root = false
                switch c.flags & ~0x01 {
                case 0x02: out += Array(".".utf8)
                case 0x04: out += Array("..".utf8)
                case 0x08:
                    root = true
                    out = Array("/".utf8)
                default: out += c.text
                }
                if i < components.count - 1, !root, c.flags & 0x01 == 0 { out.append(UInt8(ascii: "/")) }
            }
            return String(decoding: out, as: UTF8.self)
        }

        /// Takes the entries of one System Use area (the record's own, or a continuation area),
        /// stopping at ST, at a malformed length or at the end; returns the continuation area
        /// the entries point to, if any.
        public mutating func parse(_ area: ArraySlice<UInt8>) -> Continuation? {
            var continuation: Continuation?
            var at = area.startIndex
            while at + 4 <= area.endIndex {
                let length = Int(area[at + 2])
                guard length >= 4, at + length <= area.endIndex else { break }
                let entry = area[at..<(at + length)]
                let signature = (area[at], area[at + 1])
                at += length
                switch signature {
                case (UInt8(ascii: "S"), UInt8(ascii: "T")):
                    return continuation
                case (UInt8(ascii: "C"), UInt8(ascii: "E")):
                    if let block = entry.le32(at: entry.startIndex + 4), let offset = entry.le32(at: entry.startIndex + 12),
                       let length = entry.le32(at: entry.startIndex + 20) {
                        continuation = Continuation(block: block, offset: offset, length: length)
                    }
                case (UInt8(ascii: "P"), UInt8(ascii: "X")):
                    let s = entry.startIndex
                    mode = entry.le32(at: s + 4)
                    uid = entry.le32(at: s + 20)
                    gid = entry.le32(at: s + 28)
                    serial = entry.count >= 44 ? entry.le32(at: s + 36) : nil
                case (UInt8(ascii: "N"), UInt8(ascii: "M")):
                    guard entry.count >= 5, !nameDone else { continue }
                    let flags = entry[entry.startIndex + 4]
                    if flags & 0x06 != 0 { continue }  // "." and "..": the records themselves are left out
                    name = (name ?? []) + entry.dropFirst(5)
                    if flags & 0x01 == 0 { nameDone = true }
                case (UInt8(ascii: "S"), UInt8(ascii: "L")):
                    guard entry.count >= 5, !linkDone else { continue }
                    isSymlink = true
                    var c = entry.startIndex + 5
                    while c + 2 <= entry.endIndex {
                        let flags = entry[c], count = Int(entry[c + 1])
                        guard c + 2 + count <= entry.endIndex else { break }
                        components.append(Component(flags: flags, text: Array(entry[(c + 2)..<(c + 2 + count)])))
                        c += 2 + count
                    }
                    if entry[entry.startIndex + 4] & 0x01 == 0 { linkDone = true }
                case (UInt8(ascii: "T"), UInt8(ascii: "F")):
                    guard entry.count >= 5 else { continue }
                    let flags = entry[entry.startIndex + 4]
                    guard flags & 0x02 != 0 else { continue }
                    let width = flags & 0x80 != 0 ? 17 : 7
                    let start = entry.startIndex + 5 + (flags & 0x01 != 0 ? width : 0)
                    guard start + width <= entry.endIndex else { continue }
                    let stamp = entry[start..<(start + width)]
                    modified = width == 17 ? ISO9660Filesystem.longTime(stamp) : ISO9660Filesystem.recordingTime(stamp)
                case (UInt8(ascii: "C"), UInt8(ascii: "L")):
                    childLink = entry.le32(at: entry.startIndex + 4)
                case (UInt8(ascii: "R"), UInt8(ascii: "E")):
                    relocated = true
                default:
                    continue
                }
            }
            return continuation
        }

        /// The file these entries describe, for a record with `flags` and `extents`.
        func file(name: String, flags: UInt8, extents: [Extent], recorded: Int64, size: UInt64? = nil) -> File {
            let isDirectory = flags & 0x02 != 0
            var mode = mode ?? ((isDirectory ? 0o040000 : isSymlink ? 0o120000 : 0o100000) | (isSymlink ? 0o777 : 0o555))
            if isSymlink, mode & 0o170000 != 0o120000 { mode = 0o120000 | (mode & 0o7777) }
            let kind: File.Kind
            switch mode & 0o170000 {
            case 0o040000: kind = .directory
            case 0o100000: kind = .file
            case 0o120000: kind = .symlink
            default: kind = isDirectory ? .directory : .other
            }
            let target = kind == .symlink ? self.target ?? "" : nil
            let dataSize = size ?? extents.reduce(0) { $0 + UInt64($1.length) }
            return File(name: name, kind: kind, mode: mode, size: target.map { UInt64($0.utf8.count) } ?? dataSize,
                        uid: uid ?? 0, gid: gid ?? 0, serial: serial, modified: modified ?? recorded, extents: extents, target: target)
        }
    }
}

extension ISO9660Filesystem.File {
    /// A file of the primary or Joliet tree: isofs's default modes (0555), owner and group 0.
    static func plain(_ name: String, flags: UInt8, extents: [ISO9660Filesystem.Extent], size: UInt64, time: Int64) -> Self {
        let directory = flags & 0x02 != 0
        return Self(name: name, kind: directory ? .directory : .file, mode: (directory ? 0o040000 : 0o100000) | 0o555,
                    size: size, uid: 0, gid: 0, serial: nil, modified: time, extents: extents, target: nil)
    }

    static func directory(_ name: String, _ extent: ISO9660Filesystem.Extent, time: Int64) -> Self {
        plain(name, flags: 0x02, extents: [extent], size: UInt64(extent.length), time: time)
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date, `month` 1...12 (Howard Hinnant's
/// days_from_civil); any `day` is counted on from the month's first.
func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146097 + doe - 719468
}
