/// The parts of an area that identifying its filesystem reads: what libblkid's probers look at to
/// name a filesystem and read its UUID and label. An area that is not a file (a container's virtual
/// disk) is shown to libblkid as a sparse copy of these parts, so only they are read from it.
///
/// The probers read their superblocks near the start (ext at 1 KiB, btrfs at 64 KiB, ISO 9660 and
/// UDF descriptors from 32 KiB, UDF's first anchor at block 256, up to 1 MiB with 4 KiB blocks),
/// and RAID members, ZFS labels and UDF's other anchors near the end: `head` and `tail` cover them.
/// Five formats keep their label further in, where the superblock says:
/// - FAT: the root directory (the fixed area on FAT12/16, the chain from the root cluster on FAT32);
/// - exFAT: the root directory's first clusters, and the FAT sectors chaining them;
/// - NTFS: the first records of the MFT ($Volume is record 3);
/// - UDF: the volume descriptor sequences the anchor names, and the integrity sequence the logical
///   volume descriptor names;
/// - HFS+: the catalog B-tree's header node and its first leaf node.
public enum ProbeWindow {
    /// The head of every area that is copied.
    public static let head: UInt64 = 2 << 20
    /// The tail of every area that is copied.
    public static let tail: UInt64 = 1 << 20
    /// The most bytes one format-specific range may cover, and the most directory clusters followed.
    static let maxRange: UInt64 = 256 * 1024
    static let maxClusters = 16

    /// The ranges to copy, relative to the area's start, sorted and merged, all inside `length`.
    /// `source` is read only where the superblocks say (never beyond the area).
    public static func ranges(_ source: some ByteSource, offset: UInt64, length: UInt64) -> [Range<UInt64>] {
        let area = Area(source: source, offset: offset, length: length)
        var extras = udf(area) + hfsPlus(area)
        if let boot = area.read(0, 512) { extras += fat(area) + exfat(area, boot) + ntfs(area, boot) }
        let bounded = extras.compactMap { r -> Range<UInt64>? in
            let lower = min(r.lowerBound, length), upper = min(r.upperBound, length, lower &+ maxRange)
            return lower < upper ? lower..<upper : nil
        }
        return merged(([0..<min(length, head), length - min(length, tail)..<length] + bounded).filter { !$0.isEmpty })
    }

    /// Reads inside the area only; nil where a range leaves it or the read fails.
    struct Area {
        let source: any ByteSource
        let offset: UInt64
        let length: UInt64

        func read(_ at: UInt64, _ count: Int) -> [UInt8]? {
            let (end, overflow) = at.addingReportingOverflow(UInt64(count))
            guard !overflow, end <= length else { return nil }
            return try? source.readIfInBounds(at: offset + at, count: count)
        }
    }

    static func merged(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
        var out: [Range<UInt64>] = []
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = out.last, r.lowerBound <= last.upperBound {
                out[out.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    static func fat(_ area: Area) -> [Range<UInt64>] {
        guard let fs = try? FATFilesystem.open(area.source, offset: area.offset, length: area.length) else { return [] }
        return fs.rootDirectoryRanges(limit: maxClusters).map { ($0.lowerBound - area.offset)..<($0.upperBound - area.offset) }
    }

    static func exfat(_ area: Area, _ boot: [UInt8]) -> [Range<UInt64>] {
        guard boot[3..<11].elementsEqual(Array("EXFAT   ".utf8)) else { return [] }
        let sectorShift = UInt64(boot[108]), clusterShift = UInt64(boot[109])
        guard (9...12).contains(sectorShift), sectorShift + clusterShift <= 25 else { return [] }
        let sector: UInt64 = 1 << sectorShift, cluster: UInt64 = 1 << (sectorShift + clusterShift)
        let fat = UInt64(boot.le32(80)) * sector, heap = UInt64(boot.le32(88)) * sector
        let clusterCount = boot.le32(92)
        var ranges: [Range<UInt64>] = []
        var current = boot.le32(96)
        var seen: Set<UInt32> = []
        // The root directory's chain, as the FAT gives it (contiguous files skip the FAT, but
        // libblkid follows it for the root regardless).
        while current >= 2, current < clusterCount + 2, ranges.count < 2 * maxClusters, seen.insert(current).inserted {
            let start = heap + UInt64(current - 2) * cluster
            ranges.append(start..<start + cluster)
            let entry = fat + UInt64(current) * 4
            ranges.append(entry / sector * sector..<entry / sector * sector + sector)
            guard let next = area.read(entry, 4) else { break }
            current = next.le32(0)
        }
        return ranges
    }

    static func ntfs(_ area: Area, _ boot: [UInt8]) -> [Range<UInt64>] {
        guard boot[3..<11].elementsEqual(Array("NTFS    ".utf8)) else { return [] }
        let sector = UInt64(boot.le16(11)), perCluster = boot[13]
        guard sector >= 256, sector <= 4096, sector & (sector - 1) == 0 else { return [] }
        // Above 0x80 the byte is a negative power of two (2^(256 - x) sectors).
        let clusterSize = perCluster <= 0x80 ? sector * UInt64(perCluster) : perCluster >= 0xE0 ? sector << UInt64(256 - Int(perCluster)) : 0
        let record = Int8(bitPattern: boot[64])
        let recordSize: UInt64 = record > 0 ? UInt64(record) * clusterSize : record <= -9 && record >= -20 ? 1 << UInt64(-Int(record)) : 0
        let (mft, overflow) = boot.le64(48).multipliedReportingOverflow(by: clusterSize)
        guard clusterSize > 0, recordSize > 0, !overflow, mft < area.length else { return [] }
        return [mft..<mft + 4 * recordSize]
    }

    static func udf(_ area: Area) -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        for block in [512, 1024, 2048, 4096] as [UInt64] {
            guard let anchor = area.read(256 * block, 32), anchor.le16(0) == 2 else { continue }
            // Main and reserve volume descriptor sequences: length, then location in blocks.
            for at in [16, 24] {
                let length = UInt64(anchor.le32(at)), location = UInt64(anchor.le32(at + 4)) * block
                ranges.append(location..<location + length)
                // The logical volume descriptor (tag 6) names the integrity sequence at 432.
                var position = location
                while position < location + min(length, maxRange), let descriptor = area.read(position, 440) {
                    if descriptor.le16(0) == 6 {
                        let integrity = UInt64(descriptor.le32(436)) * block
                        ranges.append(integrity..<integrity + UInt64(descriptor.le32(432)))
                        break  // one logical volume is what libblkid reads
                    }
                    if descriptor.le16(0) == 8 { break }  // the terminating descriptor
                    position += block
                }
            }
            break
        }
        return ranges
    }

    static func hfsPlus(_ area: Area) -> [Range<UInt64>] {
        guard let header = area.read(1024, 512), header.starts(with: Array("H+".utf8)) || header.starts(with: Array("HX".utf8)) else {
            return []
        }
        let blockSize = UInt64(header.be32(40))
        guard blockSize >= 512, blockSize <= 1 << 20 else { return [] }
        // The catalog file's fork data at 0x110: its extents from 0x120, 8 of (start, count).
        let extents = (0..<8).map { i in (UInt64(header.be32(0x120 + 8 * i)), UInt64(header.be32(0x124 + 8 * i))) }
        func position(_ byte: UInt64) -> UInt64? {
            var skipped: UInt64 = 0
            for (start, count) in extents where count > 0 {
                if byte < skipped + count * blockSize { return start * blockSize + byte - skipped }
                skipped += count * blockSize
            }
            return nil
        }
        guard let headerNode = position(0), let node = area.read(headerNode, 512) else { return [] }
        let nodeSize = UInt64(node.be16(32)), firstLeaf = UInt64(node.be32(24))
        guard nodeSize >= 512, nodeSize <= 32768 else { return [] }
        var ranges = [headerNode..<headerNode + nodeSize]
        if let leaf = position(firstLeaf * nodeSize) { ranges.append(leaf..<leaf + nodeSize) }
        return ranges
    }
}
