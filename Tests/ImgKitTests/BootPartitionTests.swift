import Foundation
import ImgFormats
import ImgKit
import Logging
import Testing
import TestSupport

/// Which partition gets /boot/grub, decided from the image alone (no root, no mount).
@Suite struct BootPartitionTests {
    /// Two ext4 partitions; `grubIn` (1 or 2) gets `grubPath` created inside it.
    func twoFilesystems(_ scratch: Scratch, grubIn: Int?, grubPath: String = "/boot/grub", bootable: Int? = nil) throws -> String {
        let image = scratch.file("two.img")
        try run(["truncate", "-s", "48M", image])
        let flag1 = bootable == 1 ? ", bootable" : "", flag2 = bootable == 2 ? ", bootable" : ""
        try run(["sh", "-c", "printf 'label: dos\\nstart=2048, size=40960, type=83\(flag1)\\nstart=43008, type=83\(flag2)\\n' | sfdisk -q \(image)"])
        for (start, kib) in [(2048, 20480), (43008, 27648)] {
            try run(["mkfs.ext4", "-q", "-F", "-E", "offset=\(start * 512)", image, "\(kib)"])
        }
        if let grubIn {
            let offset = grubIn == 1 ? 2048 * 512 : 43008 * 512
            var dir = ""
            for part in grubPath.split(separator: "/") {
                dir += "/\(part)"
                try run(["debugfs", "-w", "-R", "mkdir \(dir)", "\(image)?offset=\(offset)"])
            }
        }
        return image
    }

    func plan(_ image: String, _ requested: Int? = nil) throws -> InstallPlan {
        try InstallPlan.run(.init(image: image, bootPartition: requested), logger: Logger(label: "test"))
    }

    @Test(arguments: [1, 2])
    func picksThePartitionThatHoldsBootGrub(grubIn: Int) throws {
        let scratch = try Scratch()
        #expect(try plan(try twoFilesystems(scratch, grubIn: grubIn)).bootPartition.number == grubIn)
    }

    @Test func findsGrubOnASeparateBootFilesystem() throws {
        let scratch = try Scratch()
        #expect(try plan(try twoFilesystems(scratch, grubIn: 2, grubPath: "/grub")).bootPartition.number == 2)
    }

    @Test func fallsBackToTheActivePartition() throws {
        let scratch = try Scratch()
        #expect(try plan(try twoFilesystems(scratch, grubIn: nil, bootable: 2)).bootPartition.number == 2)
    }

    @Test func refusesToGuessBetweenEqualCandidates() throws {
        let scratch = try Scratch()
        let image = try twoFilesystems(scratch, grubIn: nil)
        #expect {
            try plan(image)
        } throws: { error in
            guard case .ambiguousBootPartition(_, [1, 2]) = error as? InstallGrubError else { return false }
            return "\(error)".contains("Choose one with --boot-partition N")
        }
        #expect(try plan(image, 2).bootPartition.number == 2)
    }

    @Test func planDescribesTheImage() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("gpt.img"), ["--label", "gpt", "--fs", "ext3"])
        let p = try plan(image)
        #expect(p.table.kind == .gpt)
        #expect(p.bootPartition.number == 2)
        #expect(p.bootFilesystem.type == "ext3")
        #expect(p.grubFilesystemModule == "ext2")
        #expect(p.embedding == EmbeddingArea(kind: .biosBootPartition(number: 1), startSector: 2048, sectorCount: 2048))
    }
}
