import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// The offline strategy for UEFI and for both firmwares, run as uid 65534 on images with an EFI
/// system partition (TestImages/make-esp-disk.sh): each boots under OVMF (and SeaBIOS for a
/// hybrid), verify calls it bootable, and its filesystems are clean.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct OfflineInstallUEFITests {
    typealias JSON = [String: Any]

    struct Case: CustomTestStringConvertible, Sendable {
        let layout: [String], firmware: String
        var testDescription: String { layout.isEmpty ? "gpt: ESP, ext4" : layout.joined(separator: " ") }
        var marker: String { "IMGTOOL-OFFLINE-UEFI-" + layout.joined().filter { $0.isLetter || $0.isNumber }.uppercased() }
        var sectorSize: Int { layout.contains("4096") ? 4096 : 512 }
        var esp: Int { layout.contains("--bios-boot") ? 2 : 1 }
        /// The partition with grub/: the ESP itself, or the one after it.
        var boot: Int { layout.contains("esp") ? esp : esp + 1 }
    }

    @Test("as uid 65534, offline UEFI and hybrid installs boot under OVMF (and SeaBIOS); verify agrees; fsck is clean", arguments: [
        Case(layout: [], firmware: "uefi"),
        Case(layout: ["--boot", "esp"], firmware: "uefi"),
        Case(layout: ["--sector-size", "4096"], firmware: "uefi"),
        Case(layout: ["--bios-boot"], firmware: "hybrid"),
        Case(layout: ["--bios-boot", "--boot", "esp"], firmware: "hybrid"),
        Case(layout: ["--label", "dos"], firmware: "hybrid"),
    ])
    func bootsWithoutRoot(_ c: Case) throws {
        let scratch = try Scratch()
        let directory = try Offline.userDirectory(scratch)
        let image = try Offline.makeUserDisk(directory + "/disk.img", c.layout + ["--marker", c.marker], script: "make-esp-disk.sh")
        let json = try Offline.install(image)
        #expect(json["strategy"] as? String == "offline" && json["firmware"] as? String == c.firmware, "\(json)")
        #expect(try listDirectory(directory) == ["disk.img"], "nothing but the image is left in its directory")
        #expect(leftovers() == [])

        let esp = try Offline.partition(image, c.esp, to: scratch.file("esp.fs"), sectorSize: c.sectorSize)
        let fat = try Subprocess.run(["fsck.fat", "-n", esp])
        #expect(fat.status == 0, "\(fat.stdout)")
        if c.boot != c.esp {
            let fs = try Offline.partition(image, c.boot, to: scratch.file("boot.fs"), sectorSize: c.sectorSize)
            let fsck = try Subprocess.run(["e2fsck", "-fn", fs])
            #expect(fsck.status == 0, "\(fsck.stdout)\(fsck.stderr)")
            let stat = try run(["debugfs", "-R", "stat /boot/grub/x86_64-efi/normal.mod", fs]).stdout
            #expect(stat.contains("User:     0") && stat.contains("Mode:  0644"), "GRUB's files are root's: \(stat)")
        }

        let verify = try imgtool(["verify", image], user: Offline.user)
        #expect(verify.status == 0 && verify.stdout.contains("UEFI: bootable"), "\(verify.stdout)\(verify.stderr)")
        let uefi = try boot(image, expect: c.marker, firmware: "uefi", sectorSize: c.sectorSize)
        #expect(uefi.found, "OVMF: GRUB did not print \(c.marker); console:\n\(uefi.console)")
        if c.firmware == "hybrid" {
            let bios = try boot(image, expect: c.marker)
            #expect(bios.found, "SeaBIOS: GRUB did not print \(c.marker); console:\n\(bios.console)")
        }
    }

    /// Debian's signed shim and GRUB, laid out offline, on firmware that enforces Secure Boot with
    /// Microsoft's keys.
    @Test("as uid 65534, an offline --secure-boot install boots under OVMF enforcing Secure Boot")
    func secureBoot() throws {
        let scratch = try Scratch()
        let directory = try Offline.userDirectory(scratch)
        let marker = "IMGTOOL-OFFLINE-SECURE-BOOT"
        let image = try Offline.makeUserDisk(directory + "/disk.img", ["--marker", marker], script: "make-esp-disk.sh")
        let json = try Offline.install(image, ["--secure-boot"])
        #expect(json["strategy"] as? String == "offline" && json["secureBoot"] as? Bool == true, "\(json)")
        let booted = try boot(image, expect: marker, firmware: "uefi-secure")
        #expect(booted.found, "OVMF with Secure Boot: GRUB did not print \(marker); console:\n\(booted.console)")
    }
}
