/// One partition as a table describes it. Positions are in units of the table's `sectorSize`.
public struct Partition: Sendable, Equatable {
    /// Where the entry sits in its table.
    public enum Kind: Sendable {
        /// MBR primary (slots 1-4), the MBR extended container, a logical partition in the EBR chain, a GPT entry,
        /// an Apple partition map entry, or a BSD disklabel's partition inside an MBR slice.
        case primary, extended, logical, gpt, apm, bsd
    }

    /// MBR: 1-4 for primaries and the extended container (the slot number), logicals from 5 in
    /// chain order. GPT: entry index + 1.
    public let number: Int
    /// Which kind of table entry it is.
    public let kind: Kind
    /// Absolute LBA of the first sector.
    public let startSector: UInt64
    /// Length in sectors; never 0 for a partition a table returns.
    public let sectorCount: UInt64
    /// The MBR type byte (0x83 Linux, 0x05 extended, ...); nil for GPT.
    public let mbrType: UInt8?
    /// MBR: the 0x80 boot indicator. GPT: attribute bit 2, "legacy BIOS bootable".
    public let bootable: Bool
    /// GPT partition type; nil for MBR.
    public let typeGUID: GUID?
    /// GPT unique partition GUID; nil for MBR.
    public let uuid: GUID?
    /// GPT name (UTF-16LE on disk, cut at the first NUL); nil for MBR.
    public let name: String?
    /// GPT attribute bits (bit 0 required, bit 1 no block IO, bit 2 legacy BIOS bootable, 48-63
    /// type specific); nil for MBR.
    public let attributes: UInt64?
    /// The Apple partition map entry's type ("Apple_HFS", "Apple_partition_map"); nil for others.
    public let apmType: String?
    /// The BSD disklabel entry's filesystem type (7 for 4.2BSD, 1 for swap); nil for others.
    public let bsdType: UInt8?

    /// Makes a partition; nothing is checked. MBR-only and GPT-only fields default to nil.
    public init(
        number: Int, kind: Kind, startSector: UInt64, sectorCount: UInt64, mbrType: UInt8? = nil,
        bootable: Bool = false, typeGUID: GUID? = nil, uuid: GUID? = nil, name: String? = nil,
        attributes: UInt64? = nil, apmType: String? = nil, bsdType: UInt8? = nil
    ) {
        self.apmType = apmType
        self.bsdType = bsdType
        self.number = number
        self.kind = kind
        self.startSector = startSector
        self.sectorCount = sectorCount
        self.mbrType = mbrType
        self.bootable = bootable
        self.typeGUID = typeGUID
        self.uuid = uuid
        self.name = name
        self.attributes = attributes
    }

    /// One past the last sector; saturates instead of overflowing on hostile values.
    public var endSector: UInt64 {
        let (end, overflow) = startSector.addingReportingOverflow(sectorCount)
        return overflow ? .max : end
    }
}

/// A run of sectors: `count` sectors from `start`, in the units of the table it came from.
public struct SectorRange: Sendable, Equatable {
    /// The first sector.
    public let start: UInt64
    /// The number of sectors; may be 0.
    public let count: UInt64

    /// Makes a range; nothing is checked.
    public init(start: UInt64, count: UInt64) {
        self.start = start
        self.count = count
    }

    /// One past the last sector; saturates instead of overflowing.
    public var end: UInt64 {
        let (end, overflow) = start.addingReportingOverflow(count)
        return overflow ? .max : end
    }
}

/// A partition table read from an image: what it says, plus what was wrong with it.
public struct PartitionTable: Sendable {
    /// The scheme the table was read as.
    public enum Kind: String, Sendable {
        /// MBR with its EBR chain ("dos", as sfdisk names it), GPT, or the Apple partition map ("mac",
        /// as libblkid names it).
        case dos, gpt, mac
    }

    /// MBR (`dos`), GPT or APM (`mac`); a protective MBR reads as `gpt` even when both GPT headers are
    /// unusable.
    public let kind: Kind
    /// 512, or 4096 for a GPT whose header was found at byte 4096.
    public let sectorSize: Int
    /// dos: the disk signature as sfdisk prints it ("0x1234abcd"); gpt: the disk GUID, uppercase.
    /// Empty for a GPT whose headers are both unusable, and for APM, which has none.
    public let identifier: String
    /// Ordered by number. For dos this includes the extended container (kind `.extended`).
    public let partitions: [Partition]
    /// What was wrong or unusual with the table, in the order it was found; empty for a clean table.
    public let findings: [Finding]
    /// GPT only.
    public let firstUsableLBA: UInt64?
    /// GPT only (inclusive, as the header stores it).
    public let lastUsableLBA: UInt64?
    /// The partitions come from an entry array whose CRC32 does not match, because no copy of the
    /// table verifies: what is there, for a forensic view, with an `.error` finding. Nothing may be
    /// written on their strength.
    public let untrusted: Bool

    /// Makes a table as `read` would, for tests and reports.
    public init(
        kind: Kind, sectorSize: Int, identifier: String, partitions: [Partition], findings: [Finding],
        firstUsableLBA: UInt64? = nil, lastUsableLBA: UInt64? = nil, untrusted: Bool = false
    ) {
        self.untrusted = untrusted
        self.kind = kind
        self.sectorSize = sectorSize
        self.identifier = identifier
        self.partitions = partitions
        self.findings = findings
        self.firstUsableLBA = firstUsableLBA
        self.lastUsableLBA = lastUsableLBA
    }

    /// True when any finding has severity `.error`.
    public var hasErrors: Bool { findings.contains { $0.severity == .error } }

    /// The partition with `number`, if the table has one.
    public func partition(number: Int) -> Partition? {
        partitions.first { $0.number == number }
    }

    /// Reads the table from sector 0 (and, for GPT, the header at LBA 1 or its backup).
    ///
    /// Without an MBR, sector 0 may start an Apple partition map ("ER", then "PM" entries).
    ///
    /// Returns nil when there is no partition table at all: the image is shorter than one sector,
    /// sector 0 lacks the 55AA signature, or sector 0 does not look like an MBR (a boot indicator
    /// other than 0x00/0x80), or is the boot sector of a FAT or exFAT filesystem that fills the
    /// image (libblkid applies the same rules: a FAT boot sector ends in 55AA too, and its code can
    /// leave the entry area looking like an empty table).
    /// An MBR with 55AA and four empty entries is an empty dos table, as sfdisk treats it.
    ///
    /// A protective MBR (an entry of type 0xEE) means GPT. When both GPT headers are unusable the
    /// result is a `.gpt` table with no partitions, an empty identifier and an `.error` finding
    /// saying why; it does not throw for that.
    ///
    /// Throws only when the source itself fails to read (an I/O error). Everything wrong with the
    /// contents is reported in `findings`.
    public static func read(from source: some ByteSource) throws -> PartitionTable? {
        guard let sector0 = try source.readIfInBounds(at: 0, count: MBR.sectorSize) else { return nil }
        guard let mbr = MBR(sector: sector0) else { return try APM.read(from: source, block0: sector0) }
        if !mbr.isProtective, isFilesystemBootSector(sector0, source: source) { return nil }
        if mbr.isProtective {
            var findings: [Finding] = []
            if mbr.isHybrid {
                findings.append(
                    Finding(.info, "hybrid MBR: besides the 0xEE protective entry it lists other partitions; the GPT is used"))
            }
            return try GPT.read(from: source, mbrFindings: findings)
        }
        return try MBR.readTable(mbr, from: source)
    }

    /// A FAT12/16/32 boot sector whose BPB describes a filesystem that fits the image, or an exFAT
    /// boot sector ("EXFAT   " at byte 3).
    static func isFilesystemBootSector(_ sector0: [UInt8], source: some ByteSource) -> Bool {
        if sector0[3..<11].elementsEqual("EXFAT   ".utf8) { return true }
        return (try? FATFilesystem.open(source, offset: 0, length: source.size)) != nil
    }

    /// The free stretches of the disk: sectors inside the usable area that no partition covers,
    /// sorted and exact (a one-sector gap is reported; callers that care only about, say, 1 MiB or
    /// more filter the result).
    ///
    /// `totalSectors` is the image size in this table's sectors (`sectorSize`). The usable area is
    /// - gpt: `firstUsableLBA...lastUsableLBA` from the header, cut at the end of the image and
    ///   never before LBA 2 (a hostile header may say 0, but LBA 0 and 1 hold the protective MBR
    ///   and the primary header); when both headers were unusable (no usable range known), sectors
    ///   1..<totalSectors;
    /// - dos: sectors 1..<totalSectors (everything after the MBR).
    ///
    /// Primaries, logicals and GPT partitions count as allocated; the extended container does not:
    /// its space outside the logicals, including the EBR sectors, is reported as free. Overlapping
    /// partitions are merged, and partitions that run outside the usable area count only for the
    /// part inside it.
    public func unallocated(totalSectors: UInt64) -> [SectorRange] {
        var usableStart: UInt64 = 1
        var usableEnd = totalSectors  // exclusive
        if kind == .gpt, let first = firstUsableLBA, let last = lastUsableLBA {
            usableStart = max(first, 2)
            // lastUsableLBA is inclusive; saturate so a hostile UInt64.max cannot overflow.
            usableEnd = min(totalSectors, last == .max ? .max : last + 1)
        }
        guard usableStart < usableEnd else { return [] }

        let allocated = partitions
            .filter { $0.kind != .extended }
            .map { (start: max($0.startSector, usableStart), end: min($0.endSector, usableEnd)) }
            .filter { $0.start < $0.end }
            .sorted { $0.start < $1.start }

        var free: [SectorRange] = []
        var cursor = usableStart  // everything before it is allocated or already reported
        for range in allocated {
            if range.start > cursor { free.append(SectorRange(start: cursor, count: range.start - cursor)) }
            cursor = max(cursor, range.end)
        }
        if cursor < usableEnd { free.append(SectorRange(start: cursor, count: usableEnd - cursor)) }
        return free
    }

    /// Finds overlapping pairs among `ranges` (number, start, end exclusive), skipping pairs for which
    /// `ignore` says yes. Sorted sweep, so a large GPT costs n log n, not n squared.
    static func overlapFindings(
        _ ranges: [(number: Int, start: UInt64, end: UInt64)],
        ignore: (Int, Int) -> Bool = { _, _ in false }
    ) -> [Finding] {
        let sorted = ranges.filter { $0.end > $0.start }.sorted {
            ($0.start, $0.number) < ($1.start, $1.number)
        }
        var findings: [Finding] = []
        // Open ranges that may still overlap later ones; kept small in the normal case because
        // ranges that end before the current start are dropped.
        var open: [(number: Int, start: UInt64, end: UInt64)] = []
        for range in sorted {
            open.removeAll { $0.end <= range.start }
            for other in open where !ignore(other.number, range.number) {
                findings.append(
                    Finding(.error,
                        "partitions \(other.number) and \(range.number) overlap "
                            + "(sectors \(other.start)..<\(other.end) and \(range.start)..<\(range.end))"))
                if findings.count >= maxOverlapFindings {
                    findings.append(Finding(.error, "more overlapping partitions; stopped reporting after \(maxOverlapFindings)"))
                    return findings
                }
            }
            open.append(range)
        }
        return findings
    }

    /// Hostile tables can make every pair overlap; keep the report (and the time) bounded.
    static let maxOverlapFindings = 64
}
