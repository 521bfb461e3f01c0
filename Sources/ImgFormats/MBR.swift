/// The DOS partition table in sector 0 and the EBR chain of an extended partition.
///
/// Layout (all little-endian): disk signature u32 at 440; four 16-byte entries at 446; 55 AA at 510.
/// Entry: boot indicator (0x00 or 0x80) at +0, CHS start +1, type +4, CHS end +5, LBA start u32 +8,
/// sector count u32 +12. CHS values are ignored: every current tool uses the LBA fields.
struct MBR {
    static let sectorSize = 512
    static let entriesOffset = 446
    static let diskSignatureOffset = 440
    /// Types that mark an extended container: CHS (0x05), LBA (0x0F) and Linux (0x85).
    static let extendedTypes: Set<UInt8> = [0x05, 0x0F, 0x85]
    static let protectiveType: UInt8 = 0xEE
    /// An EBR chain longer than this is treated as hostile: real tools stop far earlier (Linux
    /// caps minors, fdisk offers 60 logicals), so this only bounds the work on a crafted image.
    static let maxEBRHops = 128

    struct Entry {
        let slot: Int  // 0...3
        let bootIndicator: UInt8
        let type: UInt8
        let relativeStart: UInt32
        let sectorCount: UInt32

        /// Zero size means unused. Type 0 with a size is listed, as the kernel and sfdisk list it
        /// (some xorriso layouts write one at sector 0).
        var isEmpty: Bool { sectorCount == 0 }
        var isExtended: Bool { MBR.extendedTypes.contains(type) }

        init(sector: [UInt8], slot: Int) {
            let base = MBR.entriesOffset + 16 * slot
            self.slot = slot
            bootIndicator = sector[base]
            type = sector[base + 4]
            relativeStart = sector.le32(base + 8)
            sectorCount = sector.le32(base + 12)
        }
    }

    let diskSignature: UInt32
    let entries: [Entry]

    /// Decodes sector 0; nil when it carries no 55AA signature or is not an MBR at all.
    init?(sector: [UInt8]) {
        guard Self.hasBootSignature(sector) else { return nil }
        let entries = (0..<4).map { Entry(sector: sector, slot: $0) }
        // A boot indicator other than 0x00/0x80 means this is a filesystem boot sector (FAT, NTFS)
        // whose code happens to occupy the entry area, not a partition table.
        guard entries.allSatisfy({ $0.bootIndicator == 0 || $0.bootIndicator == 0x80 }) else { return nil }
        self.entries = entries
        self.diskSignature = sector.le32(Self.diskSignatureOffset)
    }

    static func hasBootSignature(_ sector: [UInt8]) -> Bool {
        sector.count >= sectorSize && sector[510] == 0x55 && sector[511] == 0xAA
    }

    var isProtective: Bool { entries.contains { $0.type == Self.protectiveType } }
    var isHybrid: Bool { isProtective && entries.contains { $0.type != Self.protectiveType && $0.type != 0 && !$0.isEmpty } }

    /// sfdisk's spelling of the disk signature.
    var identifier: String {
        let hex = String(diskSignature, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - hex.count) + hex
    }

    /// Builds the dos table: primaries, the extended container, and logicals from its EBR chain.
    static func readTable(_ mbr: MBR, from source: some ByteSource) throws -> PartitionTable {
        var findings: [Finding] = []
        var partitions: [Partition] = []
        let imageSectors = source.size / UInt64(sectorSize)

        if try GPT.hasSignature(in: source, sectorSize: sectorSize) {
            findings.append(
                Finding(.warning, "a GPT header is present at LBA 1 but the MBR is not protective (no 0xEE entry); the MBR is used"))
        }

        var extended: Partition?
        for entry in mbr.entries where !entry.isEmpty {
            let isExtended = entry.isExtended
            let partition = Partition(
                number: entry.slot + 1, kind: isExtended ? .extended : .primary,
                startSector: UInt64(entry.relativeStart), sectorCount: UInt64(entry.sectorCount),
                mbrType: entry.type, bootable: entry.bootIndicator == 0x80)
            partitions.append(partition)
            if isExtended {
                if extended == nil {
                    extended = partition
                } else {
                    findings.append(
                        Finding(.warning, "partition \(partition.number) is a second extended partition; only the first one's logical partitions are read"))
                }
            }
        }

        if let extended {
            let (logicals, chainFindings) = try readEBRChain(extended: extended, from: source)
            partitions += logicals
            findings += chainFindings
        }

        // BSD disklabels in FreeBSD, OpenBSD and NetBSD slices: their partitions follow, numbered on
        // from 5 or the last logical, as the kernel and libblkid number them.
        for slice in partitions where slice.kind == .primary && BSDLabel.sliceTypes.contains(slice.mbrType ?? 0) {
            let (inside, labelFindings) = try BSDLabel.read(slice: slice, firstNumber: max(4, partitions.map(\.number).max() ?? 4) + 1,
                                                           from: source)
            partitions += inside
            findings += labelFindings
        }

        for partition in partitions where partition.endSector > imageSectors {
            findings.append(pastEndFinding(partition, imageSectors: imageSectors))
        }
        // Logicals lie inside their extended container by design; every other pair must be disjoint.
        let kinds = Dictionary(partitions.map { ($0.number, $0.kind) }, uniquingKeysWith: { a, _ in a })
        findings += PartitionTable.overlapFindings(
            partitions.map { ($0.number, $0.startSector, $0.endSector) },
            ignore: { a, b in
                let pair = (kinds[a], kinds[b])
                // A container and what lies inside it: the extended partition and its logicals, a
                // slice and its BSD partitions.
                func inside(_ outer: Partition.Kind?, _ inner: Partition.Kind?) -> Bool {
                    (outer == .extended && inner == .logical) || (outer == .primary && inner == .bsd)
                }
                return inside(pair.0, pair.1) || inside(pair.1, pair.0)
            })

        return PartitionTable(
            kind: .dos, sectorSize: sectorSize, identifier: mbr.identifier, partitions: partitions,
            findings: findings)
    }

    /// Follows the EBR linked list. Each EBR's first entry is a logical partition, relative to that
    /// EBR; its second entry links to the next EBR, relative to the start of the extended partition.
    /// The chain must move strictly forward (which rules out loops), stay within the hop limit, and
    /// every EBR must carry 55AA; a violation ends the chain with a finding, keeping what was read.
    static func readEBRChain(extended: Partition, from source: some ByteSource) throws -> ([Partition], [Finding]) {
        var logicals: [Partition] = []
        var findings: [Finding] = []
        var ebrLBA = extended.startSector
        var number = 5

        for hop in 0... {
            if hop >= maxEBRHops {
                findings.append(Finding(.error, "EBR chain is longer than \(maxEBRHops) links; stopped following it at LBA \(ebrLBA)"))
                break
            }
            if ebrLBA >= extended.endSector {
                findings.append(
                    Finding(.warning, "EBR at LBA \(ebrLBA) lies outside the extended partition \(extended.number) (sectors \(extended.startSector)..<\(extended.endSector))"))
            }
            let (offset, overflow) = ebrLBA.multipliedReportingOverflow(by: UInt64(sectorSize))
            guard !overflow, let sector = try source.readIfInBounds(at: offset, count: sectorSize) else {
                findings.append(Finding(.error, "EBR at LBA \(ebrLBA) is past the end of the image; the chain ends there"))
                break
            }
            guard hasBootSignature(sector) else {
                findings.append(Finding(.error, "EBR at LBA \(ebrLBA) has no 55AA signature; the chain ends there"))
                break
            }

            let data = Entry(sector: sector, slot: 0)
            if !data.isEmpty {
                let (start, startOverflow) = ebrLBA.addingReportingOverflow(UInt64(data.relativeStart))
                if startOverflow {
                    findings.append(Finding(.error, "logical partition in the EBR at LBA \(ebrLBA) starts beyond the addressable range; skipped"))
                } else {
                    let logical = Partition(
                        number: number, kind: .logical, startSector: start, sectorCount: UInt64(data.sectorCount),
                        mbrType: data.type, bootable: data.bootIndicator == 0x80)
                    if logical.startSector < extended.startSector || logical.endSector > extended.endSector {
                        findings.append(Finding(.warning, "logical partition \(number) extends outside the extended partition \(extended.number)"))
                    }
                    logicals.append(logical)
                    number += 1
                }
            }
            if !Entry(sector: sector, slot: 2).isEmpty || !Entry(sector: sector, slot: 3).isEmpty {
                findings.append(Finding(.info, "EBR at LBA \(ebrLBA) has entries in slots 3 or 4; they are ignored"))
            }

            let link = Entry(sector: sector, slot: 1)
            if link.isEmpty || link.type == 0 { break }
            guard link.isExtended else {
                findings.append(
                    Finding(.warning, "EBR at LBA \(ebrLBA) links onward with type 0x\(String(link.type, radix: 16)), not an extended type; the chain ends there"))
                break
            }
            let (next, nextOverflow) = extended.startSector.addingReportingOverflow(UInt64(link.relativeStart))
            guard !nextOverflow, next > ebrLBA else {
                findings.append(
                    Finding(.error, "EBR at LBA \(ebrLBA) links back to LBA \(nextOverflow ? UInt64.max : next) (a loop); the chain ends there"))
                break
            }
            ebrLBA = next
        }
        return (logicals, findings)
    }

    static func pastEndFinding(_ partition: Partition, imageSectors: UInt64) -> Finding {
        Finding(.error,
            "partition \(partition.number) (sectors \(partition.startSector)..<\(partition.endSector)) runs past the end of the image (\(imageSectors) sectors)")
    }
}
