@testable import ImgFormats

/// Builds partition tables byte by byte, independently of the parsers under test: every field is
/// written at its documented offset, little-endian, with CRCs computed over the written bytes.
struct ImageBuilder {
    var bytes: [UInt8]
    let sectorSize: Int

    init(sectors: Int, sectorSize: Int = 512) {
        self.sectorSize = sectorSize
        bytes = [UInt8](repeating: 0, count: sectors * sectorSize)
    }

    var sectors: UInt64 { UInt64(bytes.count / sectorSize) }
    var source: MemoryByteSource { MemoryByteSource(bytes) }

    func offset(lba: UInt64) -> Int { Int(lba) * sectorSize }

    // MARK: raw little-endian writes

    mutating func put(_ value: UInt64, width: Int, at offset: Int) {
        for i in 0..<width { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
    mutating func put16(_ value: UInt16, at offset: Int) { put(UInt64(value), width: 2, at: offset) }
    mutating func put32(_ value: UInt32, at offset: Int) { put(UInt64(value), width: 4, at: offset) }
    mutating func put64(_ value: UInt64, at offset: Int) { put(value, width: 8, at: offset) }
    mutating func put(_ data: [UInt8], at offset: Int) { bytes.replaceSubrange(offset..<offset + data.count, with: data) }
    /// ISO 9660's both-endian fields: the little-endian copy, then the big-endian one.
    mutating func putBothEndian(_ value: UInt32, width: Int, at offset: Int) {
        put(UInt64(value), width: width, at: offset)
        for i in 0..<width { bytes[offset + width + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(width - 1 - i))) }
    }

    func read32(at offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }
    func read64(at offset: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    // MARK: MBR and EBR

    /// Writes 55 AA at the end of the 512-byte boot record at `lba`.
    mutating func setBootSignature(lba: UInt64 = 0) {
        let base = offset(lba: lba)
        bytes[base + 510] = 0x55
        bytes[base + 511] = 0xAA
    }

    mutating func setDiskSignature(_ value: UInt32) { put32(value, at: 440) }

    /// Writes one 16-byte partition entry (slot 0...3) of the boot record at `lba`, and its 55AA.
    mutating func setMBREntry(
        lba: UInt64 = 0, slot: Int, bootable: Bool = false, type: UInt8, start: UInt32, count: UInt32
    ) {
        let base = offset(lba: lba) + 446 + 16 * slot
        bytes[base] = bootable ? 0x80 : 0x00
        put([0xFE, 0xFF, 0xFF], at: base + 1)  // CHS start: "use LBA", as modern tools write
        bytes[base + 4] = type
        put([0xFE, 0xFF, 0xFF], at: base + 5)
        put32(start, at: base + 8)
        put32(count, at: base + 12)
        setBootSignature(lba: lba)
    }

    struct Logical {
        var ebrLBA: UInt64  // absolute
        var offsetFromEBR: UInt32  // data start relative to its EBR
        var count: UInt32
        var type: UInt8 = 0x83
        var bootable = false
    }

    /// Writes EBRs for `logicals` in order, linking each to the next with addresses relative to the
    /// start of the extended partition, as the format requires.
    mutating func writeEBRChain(extendedStart: UInt64, logicals: [Logical]) {
        for (index, logical) in logicals.enumerated() {
            setMBREntry(
                lba: logical.ebrLBA, slot: 0, bootable: logical.bootable, type: logical.type,
                start: logical.offsetFromEBR, count: logical.count)
            if index + 1 < logicals.count {
                let next = logicals[index + 1]
                let nextEnd = next.ebrLBA + UInt64(next.offsetFromEBR) + UInt64(next.count)
                setMBREntry(
                    lba: logical.ebrLBA, slot: 1, type: 0x05, start: UInt32(next.ebrLBA - extendedStart),
                    count: UInt32(nextEnd - next.ebrLBA))
            }
        }
    }

    /// Points the link entry of the EBR at `ebrLBA` to `target` (absolute), for hostile chains.
    mutating func linkEBR(at ebrLBA: UInt64, extendedStart: UInt64, to target: UInt64) {
        setMBREntry(lba: ebrLBA, slot: 1, type: 0x05, start: UInt32(target - extendedStart), count: 1)
    }

    // MARK: GPT

    struct GPTEntry {
        var type: GUID
        var uuid: GUID
        var first: UInt64
        var last: UInt64
        var attributes: UInt64 = 0
        var name: String = ""
        var index: Int? = nil  // slot in the array; nil = next free
    }

    struct GPTLayout {
        var primaryEntriesLBA: UInt64
        var backupEntriesLBA: UInt64
        var backupHeaderLBA: UInt64
        var entryCount: UInt32
        var entrySize: UInt32
    }

    /// Writes a complete GPT: protective MBR, primary header at LBA 1 with its array at LBA 2, and
    /// the backup array and header at the end of the image, all with correct CRCs.
    @discardableResult
    mutating func writeGPT(
        diskGUID: GUID, entries: [GPTEntry], entryCount: UInt32 = 128, entrySize: UInt32 = 128,
        firstUsable: UInt64? = nil
    ) -> GPTLayout {
        let arrayBytes = Int(entryCount) * Int(entrySize)
        let arraySectors = UInt64((arrayBytes + sectorSize - 1) / sectorSize)
        let last = sectors - 1
        let layout = GPTLayout(
            primaryEntriesLBA: 2, backupEntriesLBA: last - arraySectors, backupHeaderLBA: last,
            entryCount: entryCount, entrySize: entrySize)

        let protectiveCount = UInt32(min(last, UInt64(UInt32.max)))
        setMBREntry(slot: 0, type: 0xEE, start: 1, count: protectiveCount)

        var array = [UInt8](repeating: 0, count: arrayBytes)
        for (position, entry) in entries.enumerated() {
            let base = (entry.index ?? position) * Int(entrySize)
            array.replaceSubrange(base..<base + 16, with: entry.type.bytes)
            array.replaceSubrange(base + 16..<base + 32, with: entry.uuid.bytes)
            for i in 0..<8 {
                array[base + 32 + i] = UInt8(truncatingIfNeeded: entry.first >> (8 * UInt64(i)))
                array[base + 40 + i] = UInt8(truncatingIfNeeded: entry.last >> (8 * UInt64(i)))
                array[base + 48 + i] = UInt8(truncatingIfNeeded: entry.attributes >> (8 * UInt64(i)))
            }
            for (i, unit) in entry.name.utf16.prefix(36).enumerated() {
                array[base + 56 + 2 * i] = UInt8(unit & 0xFF)
                array[base + 57 + 2 * i] = UInt8(unit >> 8)
            }
        }
        put(array, at: offset(lba: layout.primaryEntriesLBA))
        put(array, at: offset(lba: layout.backupEntriesLBA))

        let first = firstUsable ?? (2 + arraySectors)
        let lastUsable = layout.backupEntriesLBA - 1
        for (lba, alternate, entriesLBA) in [
            (UInt64(1), layout.backupHeaderLBA, layout.primaryEntriesLBA),
            (layout.backupHeaderLBA, UInt64(1), layout.backupEntriesLBA),
        ] {
            let base = offset(lba: lba)
            put(Array("EFI PART".utf8), at: base)
            put32(0x0001_0000, at: base + 8)
            put32(92, at: base + 12)
            put64(lba, at: base + 24)
            put64(alternate, at: base + 32)
            put64(first, at: base + 40)
            put64(lastUsable, at: base + 48)
            put(diskGUID.bytes, at: base + 56)
            put64(entriesLBA, at: base + 72)
            put32(entryCount, at: base + 80)
            put32(entrySize, at: base + 84)
            put32(CRC32.checksum(array), at: base + 88)
            resealGPTHeader(at: lba)
        }
        return layout
    }

    /// Recomputes the header CRC of the GPT header at `lba` after a field was changed on purpose.
    mutating func resealGPTHeader(at lba: UInt64) {
        let base = offset(lba: lba)
        let size = Int(read32(at: base + 12))
        put32(0, at: base + 16)
        let crc = CRC32.checksum(bytes[base..<base + size])
        put32(crc, at: base + 16)
    }

    /// Recomputes the entries CRC from the header's own array fields, then the header CRC.
    mutating func resealGPTEntries(headerAt lba: UInt64) {
        let base = offset(lba: lba)
        let entriesOffset = Int(read64(at: base + 72)) * sectorSize
        let length = Int(read32(at: base + 80)) * Int(read32(at: base + 84))
        put32(CRC32.checksum(bytes[entriesOffset..<entriesOffset + length]), at: base + 88)
        resealGPTHeader(at: lba)
    }
}

/// Fixed GUIDs so tests and failures are reproducible.
enum TestGUID {
    static let disk = GUID(string: "11111111-2222-3333-4444-555555555555")!
    static let part1 = GUID(string: "AAAAAAAA-0001-4000-8000-000000000001")!
    static let part2 = GUID(string: "AAAAAAAA-0002-4000-8000-000000000002")!
    static let part3 = GUID(string: "AAAAAAAA-0003-4000-8000-000000000003")!
}

extension PartitionTable {
    /// Findings of at least `severity`, for assertions that ignore the milder ones.
    func findings(atLeast severity: Finding.Severity) -> [Finding] {
        let rank: [Finding.Severity: Int] = [.info: 0, .warning: 1, .error: 2]
        return findings.filter { rank[$0.severity]! >= rank[severity]! }
    }
}
