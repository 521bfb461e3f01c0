/// The Apple Partition Map (Inside Macintosh: Devices, "The Partition Map"), as Linux's mac.c and
/// The Sleuth Kit's mmls read it.
///
/// Block 0 is the driver descriptor record: "ER", then the block size (u16 at 2, big-endian, as
/// everything here). The map's entries fill blocks 1...N of that size, each "PM" at 0, the number
/// of entries in the map (u32 at 4), the first block (u32 at 8), the length in blocks (u32 at
/// 12), a name (32 bytes at 16) and a type (32 bytes at 48, "Apple_HFS"), NUL-padded. Positions
/// come back in 512-byte sectors.
enum APM {
    static let driverSignature: [UInt8] = Array("ER".utf8)
    static let entrySignature: [UInt8] = Array("PM".utf8)
    /// A map with more entries than this is treated as hostile (real maps hold a handful; mmls
    /// and the kernel stop far earlier in practice), bounding the blocks read.
    static let maxEntries = 1024

    /// Reads the map behind `block0`; nil when block 0 is no driver descriptor or block 1 holds
    /// no map entry. Everything wrong past that point is a finding.
    static func read(from source: some ByteSource, block0: [UInt8]) throws -> PartitionTable? {
        guard block0.count >= 4, block0[0..<2].elementsEqual(driverSignature) else { return nil }
        let blockSize = Int(block0.be16(2))
        // Hybrid ISOs say 2048; anything that is not a multiple of the 512-byte sector is not a map.
        guard blockSize >= 512, blockSize % 512 == 0 else { return nil }
        guard let first = try source.readIfInBounds(at: UInt64(blockSize), count: 512),
              first[0..<2].elementsEqual(entrySignature) else { return nil }
        let scale = UInt64(blockSize / 512)
        let imageSectors = source.size / 512
        var findings: [Finding] = []
        var count = Int(first.be32(4))
        if count > maxEntries {
            findings.append(Finding(.error, "the Apple partition map says it has \(count) entries; only the first \(maxEntries) are read"))
            count = maxEntries
        }
        var partitions: [Partition] = []
        for index in 1...max(1, count) {
            guard let entry = try source.readIfInBounds(at: UInt64(index) * UInt64(blockSize), count: 512) else {
                findings.append(Finding(.error, "Apple partition map entry \(index) is past the end of the image; the map ends there"))
                break
            }
            guard entry[0..<2].elementsEqual(entrySignature) else {
                findings.append(Finding(.error, "Apple partition map entry \(index) has no \"PM\" signature; the map ends there"))
                break
            }
            // Both factors fit in 32 bits and the scale is at most 128, so neither product overflows.
            let start = UInt64(entry.be32(8)) * scale, size = UInt64(entry.be32(12)) * scale
            // The kernel skips entries of size 0, as it does for MBR entries.
            guard size > 0 else { continue }
            let partition = Partition(number: index, kind: .apm, startSector: start, sectorCount: size,
                                      name: text(entry[16..<48]), apmType: text(entry[48..<80]))
            if partition.endSector > imageSectors { findings.append(MBR.pastEndFinding(partition, imageSectors: imageSectors)) }
            partitions.append(partition)
        }
        findings += PartitionTable.overlapFindings(partitions.map { ($0.number, $0.startSector, $0.endSector) })
        return PartitionTable(kind: .mac, sectorSize: 512, identifier: "", partitions: partitions, findings: findings)
    }

    /// A NUL-padded field, up to its first NUL; bytes that are not UTF-8 (Mac Roman names) appear as U+FFFD.
    static func text(_ field: ArraySlice<UInt8>) -> String {
        String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }
}
