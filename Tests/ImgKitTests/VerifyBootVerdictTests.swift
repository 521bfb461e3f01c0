import ImgKit
import Testing

/// The boot is the truth: `reconciled(with:firmware:)` makes the verdict follow what a boot
/// showed, says so in a finding, and leaves a report the boot agrees with as it was.
struct VerifyBootVerdictTests {
    static func report(bios: Bool?, efi: Bool?) -> VerifyReport {
        let efiPath = efi.map { VerifyReport.EFI(partition: 1, loader: "/EFI/BOOT/BOOTX64.EFI", machine: nil, subsystem: nil,
                                                  grub: nil, bootable: $0, problems: []) }
        let overall: Bool? = bios == true || efi == true ? true : (bios == false && (efi ?? false) == false ? false : nil)
        return VerifyReport(image: "i.img", bootable: overall, biosBootable: bios,
                            bootCode: BootCode(kind: .unknown, description: "unknown", details: [:]), grub: nil,
                            problems: [], efi: efiPath)
    }

    static func boot(_ outcome: BootObservation.Outcome) -> BootObservation {
        BootObservation(outcome: outcome, screen: [], menuEntries: outcome == .grubMenu ? ["Rescue"] : [], message: nil,
                        seconds: 1)
    }

    @Test("a boot that shows GRUB's menu makes an undecided image bootable, with an info finding")
    func undecidedBecomesBootable() {
        let r = Self.report(bios: nil, efi: nil).reconciled(with: Self.boot(.grubMenu), firmware: .bios)
        #expect(r.bootable == true && r.biosBootable == true && r.exitCode == 0)
        #expect(r.problems.map(\.severity) == [.info])
        #expect(r.problems.first?.message.contains("GRUB's menu (Rescue)") == true)
    }

    @Test("a boot that contradicts the static verdict overrules it, with a warning")
    func contradictions() {
        let failed = Self.report(bios: true, efi: nil).reconciled(with: Self.boot(.grubRescue), firmware: .bios)
        #expect(failed.bootable == false && failed.exitCode == 1 && failed.problems.map(\.severity) == [.warning])
        let efi = Self.report(bios: false, efi: false).reconciled(with: Self.boot(.grubMenu), firmware: .efi)
        #expect(efi.bootable == true && efi.efi?.bootable == true && efi.biosBootable == false)
        #expect(efi.efi?.problems.count == 1 && efi.problems.isEmpty)
    }

    @Test("an agreeing boot, or one that shows nothing classifiable, changes nothing")
    func agreementChangesNothing() {
        let bootable = Self.report(bios: true, efi: nil)
        #expect(bootable.reconciled(with: Self.boot(.grubMenu), firmware: .bios) == bootable)
        #expect(bootable.reconciled(with: Self.boot(.timeout), firmware: .bios) == bootable)
        let undecided = Self.report(bios: nil, efi: nil)
        #expect(undecided.reconciled(with: Self.boot(.other), firmware: .bios) == undecided)
        // A grub> prompt is GRUB running without a grub.cfg: bootable, as the static check says.
        #expect(VerifyReport.verdict(of: Self.boot(.grubPrompt)) == true)
        #expect(VerifyReport.verdict(of: Self.boot(.noBootableDevice)) == false)
    }
}
