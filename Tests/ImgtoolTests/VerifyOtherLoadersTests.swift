import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// `imgtool verify` on SYSLINUX, ISOLINUX (isohybrid) and GRUB legacy boot code: every static verdict
/// is confirmed by booting the image (verify --boot: SeaBIOS under qemu TCG, the VGA text screen),
/// where bootable means the loader's prompt or menu appears and not bootable means it does not.
/// Images are built with Debian's own tools (syslinux, xorriso) and small, so each boot is a second.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil && commandExists("qemu-system-x86_64")
                               && commandExists("syslinux") && commandExists("mcopy") && commandExists("xorriso"),
                             "needs root, qemu-system-x86, syslinux, mtools, dosfstools, xorriso, isolinux"))
struct VerifyOtherLoadersTests {
    typealias JSON = [String: Any]
    /// Where the FAT filesystem starts in the SYSLINUX disks: sector 2048.
    static let fatOffset = 2048 * 512
    static let modules = "/usr/lib/syslinux/modules/bios"

    /// verify --json --boot; checks that the image did not change and that qemu is gone.
    func verify(_ image: String, timeout: Int = 60) throws -> (status: Int32, json: JSON) {
        let hash = try sha256(image)
        let r = try imgtool(["verify", image, "--json", "--boot", "--timeout", "\(timeout)"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, "stderr: \(r.stderr)")
        #expect(try sha256(image) == hash, "verify changed the image")
        #expect(bootDisagreements(json).isEmpty, "the boot and the static verdict disagree")
        #expect(try Subprocess.run(["pgrep", "-f", "qemu-system.*\(image)"]).stdout.isEmpty, "qemu is still running")
        return (r.status, json)
    }

    func problems(_ json: JSON) -> [String] { (json["problems"] as? [JSON] ?? []).compactMap { $0["message"] as? String } }
    func boot(_ json: JSON) -> JSON { json["boot"] as? JSON ?? [:] }
    func screen(_ json: JSON) -> String { (boot(json)["screen"] as? [String] ?? []).joined(separator: "\n") }

    /// The verdict and the boot agree: bootable exactly when the loader's prompt or menu appears.
    func expectAgreement(_ json: JSON, _ bootable: Bool, sourceLocation: SourceLocation = #_sourceLocation) {
        let outcome = boot(json)["outcome"] as? String ?? "none"
        let loaderUp = ["syslinuxPrompt", "syslinuxMenu", "grubPrompt", "grubMenu"].contains(outcome)
        #expect(json["bootable"] as? Bool == bootable, "problems: \(problems(json))", sourceLocation: sourceLocation)
        #expect(loaderUp == bootable, "outcome \(outcome), screen:\n\(screen(json))", sourceLocation: sourceLocation)
    }

    // MARK: images

    /// An 8 MiB msdos disk: partition 1 FAT from sector 2048 (type 0x0C, active unless told),
    /// SYSLINUX installed into it by `syslinux --install`, `mbr` in sector 0, and `config` as
    /// /syslinux.cfg.
    func syslinuxDisk(_ scratch: Scratch, active: Bool = true, config: String?) throws -> String {
        let image = scratch.file("syslinux.img")
        let table = scratch.file("table.sfdisk")
        try run(["truncate", "-s", "8M", image])
        try writeFile(table, Array("label: dos\nlabel-id: 0x494d4754\nunit: sectors\nstart=2048, type=c\(active ? ", bootable" : "")\n".utf8))
        try run(["sh", "-c", "sfdisk -q \"$0\" < \"$1\"", image, table])
        try run(["mkfs.vfat", "--offset", "2048", "--invariant", "-i", "494d4754", "-n", "SYSLINUX", image, "7168"])
        try run(["syslinux", "--install", "--offset", "\(Self.fatOffset)", image])
        try run(["dd", "if=/usr/lib/syslinux/mbr/mbr.bin", "of=\(image)", "bs=440", "count=1", "conv=notrunc", "status=none"])
        if let config { try fatWrite(image, config, as: "syslinux.cfg", scratch) }
        return image
    }

    func fatWrite(_ image: String, _ text: String, as name: String, _ scratch: Scratch) throws {
        let file = scratch.file(name)
        try writeFile(file, Array(text.utf8))
        try run(["mcopy", "-o", "-i", "\(image)@@\(Self.fatOffset)", file, "::\(name)"])
    }

    /// mdel refuses ldlinux.sys, which syslinux marks read-only, hidden and system.
    func fatDelete(_ image: String, _ name: String) throws {
        try run(["mattrib", "-i", "\(image)@@\(Self.fatOffset)", "-r", "-s", "-h", "::\(name)"])
        try run(["mdel", "-i", "\(image)@@\(Self.fatOffset)", "::\(name)"])
    }

    /// An isohybrid ISO as distributions build them: xorriso with isohdpfx.bin, isolinux.bin with a
    /// boot info table, ldlinux.c32 and isolinux.cfg (plus menu.c32 when the config asks for it).
    func isohybrid(_ scratch: Scratch, config: String) throws -> String {
        let tree = scratch.file("tree")
        try FileManager.default.createDirectory(atPath: tree + "/isolinux", withIntermediateDirectories: true)
        for file in ["/usr/lib/ISOLINUX/isolinux.bin", "\(Self.modules)/ldlinux.c32", "\(Self.modules)/menu.c32", "\(Self.modules)/libutil.c32"] {
            try run(["cp", file, tree + "/isolinux/"])
        }
        try writeFile(tree + "/isolinux/isolinux.cfg", Array(config.utf8))
        let iso = scratch.file("hybrid.iso")
        try run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "IMGTOOL_ISO", "-isohybrid-mbr", "/usr/lib/ISOLINUX/isohdpfx.bin",
                 "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                 "-boot-info-table", "-o", iso, tree])
        return iso
    }

    func patch(_ image: String, at offset: Int, _ bytes: [UInt8]) throws {
        let fd = open(image, O_WRONLY)
        guard fd >= 0 else { throw TestFailure("open \(image): errno \(errno)") }
        defer { close(fd) }
        guard pwrite(fd, bytes, bytes.count, off_t(offset)) == bytes.count else { throw TestFailure("pwrite \(image): errno \(errno)") }
    }

    static let promptConfig = "PROMPT 1\nTIMEOUT 0\nSAY imgtool SYSLINUX test\n"

    // MARK: SYSLINUX on an msdos disk

    @Test("SYSLINUX on an active FAT partition with mbr.bin and a PROMPT config: bootable; the boot shows its boot: prompt")
    func syslinuxBootable() throws {
        let scratch = try Scratch()
        let image = try syslinuxDisk(scratch, config: Self.promptConfig)
        let (status, json) = try verify(image)
        #expect(status == 0)
        #expect((json["bootCode"] as? JSON)?["description"] as? String == "SYSLINUX MBR (mbr.bin)")
        #expect(problems(json).isEmpty)
        expectAgreement(json, true)
        #expect(boot(json)["outcome"] as? String == "syslinuxPrompt")
        #expect(screen(json).contains("SYSLINUX 6.") && screen(json).contains("imgtool SYSLINUX test"))
    }

    @Test("no active partition: not bootable, named; mbr.bin prints \"Missing operating system.\"")
    func syslinuxNotActive() throws {
        let scratch = try Scratch()
        let image = try syslinuxDisk(scratch, active: false, config: Self.promptConfig)
        let (status, json) = try verify(image)
        #expect(status == 1)
        #expect(problems(json).contains { $0.hasPrefix("no partition is marked active") && $0.contains("Missing operating system.") })
        expectAgreement(json, false)
        #expect(boot(json)["outcome"] as? String == "syslinuxError")
        #expect(boot(json)["message"] as? String == "Missing operating system.")
    }

    /// Deleting alone leaves the sectors the boot sector points at intact (it still boots, until they
    /// are reused); writing a file afterwards reuses them, as any later write would.
    @Test("ldlinux.sys deleted and its space reused: not bootable; the boot sector prints \"Boot error\"")
    func syslinuxLdlinuxDeleted() throws {
        let scratch = try Scratch()
        let image = try syslinuxDisk(scratch, config: Self.promptConfig)
        try fatDelete(image, "ldlinux.sys")
        try fatWrite(image, String(repeating: "Z", count: 64 << 10), as: "filler.bin", scratch)
        let (status, json) = try verify(image)
        #expect(status == 1)
        #expect(problems(json).contains { $0.hasPrefix("there is no ldlinux.sys on partition 1") })
        expectAgreement(json, false)
        #expect(boot(json)["message"] as? String == "Boot error")
    }

    @Test("ldlinux.c32 missing: not bootable; SYSLINUX 6 prints \"Failed to load ldlinux.c32\"")
    func syslinuxNoLdlinuxC32() throws {
        let scratch = try Scratch()
        let image = try syslinuxDisk(scratch, config: Self.promptConfig)
        try fatDelete(image, "ldlinux.c32")
        let (status, json) = try verify(image)
        #expect(status == 1)
        #expect(problems(json).contains { $0.hasPrefix("there is no ldlinux.c32") })
        expectAgreement(json, false)
        #expect(boot(json)["message"] as? String == "Failed to load ldlinux.c32")
    }

    @Test("one byte of ldlinux.sys changed after installation: not bootable; \"Load error - Boot error\"")
    func syslinuxChecksum() throws {
        let scratch = try Scratch()
        let image = try syslinuxDisk(scratch, config: Self.promptConfig)
        // The FAT12 data area starts at sector 60 of the filesystem, with ldlinux.sys's cluster 2:
        // its second sector, loaded through the sector map and covered by the checksum, is 61.
        try patch(image, at: Self.fatOffset + 61 * 512 + 100, [0x58])
        let (status, json) = try verify(image)
        #expect(status == 1)
        #expect(problems(json).contains { $0.contains("fails its own checksum") })
        expectAgreement(json, false)
        #expect(boot(json)["message"] as? String == "Load error - Boot error")
    }

    @Test("no syslinux.cfg: bootable with a warning; SYSLINUX stops at boot: saying so")
    func syslinuxNoConfig() throws {
        let scratch = try Scratch()
        let image = try syslinuxDisk(scratch, config: nil)
        let (status, json) = try verify(image)
        #expect(status == 0)
        #expect(problems(json).contains { $0.hasPrefix("there is no syslinux.cfg or extlinux.conf") })
        expectAgreement(json, true)
        #expect(boot(json)["outcome"] as? String == "syslinuxPrompt")
        #expect(boot(json)["message"] as? String == "WARNING: No configuration file found")
    }

    @Test("gptmbr.bin: bootable only with the legacy BIOS bootable attribute on the partition",
          arguments: [true, false])
    func gptmbr(attribute: Bool) throws {
        let scratch = try Scratch()
        let image = scratch.file("gpt.img")
        try run(["truncate", "-s", "8M", image])
        try run(["sgdisk", "-o", "-a", "1", "-n", "1:2048:16350", "-t", "1:0700", "-U", "494D4754-0000-4000-8000-000000000000",
                 "-u", "1:494D4754-0000-4000-8000-000000000001", image])
        if attribute { try run(["sgdisk", "-A", "1:set:2", image]) }
        try run(["mkfs.vfat", "--offset", "2048", "--invariant", "-i", "494d4754", image, "7151"])
        try run(["syslinux", "--install", "--offset", "\(Self.fatOffset)", image])
        try run(["dd", "if=/usr/lib/syslinux/mbr/gptmbr.bin", "of=\(image)", "bs=440", "count=1", "conv=notrunc", "status=none"])
        try fatWrite(image, Self.promptConfig, as: "syslinux.cfg", scratch)
        let (status, json) = try verify(image)
        #expect(status == (attribute ? 0 : 1))
        expectAgreement(json, attribute)
        if !attribute {
            #expect(problems(json).contains { $0.hasPrefix("no GPT partition has the legacy BIOS bootable attribute") })
            #expect(boot(json)["message"] as? String == "Missing OS")
        }
    }

    /// extlinux installs only into a mounted filesystem: make-disk.sh's ext2 partition on an offset
    /// loop device, mounted for the install and released at once.
    @Test("EXTLINUX in /boot of an ext2 partition, mbr.bin: bootable (ldlinux.sys read through libext2fs); the prompt appears")
    func extlinux() throws {
        try #require(commandExists("extlinux"), "needs the Debian package extlinux")
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("ext.img"), ["--label", "dos", "--fs", "ext2", "--size-mib", "16"])
        let mnt = scratch.file("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        do {
            let loop = try run(["losetup", "-f", "--show", "-o", "\(Self.fatOffset)", image]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            defer { _ = try? Subprocess.run(["losetup", "-d", loop]) }
            try run(["mount", loop, mnt])
            defer { _ = try? Subprocess.run(["umount", mnt]) }
            try run(["extlinux", "--install", mnt + "/boot"])
            try writeFile(mnt + "/boot/extlinux.conf", Array(Self.promptConfig.utf8))
        }
        try run(["dd", "if=/usr/lib/syslinux/mbr/mbr.bin", "of=\(image)", "bs=440", "count=1", "conv=notrunc", "status=none"])
        let (status, json) = try verify(image)
        #expect(status == 0)
        #expect(problems(json).isEmpty)
        expectAgreement(json, true)
        #expect(boot(json)["outcome"] as? String == "syslinuxPrompt")
        #expect(screen(json).contains("imgtool SYSLINUX test"))
    }

    // MARK: ISOLINUX isohybrid

    @Test("an isohybrid ISO from xorriso with isolinux.cfg: bootable; the boot shows ISOLINUX's prompt or menu",
          arguments: ["prompt", "menu"])
    func isohybridBootable(style: String) throws {
        let scratch = try Scratch()
        let config = style == "menu"
            ? "UI menu.c32\nPROMPT 0\nTIMEOUT 600\nMENU TITLE imgtool\nLABEL a\n  MENU LABEL Alpha\n  KERNEL /a\nLABEL b\n  MENU LABEL Beta\n  KERNEL /b\n"
            : Self.promptConfig
        let iso = try isohybrid(scratch, config: config)
        let (status, json) = try verify(iso)
        #expect(status == 0)
        #expect((json["bootCode"] as? JSON)?["description"] as? String == "isohybrid MBR (isohdpfx.bin)")
        #expect(problems(json).isEmpty)
        expectAgreement(json, true)
        if style == "menu" {
            #expect(boot(json)["outcome"] as? String == "syslinuxMenu")
            #expect(boot(json)["menuEntries"] as? [String] == ["Alpha", "Beta"])
        } else {
            #expect(boot(json)["outcome"] as? String == "syslinuxPrompt")
            #expect(screen(json).contains("ISOLINUX 6."))
        }
    }

    @Test("isohybrid with the isolinux.bin sector at 0x1B0 off by one block: not bootable; \"isolinux.bin missing or corrupt.\"")
    func isohybridBadPointer() throws {
        let scratch = try Scratch()
        let iso = try isohybrid(scratch, config: Self.promptConfig)
        let fd = open(iso, O_RDONLY)
        var field = [UInt8](repeating: 0, count: 8)
        _ = pread(fd, &field, 8, 0x1B0)
        close(fd)
        let sector = field.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        #expect(sector % 4 == 0 && sector > 0, "xorriso writes 4 x the 2048-byte block of isolinux.bin")
        // One block further: inside isolinux.bin, where its signature is not.
        try patch(iso, at: 0x1B0, (0..<8).map { UInt8(truncatingIfNeeded: (sector + 4) >> (8 * UInt64($0))) })
        let (status, json) = try verify(iso)
        #expect(status == 1)
        #expect(problems(json).contains { $0.contains("loads isolinux.bin from sector \(sector + 4)") })
        expectAgreement(json, false)
        #expect(boot(json)["message"] as? String == "isolinux.bin missing or corrupt.")
    }

    // MARK: GRUB legacy

    @Test("GRUB legacy stage1 (make-corpus.sh's) with nothing at its stage2 sector: not bootable; the boot shows no loader")
    func grubLegacyStage1() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("legacy.img"), ["--label", "dos", "--fs", "ext2", "--size-mib", "8"])
        // make-corpus.sh's grub-legacy-stage1.bin, built byte by byte from GRUB 0.97's layout: its
        // code area (440 bytes) over this image's, keeping the partition table.
        try run(["dd", "if=\(repositoryRoot)/TestImages/corpus/formats/grub-legacy-stage1.bin", "of=\(image)",
                 "bs=440", "count=1", "conv=notrunc", "status=none"])
        let (status, json) = try verify(image, timeout: 8)
        #expect(status == 1)
        #expect((json["bootCode"] as? JSON)?["kind"] as? String == "grubLegacy")
        #expect(problems(json).contains { $0.hasPrefix("stage1 loads sector 1, which holds no GRUB stage2 or stage1.5 (it is zeroed)") })
        expectAgreement(json, false)
        #expect(["timeout", "other"].contains(boot(json)["outcome"] as? String ?? ""))
    }
}

/// Classification of the screens SYSLINUX showed in the boots above, on strings: no qemu.
@Suite struct SyslinuxScreenTests {
    let banner = "SYSLINUX 6.04 EDD 20210613 Copyright (C) 1994-2015 H. Peter Anvin et al"

    @Test("the boot: prompt, with the configuration warning as its message")
    func prompt() {
        let c = BootScreen.classify(screen: ["SeaBIOS (version 1.16.2)", "Booting from Hard Disk...", "", banner,
                                           "WARNING: No configuration file found", "boot: "])
        #expect(c?.outcome == .syslinuxPrompt)
        #expect(c?.message == "WARNING: No configuration file found")
        // LILO also prompts "boot:"; without a SYSLINUX banner it is not recognised.
        #expect(BootScreen.classify(screen: ["LILO 24.2", "boot: "]) == nil)
    }

    @Test("MBR errors win over SeaBIOS's give-up that follows them; a banner on the same row is cut off")
    func errors() {
        let missing = BootScreen.classify(screen: ["Booting from Hard Disk...", "Missing operating system.", "Booting from Floppy...",
                                                 "Boot failed: could not read the boot disk", "", "No bootable device."])
        #expect(missing?.outcome == .syslinuxError)
        #expect(missing?.message == "Missing operating system.")
        #expect(BootScreen.classify(screen: ["Booting from Hard Disk...", "SYSLINUX 6.04 EDD Load error - Boot error"])?.message
                == "Load error - Boot error")
        #expect(BootScreen.classify(screen: ["ISOLINUX 6.04 20200816 EHDDisolinux: Image checksum error, sorry..."])?.message
                == "Image checksum error, sorry...")
        // A kernel that is not there sends SYSLINUX back to its prompt: the prompt, with the error.
        let again = BootScreen.classify(screen: [banner, "boot: linux", "Could not find kernel image: linux", "boot:"])
        #expect(again?.outcome == .syslinuxPrompt)
        #expect(again?.message == "Could not find kernel image: linux")
    }

    @Test("menu.c32's frame has a title separator; its entries are read without a marker column")
    func menu() {
        let screen = ["", "          ┌────────────────────┐", "          │      imgtool       │",
                      "          ├────────────────────┤", "          │ Alpha              │", "          │ Beta               │",
                      "          │                    │", "          └────────────────────┘", "   Press [Tab] to edit options"]
        let c = BootScreen.classify(screen: screen)
        #expect(c?.outcome == .syslinuxMenu)
        #expect(c?.menuEntries == ["Alpha", "Beta"])
    }
}
