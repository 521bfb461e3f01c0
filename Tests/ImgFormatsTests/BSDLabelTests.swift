@testable import ImgFormats
import Testing

/// BSD disklabels inside MBR slices, built field by field: their partitions follow the MBR's,
/// numbered on, with the kernel's rules for offsets, the raw partition and unused entries.
struct BSDLabelTests {
    /// An MBR with one slice of `type` at 2048 (16384 sectors) and a label in its sector 1 holding
    /// `parts` (size, offset, fstype); the checksum is made right unless `breakChecksum`.
    static func image(type: UInt8, parts: [(size: UInt32, offset: UInt32, fstype: UInt8)], breakChecksum: Bool = false,
                      secondMagic: UInt32 = BSDLabel.magic) -> ImageBuilder {
        var image = ImageBuilder(sectors: 32768)
        image.setMBREntry(slot: 0, bootable: true, type: type, start: 2048, count: 16384)
        let base = image.offset(lba: 2049)
        image.put32(BSDLabel.magic, at: base)
        image.put32(secondMagic, at: base + 132)
        image.put16(UInt16(parts.count), at: base + 138)
        for (i, p) in parts.enumerated() {
            image.put32(p.size, at: base + 148 + 16 * i)
            image.put32(p.offset, at: base + 152 + 16 * i)
            image.bytes[base + 160 + 16 * i] = p.fstype
        }
        var xor: UInt16 = 0
        for i in stride(from: 0, to: 148 + 16 * parts.count, by: 2) { xor ^= UInt16(image.bytes[base + i]) | UInt16(image.bytes[base + i + 1]) << 8 }
        image.put16(breakChecksum ? ~xor : xor, at: base + 136)
        return image
    }

    @Test func freeBSDOffsetsCountFromTheSliceWhenTheRawPartitionStartsAtZero() throws {
        let image = Self.image(type: 0xA5, parts: [(4000, 16, 7), (2000, 4016, 1), (16384, 0, 0), (0, 9000, 7)])
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.map(\.number) == [1, 5, 6])
        #expect(table.partitions.dropFirst().map(\.startSector) == [2064, 6064])
        #expect(table.partitions.dropFirst().map(\.bsdType) == [7, 1] && table.partitions[1].name == "a")
        #expect(table.partitions.dropFirst().allSatisfy { $0.kind == .bsd })
        #expect(table.findings.isEmpty, "BSD partitions inside their slice are no overlap")
    }

    @Test func openBSDOffsetsAreAbsoluteAndTheRawPartitionIsSkipped() throws {
        let image = Self.image(type: 0xA6, parts: [(4000, 2064, 7), (2000, 6064, 1), (16384, 2048, 7)])
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.dropFirst().map(\.startSector) == [2064, 6064])
        #expect(table.partitions.map(\.number) == [1, 5, 6])
    }

    @Test func damagedLabelsAreFindingsAndOutsidePartitionsAreWarned() throws {
        for broken in [Self.image(type: 0xA9, parts: [(4000, 2064, 7)], breakChecksum: true),
                       Self.image(type: 0xA9, parts: [(4000, 2064, 7)], secondMagic: 0)] {
            let table = try #require(try PartitionTable.read(from: broken.source))
            #expect(table.partitions.count == 1 && table.findings.map(\.severity) == [.error])
        }
        let outside = Self.image(type: 0xA9, parts: [(4000, 100, 7)])
        let table = try #require(try PartitionTable.read(from: outside.source))
        #expect(table.partitions.count == 2 && table.findings.contains { $0.message.contains("extends outside") })
        // A slice of another type is never looked into.
        let linux = Self.image(type: 0x83, parts: [(4000, 2064, 7)])
        #expect(try PartitionTable.read(from: linux.source)?.partitions.count == 1)
    }
}
