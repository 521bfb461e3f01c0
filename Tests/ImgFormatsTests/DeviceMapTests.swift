import ImgFormats
import Testing

@Suite struct DeviceMapTests {
    @Test func rendersFirstHardDisk() {
        #expect(DeviceMap.firstHardDisk("/dev/loop3").text == "(hd0) /dev/loop3\n")
    }

    @Test func parsesWhatItRendersAndGrubStyleFiles() throws {
        let map = DeviceMap([.init(drive: "hd0", device: "/dev/loop3"), .init(drive: "hd1", device: "/dev/mapper/hda")])
        #expect(try DeviceMap(parsing: map.text) == map)
        let grubMkdevicemap = "# comment\n(fd0)\t/dev/fd0\n\n  (hd0)   /dev/disk/by-id/ata-X\n"
        #expect(try DeviceMap(parsing: grubMkdevicemap).entries == [
            .init(drive: "fd0", device: "/dev/fd0"), .init(drive: "hd0", device: "/dev/disk/by-id/ata-X"),
        ])
    }

    @Test(arguments: ["hd0 /dev/loop0", "(hd0)", "() /dev/loop0", "(hd0 /dev/loop0", "(hd0) /dev/a /dev/b"])
    func rejectsMalformedLines(_ line: String) {
        #expect(throws: DeviceMap.ParseError.self) { try DeviceMap(parsing: "(hd1) /dev/sdb\n" + line + "\n") }
        let error = try? #require(throws: DeviceMap.ParseError.self) { try DeviceMap(parsing: "(hd1) /dev/sdb\n" + line) }
        #expect(error?.line == 2)
    }
}

@Suite struct EmbeddingAreaTests {
    func dos(_ starts: [UInt64]) -> PartitionTable {
        PartitionTable(kind: .dos, sectorSize: 512, identifier: "0x1", partitions: starts.enumerated().map { i, s in
            Partition(number: i + 1, kind: .primary, startSector: s, sectorCount: 100, mbrType: 0x83, bootable: false,
                      typeGUID: nil, uuid: nil, name: nil, attributes: nil)
        }, findings: [], firstUsableLBA: nil, lastUsableLBA: nil)
    }

    @Test func postMBRGapEndsAtTheFirstPartition() {
        #expect(EmbeddingArea.find(in: dos([4096, 2048])) == .success(.init(kind: .postMBRGap, startSector: 1, sectorCount: 2047)))
        #expect(EmbeddingArea.find(in: dos([63])) == .success(.init(kind: .postMBRGap, startSector: 1, sectorCount: 62)))
    }

    @Test(arguments: [UInt64(0), 1])
    func noGapWhenAPartitionStartsRightAfterTheMBR(start: UInt64) {
        #expect(EmbeddingArea.find(in: dos([2048, start])) == .failure(.noPostMBRGap(firstPartitionStart: start)))
    }

    @Test func gptUsesTheBIOSBootPartition() {
        func part(_ n: Int, _ type: GUID, _ start: UInt64) -> Partition {
            Partition(number: n, kind: .gpt, startSector: start, sectorCount: 2048, mbrType: nil, bootable: false,
                      typeGUID: type, uuid: nil, name: nil, attributes: 0)
        }
        let withBoot = PartitionTable(kind: .gpt, sectorSize: 512, identifier: "X",
                                      partitions: [part(1, .linuxFilesystem, 4096), part(2, .biosBoot, 2048)],
                                      findings: [], firstUsableLBA: 34, lastUsableLBA: 100_000)
        #expect(EmbeddingArea.find(in: withBoot) == .success(.init(kind: .biosBootPartition(number: 2), startSector: 2048, sectorCount: 2048)))
        let without = PartitionTable(kind: .gpt, sectorSize: 512, identifier: "X", partitions: [part(1, .linuxFilesystem, 2048)],
                                     findings: [], firstUsableLBA: 34, lastUsableLBA: 100_000)
        #expect(EmbeddingArea.find(in: without) == .failure(.noBIOSBootPartition))
    }
}
