/// The GUID Partition Table (UEFI spec, chapter 5).
///
/// Header (little-endian): "EFI PART" at 0, revision u32 at 8, header size u32 at 12, header CRC32
/// u32 at 16, reserved u32 at 20, my LBA u64 at 24, alternate LBA u64 at 32, first usable LBA u64
/// at 40, last usable LBA u64 at 48, disk GUID at 56, entries LBA u64 at 72, entry count u32 at 80,
/// entry size u32 at 84, entries CRC32 u32 at 88.
/// Entry: type GUID at 0, unique GUID at 16, first LBA u64 at 32, last LBA u64 (inclusive) at 40,
/// attributes u64 at 48, name (36 UTF-16LE code units) at 56.
enum GPT {
    static let signature: [UInt8] = Array("EFI PART".utf8)
    static let minHeaderSize = 92
    static let minEntrySize = 128
    /// Upper bound on the entry array we are willing to read and checksum. The spec's usual array is
    /// 16 KiB (128 x 128); 1 MiB leaves room for unusual tools while bounding hostile counts.
    static let maxEntryArrayBytes: UInt64 = 1 << 20
    /// Sector sizes probed, in order: the header sits at LBA 1, i.e. byte 512 or byte 4096.
    static let sectorSizes = [512, 4096]

    /// A header that passed every check, with its verified entry array.
    struct Header {
        let lba: UInt64
        let alternateLBA: UInt64
        let firstUsableLBA: UInt64
        let lastUsableLBA: UInt64
        let diskGUID: GUID
        let entriesLBA: UInt64
        let entryCount: Int
        let entrySize: Int
        let entriesCRC: UInt32
        let entries: [UInt8]
    }

    enum HeaderCheck {
        case usable(Header)
        /// `alternateLBA` is set when the header's own CRC was good, so its pointer to the other
        /// copy can be trusted as a place to look. `unverified` is that header with an entry array
        /// whose CRC32 does not match: all there is when no copy verifies.
        case unusable(reason: String, alternateLBA: UInt64?, unverified: Header? = nil)
    }

    static func hasSignature(in source: some ByteSource, sectorSize: Int) throws -> Bool {
        try source.readIfInBounds(at: UInt64(sectorSize), count: signature.count) == signature
    }

    /// Reads the GPT behind a protective MBR, falling back to the backup header when the primary
    /// is unusable.
    static func read(from source: some ByteSource, mbrFindings: [Finding]) throws -> PartitionTable {
        var findings = mbrFindings

        // The sector size is where the primary signature is; default to 512 when there is none.
        var sectorSize = 512
        for candidate in sectorSizes where try hasSignature(in: source, sectorSize: candidate) {
            sectorSize = candidate
            break
        }

        var chosen: Header?
        var unverified: (header: Header, sectorSize: Int)?
        let primary = try checkHeader(at: 1, sectorSize: sectorSize, in: source)
        switch primary {
        case .usable(let header):
            chosen = header
            findings += try backupFindings(primary: header, sectorSize: sectorSize, in: source)
        case .unusable(let reason, let alternateHint, let primaryUnverified):
            if let primaryUnverified { unverified = (primaryUnverified, sectorSize) }
            // Places the backup may be: where a CRC-valid primary says, then the last sector for
            // each sector size (the primary's signature may be gone, so its size is unknown).
            var candidates: [(lba: UInt64, sectorSize: Int)] = []
            if let alternateHint { candidates.append((alternateHint, sectorSize)) }
            for size in [sectorSize] + sectorSizes where source.size / UInt64(size) >= 2 {
                candidates.append((source.size / UInt64(size) - 1, size))
            }
            var reasons: [String] = []
            var tried: [(UInt64, Int)] = []
            for candidate in candidates where !tried.contains(where: { $0 == candidate }) {
                tried.append(candidate)
                switch try checkHeader(at: candidate.lba, sectorSize: candidate.sectorSize, in: source) {
                case .usable(let header):
                    chosen = header
                    sectorSize = candidate.sectorSize
                    findings.append(
                        Finding(.warning,
                            "primary GPT header at LBA 1 is unusable (\(reason)); using the backup header at LBA \(candidate.lba)"))
                case .unusable(let backupReason, _, let backupUnverified):
                    reasons.append("LBA \(candidate.lba) with \(candidate.sectorSize)-byte sectors: \(backupReason)")
                    if unverified == nil, let backupUnverified { unverified = (backupUnverified, candidate.sectorSize) }
                }
                if chosen != nil { break }
            }
            if chosen == nil {
                findings.append(
                    Finding(.error,
                        "no usable GPT header: primary at LBA 1: \(reason); backup: "
                            + (reasons.isEmpty ? "image too small to hold one" : reasons.joined(separator: "; "))))
                guard let (header, size) = unverified else {
                    return PartitionTable(kind: .gpt, sectorSize: sectorSize, identifier: "", partitions: [], findings: findings)
                }
                // A forensic view shows what the entries say, marked as such; sgdisk and the kernel
                // show nothing, and nothing may be written on their strength.
                findings.append(
                    Finding(.error,
                        "the partitions listed are read from the entry array of the header at LBA \(header.lba), whose CRC32 does not match: they are untrusted"))
                let (partitions, entryFindings) = decodeEntries(header, imageSectors: source.size / UInt64(size))
                return PartitionTable(
                    kind: .gpt, sectorSize: size, identifier: header.diskGUID.description, partitions: partitions,
                    findings: findings + entryFindings, firstUsableLBA: header.firstUsableLBA,
                    lastUsableLBA: header.lastUsableLBA, untrusted: true)
            }
        }
        guard let header = chosen else { preconditionFailure("a usable header was chosen above") }

        let (partitions, entryFindings) = decodeEntries(header, imageSectors: source.size / UInt64(sectorSize))
        findings += entryFindings
        return PartitionTable(
            kind: .gpt, sectorSize: sectorSize, identifier: header.diskGUID.description, partitions: partitions,
            findings: findings, firstUsableLBA: header.firstUsableLBA, lastUsableLBA: header.lastUsableLBA)
    }

    /// Validates the header at `lba` and its entry array, in the order the spec prescribes.
    static func checkHeader(at lba: UInt64, sectorSize: Int, in source: some ByteSource) throws -> HeaderCheck {
        let (offset, overflow) = lba.multipliedReportingOverflow(by: UInt64(sectorSize))
        guard !overflow, let sector = try source.readIfInBounds(at: offset, count: sectorSize) else {
            return .unusable(reason: "LBA \(lba) is past the end of the image", alternateLBA: nil)
        }
        guard Array(sector[0..<8]) == signature else {
            return .unusable(reason: "no \"EFI PART\" signature", alternateLBA: nil)
        }
        let headerSize = Int(sector.le32(12))
        guard (minHeaderSize...sectorSize).contains(headerSize) else {
            return .unusable(reason: "header size \(headerSize) is outside \(minHeaderSize)...\(sectorSize)", alternateLBA: nil)
        }
        // The CRC covers header_size bytes with the CRC field itself taken as zero.
        var covered = Array(sector[0..<headerSize])
        covered.replaceSubrange(16..<20, with: [0, 0, 0, 0])
        let storedCRC = sector.le32(16)
        let computedCRC = CRC32.checksum(covered)
        guard storedCRC == computedCRC else {
            return .unusable(
                reason: "header CRC32 is 0x\(hex(storedCRC)), computed 0x\(hex(computedCRC))", alternateLBA: nil)
        }

        let myLBA = sector.le64(24)
        let alternateLBA = sector.le64(32)
        func bad(_ reason: String) -> HeaderCheck { .unusable(reason: reason, alternateLBA: alternateLBA) }
        guard myLBA == lba else { return bad("header says it is at LBA \(myLBA), but was read from LBA \(lba)") }

        let entryCount = UInt64(sector.le32(80))
        let entrySize = UInt64(sector.le32(84))
        guard entrySize >= UInt64(minEntrySize), entrySize % UInt64(minEntrySize) == 0 else {
            return bad("partition entry size \(entrySize) is not a multiple of 128")
        }
        // Both factors are below 2^32, so the product cannot overflow UInt64.
        let arrayBytes = entryCount * entrySize
        guard arrayBytes <= maxEntryArrayBytes else {
            return bad("\(entryCount) entries of \(entrySize) bytes exceed the \(maxEntryArrayBytes)-byte limit")
        }
        let entriesLBA = sector.le64(72)
        let (entriesOffset, entriesOverflow) = entriesLBA.multipliedReportingOverflow(by: UInt64(sectorSize))
        guard !entriesOverflow,
            let entries = try source.readIfInBounds(at: entriesOffset, count: Int(arrayBytes))
        else {
            return bad("partition entry array at LBA \(entriesLBA) (\(arrayBytes) bytes) is past the end of the image")
        }
        let storedEntriesCRC = sector.le32(88)
        let computedEntriesCRC = CRC32.checksum(entries)
        let header = Header(
            lba: lba, alternateLBA: alternateLBA, firstUsableLBA: sector.le64(40), lastUsableLBA: sector.le64(48),
            diskGUID: GUID(bytes: sector[56..<72])!, entriesLBA: entriesLBA, entryCount: Int(entryCount),
            entrySize: Int(entrySize), entriesCRC: storedEntriesCRC, entries: entries)
        guard storedEntriesCRC == computedEntriesCRC else {
            return .unusable(
                reason: "partition entries CRC32 is 0x\(hex(storedEntriesCRC)), computed 0x\(hex(computedEntriesCRC))",
                alternateLBA: alternateLBA, unverified: header)
        }
        return .usable(header)
    }

    /// With a good primary, says what is wrong with the backup (tools such as sgdisk and fdisk warn
    /// about the same things) without changing which table is used.
    static func backupFindings(primary: Header, sectorSize: Int, in source: some ByteSource) throws -> [Finding] {
        let lastLBA = source.size / UInt64(sectorSize) - 1  // >= 1: the primary header was read at LBA 1
        let alternate = primary.alternateLBA
        if alternate > lastLBA {
            return [Finding(.warning, "backup GPT header LBA \(alternate) is past the end of the image (last LBA \(lastLBA)); the image may have been truncated")]
        }
        switch try checkHeader(at: alternate, sectorSize: sectorSize, in: source) {
        case .unusable(let reason, _, _):
            return [Finding(.warning, "backup GPT header at LBA \(alternate) is unusable (\(reason)); the primary is used")]
        case .usable(let backup):
            var findings: [Finding] = []
            if backup.entriesCRC != primary.entriesCRC || backup.entryCount != primary.entryCount {
                findings.append(Finding(.warning, "primary and backup GPT partition entry arrays differ; the primary is used"))
            }
            if alternate != lastLBA {
                findings.append(
                    Finding(.info, "backup GPT header is at LBA \(alternate), not at the last sector (LBA \(lastLBA)); the image was probably grown after partitioning"))
            }
            return findings
        }
    }

    /// Turns the verified entry array into partitions, skipping unused entries (zero type GUID).
    static func decodeEntries(_ header: Header, imageSectors: UInt64) -> ([Partition], [Finding]) {
        var partitions: [Partition] = []
        var findings: [Finding] = []
        if header.firstUsableLBA > header.lastUsableLBA {
            findings.append(Finding(.warning, "first usable LBA \(header.firstUsableLBA) is after last usable LBA \(header.lastUsableLBA)"))
        }
        for index in 0..<header.entryCount {
            let base = index * header.entrySize  // within entries: count * size was read
            let entry = header.entries
            guard let typeGUID = GUID(bytes: entry[base..<base + 16]), !typeGUID.isZero else { continue }
            let number = index + 1
            let firstLBA = entry.le64(base + 32)
            let lastLBA = entry.le64(base + 40)
            // lastLBA is inclusive, so the count is last - first + 1; both steps can fail on hostile input.
            guard lastLBA >= firstLBA, lastLBA - firstLBA < UInt64.max else {
                findings.append(Finding(.error, "partition \(number) ends (LBA \(lastLBA)) before it starts (LBA \(firstLBA)); skipped"))
                continue
            }
            let attributes = entry.le64(base + 48)
            let partition = Partition(
                number: number, kind: .gpt, startSector: firstLBA, sectorCount: lastLBA - firstLBA + 1,
                bootable: attributes & (1 << 2) != 0, typeGUID: typeGUID, uuid: GUID(bytes: entry[base + 16..<base + 32]),
                name: decodeName(entry, at: base + 56), attributes: attributes)
            if partition.endSector > imageSectors {
                findings.append(MBR.pastEndFinding(partition, imageSectors: imageSectors))
            } else if firstLBA < header.firstUsableLBA || lastLBA > header.lastUsableLBA {
                findings.append(
                    Finding(.warning, "partition \(number) (LBA \(firstLBA)...\(lastLBA)) lies outside the usable range \(header.firstUsableLBA)...\(header.lastUsableLBA)"))
            }
            partitions.append(partition)
        }
        findings += PartitionTable.overlapFindings(partitions.map { ($0.number, $0.startSector, $0.endSector) })
        return (partitions, findings)
    }

    /// The 72-byte UTF-16LE name, cut at the first NUL. Invalid UTF-16 (a lone surrogate) decodes
    /// to U+FFFD rather than failing.
    static func decodeName(_ entry: [UInt8], at offset: Int) -> String {
        var units: [UInt16] = []
        for i in 0..<36 {
            let unit = entry.le16(offset + 2 * i)
            if unit == 0 { break }
            units.append(unit)
        }
        // Names are mostly empty or ASCII; the UTF-16 decoder's generic path costs more than the
        // rest of the table at start-up.
        if units.allSatisfy({ $0 < 0x80 }) { return String(decoding: units.map { UInt8($0) }, as: UTF8.self) }
        return String(decoding: units, as: UTF16.self)
    }

    static func hex(_ value: UInt32) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: 8 - text.count) + text
    }
}
