@testable import ImgFormats
import Testing

/// The Apple partition map built field by field (big-endian): block 0's driver descriptor, then
/// one "PM" entry per block, in 512- and 2048-byte blocks.
struct APMTests {
    static func map(blockSize: Int = 512, sectors: Int = 4096, entries: [(start: UInt32, count: UInt32, name: String, type: String)],
                    mapCount: UInt32? = nil) -> ImageBuilder {
        var image = ImageBuilder(sectors: sectors)
        func be(_ value: UInt64, width: Int, at offset: Int) {
            for i in 0..<width { image.bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(width - 1 - i))) }
        }
        image.put(Array("ER".utf8), at: 0)
        be(UInt64(blockSize), width: 2, at: 2)
        for (i, e) in entries.enumerated() {
            let base = (i + 1) * blockSize
            image.put(Array("PM".utf8), at: base)
            be(UInt64(mapCount ?? UInt32(entries.count)), width: 4, at: base + 4)
            be(UInt64(e.start), width: 4, at: base + 8)
            be(UInt64(e.count), width: 4, at: base + 12)
            image.put(Array(e.name.utf8), at: base + 16)
            image.put(Array(e.type.utf8), at: base + 48)
        }
        return image
    }

    @Test func entriesInMapOrderIn512ByteSectors() throws {
        let image = Self.map(entries: [(1, 63, "Apple", "Apple_partition_map"), (2048, 1024, "untitled", "Apple_HFS"),
                                       (64, 1984, "Extra", "Apple_Free")])
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .mac && table.sectorSize == 512 && table.findings.isEmpty)
        #expect(table.partitions.map(\.number) == [1, 2, 3])
        #expect(table.partitions.map(\.startSector) == [1, 2048, 64])
        #expect(table.partitions.map(\.apmType) == ["Apple_partition_map", "Apple_HFS", "Apple_Free"])
        #expect(table.partitions[1].name == "untitled" && table.partitions[1].kind == .apm)
    }

    @Test func blocksOf2048BytesScalePositions() throws {
        let image = Self.map(blockSize: 2048, sectors: 8192, entries: [(1, 3, "Apple", "Apple_partition_map"), (16, 100, "ISO", "Apple_HFS")])
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.map(\.startSector) == [4, 64] && table.partitions.map(\.sectorCount) == [12, 400])
    }

    @Test func hostileMapsEndWithFindings() throws {
        // A map that claims 2^32-1 entries reads at most maxEntries blocks, and stops at the first block without "PM".
        let huge = Self.map(entries: [(1, 63, "Apple", "Apple_partition_map")], mapCount: .max)
        let table = try #require(try PartitionTable.read(from: huge.source))
        #expect(table.partitions.count == 1)
        #expect(table.findings.map(\.severity) == [.error, .error])
        // Past the end of the image, size 0 (skipped, as the kernel does), overlaps.
        let odd = Self.map(sectors: 64, entries: [(1, 3, "Apple", "Apple_partition_map"), (8, 0, "empty", "Apple_Free"),
                                                  (10, 100, "long", "Apple_HFS"), (20, 4, "inside", "Apple_UNIX_SVR2")])
        let t = try #require(try PartitionTable.read(from: odd.source))
        #expect(t.partitions.map(\.number) == [1, 3, 4])
        #expect(t.findings.contains { $0.message.contains("past the end") })
        #expect(t.findings.contains { $0.message.contains("overlap") })
    }

    @Test func notAMap() throws {
        var noEntry = ImageBuilder(sectors: 64)
        noEntry.put(Array("ER".utf8), at: 0)
        noEntry.put([0x02, 0x00], at: 2)
        #expect(try PartitionTable.read(from: noEntry.source) == nil)
        var oddBlock = Self.map(entries: [(1, 3, "Apple", "Apple_partition_map")])
        oddBlock.put([0x01, 0x00], at: 2)  // 256-byte blocks: not a map
        #expect(try PartitionTable.read(from: oddBlock.source) == nil)
    }
}
