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

    /// The report with a boot's verdict, for `firmware`'s path: `reconciled(with:)` for one boot.
    public func reconciled(with boot: BootObservation, firmware: QemuBoot.Firmware) -> VerifyReport {
        reconciled(with: [Boot(firmware: firmware, observation: boot)])
    }

    /// The report with the boots' verdicts, each for its firmware's path (SeaBIOS the BIOS path,
    /// OVMF the UEFI one), and the boots recorded in `boots`. The boot is the truth: where one
    /// contradicts its path's static verdict (or decides what the static checks could not), the
    /// path's verdict follows the boot and a finding there names the firmware; a boot with no
    /// verdict leaves its path as it was. After one boot the image boots when either path does;
    /// after several (a hybrid's, booted with each firmware it is laid out for) only when every
    /// booted path does, so a hybrid whose UEFI loader fails is not bootable though BIOS starts it.
    public func reconciled(with boots: [Boot]) -> VerifyReport {
        var bios = biosBootable, problems = self.problems, efi = self.efi
        for boot in boots {
            guard let booted = Self.verdict(of: boot.observation) else { continue }
            let statically = boot.firmware == .bios ? bios : efi?.bootable
            guard statically != booted else { continue }
            let finding = Self.disagreement(boot, statically: statically)
            if boot.firmware == .bios {
                bios = booted
                problems.append(finding)
            } else if let e = efi {
                efi = EFI(partition: e.partition, loader: e.loader, machine: e.machine, subsystem: e.subsystem, grub: e.grub,
                          bootable: booted, problems: e.problems + [finding])
            } else {
                problems.append(finding)
            }
        }
        let bootable: Bool?
        if boots.count > 1 {
            let paths = boots.map { $0.firmware == .bios ? bios : efi?.bootable }
            bootable = paths.contains(false) ? false : paths.allSatisfy { $0 == true } ? true : nil
        } else {
            bootable = Verify.combined(bios: bios, efi: efi)
        }
        return VerifyReport(image: image, bootable: bootable, biosBootable: bios, bootCode: bootCode, grub: grub,
                            problems: problems, efi: efi, boots: self.boots + boots)
    }

    /// The finding for a boot that decided, or contradicted, its path's static verdict.
    private static func disagreement(_ boot: Boot, statically: Bool?) -> Finding {
        let said = statically.map { $0 ? "bootable" : "NOT bootable" } ?? "cannot tell"
        let o = boot.observation
        let shown = o.outcome == .grubMenu && !o.menuEntries.isEmpty
            ? "GRUB's menu (\(o.menuEntries.joined(separator: " | ")))" : o.message.map { "\(o.outcome.rawValue): \($0)" } ?? o.outcome.rawValue
        return Finding(statically == nil ? .info : .warning,
                       "the static checks said \(said), but booting under \(boot.firmware.displayName) showed \(shown); the verdict follows the boot"
                         + (statically == nil ? "" : ". Please report this image: imgtool's static checks are wrong about it"))
    }
}
