import Testing

@testable import ImgFormats

@Suite("GPT")
struct GPTTests {
    static let longName = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  // 36 code units: no NUL terminator

    /// A 4 MiB image with a BIOS boot partition, an ESP in entry 3 (entry 2 unused) and a root.
    static func standard(sectors: Int = 8192) -> (ImageBuilder, ImageBuilder.GPTLayout) {
        var image = ImageBuilder(sectors: sectors)
        let layout = image.writeGPT(
            diskGUID: TestGUID.disk,
            entries: [
                .init(type: .biosBoot, uuid: TestGUID.part1, first: 34, last: 2047, name: "BIOS boot"),
                .init(type: .efiSystem, uuid: TestGUID.part2, first: 2048, last: 4095, name: "räksmörgås ✓", index: 2),
                .init(
                    type: .linuxFilesystem, uuid: TestGUID.part3, first: 4096, last: 8158, attributes: 1 << 2,
                    name: longName, index: 3),
            ])
        return (image, layout)
    }

    @Test func standardTable() throws {
        let (image, _) = Self.standard()
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .gpt)
        #expect(table.sectorSize == 512)
        #expect(table.identifier == "11111111-2222-3333-4444-555555555555")
        #expect(table.firstUsableLBA == 34)
        #expect(table.lastUsableLBA == 8158)
        #expect(table.findings.isEmpty, "\(table.findings)")

        // Entries with a zero type GUID are skipped; numbers are entry index + 1.
        #expect(table.partitions.map(\.number) == [1, 3, 4])
        #expect(table.partitions.allSatisfy { $0.kind == .gpt && $0.mbrType == nil })
        #expect(table.partitions.map(\.typeGUID) == [.biosBoot, .efiSystem, .linuxFilesystem])
        #expect(table.partitions.map(\.uuid) == [TestGUID.part1, TestGUID.part2, TestGUID.part3])
        #expect(table.partitions.map(\.startSector) == [34, 2048, 4096])
        #expect(table.partitions.map(\.sectorCount) == [2014, 2048, 4063])
        #expect(table.partitions.map(\.name) == ["BIOS boot", "räksmörgås ✓", Self.longName])
        #expect(table.partitions.map(\.bootable) == [false, false, true])
        #expect(table.partitions.map(\.attributes) == [0, 0, 4])
    }

    @Test func corruptedPrimaryHeaderFallsBackToBackup() throws {
        var (image, layout) = Self.standard()
        image.bytes[image.offset(lba: 1) + 60] ^= 0xFF  // inside the disk GUID: header CRC now fails
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.map(\.number) == [1, 3, 4])
        #expect(table.identifier == TestGUID.disk.description)
        let warnings = table.findings.filter { $0.severity == .warning }
        #expect(warnings.count == 1, "\(table.findings)")
        #expect(warnings.first?.message.contains("header CRC32") == true)
        #expect(warnings.first?.message.contains("backup header at LBA \(layout.backupHeaderLBA)") == true)
        #expect(!table.hasErrors)
    }

    @Test func missingPrimarySignatureFallsBackToLastSector() throws {
        var (image, _) = Self.standard()
        image.put([UInt8](repeating: 0, count: 512), at: image.offset(lba: 1))
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.count == 3)
        #expect(table.findings.map(\.severity) == [.warning])
    }

    @Test func badPrimaryEntriesCRCFallsBackToBackup() throws {
        var (image, layout) = Self.standard()
        image.bytes[image.offset(lba: layout.primaryEntriesLBA) + 56] ^= 0x01  // first entry's name
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.first?.name == "BIOS boot", "the backup array is used")
        #expect(table.findings.count == 1)
        #expect(table.findings.first?.severity == .warning)
        #expect(table.findings.first?.message.contains("entries CRC32") == true)
    }

    @Test func badEntriesCRCInBothCopiesIsAnErrorWithTheEntriesUntrusted() throws {
        var (image, layout) = Self.standard()
        let clean = try #require(try PartitionTable.read(from: image.source))
        #expect(!clean.untrusted)
        image.bytes[image.offset(lba: layout.primaryEntriesLBA) + 56] ^= 0x01  // a name's first byte
        image.bytes[image.offset(lba: layout.backupEntriesLBA) + 56] ^= 0x01
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .gpt)
        #expect(table.hasErrors)
        #expect(table.findings.first { $0.severity == .error }?.message.contains("entries CRC32") == true)
        // What is there, from the primary's array, marked untrusted: a forensic view.
        #expect(table.untrusted)
        #expect(table.identifier == clean.identifier)
        #expect(table.partitions.map(\.startSector) == clean.partitions.map(\.startSector))
        #expect(table.partitions.map(\.typeGUID) == clean.partitions.map(\.typeGUID))
        #expect(table.partitions.first?.name != clean.partitions.first?.name, "the flipped byte is what is shown")
        #expect(table.findings.contains { $0.severity == .error && $0.message.contains("untrusted") })
    }

    @Test func headerCRCFailuresInBothCopiesLeaveNothingToShow() throws {
        var (image, _) = Self.standard()
        image.bytes[image.offset(lba: 1) + 60] ^= 0xFF
        image.bytes[image.offset(lba: 8191) + 60] ^= 0xFF
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.isEmpty && !table.untrusted && table.identifier == "")
    }

    @Test func badBackupWithGoodPrimaryIsAWarning() throws {
        var (image, layout) = Self.standard()
        image.bytes[image.offset(lba: layout.backupHeaderLBA) + 60] ^= 0xFF
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.count == 3)
        #expect(table.findings.count == 1)
        #expect(table.findings.first?.message.contains("backup GPT header at LBA \(layout.backupHeaderLBA) is unusable") == true)
    }

    @Test func entryCountNearUInt32MaxIsBounded() throws {
        var (image, layout) = Self.standard()
        // A header with a correct CRC that claims 2^32-1 entries must not make us read 512 GiB.
        for lba in [UInt64(1), layout.backupHeaderLBA] {
            image.put32(0xFFFF_FFFF, at: image.offset(lba: lba) + 80)
            image.resealGPTHeader(at: lba)
        }
        let clock = ContinuousClock()
        var result: PartitionTable?
        let elapsed = try clock.measure { result = try PartitionTable.read(from: image.source) }
        let table = try #require(result)
        #expect(table.partitions.isEmpty)
        #expect(table.hasErrors)
        #expect(table.findings.contains { $0.message.contains("4294967295 entries") })
        #expect(elapsed < .seconds(5))
    }

    @Test func entryCountTooLargeOnlyInPrimaryUsesBackup() throws {
        var (image, _) = Self.standard()
        image.put32(0xFFFF_FFFF, at: image.offset(lba: 1) + 80)
        image.resealGPTHeader(at: 1)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.count == 3)
        #expect(table.findings.map(\.severity) == [.warning])
    }

    @Test(arguments: [
        (12, UInt32(0), "header size"),  // below 92
        (12, 91, "header size"),
        (12, 513, "header size"),  // above the sector size
        (84, 100, "not a multiple of 128"),  // entry size
        (84, 0, "not a multiple of 128"),
        (84, 64, "not a multiple of 128"),
        (24, 7, "read from LBA 1"),  // my_lba
        (72, 0xFFFF_FFF0, "past the end of the image"),  // entries LBA
    ] as [(Int, UInt32, String)])
    func invalidHeaderFieldsAreRejected(offset: Int, value: UInt32, reason: String) throws {
        var (image, _) = Self.standard()
        // Reseal, so that the field check rather than the header CRC is what rejects the header.
        image.put32(value, at: image.offset(lba: 1) + offset)
        image.resealGPTHeader(at: 1)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.count == 3, "the backup is used")
        let warning = try #require(table.findings.first)
        #expect(table.findings.count == 1)
        #expect(warning.severity == .warning)
        #expect(warning.message.contains(reason), "\(warning)")
    }

    @Test func partitionPastEndOfImage() throws {
        var image = ImageBuilder(sectors: 4096)
        image.writeGPT(
            diskGUID: TestGUID.disk,
            entries: [
                .init(type: .linuxFilesystem, uuid: TestGUID.part1, first: 2048, last: 3000),
                .init(type: .linuxFilesystem, uuid: TestGUID.part2, first: 3001, last: 9999),
            ])
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.count == 2, "kept, with a finding")
        let errors = table.findings.filter { $0.severity == .error }
        #expect(errors.count == 1)
        #expect(errors.first?.message.contains("partition 2") == true)
        #expect(errors.first?.message.contains("past the end of the image (4096 sectors)") == true)
    }

    @Test func overlapAndOutsideUsableRange() throws {
        var image = ImageBuilder(sectors: 4096)
        image.writeGPT(
            diskGUID: TestGUID.disk,
            entries: [
                .init(type: .linuxFilesystem, uuid: TestGUID.part1, first: 2048, last: 3000),
                .init(type: .linuxFilesystem, uuid: TestGUID.part2, first: 2500, last: 3500),
                .init(type: .linuxFilesystem, uuid: TestGUID.part3, first: 10, last: 20),
            ])
        let table = try #require(try PartitionTable.read(from: image.source))
        let messages = table.findings.map(\.message)
        #expect(messages.contains { $0.contains("partitions 1 and 2 overlap") }, "\(messages)")
        #expect(messages.contains { $0.contains("partition 3") && $0.contains("outside the usable range") })
    }

    @Test func lastBeforeFirstIsSkippedWithFinding() throws {
        var image = ImageBuilder(sectors: 4096)
        image.writeGPT(
            diskGUID: TestGUID.disk,
            entries: [
                .init(type: .linuxFilesystem, uuid: TestGUID.part1, first: 3000, last: 2048),
                .init(type: .linuxFilesystem, uuid: TestGUID.part2, first: 0, last: UInt64.max),
            ])
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.map(\.number) == [])
        #expect(table.findings.filter { $0.severity == .error }.count == 2)
    }

    @Test func grownImageIsNoted() throws {
        var (image, _) = Self.standard()
        image.bytes += [UInt8](repeating: 0, count: 512 * 100)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.count == 3)
        #expect(table.findings.map(\.severity) == [.info])
        #expect(table.findings.first?.message.contains("grown") == true)
    }

    @Test func truncatedImageLosesBackup() throws {
        var (image, _) = Self.standard()
        image.bytes.removeLast(512 * 100)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.partitions.count == 3)
        #expect(table.findings.contains { $0.message.contains("truncated") })
        #expect(table.findings.contains { $0.severity == .error && $0.message.contains("partition 4") })
    }

    @Test func hybridMBRIsNoted() throws {
        var (image, _) = Self.standard()
        image.setMBREntry(slot: 1, type: 0x0C, start: 2048, count: 2048)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .gpt)
        #expect(table.findings.map(\.severity) == [.info])
        #expect(table.findings.first?.message.contains("hybrid") == true)
    }

    @Test func fourKSectorsAreDetected() throws {
        var image = ImageBuilder(sectors: 1024, sectorSize: 4096)
        image.writeGPT(
            diskGUID: TestGUID.disk,
            entries: [.init(type: .efiSystem, uuid: TestGUID.part1, first: 256, last: 511, name: "ESP")])
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.sectorSize == 4096)
        #expect(table.firstUsableLBA == 6)
        #expect(table.findings.isEmpty, "\(table.findings)")
        #expect(table.partitions.map(\.startSector) == [256])
        #expect(table.partitions.map(\.sectorCount) == [256])
    }

    @Test func bothHeadersGoneIsAnErrorNotAThrow() throws {
        var image = ImageBuilder(sectors: 64)
        image.setMBREntry(slot: 0, type: 0xEE, start: 1, count: 63)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .gpt)
        #expect(table.partitions.isEmpty)
        #expect(table.findings.map(\.severity) == [.error])
    }

    @Test func protectiveMBRInTinyImage() throws {
        // Exactly one sector: no room for any GPT header.
        var image = ImageBuilder(sectors: 1)
        image.setMBREntry(slot: 0, type: 0xEE, start: 1, count: 0xFFFF_FFFF)
        let table = try #require(try PartitionTable.read(from: image.source))
        #expect(table.kind == .gpt)
        #expect(table.hasErrors)
    }
}
