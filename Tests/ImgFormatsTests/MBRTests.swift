import Testing

@testable import ImgFormats

@Suite("MBR and EBR")
struct MBRTests {
    @Test func primaryPartitions() throws {
        var image = ImageBuilder(sectors: 8192)
        image.setDiskSignature(0x1234_ABCD)
        image.setMBREntry(slot: 0, type: 0x83, start: 2048, count: 2048)
        image.setMBREntry(slot: 1, type: 0x82, start: 4096, count: 1024)
        // Slot 3 is empty: primaries keep their slot numbers, so the next one is number 4.
        image.setMBREntry(slot: 3, type: 0x0C, start: 6144, count: 2048)

        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .dos)
        #expect(table.sectorSize == 512)
        #expect(table.identifier == "0x1234abcd")
        #expect(table.firstUsableLBA == nil)
        #expect(table.findings.isEmpty, "\(table.findings)")
        #expect(table.partitions.map(\.number) == [1, 2, 4])
        #expect(table.partitions.map(\.startSector) == [2048, 4096, 6144])
        #expect(table.partitions.map(\.sectorCount) == [2048, 1024, 2048])
        #expect(table.partitions.map(\.mbrType) == [0x83, 0x82, 0x0C])
        #expect(table.partitions.allSatisfy { $0.kind == .primary && $0.typeGUID == nil && $0.name == nil })
    }

    @Test func bootableFlag() throws {
        var image = ImageBuilder(sectors: 8192)
        image.setMBREntry(slot: 0, type: 0x83, start: 2048, count: 2048)
        image.setMBREntry(slot: 1, bootable: true, type: 0x83, start: 4096, count: 2048)

        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.map(\.bootable) == [false, true])
    }

    @Test(arguments: [
        (UInt32(0x1234_ABCD), "0x1234abcd"),
        (UInt32(0x0000_00FF), "0x000000ff"),
        (UInt32(0), "0x00000000"),
        (UInt32(0xFFFF_FFFF), "0xffffffff"),
    ])
    func identifierIsSfdiskStyle(signature: UInt32, expected: String) throws {
        var image = ImageBuilder(sectors: 4096)
        image.setDiskSignature(signature)
        image.setMBREntry(slot: 0, type: 0x83, start: 2048, count: 2048)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.identifier == expected)
    }

    /// An extended partition at 6144 holding three logicals, each behind its own EBR.
    static func threeLogicals() -> ImageBuilder {
        var image = ImageBuilder(sectors: 32768)
        image.setMBREntry(slot: 0, bootable: true, type: 0x83, start: 2048, count: 4096)
        image.setMBREntry(slot: 1, type: 0x0F, start: 6144, count: 20480)
        image.writeEBRChain(
            extendedStart: 6144,
            logicals: [
                .init(ebrLBA: 6144, offsetFromEBR: 2048, count: 4096),
                .init(ebrLBA: 12288, offsetFromEBR: 2048, count: 2048, type: 0x82),
                .init(ebrLBA: 16384, offsetFromEBR: 63, count: 10177, type: 0x8E, bootable: true),
            ])
        return image
    }

    @Test func ebrChainWithThreeLogicals() throws {
        let table = try #require(try PartitionTable.read(from: Self.threeLogicals().source))
        #expect(table.findings.isEmpty, "\(table.findings)")
        #expect(table.partitions.map(\.number) == [1, 2, 5, 6, 7])
        #expect(table.partitions.map(\.kind) == [.primary, .extended, .logical, .logical, .logical])
        // Logical start = its EBR's LBA + the relative start in that EBR.
        #expect(table.partitions.map(\.startSector) == [2048, 6144, 8192, 14336, 16447])
        #expect(table.partitions.map(\.sectorCount) == [4096, 20480, 4096, 2048, 10177])
        #expect(table.partitions.map(\.mbrType) == [0x83, 0x0F, 0x83, 0x82, 0x8E])
        #expect(table.partitions.map(\.bootable) == [true, false, false, false, true])
    }

    @Test(arguments: [UInt8(0x05), 0x0F, 0x85])
    func allExtendedTypesAreFollowed(type: UInt8) throws {
        var image = ImageBuilder(sectors: 16384)
        image.setMBREntry(slot: 0, type: type, start: 2048, count: 8192)
        image.writeEBRChain(extendedStart: 2048, logicals: [.init(ebrLBA: 2048, offsetFromEBR: 2048, count: 2048)])
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.map(\.number) == [1, 5])
        #expect(table.partition(number: 5)?.startSector == 4096)
    }

    @Test(arguments: ["itself", "backwards"])
    func ebrLoopTerminatesWithFinding(shape: String) throws {
        var image = Self.threeLogicals()
        switch shape {
        case "itself": image.linkEBR(at: 12288, extendedStart: 6144, to: 12288)
        default: image.linkEBR(at: 16384, extendedStart: 6144, to: 6144)
        }
        let table = try #require(try PartitionTable.read(from: image.source))
        let loop = table.findings.filter { $0.severity == .error && $0.message.contains("loop") }
        #expect(loop.count == 1, "\(table.findings)")
        // What was read before the bad link is kept.
        let logicals = table.partitions.filter { $0.kind == .logical }
        #expect(logicals.count == (shape == "itself" ? 2 : 3))
    }

    @Test func ebrChainHopLimit() throws {
        // 300 EBRs, each one sector after the previous: strictly forward, but absurdly long.
        var image = ImageBuilder(sectors: 2048)
        image.setMBREntry(slot: 0, type: 0x05, start: 100, count: 1900)
        image.writeEBRChain(
            extendedStart: 100,
            logicals: (0..<300).map { .init(ebrLBA: 100 + UInt64($0) * 2, offsetFromEBR: 1, count: 1) })
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.filter { $0.kind == .logical }.count == MBR.maxEBRHops)
        #expect(table.findings.contains { $0.severity == .error && $0.message.contains("longer than") })
    }

    @Test func ebrWithoutSignatureEndsChain() throws {
        var image = Self.threeLogicals()
        image.bytes[image.offset(lba: 16384) + 510] = 0
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.map(\.number) == [1, 2, 5, 6])
        #expect(table.findings.contains { $0.severity == .error && $0.message.contains("55AA") })
    }

    @Test func ebrPastEndOfImage() throws {
        var image = ImageBuilder(sectors: 4096)
        image.setMBREntry(slot: 0, type: 0x05, start: 100_000, count: 1000)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.map(\.kind) == [.extended])
        #expect(table.findings.contains { $0.message.contains("EBR at LBA 100000 is past the end") })
        #expect(table.findings.contains { $0.message.contains("runs past the end of the image") })
    }

    @Test func partitionPastEndOfImage() throws {
        var image = ImageBuilder(sectors: 4096)
        image.setMBREntry(slot: 0, type: 0x83, start: 2048, count: 2048)  // ends exactly at the end: fine
        image.setMBREntry(slot: 1, type: 0x83, start: 4000, count: 0xFFFF_FFFF)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.count == 2)
        let pastEnd = table.findings.filter { $0.message.contains("past the end") }
        #expect(pastEnd.count == 1)
        #expect(pastEnd.first?.severity == .error)
        #expect(pastEnd.first?.message.contains("partition 2") == true)
    }

    @Test func overlappingPrimariesAreReported() throws {
        var image = ImageBuilder(sectors: 8192)
        image.setMBREntry(slot: 0, type: 0x83, start: 2048, count: 4096)
        image.setMBREntry(slot: 1, type: 0x83, start: 4096, count: 2048)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.findings.map(\.message).contains { $0.contains("partitions 1 and 2 overlap") })
    }

    @Test func zeroSizeEntriesAreSkippedAndTypeZeroWithASizeIsListed() throws {
        var image = ImageBuilder(sectors: 8192)
        image.setMBREntry(slot: 0, type: 0x83, start: 2048, count: 0)
        image.setMBREntry(slot: 1, type: 0x00, start: 0, count: 100)
        image.setMBREntry(slot: 2, type: 0x83, start: 2048, count: 100)
        let table = try #require(try PartitionTable.read(from: image.source))
        // The kernel and sfdisk skip only size 0; a type-0 entry with a size is a partition.
        #expect(table.partitions.map(\.number) == [2, 3])
        #expect(table.partitions[0].mbrType == 0x00 && table.partitions[0].startSector == 0)
    }

    @Test func emptyLogicalEntryDoesNotConsumeANumber() throws {
        var image = Self.threeLogicals()
        // Blank the data entry of the middle EBR but keep its link.
        image.put([UInt8](repeating: 0, count: 16), at: image.offset(lba: 12288) + 446)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.filter { $0.kind == .logical }.map(\.startSector) == [8192, 16447])
        #expect(table.partitions.map(\.number) == [1, 2, 5, 6])
    }

    @Test func signatureOnlyIsAnEmptyDosTable() throws {
        var image = ImageBuilder(sectors: 16)
        image.setBootSignature()
        image.setDiskSignature(0xDEAD_BEEF)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .dos)
        #expect(table.partitions.isEmpty)
        #expect(table.identifier == "0xdeadbeef")
    }

    @Test(arguments: [0, 100, 511])
    func tooShortForASectorIsNil(length: Int) throws {
        var bytes = [UInt8](repeating: 0, count: length)
        if length >= 2 { bytes[length - 2] = 0x55; bytes[length - 1] = 0xAA }
        #expect(try PartitionTable.read(from: MemoryByteSource(bytes)) == nil)
    }

    @Test func zeroImageIsNil() throws {
        #expect(try PartitionTable.read(from: ImageBuilder(sectors: 2048).source) == nil)
    }

    @Test func filesystemBootSectorIsNotATable() throws {
        var image = ImageBuilder(sectors: 64)
        image.setMBREntry(slot: 0, type: 0x83, start: 1, count: 10)
        image.bytes[446] = 0x29  // a FAT boot sector has code here, not a boot indicator
        #expect(try PartitionTable.read(from: image.source) == nil)
    }

    /// A FAT12 boot sector built field by field: entry area zero (boot indicators 0), 55AA. It is
    /// a filesystem, not an empty dos table; the same sector with a BPB that does not fit the image
    /// (or none) stays a table.
    @Test func fatBootSectorFillingTheImageIsNotATable() throws {
        func volume(totalSectors: UInt16, imageSectors: Int) -> ImageBuilder {
            var image = ImageBuilder(sectors: imageSectors)
            image.put([0xEB, 0x3C, 0x90] + Array("MSDOS5.0".utf8), at: 0)
            image.put16(512, at: 11)         // bytes per sector
            image.bytes[13] = 4              // sectors per cluster
            image.put16(1, at: 14)           // reserved sectors
            image.bytes[16] = 2              // FATs
            image.put16(512, at: 17)         // root directory entries
            image.put16(totalSectors, at: 19)
            image.bytes[21] = 0xF8           // media
            image.put16(8, at: 22)           // sectors per FAT: 2030 clusters need 6
            image.setBootSignature()
            return image
        }
        #expect(try PartitionTable.read(from: volume(totalSectors: 8192, imageSectors: 8192).source) == nil)
        #expect(try FATFilesystem.open(volume(totalSectors: 8192, imageSectors: 8192).source, offset: 0, length: 8192 * 512).kind == .fat12)
        // A BPB claiming more sectors than the image has is no filesystem here: the sector reads as a table.
        #expect(try PartitionTable.read(from: volume(totalSectors: 8192, imageSectors: 4096).source)?.kind == .dos)
        var exfat = ImageBuilder(sectors: 64)
        exfat.put([0xEB, 0x76, 0x90] + Array("EXFAT   ".utf8), at: 0)
        exfat.setBootSignature()
        #expect(try PartitionTable.read(from: exfat.source) == nil)
    }

    @Test func gptHeaderBehindNonProtectiveMBRIsReported() throws {
        var image = ImageBuilder(sectors: 4096)
        image.writeGPT(diskGUID: TestGUID.disk, entries: [])
        image.setMBREntry(slot: 0, type: 0x83, start: 2048, count: 2048)  // overwrite the 0xEE entry
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .dos)
        #expect(table.findings.contains { $0.message.contains("not protective") })
    }
}
