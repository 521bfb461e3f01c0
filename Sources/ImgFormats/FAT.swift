/// A FAT12, FAT16 or FAT32 filesystem read without changing a byte: directory listings, path lookup
/// (case-insensitive, 8.3 and VFAT long names) and file contents, as the EFI firmware sees them on
/// an EFI system partition.
///
/// Layout (Microsoft's "FAT: General Overview of On-Disk Format", all little-endian): boot sector
/// with the BPB, reserved sectors, the FATs, the FAT12/16 root directory, then the data area of
/// clusters numbered from 2. Every value read from the volume is checked before use, so hostile
/// input yields a `Problem`, never a trap, an unbounded loop or an unbounded allocation.
public struct FATFilesystem: Sendable {
    /// The FAT variant, by cluster count as the specification decides it (not by the BPB's type string).
    public enum Kind: String, Sendable { /** The raw value is the variant's usual name ("FAT32"). */ case fat12 = "FAT12", fat16 = "FAT16", fat32 = "FAT32" }

    /// One directory entry; "." and "..", volume labels and deleted entries are never returned.
    public struct Entry: Sendable, Equatable {
        /// The long (VFAT) name, or the short name when there is none or it fails its checks.
        public let name: String
        /// The 8.3 name as "NAME.EXT", lower-cased where the entry's NT case flags say so.
        public let shortName: String
        /// Whether the entry is a subdirectory (attribute 0x10).
        public let isDirectory: Bool
        /// The file size in bytes from the directory entry; 0 for a directory, whose size FAT does not record.
        public let size: UInt32
        /// 0 for an empty file.
        public let firstCluster: UInt32
        /// The attribute byte (0x01 read-only, 0x02 hidden, 0x04 system, 0x10 directory, 0x20 archive).
        public let attributes: UInt8
        /// The last-write date as stored (bits 15-9 years since 1980, 8-5 month, 4-0 day); see `unixTime`.
        public let modifiedDate: UInt16
        /// The last-write time as stored (bits 15-11 hours, 10-5 minutes, 4-0 two-second units).
        public let modifiedTime: UInt16

        /// Makes an entry as a directory listing returns it.
        public init(name: String, shortName: String, isDirectory: Bool, size: UInt32, firstCluster: UInt32,
                    attributes: UInt8? = nil, modifiedDate: UInt16 = 0, modifiedTime: UInt16 = 0) {
            self.name = name
            self.shortName = shortName
            self.isDirectory = isDirectory
            self.size = size
            self.firstCluster = firstCluster
            self.attributes = attributes ?? (isDirectory ? 0x10 : 0)
            self.modifiedDate = modifiedDate
            self.modifiedTime = modifiedTime
        }

        /// Whether the read-only attribute (0x01) is set.
        public var isReadOnly: Bool { attributes & 0x01 != 0 }

        /// The last-write time in seconds since the epoch (`FATFilesystem.unixTime`).
        public var modified: Int64 { FATFilesystem.unixTime(date: modifiedDate, time: modifiedTime) }
    }

    /// Seconds since the epoch of a FAT date and time. FAT stores the writer's local time with no
    /// zone; it is taken as UTC here (Linux's vfat does the same with `tz=UTC`, and by default when
    /// the kernel's zone is UTC). As Linux's fat_time_fat2unix does, month and day 0 count as 1,
    /// and the seconds field (two-second units, 0...29 valid) is used as stored.
    public static func unixTime(date: UInt16, time: UInt16) -> Int64 {
        let year = 1980 + Int64(date >> 9)
        let month = max(1, Int64((date >> 5) & 0x0F))
        let day = max(1, Int64(date & 0x1F))
        let seconds = Int64(time >> 11) * 3600 + Int64((time >> 5) & 0x3F) * 60 + Int64(time & 0x1F) * 2
        return daysFromCivil(year: year, month: min(month, 12), day: day) * 86400 + seconds
    }

    /// FAT12, FAT16 or FAT32, decided by the cluster count.
    public let kind: Kind
    /// From the BPB: 512, 1024, 2048 or 4096.
    public let bytesPerSector: Int
    /// From the BPB: a power of two from 1 to 128.
    public let sectorsPerCluster: Int
    /// Sectors before the first FAT, the boot sector included.
    public let reservedSectors: Int
    /// Number of FAT copies (usually 2).
    public let fatCount: Int
    /// FAT12/16 root directory slots; 0 on FAT32.
    public let rootEntryCount: Int
    /// The filesystem's size in sectors (the BPB's 16-bit count, or the 32-bit one when that is 0).
    public let totalSectors: UInt32
    /// The size of one FAT in sectors.
    public let sectorsPerFAT: UInt32
    /// FAT32's root directory cluster; 0 on FAT12/16, whose root directory is a fixed area.
    public let rootCluster: UInt32
    /// Data clusters, numbered 2...clusterCount+1.
    public let clusterCount: UInt32

    private let source: any ByteSource
    /// Absolute offsets in `source`.
    private let fatStart: UInt64
    private let rootStart: UInt64
    private let dataStart: UInt64

    /// Bytes per cluster: `bytesPerSector * sectorsPerCluster`.
    public var clusterSize: Int { bytesPerSector * sectorsPerCluster }

    /// The spec caps a directory at 65536 entries (2 MiB); longer chains are refused, not followed.
    public static let maximumDirectoryEntries = 65536
    /// Paths deeper than this are refused before any directory is read.
    public static let maximumPathDepth = 64
    /// FAT32 entries are 28 bits and 0x0FFFFFF6... are reserved, bad and end-of-chain markers.
    static let maximumFAT32Clusters: UInt32 = 0x0FFF_FFF5

    /// Why the filesystem or a path in it cannot be read. `description` is the message the user reads.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// The partition's byte range does not fit in the source.
        case partitionOutsideSource(offset: UInt64, length: UInt64, sourceSize: UInt64)
        /// The partition is too small to hold a boot sector.
        case partitionTooSmall(length: UInt64)
        /// The source refused a read; holds its message.
        case readFailed(String)
        /// No 0x55AA at the end of the boot sector.
        case noBootSignature
        /// A BPB field has a value the specification does not allow; `allowed` says what would be.
        case invalidBPB(field: String, value: UInt64, allowed: String)
        /// The BPB's sector count reaches past the end of the partition.
        case filesystemLargerThanPartition(bytes: UInt64, partitionBytes: UInt64)
        /// No entry at this path.
        case notFound(String)
        /// A component of the path is a file, not a directory.
        case notADirectory(String)
        /// The path names a directory where a file was wanted.
        case isADirectory(String)
        /// The path has more than `maximumPathDepth` components.
        case pathTooDeep(String)
        /// The file is larger than the caller's limit (`maxBytes`).
        case fileTooLarge(path: String, size: UInt32, maxBytes: Int)
        /// The directory has more than `maximumDirectoryEntries` entries.
        case directoryTooLarge(String)
        /// The file's cluster chain names a cluster outside 2...`lastCluster`.
        case clusterOutOfRange(path: String, cluster: UInt32, lastCluster: UInt32)
        /// The file's cluster chain runs through a cluster the FAT marks as free.
        case freeClusterInChain(path: String, cluster: UInt32)
        /// The file's cluster chain runs through a cluster the FAT marks as bad.
        case badClusterInChain(path: String, cluster: UInt32)
        /// The file's cluster chain comes back to a cluster it already visited.
        case cyclicClusterChain(path: String, cluster: UInt32)
        /// The file's cluster chain ends before it covers the file's size.
        case clusterChainTooShort(path: String, clusters: Int, needed: Int)

        public var description: String {
            let fsck = "the FAT filesystem is damaged; check it with fsck.fat -n"
            switch self {
            case .partitionOutsideSource(let offset, let length, let sourceSize):
                return "the partition (\(length) bytes at byte \(offset)) runs past the end of the image (\(sourceSize) bytes); the image is truncated or the partition table is wrong"
            case .partitionTooSmall(let length):
                return "the partition is \(length) bytes, too small for a FAT boot sector; it does not hold a FAT filesystem"
            case .readFailed(let message):
                return "reading the FAT filesystem failed: \(message)"
            case .noBootSignature:
                return "the partition's first sector has no 55 AA signature, so it holds no FAT filesystem; format it with mkfs.fat"
            case .invalidBPB(let field, let value, let allowed):
                return "the FAT boot sector's \(field) is \(value) (allowed: \(allowed)); this is not a FAT filesystem or its boot sector is damaged, check it with fsck.fat -n"
            case .filesystemLargerThanPartition(let bytes, let partitionBytes):
                return "the FAT filesystem claims \(bytes) bytes but its partition holds only \(partitionBytes); the image is truncated or the filesystem was made for a larger partition"
            case .notFound(let path):
                return "\(path) does not exist on the FAT filesystem"
            case .notADirectory(let path):
                return "\(path) on the FAT filesystem is a file, not a directory"
            case .isADirectory(let path):
                return "\(path) on the FAT filesystem is a directory, not a file"
            case .pathTooDeep(let path):
                return "\(path) has more than \(FATFilesystem.maximumPathDepth) components; use a shorter path"
            case .fileTooLarge(let path, let size, let maxBytes):
                return "\(path) is \(size) bytes, more than the \(maxBytes) allowed; raise the limit if the file is expected to be this large"
            case .directoryTooLarge(let path):
                return "directory \(path) goes on past \(FATFilesystem.maximumDirectoryEntries) entries, the most FAT allows; \(fsck)"
            case .clusterOutOfRange(let path, let cluster, let lastCluster):
                return "the cluster chain of \(path) points to cluster \(cluster), outside the data area (clusters 2...\(lastCluster)); \(fsck)"
            case .freeClusterInChain(let path, let cluster):
                return "the cluster chain of \(path) runs through cluster \(cluster), which the FAT marks as free; \(fsck)"
            case .badClusterInChain(let path, let cluster):
                return "the cluster chain of \(path) runs through cluster \(cluster), which the FAT marks as bad; \(fsck)"
            case .cyclicClusterChain(let path, let cluster):
                return "the cluster chain of \(path) loops back to cluster \(cluster); \(fsck)"
            case .clusterChainTooShort(let path, let clusters, let needed):
                return "the cluster chain of \(path) ends after \(clusters) clusters but its size needs \(needed); \(fsck)"
            }
        }
    }

    // MARK: the boot sector

    /// Reads and checks the BPB of the filesystem at `offset` in `source`, in a partition of `length`
    /// bytes. The FAT type comes from the cluster count alone, as the spec defines it.
    public static func open(_ source: some ByteSource, offset: UInt64, length: UInt64) throws(Problem) -> FATFilesystem {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= source.size else {
            throw .partitionOutsideSource(offset: offset, length: length, sourceSize: source.size)
        }
        guard length >= 512 else { throw .partitionTooSmall(length: length) }
        let boot = try read(source, at: offset, count: 512)
        guard boot[510] == 0x55, boot[511] == 0xAA else { throw .noBootSignature }

        func invalid(_ field: String, _ value: some BinaryInteger, _ allowed: String) -> Problem {
            .invalidBPB(field: field, value: UInt64(value), allowed: allowed)
        }
        let bytesPerSector = Int(boot.le16(11))
        guard [512, 1024, 2048, 4096].contains(bytesPerSector) else {
            throw invalid("bytes per sector", bytesPerSector, "512, 1024, 2048 or 4096")
        }
        let sectorsPerCluster = Int(boot[13])
        guard sectorsPerCluster > 0, sectorsPerCluster & (sectorsPerCluster - 1) == 0 else {
            throw invalid("sectors per cluster", sectorsPerCluster, "a power of two from 1 to 128")
        }
        let reserved = Int(boot.le16(14))
        guard reserved > 0 else { throw invalid("reserved sector count", reserved, "at least 1") }
        let fatCount = Int(boot[16])
        guard fatCount > 0 else { throw invalid("number of FATs", fatCount, "at least 1") }
        let rootEntryCount = Int(boot.le16(17))
        let totalSectors = boot.le16(19) != 0 ? UInt32(boot.le16(19)) : boot.le32(32)
        guard totalSectors > 0 else { throw invalid("total sector count", 0, "at least 1") }
        let fat16Size = UInt32(boot.le16(22))
        let sectorsPerFAT = fat16Size != 0 ? fat16Size : boot.le32(36)
        guard sectorsPerFAT > 0 else { throw invalid("FAT size", 0, "at least 1 sector") }

        // UInt64 throughout: 255 FATs of 2^32 sectors each cannot overflow it.
        let rootSectors = UInt64((rootEntryCount * 32 + bytesPerSector - 1) / bytesPerSector)
        let metadata = UInt64(reserved) + UInt64(fatCount) * UInt64(sectorsPerFAT) + rootSectors
        guard metadata < UInt64(totalSectors) else {
            throw invalid("total sector count", totalSectors, "more than the \(metadata) sectors before the data area")
        }
        let clusterCount = UInt32((UInt64(totalSectors) - metadata) / UInt64(sectorsPerCluster))
        let kind: Kind = clusterCount < 4085 ? .fat12 : clusterCount < 65525 ? .fat16 : .fat32
        let bytes = UInt64(totalSectors) * UInt64(bytesPerSector)
        guard bytes <= length else { throw .filesystemLargerThanPartition(bytes: bytes, partitionBytes: length) }

        var rootCluster: UInt32 = 0
        var activeFAT = 0
        if kind == .fat32 {
            guard clusterCount <= maximumFAT32Clusters else {
                throw invalid("cluster count", clusterCount, "at most \(maximumFAT32Clusters) on FAT32")
            }
            guard rootEntryCount == 0 else { throw invalid("root entry count", rootEntryCount, "0 on FAT32") }
            guard fat16Size == 0 else { throw invalid("16-bit FAT size", fat16Size, "0 on FAT32") }
            rootCluster = boot.le32(44)
            guard rootCluster >= 2, rootCluster <= clusterCount + 1 else {
                throw invalid("root cluster", rootCluster, "2...\(clusterCount + 1)")
            }
            // With mirroring off (bit 7), only the FAT numbered in bits 0-3 is current.
            let flags = boot.le16(40)
            if flags & 0x80 != 0 {
                activeFAT = Int(flags & 0x0F)
                guard activeFAT < fatCount else { throw invalid("active FAT", activeFAT, "0...\(fatCount - 1)") }
            }
        } else {
            guard rootEntryCount > 0 else { throw invalid("root entry count", 0, "at least 1 on \(kind.rawValue)") }
        }
        // Every cluster needs a FAT entry, or its chain would be read from whatever follows the FAT.
        let bitsPerEntry: UInt64 = kind == .fat12 ? 12 : kind == .fat16 ? 16 : 32
        let needed = (UInt64(clusterCount) + 2) * bitsPerEntry
        guard UInt64(sectorsPerFAT) * UInt64(bytesPerSector) * 8 >= needed else {
            let sectors = ((needed + 7) / 8 + UInt64(bytesPerSector) - 1) / UInt64(bytesPerSector)
            throw invalid("FAT size", sectorsPerFAT, "at least \(sectors) sectors for \(clusterCount) clusters")
        }

        let sector = UInt64(bytesPerSector)
        return FATFilesystem(
            kind: kind, bytesPerSector: bytesPerSector, sectorsPerCluster: sectorsPerCluster, reservedSectors: reserved,
            fatCount: fatCount, rootEntryCount: rootEntryCount, totalSectors: totalSectors, sectorsPerFAT: sectorsPerFAT,
            rootCluster: rootCluster, clusterCount: clusterCount, source: source,
            fatStart: offset + (UInt64(reserved) + UInt64(activeFAT) * UInt64(sectorsPerFAT)) * sector,
            rootStart: offset + (metadata - rootSectors) * sector, dataStart: offset + metadata * sector)
    }

    // MARK: paths

    /// The entry at `path` ("/EFI/BOOT/BOOTX64.EFI"; case-insensitive, long or short names), or nil
    /// if a component does not exist or one before the last is a file. "/" is the root directory.
    public func lookup(_ path: String) throws(Problem) -> Entry? {
        try resolve(path)?.entry
    }

    /// The entries of the directory at `path`, in on-disk order.
    public func list(_ path: String) throws(Problem) -> [Entry] {
        guard let (entry, isRoot) = try resolve(path) else { throw .notFound(path) }
        guard entry.isDirectory else { throw .notADirectory(path) }
        return try entries(of: entry, isRoot: isRoot, path: path)
    }

    /// The root directory as an entry (no name on disk, no timestamp): the fixed area on
    /// FAT12/16 (first cluster 0), the root cluster chain on FAT32.
    public var root: Entry { Entry(name: "/", shortName: "/", isDirectory: true, size: 0, firstCluster: rootCluster) }

    /// The entries of `directory` (found at `path`, which messages name), in on-disk order: the
    /// fixed root area for the root of a FAT12/16 volume (first cluster 0), else its cluster chain.
    public func list(_ directory: Entry, path: String) throws(Problem) -> [Entry] {
        guard directory.isDirectory else { throw .notADirectory(path) }
        return try entries(of: directory, isRoot: kind != .fat32 && directory.firstCluster == 0, path: path)
    }

    /// `lookup`, also saying whether the entry is the root directory (which has no entry on disk).
    private func resolve(_ path: String) throws(Problem) -> (entry: Entry, isRoot: Bool)? {
        let components = path.split(separator: "/")
        guard components.count <= Self.maximumPathDepth else { throw .pathTooDeep(path) }
        var entry = Entry(name: "/", shortName: "/", isDirectory: true, size: 0, firstCluster: rootCluster)
        var walked = ""
        for (depth, component) in components.enumerated() {
            guard entry.isDirectory else { return nil }
            let children = try entries(of: entry, isRoot: depth == 0, path: walked.isEmpty ? "/" : walked)
            let wanted = component.lowercased()
            guard let child = children.first(where: { $0.name.lowercased() == wanted || $0.shortName.lowercased() == wanted })
            else { return nil }
            walked += "/" + child.name
            entry = child
        }
        return (entry, components.isEmpty)
    }

    /// The contents of the file at `path`, which must be at most `maxBytes` long.
    public func read(_ path: String, maxBytes: Int) throws(Problem) -> [UInt8] {
        guard let entry = try lookup(path) else { throw .notFound(path) }
        guard !entry.isDirectory else { throw .isADirectory(path) }
        guard Int(entry.size) <= maxBytes else { throw .fileTooLarge(path: path, size: entry.size, maxBytes: maxBytes) }
        guard entry.size > 0 else { return [] }
        let size = Int(entry.size)
        let needed = (size + clusterSize - 1) / clusterSize
        var bytes: [UInt8] = []
        bytes.reserveCapacity(size)
        let clusters = try walkChain(from: entry.firstCluster, path: path, limit: needed) { (cluster) throws(Problem) in
            bytes += try Self.read(source, at: clusterOffset(cluster), count: min(clusterSize, size - bytes.count))
            return true
        }
        guard clusters == needed else { throw .clusterChainTooShort(path: path, clusters: clusters, needed: needed) }
        return bytes
    }

    /// Streams the file `entry` (found at `path`, which messages name) to `body` in pieces of at
    /// most one cluster, following its cluster chain until the size is covered or `body` returns
    /// false. Memory stays at one cluster whatever the size; the chain is checked link by link as
    /// `read` checks it (range, free and bad clusters, loops, a chain too short for the size).
    public func stream(_ entry: Entry, path: String, _ body: (ArraySlice<UInt8>) -> Bool) throws(Problem) {
        guard !entry.isDirectory else { throw .isADirectory(path) }
        guard entry.size > 0 else { return }
        let size = UInt64(entry.size), cluster = UInt64(clusterSize)
        let needed = Int((size + cluster - 1) / cluster)
        var done: UInt64 = 0
        var stopped = false
        let clusters = try walkChain(from: entry.firstCluster, path: path, limit: needed) { (c) throws(Problem) in
            let count = Int(min(cluster, size - done))
            let bytes = try Self.read(source, at: clusterOffset(c), count: count)
            done += UInt64(count)
            guard body(bytes[...]) else {
                stopped = true
                return false
            }
            return true
        }
        guard stopped || clusters == needed else { throw .clusterChainTooShort(path: path, clusters: clusters, needed: needed) }
    }

    /// The bytes a directory occupies, as Linux's vfat reports a directory's size: its clusters
    /// times the cluster size (the fixed root area on FAT12/16). `entry` is a directory found at
    /// `path`; the root is `lookup("/")`.
    public func directoryBytes(_ entry: Entry, path: String) throws(Problem) -> UInt64 {
        if entry.firstCluster == 0 {
            return kind == .fat32 ? 0 : UInt64(rootEntryCount * 32)
        }
        let limit = max(1, Self.maximumDirectoryEntries * 32 / clusterSize) + 1
        let clusters = try walkChain(from: entry.firstCluster, path: path, limit: limit) { (_) throws(Problem) in true }
        return UInt64(clusters) * UInt64(clusterSize)
    }

    // MARK: directories

    /// Reads the entries of a directory: the fixed root area on FAT12/16, else the cluster chain,
    /// cluster by cluster up to the end marker (a 0 first byte), as the firmware reads it.
    private func entries(of directory: Entry, isRoot: Bool, path: String) throws(Problem) -> [Entry] {
        // FAT12/16 keep the high 16 bits of the cluster for other uses (OS/2 extended attributes).
        var parser = DirectoryParser(wideClusters: kind == .fat32)
        if isRoot && kind != .fat32 {
            let area = try Self.read(source, at: rootStart, count: rootEntryCount * 32)
            for slot in stride(from: 0, to: area.count, by: 32) where !parser.feed(area[slot..<slot + 32]) { break }
            return parser.entries
        }
        // A directory of exactly the maximum size may end with its chain; one cluster more may not exist.
        let limit = max(1, Self.maximumDirectoryEntries * 32 / clusterSize)
        var clusters = 0
        _ = try walkChain(from: directory.firstCluster, path: path, limit: limit + 1) { (cluster) throws(Problem) in
            clusters += 1
            guard clusters <= limit else { throw .directoryTooLarge(path) }
            let bytes = try Self.read(source, at: clusterOffset(cluster), count: clusterSize)
            for slot in stride(from: 0, to: bytes.count, by: 32) where !parser.feed(bytes[slot..<slot + 32]) { return false }
            return true
        }
        return parser.entries
    }

    /// Decodes 32-byte directory entries in order, pairing each short entry with the VFAT long-name
    /// entries in front of it. A long name is used only if its entries are complete, in sequence
    /// (ordinals N|0x40, N-1, ..., 1) and carry the checksum of the short name they precede.
    struct DirectoryParser {
        let wideClusters: Bool
        var entries: [Entry] = []
        /// UTF-16 pieces of the long name being collected, last piece first (disk order).
        private var pieces: [ArraySlice<UInt8>] = []
        private var checksum: UInt8 = 0
        /// The ordinal the next long-name entry must have; 0 once complete.
        private var expected = -1

        init(wideClusters: Bool) { self.wideClusters = wideClusters }

        /// Takes one entry; returns false at the end-of-directory marker.
        mutating func feed(_ entry: ArraySlice<UInt8>) -> Bool {
            let e = Array(entry)
            if e[0] == 0x00 { return false }
            if e[0] == 0xE5 {
                expected = -1
                return true
            }
            let attributes = e[11]
            if attributes & 0x3F == 0x0F {
                let ordinal = Int(e[0] & ~0x40)
                if e[0] & 0x40 != 0, (1...20).contains(ordinal), e[12] == 0 {
                    pieces = [entry]
                    checksum = e[13]
                    expected = ordinal - 1
                } else if expected > 0, ordinal == expected, e[0] & 0x40 == 0, e[12] == 0, e[13] == checksum {
                    pieces.append(entry)
                    expected -= 1
                } else {
                    expected = -1
                }
                return true
            }
            defer { expected = -1 }
            guard attributes & 0x08 == 0 else { return true }  // the volume label
            let raw = e[0..<11]
            if raw.elementsEqual(Array(".          ".utf8)) || raw.elementsEqual(Array("..         ".utf8)) { return true }
            let short = Self.shortName(e)
            guard !short.isEmpty else { return true }
            let long = expected == 0 && Self.checksum(raw) == checksum ? longName() : nil
            entries.append(Entry(
                name: long ?? short, shortName: short, isDirectory: attributes & 0x10 != 0, size: e.le32(28),
                firstCluster: (wideClusters ? UInt32(e.le16(20)) << 16 : 0) | UInt32(e.le16(26)),
                attributes: attributes, modifiedDate: e.le16(24), modifiedTime: e.le16(22)))
            return true
        }

        /// The long name: 13 UTF-16 units per entry at 1, 14 and 28, up to a 0000 terminator.
        private func longName() -> String? {
            var units: [UInt16] = []
            for piece in pieces.reversed() {
                let p = Array(piece)
                for offset in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30] { units.append(p.le16(offset)) }
            }
            let name = units.prefix { $0 != 0 }
            return name.isEmpty ? nil : String(decoding: name, as: UTF16.self)
        }

        /// "NAME.EXT" from the 11-byte short name. Bytes above 0x7F are in an OEM code page the volume
        /// does not record; they become U+FFFD (writers add a long name for such names anyway).
        static func shortName(_ e: [UInt8]) -> String {
            func text(_ bytes: ArraySlice<UInt8>, lower: Bool) -> String {
                var scalars = String.UnicodeScalarView()
                for byte in bytes.reversed().drop(while: { $0 == 0x20 }).reversed() {
                    scalars.append(byte < 0x80 ? Unicode.Scalar(byte) : "\u{FFFD}")
                }
                return lower ? String(scalars).lowercased() : String(scalars)
            }
            var name = Array(e[0..<11])
            if name[0] == 0x05 { name[0] = 0xE5 }  // 0xE5 is the deleted mark, so a leading 0xE5 is stored as 0x05
            let base = text(name[0..<8], lower: e[12] & 0x08 != 0)
            let ext = text(name[8..<11], lower: e[12] & 0x10 != 0)
            return ext.isEmpty ? base : base.isEmpty ? "" : base + "." + ext
        }

        /// The spec's checksum of the 11-byte short name: rotate right by one, then add each byte.
        static func checksum(_ name: ArraySlice<UInt8>) -> UInt8 {
            name.reduce(0) { ($0 >> 1 | $0 << 7) &+ $1 }
        }
    }

    // MARK: cluster chains

    /// Follows the chain from `first`, calling `body` with each cluster until it returns false, the
    /// chain ends, or `limit` clusters were visited; returns how many were. Every link is checked
    /// against the data area and the clusters already visited, so a hostile FAT costs at most `limit` reads.
    func walkChain(from first: UInt32, path: String, limit: Int, _ body: (UInt32) throws(Problem) -> Bool) throws(Problem) -> Int {
        let last = clusterCount + 1
        var visited: Set<UInt32> = []
        var cluster = first
        guard cluster >= 2, cluster <= last else { throw .clusterOutOfRange(path: path, cluster: cluster, lastCluster: last) }
        while true {
            visited.insert(cluster)
            guard try body(cluster), visited.count < limit else { return visited.count }
            let next = try fatEntry(cluster)
            switch kind {
            case .fat12 where next >= 0xFF8, .fat16 where next >= 0xFFF8, .fat32 where next >= 0x0FFF_FFF8:
                return visited.count
            case .fat12 where next == 0xFF7, .fat16 where next == 0xFFF7, .fat32 where next == 0x0FFF_FFF7:
                throw .badClusterInChain(path: path, cluster: cluster)
            default: break
            }
            if next == 0 { throw .freeClusterInChain(path: path, cluster: cluster) }
            guard next >= 2, next <= last else { throw .clusterOutOfRange(path: path, cluster: next, lastCluster: last) }
            guard !visited.contains(next) else { throw .cyclicClusterChain(path: path, cluster: next) }
            cluster = next
        }
    }

    /// The clusters of the chain from `first`, for tests and diagnostics; at most `limit` of them.
    func clusterChain(from first: UInt32, limit: Int) throws(Problem) -> [UInt32] {
        var clusters: [UInt32] = []
        _ = try walkChain(from: first, path: "cluster \(first)", limit: limit) { (cluster) throws(Problem) in
            clusters.append(cluster)
            return true
        }
        return clusters
    }

    /// The FAT entry of `cluster` (2...clusterCount+1, which `open` checked the FAT has room for).
    private func fatEntry(_ cluster: UInt32) throws(Problem) -> UInt32 {
        let n = UInt64(cluster)
        switch kind {
        case .fat12:
            let value = UInt32(try Self.read(source, at: fatStart + n + n / 2, count: 2).le16(0))
            return n & 1 == 1 ? value >> 4 : value & 0xFFF
        case .fat16:
            return UInt32(try Self.read(source, at: fatStart + n * 2, count: 2).le16(0))
        case .fat32:
            return try Self.read(source, at: fatStart + n * 4, count: 4).le32(0) & 0x0FFF_FFFF  // top 4 bits are reserved
        }
    }

    private func clusterOffset(_ cluster: UInt32) -> UInt64 {
        dataStart + UInt64(cluster - 2) * UInt64(clusterSize)
    }

    private static func read(_ source: some ByteSource, at offset: UInt64, count: Int) throws(Problem) -> [UInt8] {
        // Callers stay inside the partition, which `open` checked lies inside the source.
        do {
            return try source.read(at: offset, count: count)
        } catch {
            throw .readFailed("\(error)")
        }
    }
}

extension FATFilesystem {
    /// Where the root directory lies, as absolute byte ranges of the source: the fixed area on
    /// FAT12/16, else the first `limit` clusters of its chain and the FAT sectors that chain them.
    /// What a reader of the volume label (libblkid's) looks at besides the boot sector.
    public func rootDirectoryRanges(limit: Int) -> [Range<UInt64>] {
        if kind != .fat32 { return [rootStart..<rootStart + UInt64(rootEntryCount * 32)] }
        var ranges: [Range<UInt64>] = []
        let sector = UInt64(bytesPerSector)
        _ = try? walkChain(from: rootCluster, path: "/", limit: limit) { (cluster) throws(Problem) in
            let start = clusterOffset(cluster)
            ranges.append(start..<start + UInt64(clusterSize))
            let entry = fatStart + UInt64(cluster) * 4 / sector * sector
            ranges.append(entry..<entry + sector)
            return ranges.count < 2 * limit
        }
        return ranges
    }
}

extension FATFilesystem {
    /// Bytes in free clusters (FAT entry 0), counted over the whole table of the active FAT.
    public func freeBytes() throws(Problem) -> UInt64 {
        let entries = UInt64(clusterCount) + 2
        let tableBytes: UInt64 = kind == .fat12 ? (entries * 3 + 1) / 2 : entries * (kind == .fat16 ? 2 : 4)
        var free: UInt64 = 0
        var position: UInt64 = 0
        // In chunks that hold whole entries (a multiple of 3 bytes for FAT12's 1.5-byte ones).
        let chunk: UInt64 = 3 * 4 * 4096
        while position < tableBytes {
            let count = Int(min(chunk, tableBytes - position))
            let bytes = try Self.read(source, at: fatStart + position, count: count)
            switch kind {
            case .fat12:
                // Two 12-bit entries in every three bytes; chunks start on such a triple.
                for i in stride(from: 0, to: count, by: 3) {
                    let b0 = UInt32(bytes[i]), b1 = i + 1 < count ? UInt32(bytes[i + 1]) : 0, b2 = i + 2 < count ? UInt32(bytes[i + 2]) : 0
                    let n = (position + UInt64(i)) / 3 * 2
                    if n >= 2, n < entries, b0 | (b1 & 0x0F) << 8 == 0 { free += 1 }
                    if n + 1 >= 2, n + 1 < entries, b1 >> 4 | b2 << 4 == 0 { free += 1 }
                }
            case .fat16:
                for i in stride(from: 0, to: count - 1, by: 2) {
                    let n = (position + UInt64(i)) / 2
                    if n >= 2, n < entries, bytes.le16(i) == 0 { free += 1 }
                }
            case .fat32:
                for i in stride(from: 0, to: count - 3, by: 4) {
                    let n = (position + UInt64(i)) / 4
                    if n >= 2, n < entries, bytes.le32(i) & 0x0FFF_FFFF == 0 { free += 1 }
                }
            }
            position += UInt64(count)
        }
        return free * UInt64(clusterSize)
    }
}
