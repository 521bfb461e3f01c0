import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// `imgtool verify`: the static verdict on images installed right and deliberately broken, each
/// confirmed by booting the image (verify --boot, qemu reading the VGA screen, no serial console).
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct VerifyTests {
    typealias JSON = [String: Any]

    /// `undecidedUEFI`: the static checks cannot tell whether the UEFI loader boots (grub-mkrescue's,
    /// whose prefix `()/boot/grub` imgtool does not resolve), so the OVMF boot decides that path, and
    /// says so in the one finding expected.
    func verify(_ image: String, boot: Bool = true, timeout: Int = 20, undecidedUEFI: Bool = false) throws -> (status: Int32, json: JSON) {
        let hash = try sha256(image)
        let r = try imgtool(["verify", image, "--json", "--timeout", "\(timeout)"] + (boot ? ["--boot"] : []))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, "stderr: \(r.stderr)")
        #expect(try sha256(image) == hash, "verify changed the image")
        // Every image this suite boots: the boot and the static verdict agree (else the verdict
        // follows the boot and says so, and that is a bug in the static checks).
        let disagreements = bootDisagreements(json)
        if undecidedUEFI {
            #expect(disagreements.count == 1 && disagreements[0].hasPrefix("the static checks said cannot tell, but booting under OVMF"),
                    "\(disagreements)")
        } else {
            #expect(disagreements.isEmpty, "\(disagreements)")
        }
        return (r.status, json)
    }

    func problems(_ json: JSON) -> [String] {
        (json["problems"] as? [JSON] ?? []).compactMap { $0["message"] as? String }
    }

    func outcome(_ json: JSON) -> String? { (json["boot"] as? JSON)?["outcome"] as? String }

    /// An image with GRUB installed by imgtool and a two-entry menu (no serial console).
    func installedWithMenu(_ scratch: Scratch, label: String) throws -> String {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", label])
        #expect(try imgtool(["install-grub", image, "-q"]).status == 0)
        let cfg = scratch.file("grub.cfg")
        try "set timeout=30\nmenuentry 'Alpha' { true }\nmenuentry 'Beta' { true }\n".write(toFile: cfg, atomically: true, encoding: .utf8)
        try run(["debugfs", "-w", "-R", "write \(cfg) /boot/grub/grub.cfg", "\(image)?offset=\(try bootPartitionOffset(image))"])
        return image
    }

    /// grub-mkrescue's layouts: boot_hybrid.img in sector 0 (under xorriso's Apple partition map
    /// block 0 in the GPT variant), core.img a file of the ISO 9660 volume that spans the image
    /// and that the partitions are windows into, and a prefix without a partition.
    @Test("grub-mkrescue hybrid ISOs (GPT with ESP and HFS+; BIOS-only MBR with type 0xcd): bootable, as the boot shows",
          arguments: ["hybrid", "bios"])
    func grubMkrescue(variant: String) throws {
        let scratch = try Scratch()
        let tree = scratch.file("tree")
        try run(["mkdir", "-p", tree + "/boot/grub"])
        try "set timeout=30\nmenuentry 'Rescue' { true }\n".write(toFile: tree + "/boot/grub/grub.cfg", atomically: true, encoding: .utf8)
        let image = scratch.file("rescue.iso")
        try run(["grub-mkrescue"] + (variant == "bios" ? ["-d", "/usr/lib/grub/i386-pc"] : []) + ["-o", image, tree])
        let (status, json) = try verify(image, boot: false)
        #expect(status == 0 && json["bootable"] as? Bool == true, "\(problems(json))")
        let bootCode = try #require(json["bootCode"] as? JSON)
        #expect((bootCode["details"] as? JSON)?["image"] as? String == "boot_hybrid.img")
        // The hybrid variant (an ESP with GRUB's EFI image) boots with SeaBIOS and OVMF both.
        let booted = try verify(image, undecidedUEFI: variant == "hybrid")
        #expect(booted.status == 0 && booted.json["bootable"] as? Bool == true)
        let boots = try #require(booted.json["boots"] as? [JSON])
        #expect(boots.map { $0["firmware"] as? String } == (variant == "hybrid" ? ["bios", "efi"] : ["bios"]))
        #expect(boots.allSatisfy { $0["outcome"] as? String == "grubMenu" && $0["menuEntries"] as? [String] == ["Rescue"] }, "\(boots)")
        // inspect names the ISO 9660 volume on the whole image beside the table, as blkid -p does.
        let report = try #require(try JSONSerialization.jsonObject(with: Data(try imgtool(["inspect", "--json", image]).output)) as? JSON)
        let fs = try #require(report["filesystem"] as? JSON)
        let blkid = try run(["blkid", "-p", "-o", "export", image]).stdout
        #expect(fs["type"] as? String == "iso9660" && blkid.contains("TYPE=iso9660"))
        #expect(blkid.contains("LABEL=\(fs["label"] as? String ?? "?")"))
        #expect((report["partitionTable"] as? JSON)?["type"] as? String == (variant == "bios" ? "dos" : "gpt"))
    }

    @Test("installed by imgtool: bootable, with the modules and prefix grub-install chose; the boot shows the menu",
          arguments: [("dos", "(,msdos1)/boot/grub", "part_msdos"), ("gpt", "(,gpt2)/boot/grub", "part_gpt")])
    func installed(label: String, prefix: String, partmap: String) throws {
        let scratch = try Scratch()
        let image = try installedWithMenu(scratch, label: label)
        let (status, json) = try verify(image)
        #expect(status == 0, "problems: \(problems(json))")
        #expect(json["bootable"] as? Bool == true)
        let grub = try #require(json["grub"] as? JSON)
        #expect(grub["prefix"] as? String == prefix)
        let modules = grub["modules"] as? [String] ?? []
        #expect(modules.contains(partmap) && modules.contains("ext2") && modules.contains("biosdisk"))
        #expect(((grub["coreImage"] as? JSON)?["sector"] as? Int) == (label == "gpt" ? 2048 : 1))
        #expect(outcome(json) == "grubMenu")
        #expect((json["boot"] as? JSON)?["menuEntries"] as? [String] == ["Alpha", "Beta"])
    }

    @Test("zeroed boot code: not bootable; booted, the BIOS runs the zeros and nothing appears")
    func zeroed() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let (status, json) = try verify(image, timeout: 5)
        #expect(status == 1)
        #expect(json["bootable"] as? Bool == false)
        #expect(problems(json).contains { $0.contains("zeroed") })
        // The MBR has 55AA, so SeaBIOS jumps into the zeroed code and hangs there.
        #expect(outcome(json) == "timeout")
        #expect(((json["boot"] as? JSON)?["screen"] as? [String] ?? []).contains { $0.contains("Booting from Hard Disk") })
    }

    @Test("normal.mod removed: not bootable, named; the boot stops at grub rescue>")
    func normalModMissing() throws {
        let scratch = try Scratch()
        let image = try installedWithMenu(scratch, label: "dos")
        try run(["debugfs", "-w", "-R", "rm /boot/grub/i386-pc/normal.mod", "\(image)?offset=\(try bootPartitionOffset(image))"])
        let (status, json) = try verify(image)
        #expect(status == 1)
        #expect(problems(json).contains { $0.contains("/boot/grub/i386-pc/normal.mod is missing") })
        #expect(outcome(json) == "grubRescue")
    }

    @Test("no grub.cfg: bootable with a warning; the boot ends at a grub> prompt")
    func noConfig() throws {
        let scratch = try Scratch()
        let image = try installedWithMenu(scratch, label: "dos")
        try run(["debugfs", "-w", "-R", "rm /boot/grub/grub.cfg", "\(image)?offset=\(try bootPartitionOffset(image))"])
        let (status, json) = try verify(image)
        #expect(status == 0)
        #expect(problems(json).contains { $0.contains("there is no /boot/grub/grub.cfg") })
        #expect(outcome(json) == "grubPrompt")
    }

    @Test("core.img without part_msdos (the offset recipe without --modules): not bootable, named; grub rescue>")
    func missingPartitionModule() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let offset = try bootPartitionOffset(image)
        let size = try run(["stat", "-c", "%s", image]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let mnt = scratch.file("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let disk = try run(["losetup", "-f", "--show", image]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Subprocess.run(["losetup", "-d", disk]) }
        let part = try run(["losetup", "-f", "--show", "-o", "\(offset)", "--sizelimit", "\(UInt64(size)! - offset)", image])
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Subprocess.run(["losetup", "-d", part]) }
        try run(["mount", part, mnt])
        defer { _ = try? Subprocess.run(["umount", mnt]) }
        try run(["grub-install", "--target=i386-pc", "--boot-directory=\(mnt)/boot", disk])
        try run(["umount", mnt])
        let (status, json) = try verify(image)
        #expect(status == 1)
        #expect(problems(json).contains { $0.contains("core.img lacks part_msdos") })
        #expect(outcome(json) == "grubRescue")
    }

    @Test("core.img wiped after boot.img: not bootable, says why")
    func coreWiped() throws {
        let scratch = try Scratch()
        let image = try installedWithMenu(scratch, label: "dos")
        try run(["dd", "if=/dev/zero", "of=\(image)", "bs=512", "seek=1", "count=200", "conv=notrunc", "status=none"])
        let (status, json) = try verify(image, boot: false)
        #expect(status == 1)
        #expect(problems(json).contains { $0.contains("core.img is not usable") })
    }

    @Test("a partition entry with hostile start and size gives a verdict, not a crash")
    func hostilePartitionEntry() throws {
        let scratch = try Scratch()
        let image = try installedWithMenu(scratch, label: "dos")
        // Entry 1: start 0xFFFFFFF0, size 0xFFFFFFFF (far past the end of a 64 MiB image).
        try run(["python3", "-c", "import sys; f=open(sys.argv[1],'r+b'); f.seek(0x1BE+8); f.write(bytes.fromhex('f0ffffffffffffff'))", image])
        let (status, json) = try verify(image, boot: false)
        #expect(status == 1)
        #expect(json["bootable"] as? Bool == false)
        #expect(!problems(json).isEmpty)
    }

    @Test("other boot code is named, and the verdict is unknown (exit 2)")
    func unknownVerdict() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        // Code imgtool cannot name (jmp $): SYSLINUX and GRUB legacy get verdicts of their own now.
        try run(["sh", "-c", "printf '\\353\\376imgtool' | dd of=\"$0\" conv=notrunc status=none", image])
        let (status, json) = try verify(image, boot: false)
        #expect(status == 2)
        #expect(json["bootable"] is NSNull)
        #expect((json["bootCode"] as? JSON)?["kind"] as? String == "unknown")
    }
}
