import Testing

@testable import ImgFormats

@Suite("Unallocated space")
struct UnallocatedTests {
    static func range(_ start: UInt64, _ count: UInt64) -> SectorRange { SectorRange(start: start, count: count) }

    static func dosTable(_ partitions: [Partition]) -> PartitionTable {
        PartitionTable(kind: .dos, sectorSize: 512, identifier: "0x00000000", partitions: partitions, findings: [])
    }

    static func part(_ number: Int, _ kind: Partition.Kind, _ start: UInt64, _ count: UInt64) -> Partition {
        Partition(number: number, kind: kind, startSector: start, sectorCount: count, mbrType: kind == .extended ? 0x05 : 0x83)
    }

    @Test func dosGapsBeforeBetweenAndAfter() throws {
        var image = ImageBuilder(sectors: 16384)
        image.setMBREntry(slot: 0, type: 0x83, start: 2048, count: 2048)
        image.setMBREntry(slot: 1, type: 0x82, start: 6144, count: 1024)
        let table = try #require(try PartitionTable.read(from: image.source))
        // The post-MBR gap starts at sector 1: sector 0 is the MBR itself.
        #expect(table.unallocated(totalSectors: image.sectors) == [Self.range(1, 2047), Self.range(4096, 2048), Self.range(7168, 9216)])
    }

    @Test func dosFullyAllocatedHasNoGaps() {
        let table = Self.dosTable([Self.part(1, .primary, 1, 99)])
        #expect(table.unallocated(totalSectors: 100) == [])
    }

    @Test func emptyDosTableIsAllFree() {
        #expect(Self.dosTable([]).unallocated(totalSectors: 100) == [Self.range(1, 99)])
        #expect(Self.dosTable([]).unallocated(totalSectors: 1) == [])
        #expect(Self.dosTable([]).unallocated(totalSectors: 0) == [])
    }

    /// Logicals are allocated; the rest of the extended container (EBRs, alignment, its unused
    /// tail) is free.
    @Test func extendedContainerOutsideLogicalsIsFree() throws {
        let image = MBRTests.threeLogicals()
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.map(\.number) == [1, 2, 5, 6, 7])
        // Primary 2048+4096; extended 6144+20480; logicals 8192+4096, 14336+2048, 16447+10177.
        let logicals = table.partitions.filter { $0.kind == .logical }.map { ($0.startSector, $0.endSector) }
        #expect(logicals.map(\.0) == [8192, 14336, 16447], "the fixture's layout changed: \(logicals)")
        #expect(
            table.unallocated(totalSectors: image.sectors) == [
                Self.range(1, 2047),  // post-MBR gap
                Self.range(6144, 2048),  // first EBR and alignment
                Self.range(12288, 2048),  // second EBR and alignment
                Self.range(16384, 63),  // third EBR and its DOS-style 63-sector offset
                Self.range(26624, 6144),  // after the extended container
            ])
    }

    @Test func emptyExtendedContainerIsFree() {
        let table = Self.dosTable([Self.part(1, .primary, 2048, 2048), Self.part(2, .extended, 4096, 4096)])
        #expect(table.unallocated(totalSectors: 8192) == [Self.range(1, 2047), Self.range(4096, 4096)])
    }

    @Test func overlappingAndNestedPartitionsMerge() {
        let table = Self.dosTable([
            Self.part(1, .primary, 100, 100),  // 100..<200
            Self.part(2, .primary, 150, 100),  // 150..<250, overlaps 1
            Self.part(3, .primary, 160, 10),  // inside 1 and 2
            Self.part(4, .primary, 250, 50),  // adjacent to 2: no gap between
        ])
        #expect(table.unallocated(totalSectors: 400) == [Self.range(1, 99), Self.range(300, 100)])
    }

    @Test func partitionsPastTheEndAreClipped() {
        let table = Self.dosTable([Self.part(1, .primary, 50, 1000), Self.part(2, .primary, 5000, 10)])
        #expect(table.unallocated(totalSectors: 100) == [Self.range(1, 49)])
    }

    @Test func hostileValuesDoNotOverflow() {
        let table = Self.dosTable([Self.part(1, .primary, .max - 1, .max)])
        #expect(table.unallocated(totalSectors: .max) == [Self.range(1, .max - 2)])
    }

    @Test func gptUsesUsableRange() throws {
        var image = ImageBuilder(sectors: 8192)
        let layout = image.writeGPT(
            diskGUID: TestGUID.disk,
            entries: [
                .init(type: .biosBoot, uuid: TestGUID.part1, first: 2048, last: 4095),
                .init(type: .linuxFilesystem, uuid: TestGUID.part2, first: 6144, last: 7000),
            ])
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.firstUsableLBA == 34)
        let lastUsable = layout.backupEntriesLBA - 1  // 8158
        #expect(table.lastUsableLBA == lastUsable)
        #expect(
            table.unallocated(totalSectors: image.sectors) == [
                Self.range(34, 2014), Self.range(4096, 2048), Self.range(7001, lastUsable + 1 - 7001),
            ])
    }

    /// A header whose last usable LBA lies beyond a truncated image: the gap stops at the image end.
    @Test func gptUsableRangeCutAtImageEnd() {
        let table = PartitionTable(
            kind: .gpt, sectorSize: 512, identifier: "X", partitions: [], findings: [],
            firstUsableLBA: 34, lastUsableLBA: .max)
        #expect(table.unallocated(totalSectors: 100) == [Self.range(34, 66)])
    }

    /// The MBR and the primary header are never free, whatever a hostile header claims.
    @Test func gptUsableRangeStartsAfterPrimaryHeader() {
        let table = PartitionTable(
            kind: .gpt, sectorSize: 512, identifier: "X", partitions: [], findings: [],
            firstUsableLBA: 0, lastUsableLBA: 99)
        #expect(table.unallocated(totalSectors: 100) == [Self.range(2, 98)])
    }

    @Test func gptInvertedUsableRangeIsEmpty() {
        let table = PartitionTable(
            kind: .gpt, sectorSize: 512, identifier: "X", partitions: [], findings: [],
            firstUsableLBA: 100, lastUsableLBA: 50)
        #expect(table.unallocated(totalSectors: 1000) == [])
    }

    /// Partitions outside the usable range (allowed by the parser, with a finding) count only
    /// for their part inside it.
    @Test func gptPartitionOutsideUsableRange() {
        let table = PartitionTable(
            kind: .gpt, sectorSize: 512, identifier: "X",
            partitions: [
                Partition(number: 1, kind: .gpt, startSector: 1, sectorCount: 50, typeGUID: .linuxFilesystem),
                Partition(number: 2, kind: .gpt, startSector: 900, sectorCount: 200, typeGUID: .linuxFilesystem),
            ],
            findings: [], firstUsableLBA: 34, lastUsableLBA: 966)
        #expect(table.unallocated(totalSectors: 1000) == [Self.range(51, 849)])
    }

    /// With both headers unusable nothing is known to be allocated: all after the MBR is free.
    @Test func gptWithoutUsableHeader() throws {
        var image = ImageBuilder(sectors: 64)
        image.setMBREntry(slot: 0, type: 0xEE, start: 1, count: 63)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .gpt && table.firstUsableLBA == nil)
        #expect(table.unallocated(totalSectors: 64) == [Self.range(1, 63)])
    }

    @Test func sectorRangeEndSaturates() {
        #expect(Self.range(10, 5).end == 15)
        #expect(Self.range(.max, 5).end == .max)
    }

    /// Free ranges and partitions together tile the usable area exactly, on random tables.
    @Test func gapsComplementPartitions() {
        var rng = SeededGenerator(seed: 0x6A95)
        for _ in 0..<200 {
            let total = UInt64.random(in: 1...5000, using: &rng)
            let partitions = (0..<Int.random(in: 0...6, using: &rng)).map { index in
                Self.part(
                    index + 1, [.primary, .logical, .extended].randomElement(using: &rng)!,
                    UInt64.random(in: 0...6000, using: &rng), UInt64.random(in: 0...2000, using: &rng))
            }
            let free = Self.dosTable(partitions).unallocated(totalSectors: total)
            var covered = [Bool](repeating: false, count: Int(total))
            for p in partitions where p.kind != .extended {
                for s in stride(from: p.startSector, to: min(p.endSector, total), by: 1) { covered[Int(s)] = true }
            }
            var expected: [SectorRange] = []
            var sector = 1
            while sector < Int(total) {
                if covered[sector] { sector += 1; continue }
                let start = sector
                while sector < Int(total) && !covered[sector] { sector += 1 }
                expected.append(Self.range(UInt64(start), UInt64(sector - start)))
            }
            #expect(free == expected, "\(partitions) total \(total)")
        }
    }
}
