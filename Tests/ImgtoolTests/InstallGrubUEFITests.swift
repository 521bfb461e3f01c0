import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// install-grub for UEFI and for both firmwares, on images with an EFI system partition
/// (TestImages/make-esp-disk.sh), proven by booting each under OVMF (and SeaBIOS for hybrid
/// installs) and reading the marker its grub.cfg prints.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct InstallGrubUEFITests {
    typealias JSON = [String: Any]

    func makeESPDisk(_ out: String, _ arguments: [String]) throws -> String {
        try run(["\(repositoryRoot)/TestImages/make-esp-disk.sh", out] + arguments)
        return out
    }

    func install(_ image: String, _ arguments: [String] = []) throws -> JSON {
        let r = try imgtool(["install-grub", image, "--json"] + arguments)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(leftovers() == [])
        return try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, "\(r.stderr)")
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let layout: [String], install: [String], firmware: String, loaders: [String]
        var testDescription: String { (layout + install).joined(separator: " ") }
        var marker: String { "IMGTOOL-UEFI-" + (layout + install).joined(separator: "").filter(\.isLetter).uppercased() }
    }

    @Test("UEFI and hybrid installs boot under OVMF (and SeaBIOS), the firmware chosen from the layout", arguments: [
        // GPT: ESP + ext4 /boot -> UEFI; /boot on the ESP itself; + BIOS boot partition -> hybrid.
        Case(layout: [], install: [], firmware: "uefi", loaders: ["uefi 1 /EFI/BOOT/BOOTX64.EFI"]),
        Case(layout: ["--boot", "esp"], install: [], firmware: "uefi", loaders: ["uefi 1 /EFI/BOOT/BOOTX64.EFI"]),
        Case(layout: ["--boot", "ext2"], install: [], firmware: "uefi", loaders: ["uefi 1 /EFI/BOOT/BOOTX64.EFI"]),
        Case(layout: ["--boot", "ext3"], install: [], firmware: "uefi", loaders: ["uefi 1 /EFI/BOOT/BOOTX64.EFI"]),
        Case(layout: ["--bios-boot"], install: [], firmware: "hybrid",
             loaders: ["bios 1 BIOS boot partition", "uefi 2 /EFI/BOOT/BOOTX64.EFI"]),
        Case(layout: ["--bios-boot", "--boot", "esp"], install: [], firmware: "hybrid",
             loaders: ["bios 1 BIOS boot partition", "uefi 2 /EFI/BOOT/BOOTX64.EFI"]),
        // MBR: an ESP of type 0xEF and a post-MBR gap -> hybrid; UEFI alone when asked.
        Case(layout: ["--label", "dos"], install: [], firmware: "hybrid",
             loaders: ["bios - post-MBR gap", "uefi 1 /EFI/BOOT/BOOTX64.EFI"]),
        Case(layout: ["--label", "dos"], install: ["--firmware", "uefi"], firmware: "uefi", loaders: ["uefi 1 /EFI/BOOT/BOOTX64.EFI"]),
        // A loop device per partition: the modules are named for grub-install.
        Case(layout: [], install: ["--strategy", "offset"], firmware: "uefi", loaders: ["uefi 1 /EFI/BOOT/BOOTX64.EFI"]),
    ])
    func installsAndBoots(_ c: Case) throws {
        let scratch = try Scratch()
        let image = try makeESPDisk(scratch.file("disk.img"), c.layout + ["--marker", c.marker])
        let json = try install(image, c.install)
        #expect(json["firmware"] as? String == c.firmware)
        let loaders = (json["loaders"] as? [JSON] ?? []).map { l in
            "\(l["firmware"] as? String ?? "?") \((l["partition"] as? Int).map(String.init) ?? "-") \(l["location"] as? String ?? "?")"
        }
        #expect(loaders == c.loaders)
        #expect(json["target"] as? String == (c.firmware == "uefi" ? "x86_64-efi" : "i386-pc"))
        // The ESP is still a clean FAT, with GRUB's image at the removable path.
        let esp = scratch.file("esp.img")
        let espNumber = c.layout.contains("--bios-boot") ? 2 : 1
        try Offline.partition(image, espNumber, to: esp)
        #expect(try Subprocess.run(["fsck.fat", "-n", esp]).status == 0)
        #expect(try Subprocess.run(["env", "MTOOLS_SKIP_CHECK=1", "mdir", "-i", esp, "::/EFI/BOOT/BOOTX64.EFI"]).succeeded)
        #expect(try Subprocess.run(["env", "MTOOLS_SKIP_CHECK=1", "mdir", "-i", esp, "::/boot/grub/device.map"]).status != 0,
                "grub-install's device.map is not left on the ESP")

        let uefi = try boot(image, expect: c.marker, firmware: "uefi")
        #expect(uefi.found, "OVMF: GRUB did not print \(c.marker); console:\n\(uefi.console)")
        if c.firmware == "hybrid" {
            let bios = try boot(image, expect: c.marker)
            #expect(bios.found, "SeaBIOS: GRUB did not print \(c.marker); console:\n\(bios.console)")
        }
        // verify --boot, the firmware chosen from the layout: both for a hybrid, each showing the menu.
        let bootPartition = c.layout.contains("esp") ? espNumber : espNumber + 1
        try showMenu(image, entry: c.marker, partition: bootPartition, scratch: scratch)
        try expectVerifyBoots(image, c.firmware == "hybrid" ? ["bios", "efi"] : ["efi"], menu: c.marker)
    }

    /// Replaces /boot/grub/grub.cfg on partition `number` (the marker's, which prints on the serial
    /// port and halts, for boot.sh) with a menu of one entry, which verify --boot recognises on
    /// SeaBIOS's VGA screen and OVMF's serial console alike.
    func showMenu(_ image: String, entry: String, partition number: Int, scratch: Scratch) throws {
        let report = try #require(try JSONSerialization.jsonObject(with: Data(try imgtool(["inspect", "--json", image]).output)) as? JSON)
        let table = try #require(report["partitionTable"] as? JSON)
        let p = try #require((table["partitions"] as? [JSON])?.first { $0["number"] as? Int == number }, "\(report)")
        let offset = try #require(p["start"] as? Int) * (try #require(report["sectorSize"] as? Int))
        let cfg = scratch.file("menu.cfg")
        try "set timeout=30\nmenuentry '\(entry)' { true }\n".write(toFile: cfg, atomically: true, encoding: .utf8)
        if (p["filesystem"] as? JSON)?["type"] as? String == "vfat" {
            try run(["env", "MTOOLS_SKIP_CHECK=1", "mcopy", "-o", "-i", "\(image)@@\(offset)", cfg, "::/boot/grub/grub.cfg"])
        } else {
            let fs = "\(image)?offset=\(offset)"
            try run(["debugfs", "-w", "-R", "rm /boot/grub/grub.cfg", fs])
            try run(["debugfs", "-w", "-R", "write \(cfg) /boot/grub/grub.cfg", fs])
            #expect(try run(["debugfs", "-R", "cat /boot/grub/grub.cfg", fs]).stdout.contains("menuentry '\(entry)'"))
        }
    }

    /// verify --boot --json with no --firmware: the report, and the firmware of each boot in order.
    func verifyBoot(_ image: String) throws -> (status: Int32, report: JSON, boots: [JSON]) {
        let before = try sha256(image)
        let r = try imgtool(["verify", "--boot", "--json", image])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, "\(r.stderr)")
        #expect(try sha256(image) == before)
        return (r.status, report, try #require(report["boots"] as? [JSON], "\(report)"))
    }

    /// verify --boot booted `firmwares` in that order, each reaching GRUB's menu of `menu`, and the
    /// image is bootable with no disagreement between the boots and the static checks.
    func expectVerifyBoots(_ image: String, _ firmwares: [String], menu: String,
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (status, report, boots) = try verifyBoot(image)
        #expect(boots.map { $0["firmware"] as? String } == firmwares, sourceLocation: sourceLocation)
        for b in boots {
            #expect(b["outcome"] as? String == "grubMenu" && b["menuEntries"] as? [String] == [menu],
                    "\(b["firmware"] ?? "?"): \(b["screen"] ?? "")", sourceLocation: sourceLocation)
        }
        #expect(status == 0 && report["bootable"] as? Bool == true, "\(report)", sourceLocation: sourceLocation)
        #expect(bootDisagreements(report).isEmpty, "\(bootDisagreements(report))", sourceLocation: sourceLocation)
        // "boot" is the only boot's, kept for one; with several, "boots" alone has them.
        #expect((report["boot"] as? JSON)?["firmware"] as? String == (firmwares.count == 1 ? firmwares[0] : nil),
                sourceLocation: sourceLocation)
    }

    /// The negative control: a hybrid whose UEFI loader is broken boots from SeaBIOS only, and
    /// verify --boot, booting both, does not call it bootable.
    @Test("verify --boot boots a hybrid with both firmwares: a broken UEFI loader makes it not bootable, though SeaBIOS starts it")
    func hybridWithBrokenLoader() throws {
        let scratch = try Scratch()
        let marker = "IMGTOOL-UEFI-BROKEN"
        let image = try makeESPDisk(scratch.file("disk.img"), ["--bios-boot", "--marker", marker])
        #expect(try install(image)["firmware"] as? String == "hybrid")
        try showMenu(image, entry: marker, partition: 3, scratch: scratch)
        try expectVerifyBoots(image, ["bios", "efi"], menu: marker)

        let start = try Offline.range(image, 2).offset
        let garbage = scratch.file("garbage.efi")
        try writeFile(garbage, [UInt8](repeating: 0x5A, count: 4096))
        try run(["env", "MTOOLS_SKIP_CHECK=1", "mcopy", "-o", "-i", "\(image)@@\(start)", garbage, "::/EFI/BOOT/BOOTX64.EFI"])
        let (status, report, boots) = try verifyBoot(image)
        #expect(boots.map { $0["firmware"] as? String } == ["bios", "efi"])
        #expect(boots.first?["outcome"] as? String == "grubMenu", "SeaBIOS still starts GRUB")
        #expect(boots.last?["outcome"] as? String != "grubMenu" && boots.last?["outcome"] as? String != "grubPrompt", "\(boots.last ?? [:])")
        #expect(status == 1 && report["bootable"] as? Bool == false && (report["bios"] as? JSON)?["bootable"] as? Bool == true, "\(report)")
        #expect((report["efi"] as? JSON)?["bootable"] as? Bool == false && bootDisagreements(report).isEmpty, "\(report)")
    }

    /// Debian's signed shim and GRUB on firmware that enforces Secure Boot with Microsoft's keys;
    /// the negative control, GRUB's own unsigned image on the same firmware, never reaches the marker.
    @Test("--secure-boot boots under OVMF enforcing Secure Boot; an unsigned install does not")
    func secureBoot() throws {
        let scratch = try Scratch()
        let marker = "IMGTOOL-SECURE-BOOT"
        let pristine = try makeESPDisk(scratch.file("pristine.img"), ["--marker", marker])
        let signed = scratch.file("signed.img"), unsigned = scratch.file("unsigned.img")
        try run(["cp", "--sparse=always", pristine, signed])
        try run(["cp", "--sparse=always", pristine, unsigned])
        let json = try install(signed, ["--secure-boot"])
        #expect(json["secureBoot"] as? Bool == true && json["firmware"] as? String == "uefi")
        let esp = try Offline.partition(signed, 1, to: scratch.file("esp.img"))
        let listing = try run(["env", "MTOOLS_SKIP_CHECK=1", "mdir", "-b", "-i", esp, "::/EFI/BOOT"]).stdout.uppercased()
        for name in ["BOOTX64.EFI", "GRUBX64.EFI", "MMX64.EFI", "GRUB.CFG"] { #expect(listing.contains(name), "\(name): \(listing)") }
        let booted = try boot(signed, expect: marker, firmware: "uefi-secure")
        #expect(booted.found, "shim and the signed GRUB did not reach the marker:\n\(booted.console)")

        #expect(try install(unsigned)["secureBoot"] as? Bool == false)
        #expect(try boot(unsigned, expect: marker, firmware: "uefi").found, "the unsigned install boots without Secure Boot")
        let refused = try boot(unsigned, expect: marker, timeout: 20, firmware: "uefi-secure")
        #expect(!refused.found, "an unsigned GRUB must not start under Secure Boot")

        // verify --boot with Secure Boot enforced: the signed chain is not contradicted; the
        // unsigned GRUB, which the static checks call bootable, is refused and the verdict follows.
        func verifySecure(_ image: String) throws -> JSON {
            let r = try imgtool(["verify", "--boot", "--firmware", "efi-secure", "--timeout", "20", "--json", image])
            return try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, "\(r.stderr)")
        }
        let signedReport = try verifySecure(signed)
        #expect(signedReport["bootable"] as? Bool == true && bootDisagreements(signedReport).isEmpty, "\(signedReport)")
        let unsignedReport = try verifySecure(unsigned)
        #expect(unsignedReport["bootable"] as? Bool != true, "\(unsignedReport)")

        let before = try sha256(pristine)
        let bios = try imgtool(["install-grub", pristine, "--secure-boot", "--firmware", "bios"])
        #expect(bios.status == ExitStatus.badImage.rawValue && bios.stderr.contains("Secure Boot is a UEFI feature"), "\(bios.stderr)")
        #expect(try sha256(pristine) == before)
    }

    /// A GPT laid out for 4096-byte sectors, FAT with 4096-byte sectors on the ESP: the loop device
    /// presents 4 KiB sectors, and OVMF boots the result from a disk with 4 KiB logical sectors.
    /// BIOS cannot read such a disk, so it is refused, and the layout's choice is UEFI.
    @Test("4 KiB sectors: a UEFI install boots under OVMF from a 4 KiB-sector disk; BIOS is refused")
    func fourKiBSectors() throws {
        let scratch = try Scratch()
        let marker = "IMGTOOL-UEFI-4K"
        let image = try makeESPDisk(scratch.file("disk.img"), ["--sector-size", "4096", "--bios-boot", "--marker", marker])
        let pristine = scratch.file("pristine.img")
        try run(["cp", "--sparse=always", image, pristine])
        let before = try sha256(image)
        let bios = try imgtool(["install-grub", image, "--firmware", "hybrid"])
        #expect(bios.status == ExitStatus.badImage.rawValue && bios.stderr.contains("4096-byte sectors"), "\(bios.stderr)")
        #expect(try sha256(image) == before)

        let json = try install(image)
        #expect(json["firmware"] as? String == "uefi", "a BIOS boot partition does not make a 4 KiB disk hybrid")
        let booted = try boot(image, expect: marker, firmware: "uefi", sectorSize: 4096)
        #expect(booted.found, "OVMF on a 4 KiB-sector disk: \(booted.console)")
        // verify --boot presents the disk with the table's 4 KiB sectors too (OVMF finds no ESP on
        // a disk of 512-byte sectors laid out for 4 KiB ones).
        try showMenu(image, entry: marker, partition: 3, scratch: scratch)
        try expectVerifyBoots(image, ["efi"], menu: marker)
    }

    /// The ESP of `image` passes `fsck.fat -n`.
    func espClean(_ image: String, scratch: Scratch, number: Int = 1) throws -> Bool {
        let esp = try Offline.partition(image, number, to: scratch.file("esp-check.img"))
        return try Subprocess.run(["fsck.fat", "-n", esp]).status == 0
    }

    @Test("each acquisition and release step of a hybrid install fails in turn: nothing left, the ESP stays clean, a rerun boots",
          arguments: ["acquire", "release"])
    func faults(point: String) throws {
        let scratch = try Scratch()
        let marker = "IMGTOOL-UEFI-FAULTS-\(point.uppercased())"
        let pristine = try makeESPDisk(scratch.file("pristine.img"), ["--bios-boot", "--marker", marker])
        let image = scratch.file("disk.img")
        var steps = 0
        for k in 1...30 {
            try run(["cp", "--sparse=always", pristine, image])
            let r = try Subprocess.run(["env", "IMGTOOL_INJECT_FAULT=\(point):\(k)", imgtoolPath, "install-grub", image])
            if r.succeeded { break }
            steps = k
            #expect(r.stderr.contains("injected fault (\(point):\(k))"), "\(point) \(k): \(r.stderr)")
            if point == "release" { #expect(try imgtool(["cleanup", "--all"]).status == 0) }
            #expect(leftovers() == [], "\(point) \(k)")
            #expect(try espClean(image, scratch: scratch, number: 2), "\(point) \(k): the ESP is damaged")
        }
        #expect(steps >= 6 && steps < 30, "\(steps) \(point) steps")
        // The last run had nothing left to fail: it boots from both firmwares.
        #expect(try boot(image, expect: marker, firmware: "uefi").found)
        #expect(try boot(image, expect: marker).found)
    }

    @Test("refusals: an ESP that is not FAT, one too small, UEFI asked of an image without an ESP; nothing changes")
    func refusals() throws {
        let scratch = try Scratch()
        let cases: [(image: String, arguments: [String], message: String)] = [
            (try makeESPDisk(scratch.file("ext4-esp.img"), ["--esp-fs", "ext4"]), [], "firmware reads only FAT"),
            (try makeESPDisk(scratch.file("tiny-esp.img"), ["--boot", "esp", "--esp-mib", "8"]), [], "KiB free"),
            (try makeDisk(scratch.file("no-esp.img"), ["--label", "gpt"]), ["--firmware", "uefi"], "no EFI system partition"),
        ]
        for c in cases {
            let before = try sha256(c.image)
            let r = try imgtool(["install-grub", c.image] + c.arguments)
            #expect(r.status == ExitStatus.badImage.rawValue, "\(c.image): \(r.stderr)")
            #expect(r.stderr.contains(c.message) && r.stderr.contains("Nothing was changed"), "\(r.stderr)")
            #expect(try sha256(c.image) == before)
            #expect(leftovers() == [])
        }
    }
}
