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

    /// `report` with `boots` recorded and nothing else changed.
    static func recording(_ report: VerifyReport, _ boots: [VerifyReport.Boot]) -> VerifyReport {
        VerifyReport(image: report.image, bootable: report.bootable, biosBootable: report.biosBootable, bootCode: report.bootCode,
                     grub: report.grub, problems: report.problems, efi: report.efi, boots: boots)
    }

    @Test("an agreeing boot, or one that shows nothing classifiable, changes nothing but the boots recorded")
    func agreementChangesNothing() {
        let bootable = Self.report(bios: true, efi: nil)
        #expect(bootable.reconciled(with: Self.boot(.grubMenu), firmware: .bios)
                == Self.recording(bootable, [.init(firmware: .bios, observation: Self.boot(.grubMenu))]))
        #expect(bootable.reconciled(with: Self.boot(.timeout), firmware: .bios)
                == Self.recording(bootable, [.init(firmware: .bios, observation: Self.boot(.timeout))]))
        let undecided = Self.report(bios: nil, efi: nil)
        #expect(undecided.reconciled(with: Self.boot(.other), firmware: .bios)
                == Self.recording(undecided, [.init(firmware: .bios, observation: Self.boot(.other))]))
        // A grub> prompt is GRUB running without a grub.cfg: bootable, as the static check says.
        #expect(VerifyReport.verdict(of: Self.boot(.grubPrompt)) == true)
        #expect(VerifyReport.verdict(of: Self.boot(.noBootableDevice)) == false)
    }

    static func boots(bios: BootObservation.Outcome, efi: BootObservation.Outcome) -> [VerifyReport.Boot] {
        [.init(firmware: .bios, observation: Self.boot(bios)), .init(firmware: .efi, observation: Self.boot(efi))]
    }

    @Test("a hybrid booted with both firmwares is bootable only when both reach the loader; one boot needs one path")
    func bothFirmwares() {
        let hybrid = Self.report(bios: true, efi: true)
        let both = hybrid.reconciled(with: Self.boots(bios: .grubMenu, efi: .grubMenu))
        #expect(both.bootable == true && both.boots.map(\.firmware) == [.bios, .efi] && both.problems.isEmpty)
        // OVMF stops at grub rescue>: the UEFI path follows the boot with a warning naming OVMF, and
        // the image is not bootable although SeaBIOS starts it.
        let uefiFails = hybrid.reconciled(with: Self.boots(bios: .grubMenu, efi: .grubRescue))
        #expect(uefiFails.bootable == false && uefiFails.exitCode == 1 && uefiFails.biosBootable == true)
        #expect(uefiFails.efi?.bootable == false && uefiFails.problems.isEmpty)
        #expect(uefiFails.efi?.problems.map(\.severity) == [.warning])
        #expect(uefiFails.efi?.problems.first?.message.contains("booting under OVMF showed grubRescue") == true)
        let biosFails = hybrid.reconciled(with: Self.boots(bios: .noBootableDevice, efi: .grubMenu))
        #expect(biosFails.bootable == false && biosFails.problems.first?.message.contains("under SeaBIOS") == true)
        // Agreeing with a failure the static checks found: no finding, still not bootable.
        let brokenLoader = Self.report(bios: true, efi: false).reconciled(with: Self.boots(bios: .grubMenu, efi: .noBootableDevice))
        #expect(brokenLoader.bootable == false && brokenLoader.efi?.problems == [] && brokenLoader.problems == [])
        // A boot with no verdict leaves its path's static verdict, which then counts.
        #expect(hybrid.reconciled(with: Self.boots(bios: .grubMenu, efi: .timeout)).bootable == true)
        #expect(Self.report(bios: true, efi: nil).reconciled(with: Self.boots(bios: .grubMenu, efi: .timeout)).bootable == nil)
        // The same failure from a single boot: the other path still makes the image bootable.
        #expect(hybrid.reconciled(with: Self.boot(.grubRescue), firmware: .efi).bootable == true)
    }

    @Test("verify's JSON: boot for one, null for several, boots for each with its firmware")
    func bootsJSON() throws {
        let one = Self.report(bios: true, efi: nil).reconciled(with: Self.boot(.grubMenu), firmware: .bios)
        #expect(one.json["boot"]?["firmware"]?.stringValue == "bios" && one.json["boot"]?["outcome"]?.stringValue == "grubMenu")
        let two = Self.report(bios: true, efi: true).reconciled(with: Self.boots(bios: .grubMenu, efi: .grubPrompt))
        #expect(two.json["boot"]?.isNull == true)
        #expect(two.json["boots"]?.arrayValue?.compactMap { $0["firmware"]?.stringValue } == ["bios", "efi"])
        #expect(VerifyReport(json: two.json) == two && VerifyReport(json: one.json) == one)
        #expect(VerifyReport(json: Self.report(bios: true, efi: nil).json)?.boots == [])
    }

    @Test("with no firmware asked for, verify --boot boots what the layout is for: both for a hybrid")
    func firmwaresFromTheLayout() {
        func report(code: BootCode.Kind, esp: Bool, loader: Bool) -> VerifyReport {
            VerifyReport(image: "i.img", bootable: nil, biosBootable: nil, bootCode: BootCode(kind: code, description: "", details: [:]),
                         grub: nil, problems: [],
                         efi: esp ? .init(partition: 1, loader: loader ? "/EFI/BOOT/BOOTX64.EFI" : nil, machine: nil, subsystem: nil,
                                          grub: nil, bootable: nil, problems: []) : nil)
        }
        #expect(Verify.bootFirmwares(for: report(code: .grub2, esp: true, loader: true)) == [.bios, .efi])
        #expect(Verify.bootFirmwares(for: report(code: .none, esp: true, loader: true)) == [.efi])
        #expect(Verify.bootFirmwares(for: report(code: .none, esp: true, loader: false)) == [.efi])
        // An ESP left empty by a BIOS install on a layout made for both: BIOS alone.
        #expect(Verify.bootFirmwares(for: report(code: .grub2, esp: true, loader: false)) == [.bios])
        #expect(Verify.bootFirmwares(for: report(code: .syslinux, esp: false, loader: false)) == [.bios])
        #expect(Verify.bootFirmwares(for: report(code: .none, esp: false, loader: false)) == [.bios])
    }
}
