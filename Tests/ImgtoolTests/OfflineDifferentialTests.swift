import Foundation
import ImgSystem
import Testing
import TestSupport

/// grub-install's result (through loop devices, as root) against the offline strategy's (as uid
/// 65534) on copies of one image, for each layout the boot tests use: everything before the
/// first partition (sector 0, the post-MBR gap or the GPT and BIOS boot partition), grub/'s
/// names, types, modes, owners, sizes and contents, and the ESP's /EFI, are the same.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct OfflineDifferentialTests {
    struct Layout: CustomTestStringConvertible, Sendable {
        let name: String
        /// TestImages' script and its arguments; "separate-boot" is TestSupport's makeSeparateBootDisk.
        let script: String, arguments: [String]
        var install: [String] = []
        /// Bytes from the start compared: up to the first partition that is not the BIOS boot one.
        var head = 2048 * 512
        /// The partition holding grub/, where; and the ESP.
        let boot: Int
        var grubDirectory = "/boot/grub"
        var bootIsFAT = false
        var esp: Int?
        var sectorSize = 512
        var testDescription: String { name }
    }

    static let layouts: [Layout] = [
        Layout(name: "dos, ext4", script: "make-disk.sh", arguments: ["--label", "dos"], boot: 1),
        Layout(name: "gpt, ext4", script: "make-disk.sh", arguments: ["--label", "gpt"], head: 4096 * 512, boot: 2),
        Layout(name: "dos, ext2", script: "make-disk.sh", arguments: ["--label", "dos", "--fs", "ext2"], boot: 1),
        Layout(name: "gpt, ext3", script: "make-disk.sh", arguments: ["--label", "gpt", "--fs", "ext3"], head: 4096 * 512, boot: 2),
        Layout(name: "a separate /boot", script: "separate-boot", arguments: [], boot: 1, grubDirectory: "/grub"),
        Layout(name: "hybrid gpt: BIOS boot partition, ESP, ext4", script: "make-esp-disk.sh", arguments: ["--bios-boot"],
               head: 4096 * 512, boot: 3, esp: 2),
        Layout(name: "hybrid dos: ESP (0xEF), ext4", script: "make-esp-disk.sh", arguments: ["--label", "dos"], boot: 2, esp: 1),
        Layout(name: "hybrid gpt, /boot on the ESP", script: "make-esp-disk.sh", arguments: ["--bios-boot", "--boot", "esp"],
               head: 4096 * 512, boot: 2, bootIsFAT: true, esp: 2),
        Layout(name: "UEFI with Secure Boot: shim and the signed GRUB", script: "make-esp-disk.sh", arguments: ["--boot", "ext3"],
               install: ["--secure-boot"], boot: 2, esp: 1),
        Layout(name: "UEFI on 4 KiB sectors", script: "make-esp-disk.sh", arguments: ["--sector-size", "4096"], boot: 2, esp: 1,
               sectorSize: 4096),
        // Where --modules go among grub-install's own, in core.img and in the EFI images.
        Layout(name: "hybrid gpt with --modules", script: "make-esp-disk.sh", arguments: ["--bios-boot"],
               install: ["--modules", "lvm", "--modules", "gzio"], head: 4096 * 512, boot: 3, esp: 2),
        Layout(name: "UEFI with Secure Boot and --modules", script: "make-esp-disk.sh", arguments: ["--boot", "ext3"],
               install: ["--secure-boot", "--modules", "lvm"], boot: 2, esp: 1),
    ]

    @Test("the offline result equals grub-install's: the sectors before the partitions, grub/ and the ESP file for file",
          arguments: layouts)
    func equalsGrubInstall(_ layout: Layout) throws {
        let scratch = try Scratch()
        let directory = try Offline.userDirectory(scratch)
        let pristine = scratch.file("pristine.img")
        if layout.script == "separate-boot" {
            try makeSeparateBootDisk(pristine, marker: "SEPARATE")
        } else {
            try run(["\(repositoryRoot)/TestImages/\(layout.script)", pristine] + layout.arguments)
        }
        let byGrubInstall = scratch.file("grub-install.img"), offline = directory + "/offline.img"
        try run(["cp", "--sparse=always", pristine, byGrubInstall])
        try run(["cp", "--sparse=always", pristine, offline])
        try Offline.giveToUser(offline)
        let loop = try imgtool(["install-grub", byGrubInstall, "--strategy", "blkpg"] + layout.install)
        #expect(loop.status == 0, "\(loop.stderr)")
        #expect(try Offline.install(offline, layout.install)["strategy"] as? String == "offline")

        func head(_ image: String) throws -> [UInt8] { Array(readFileBytes(image, limit: layout.head)) }
        let (a, b) = (try head(byGrubInstall), try head(offline))
        #expect(a.count == layout.head && b.count == a.count)
        let differing = Set(zip(a, b).enumerated().filter { $0.element.0 != $0.element.1 }.map { $0.offset / 512 })
        #expect(differing.isEmpty, "512-byte sectors that differ: \(differing.sorted())")

        // grub/: from ext by debugfs, which keeps modes and owners; from FAT by mtools (FAT has neither).
        var grub: [String] = [], efi: [String] = []
        for (name, image) in [("grub-install", byGrubInstall), ("offline", offline)] {
            let fs = try Offline.partition(image, layout.boot, to: scratch.file("\(name).fs"), sectorSize: layout.sectorSize)
            grub.append(layout.bootIsFAT ? try Offline.fatTree(fs, layout.grubDirectory, into: scratch.file("\(name)-grub"))
                                         : try Offline.extTree(fs, layout.grubDirectory, into: scratch.file("\(name)-grub")))
            if !layout.bootIsFAT { #expect(try Subprocess.run(["e2fsck", "-fn", fs]).status == 0, "\(name): e2fsck") }
            if let esp = layout.esp {
                let fat = try Offline.partition(image, esp, to: scratch.file("\(name).esp"), sectorSize: layout.sectorSize)
                #expect(try Subprocess.run(["fsck.fat", "-n", fat]).status == 0, "\(name): fsck.fat")
                efi.append(try Offline.fatTree(fat, "/EFI", into: scratch.file("\(name)-efi")))
            }
        }
        try expectEqualTrees(grub[0], grub[1], owners: !layout.bootIsFAT, atLeast: 300)
        if layout.esp != nil { try expectEqualTrees(efi[0], efi[1], owners: false, atLeast: 2) }
    }

    /// The same names, types, sizes (and modes and owners when `owners`) and contents; `atLeast`
    /// entries, so that two empty trees do not pass.
    func expectEqualTrees(_ expected: String, _ got: String, owners: Bool, atLeast: Int,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (e, g) = (try Offline.listing(expected, owners: owners), try Offline.listing(got, owners: owners))
        #expect(e.split(separator: "\n").count >= atLeast, "\(expected): \(e)", sourceLocation: sourceLocation)
        #expect(g == e, "\(Set(g.split(separator: "\n")).symmetricDifference(e.split(separator: "\n")))", sourceLocation: sourceLocation)
        let diff = try Subprocess.run(["diff", "-r", expected, got])
        #expect(diff.status == 0, "contents differ: \(diff.stdout)", sourceLocation: sourceLocation)
    }
}
