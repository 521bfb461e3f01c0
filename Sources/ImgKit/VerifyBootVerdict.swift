import ImgFormats

extension VerifyReport {
    /// What a boot under qemu says of the image: true when the boot loader came up (GRUB's menu or
    /// its `grub>` prompt, SYSLINUX's menu or prompt), false when it stopped short (`grub rescue>`,
    /// an error, no bootable device), nil when the screen settled on nothing imgtool classifies.
    public static func verdict(of boot: BootObservation) -> Bool? {
        switch boot.outcome {
        case .grubMenu, .grubPrompt, .syslinuxMenu, .syslinuxPrompt: return true
        case .grubRescue, .grubError, .syslinuxError, .noBootableDevice: return false
        case .timeout, .other: return nil
        }
    }

    /// The report with a boot's verdict, for `firmware`'s path: the boot is the truth. Where it
    /// contradicts the static verdict (or decides what the static checks could not), the verdict
    /// follows the boot and a finding says so; a boot with no verdict changes nothing.
    public func reconciled(with boot: BootObservation, firmware: QemuBoot.Firmware) -> VerifyReport {
        guard let booted = Self.verdict(of: boot) else { return self }
        let statically = firmware == .bios ? biosBootable : efi?.bootable
        guard statically != booted else { return self }
        let said = statically.map { $0 ? "bootable" : "NOT bootable" } ?? "cannot tell"
        let shown = boot.outcome == .grubMenu && !boot.menuEntries.isEmpty
            ? "GRUB's menu (\(boot.menuEntries.joined(separator: " | ")))" : boot.message.map { "\(boot.outcome.rawValue): \($0)" } ?? boot.outcome.rawValue
        let finding = Finding(statically == nil ? .info : .warning,
                              "the static checks said \(said), but booting under \(firmware == .bios ? "SeaBIOS" : firmware == .efiSecure ? "OVMF enforcing Secure Boot" : "OVMF") showed \(shown); the verdict follows the boot"
                                + (statically == nil ? "" : ". Please report this image: imgtool's static checks are wrong about it"))
        var efi = self.efi
        var bios = biosBootable, problems = self.problems
        if firmware == .bios {
            bios = booted
            problems.append(finding)
        } else if let e = efi {
            efi = EFI(partition: e.partition, loader: e.loader, machine: e.machine, subsystem: e.subsystem, grub: e.grub,
                      bootable: booted, problems: e.problems + [finding])
        } else {
            problems.append(finding)
        }
        // Either path that boots makes the image bootable; the other path's static verdict stands.
        return VerifyReport(image: image, bootable: Verify.combined(bios: bios, efi: efi), biosBootable: bios,
                            bootCode: bootCode, grub: grub, problems: problems, efi: efi)
    }
}
