import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// `imgtool verify` on UEFI images (TestImages/make-efi-disk.sh: GPT, FAT16 ESP, GRUB x86_64-efi),
/// installed right and deliberately broken; each static verdict is confirmed by booting the image
/// under OVMF, whose console the test reads from the serial port (grub.cfg does not ask for one).
@Suite(.serialized)
struct VerifyEFITests {
    typealias JSON = [String: Any]

    func makeEFIDisk(_ scratch: Scratch, _ arguments: [String] = []) throws -> String {
        let image = scratch.file("efi.img")
        try run(["\(repositoryRoot)/TestImages/make-efi-disk.sh", image] + arguments)
        return image
    }

    /// verify --boot --json; the image must be unchanged afterwards.
    func verify(_ image: String, timeout: Int = 60) throws -> (status: Int32, json: JSON, efi: JSON, boot: JSON) {
        let hash = try sha256(image)
        let r = try imgtool(["verify", image, "--json", "--boot", "--timeout", "\(timeout)"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, "stderr: \(r.stderr)")
        #expect(try sha256(image) == hash, "verify changed the image")
        #expect(bootDisagreements(json).isEmpty, "the boot and the static verdict disagree")
        #expect((json["bios"] as? JSON)?["bootable"] as? Bool == false, "the ESP-only image has zeroed BIOS boot code")
        return (r.status, json, try #require(json["efi"] as? JSON), try #require(json["boot"] as? JSON))
    }

    func messages(_ efi: JSON) -> [String] { (efi["problems"] as? [JSON] ?? []).compactMap { $0["message"] as? String } }

    @Test("GRUB at \\EFI\\BOOT\\BOOTX64.EFI with its modules and grub.cfg: bootable; OVMF shows the menu")
    func removable() throws {
        let scratch = try Scratch()
        let (status, json, efi, boot) = try verify(try makeEFIDisk(scratch))
        #expect(status == 0 && json["bootable"] as? Bool == true && efi["bootable"] as? Bool == true, "\(messages(efi))")
        #expect(efi["partition"] as? Int == 1 && efi["loader"] as? String == "/EFI/BOOT/BOOTX64.EFI")
        #expect(efi["machine"] as? String == "x86-64" && efi["subsystem"] as? String == "EFI application")
        let grub = try #require(efi["grub"] as? JSON)
        #expect(grub["prefix"] as? String == "/EFI/BOOT")
        #expect(Set(grub["modules"] as? [String] ?? []).isSuperset(of: ["part_gpt", "fat"]))
        #expect(boot["outcome"] as? String == "grubMenu" && boot["menuEntries"] as? [String] == ["Alpha", "Beta"])
    }

    @Test("no grub.cfg: bootable with a warning; OVMF shows grub>")
    func noConfig() throws {
        let scratch = try Scratch()
        let (status, _, efi, boot) = try verify(try makeEFIDisk(scratch, ["--no-config"]))
        #expect(status == 0 && efi["bootable"] as? Bool == true)
        #expect(messages(efi).contains { $0.contains("no /EFI/BOOT/grub.cfg") && $0.contains("grub> prompt") })
        #expect(boot["outcome"] as? String == "grubPrompt")
    }

    /// Broken images: the static reason, and what OVMF shows instead of a menu.
    @Test("broken: static verdict names the cause and OVMF agrees", arguments: [
        (["--no-normal-mod"], "/EFI/BOOT/x86_64-efi/normal.mod is missing", "grubRescue"),
        (["--modules", "fat"], "BOOTX64.EFI lacks part_gpt", "grubRescue"),
        (["--loader-dir", "EFI/debian"], "\\EFI\\debian\\grubx64.efi is there, but firmware boots one only through a boot entry", "noBootableDevice"),
        (["--garbage-loader"], "is not a valid PE image", "noBootableDevice"),
        (["--cyclic-loader"], "loops back to cluster", "noBootableDevice"),
    ])
    func broken(arguments: [String], reason: String, outcome: String) throws {
        let scratch = try Scratch()
        let (status, json, efi, boot) = try verify(try makeEFIDisk(scratch, arguments))
        #expect(status == 1 && json["bootable"] as? Bool == false && efi["bootable"] as? Bool == false)
        #expect(messages(efi).contains { $0.contains(reason) }, "\(messages(efi))")
        #expect(boot["outcome"] as? String == outcome, "screen: \(boot["screen"] ?? "")")
    }

    @Test("--firmware picks the firmware: SeaBIOS on the UEFI-only image finds zeros; a bad value is a usage error")
    func firmwareOption() throws {
        let scratch = try Scratch()
        let image = try makeEFIDisk(scratch)
        let bios = try imgtool(["verify", image, "--json", "--boot", "--firmware", "bios", "--timeout", "5"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(bios.output)) as? JSON)
        #expect(((json["boot"] as? JSON)?["outcome"] as? String) == "timeout")
        let usage = try imgtool(["verify", image, "--boot", "--firmware", "floppy"])
        #expect(usage.status == 64 && usage.stderr.contains("'--firmware' expects bios, efi or efi-secure"), "\(usage.stderr)")
    }
}
