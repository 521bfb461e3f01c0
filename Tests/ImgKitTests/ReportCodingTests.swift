import Foundation
import ImgKit
import Testing

/// Reports built with their public initialisers, as an embedder's own tests build them, survive
/// Foundation's coders as the same values; the kinds print as the CLI spells them.
struct ReportCodingTests {
    func roundTrip<T: Codable & Equatable>(_ value: T) throws -> T {
        try JSONDecoder().decode(T.self, from: try JSONEncoder().encode(value))
    }

    @Test("InspectReport, VerifyReport and BootObservation round-trip through JSONEncoder and JSONDecoder")
    func reports() throws {
        let fs = InspectReport.Filesystem(type: .other("zfs_member"), uuid: nil, label: "pool", version: "5000", blockSize: nil)
        let inspect = InspectReport(
            image: "/i.img", size: 1 << 30, sectorSize: 4096,
            partitionTable: .init(type: .gpt, id: "494D4754-0000-4000-8000-000000000000",
                                  partitions: [.init(number: 1, start: 256, size: 1024, type: .gpt(GUID(string: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")!),
                                                     bootable: true, uuid: nil, name: "EFI", filesystem: fs),
                                               .init(number: 5, start: 2048, size: 2048, type: .mbr(0x83), bootable: false,
                                                     uuid: nil, name: nil, filesystem: nil)],
                                  unallocated: [SectorRange(start: 6, count: 250)]),
            filesystem: nil, bootCode: BootCode(kind: .unknown, description: "unknown boot code", details: ["sha256": "00"]),
            os: OSReport(rootPartition: 2, id: "debian", versionID: "12", prettyName: nil, hostname: "h", kernels: []),
            findings: [Finding(.warning, "the backup GPT header is not at the last sector")])
        #expect(try roundTrip(inspect) == inspect)
        #expect(inspect.partitionTable.partitions[0].typeName == "EFI System")
        #expect(inspect.partitionTable.partitions[1].type.description == "0x83")

        let verify = VerifyReport(
            image: "/i.img", bootable: nil, biosBootable: false, bootCode: BootCode(kind: .none, description: "zeroed boot code"),
            grub: .init(coreImage: .init(sector: 1, sectors: 106), modules: ["biosdisk"], prefix: nil, config: "set x=1\n"),
            problems: [Finding(.error, "no boot code")],
            efi: .init(partition: 1, loader: "/EFI/BOOT/BOOTX64.EFI", machine: .other(0x1c4), subsystem: .efiApplication,
                       grub: .init(modules: ["fat"], prefix: "/EFI/BOOT", config: nil), bootable: nil, problems: []))
        #expect(try roundTrip(verify) == verify)

        let boot = BootObservation(outcome: .grubMenu, screen: ["GNU GRUB", ""], menuEntries: ["Alpha", "Beta"],
                                   message: nil, seconds: 1.25)
        #expect(try roundTrip(boot) == boot)
    }

    @Test("a document of another report, or a value of the wrong kind, does not decode")
    func wrongDocuments() throws {
        let bad = Data(#"{"image": "/i.img", "bootable": "yes"}"#.utf8)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(VerifyReport.self, from: bad) }
        #expect(PartitionType("0x183") == nil && PartitionType("linux") == nil)
        #expect(PartitionType("Apple_HFS", table: .mac) == .apm("Apple_HFS") && PartitionType("Apple_HFS", table: .gpt) == nil)
        #expect(FilesystemKind("ext4") == .ext4 && FilesystemKind("ext4").isExt && !FilesystemKind("xfs").isExt)
        #expect(PartitionTableType("atari") == .unparsed("atari"))
    }
}
