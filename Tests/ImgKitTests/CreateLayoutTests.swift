import Foundation
import Glibc
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// `DiskLayout` as an embedder builds it: validation, placement, and `Create.run` read back by
/// `Inspect.run`, with no CLI.
@Suite struct CreateLayoutTests {
    static let MiB: UInt64 = 1 << 20
    static let sectorsPerMiB: UInt64 = 2048

    func part(_ type: String, min: UInt64? = nil, max: UInt64? = nil, weight: UInt32 = 1000, format: DiskLayout.Filesystem? = nil,
              logical: Bool = false, minimize: Bool = false, origin: String) -> DiskLayout.Partition {
        .init(type: PartitionKind(type)!, sizeMin: min.map { $0 * Self.MiB }, sizeMax: max.map { $0 * Self.MiB }, weight: weight,
              format: format, minimize: minimize, logical: logical, origin: origin)
    }

    func mib(_ placed: DiskPlacement.Placed) -> (start: UInt64, size: UInt64) {
        (placed.startSector / Self.sectorsPerMiB, placed.sectors / Self.sectorsPerMiB)
    }

    @Test("a fixed disk's free space is shared by weight; a SizeMaxBytes cap passes its share on; Minimize= takes none; GPT keeps its last MiB")
    func weights() throws {
        var layout = DiskLayout(table: .gpt, size: .bytes(101 * Self.MiB), partitions: [
            part("linux", min: 10, origin: "a"),
            part("linux", min: 10, weight: 3000, origin: "b"),
        ])
        var placed = try layout.place(contentBytes: [0, 0]).partitions.map(mib)
        // 100 MiB usable (GPT's backup in the last MiB) - 1 MiB before = a span of 99 MiB, shared
        // as repart shares it: 1/4 and 3/4 of the whole span (24 and 74, rounded down to MiB), each
        // above its minimum; the MiB left over goes to the first in order.
        #expect(placed[0].start == 1 && placed[0].size == 24 + 1 && placed[1].start == 26, "\(placed)")
        #expect(placed[1].size == 74, "\(placed)")
        layout.partitions[1].sizeMax = 30 * Self.MiB
        placed = try layout.place(contentBytes: [0, 0]).partitions.map(mib)
        #expect(placed[1].size == 30 && placed[0].size == 99 - 30, "capped b's share goes to a: \(placed)")
        layout.partitions[0].minimize = true
        placed = try layout.place(contentBytes: [12 * Self.MiB, 0]).partitions.map(mib)
        #expect(placed[0].size == 12 && placed[1].size == 30, "Minimize= keeps the contents' size: \(placed)")
        layout.partitions[1].weight = 0
        layout.partitions[0].minimize = false
        placed = try layout.place(contentBytes: [0, 0]).partitions.map(mib)
        #expect(placed[1].size == 10 && placed[0].size == 89, "weight 0 takes no share: \(placed)")
        // The tail: the last partition ends at least 1 MiB before the end.
        let end = placed[1].start + placed[1].size
        #expect(end <= 100)
    }

    @Test("--size auto: each partition at its minimum (contents, SizeMinBytes, the ESP's FAT32 floor), 1 MiB before the first and GPT's 1 MiB tail")
    func auto() throws {
        let layout = DiskLayout(table: .gpt, partitions: [
            part("bios-boot", min: 1, max: 1, origin: "bios"),
            part("esp", format: .vfat, origin: "esp"),
            part("root", min: 10, format: .ext4, origin: "root"),
        ])
        let placement = try layout.place(contentBytes: [0, 0, 25 * Self.MiB + 1])
        let placed = placement.partitions.map(mib)
        #expect(placed.map(\.start) == [1, 2, 2 + DiskLayout.minimumESP(sectorSize: 512) / Self.MiB])
        #expect(placed[1].size == DiskLayout.minimumESP(sectorSize: 512) / Self.MiB && placed[2].size == 26, "\(placed)")
        #expect(placement.diskBytes == (placed[2].start + 26 + 1) * Self.MiB)
        #expect(placement.partitions.map(\.number) == [1, 2, 3] && placement.extended == nil)
    }

    @Test("MBR: logical partitions numbered from 5, each 1 MiB after the previous end, inside an extended partition to the last one's end")
    func logicals() throws {
        let layout = DiskLayout(table: .mbr, size: .bytes(100 * Self.MiB), partitions: [
            part("linux", min: 20, max: 20, weight: 0, origin: "p1"),
            part("swap", min: 8, max: 8, weight: 0, logical: true, origin: "l1"),
            part("8e", min: 5, max: 5, weight: 0, logical: true, origin: "l2"),
            part("linux", min: 5, logical: true, origin: "l3"),
        ])
        let placement = try layout.place(contentBytes: [0, 0, 0, 0])
        let placed = placement.partitions.map(mib)
        #expect(placement.partitions.map(\.number) == [1, 5, 6, 7])
        #expect(placed[0] == (1, 20) && placed[1] == (22, 8) && placed[2] == (31, 5) && placed[3].start == 37, "\(placed)")
        #expect(placed[3].start + placed[3].size == 100, "MBR has no tail: the last takes the rest")
        let extended = try #require(placement.extended)
        #expect(extended.start == 21 * Self.sectorsPerMiB && extended.start + extended.sectors == 100 * Self.sectorsPerMiB)
    }

    @Test("validate(): each error names the partition and the rule")
    func validation() throws {
        func refusal(_ layout: DiskLayout) -> String {
            do { try layout.validate(); return "" } catch { return error.description }
        }
        #expect(refusal(DiskLayout(table: .gpt, partitions: [])).contains("no partitions"))
        #expect(refusal(DiskLayout(table: .gpt, sectorSize: 1024, partitions: [part("linux", origin: "x")])).contains("1024 is not a sector size"))
        #expect(refusal(DiskLayout(table: .gpt, partitions: [part("8e", origin: "lvm")])).contains("lvm: type 0x8e is an MBR type"))
        #expect(refusal(DiskLayout(table: .gpt, partitions: [part("linux", logical: true, origin: "l")])).contains("logical partitions exist on MBR only"))
        #expect(refusal(DiskLayout(table: .mbr, partitions: [part("bios-boot", origin: "bb")])).contains("an MBR disk has no BIOS boot partition"))
        #expect(refusal(DiskLayout(table: .mbr, partitions: [part("linux", logical: true, origin: "l"), part("linux", origin: "p")]))
                    .contains("p: a primary partition after a logical one"))
        #expect(refusal(DiskLayout(table: .mbr, partitions: (1...5).map { part("linux", origin: "p\($0)") })).contains("p5: MBR holds 4 primary partitions"))
        #expect(refusal(DiskLayout(table: .gpt, partitions: [part("linux", min: 20, max: 10, origin: "m")])).contains("is larger than SizeMaxBytes="))
        #expect(refusal(DiskLayout(table: .gpt, partitions: [part("esp", max: 16, format: .vfat, origin: "e")])).contains("too small for FAT32"))
        #expect(refusal(DiskLayout(table: .gpt, partitions: [part("bios-boot", format: .ext4, origin: "b")])).contains("not a filesystem"))
        var flags = DiskLayout(table: .mbr, partitions: [part("linux", origin: "f")])
        flags.partitions[0].attributes = 1 << 59
        #expect(refusal(flags) == "", "GrowFileSystem, repart.d's default on root, is dropped on MBR")
        flags.partitions[0].attributes = 1
        #expect(refusal(flags).contains("sets GPT attribute bits, and MBR has none"))
        var copies = DiskLayout(table: .gpt, partitions: [part("linux", origin: "c")])
        copies.partitions[0].copies = [.init(source: "/etc")]
        #expect(refusal(copies).contains("files can be copied into a partition only with format="))
        // place(): the disk too small, contents above the maximum.
        do {
            _ = try DiskLayout(table: .gpt, size: .bytes(10 * Self.MiB), partitions: [part("linux", min: 10, origin: "x")]).place(contentBytes: [0])
            Issue.record("placed on too small a disk")
        } catch {
            guard case .exceedsDisk(let needed, let size) = error else { Issue.record("\(error)"); return }
            #expect(needed == 12 * Self.MiB && size == 10 * Self.MiB && error.exitCode == 78)
        }
        do {
            _ = try DiskLayout(table: .gpt, partitions: [part("linux", max: 10, format: .ext4, origin: "x")]).place(contentBytes: [11 * Self.MiB])
            Issue.record("contents above the maximum were placed")
        } catch {
            guard case .contentsDoNotFit(let origin, _, _) = error else { Issue.record("\(error)"); return }
            #expect(origin == "x")
        }
    }

    @Test("Create.run from the library (no CLI) into a temporary directory; Inspect.run reads back the table and filesystems it reports")
    func createAndInspect() throws {
        let scratch = try Scratch()
        let tree = scratch.file("tree")
        try run(["sh", "-c", "mkdir -p \"$1/etc\" && echo library > \"$1/etc/motd\"", "sh", tree])
        let uuid = GUID(string: "494d4754-0000-4000-8000-0000000011b0")!
        let layout = DiskLayout(table: .gpt, partitions: [
            .init(type: PartitionKind("esp")!, label: "ESP", format: .vfat, origin: "esp"),
            .init(type: PartitionKind("root")!, label: "root", uuid: uuid, format: .ext4, copies: [.init(source: tree)], origin: "root"),
        ])
        let image = scratch.file("library.img")
        let result = try Create.run(.init(image: image, layout: layout, seed: "library"), logger: Logger(label: "test"))
        #expect(result.partitions.map(\.number) == [1, 2] && result.bootable == nil && result.grub == nil)
        let report = try Inspect.run(.init(image: image), logger: Logger(label: "test"))
        #expect(report.partitionTable.type == .gpt && report.size == result.sizeBytes)
        #expect(report.partitionTable.id?.uppercased() == result.diskGUID)
        let parts = report.partitionTable.partitions
        #expect(parts.map(\.start) == result.partitions.map(\.startSector) && parts.map(\.size) == result.partitions.map(\.sectors))
        #expect(parts.map { $0.uuid?.uppercased() } == result.partitions.map(\.uuid))
        #expect(parts[0].filesystem?.type == .vfat && parts[0].filesystem?.label == "ESP")
        #expect(parts[1].filesystem?.type == .ext4 && parts[1].filesystem?.uuid == uuid.description.lowercased() && parts[1].filesystem?.label == "root")
        #expect(Set(directoryEntries(scratch.path)) == ["library.img", "tree"], "no staging file is left")
    }
}
