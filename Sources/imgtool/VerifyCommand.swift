import ImgKit
import ImgSystem
import Logging

let verifyCommand = CommandSpec(
    name: "verify",
    abstract: "Tell whether a disk image will boot (BIOS or UEFI), and why not. Read-only, no root.",
    discussion: """
        BIOS: decodes the boot sector and follows what it loads: GRUB 2's core.img (blocklist, modules, \
        prefix, embedded config) and what it needs from the image, GRUB legacy's stage2, SYSLINUX's and \
        EXTLINUX's boot partition and ldlinux.sys, ISOLINUX through an isohybrid MBR. UEFI: reads \\EFI\\BOOT\\BOOTX64.EFI from the EFI system \
        partition's FAT filesystem, checks its PE header and, for GRUB, the modules, prefix and config it \
        carries. --boot also boots the image under qemu on a copy-on-write overlay (SeaBIOS, OVMF for UEFI, \
        both one after the other for a hybrid, which is then bootable only if both reach its loader) and \
        reports what each screen shows. Exit codes: 0 bootable, 1 not bootable, 2 unknown or \
        error.
        """,
    positionals: [PositionalSpec(name: "image", optional: false, completion: .file, help: "The raw disk image (or block device).")],
    options: [
        .flag("boot", help: "Also boot the image under qemu (TCG) and report what it shows."),
        .option("timeout", "<seconds>", help: "Seconds each boot waits for the image to show something recognisable (default 30)."),
        .option("firmware", "<bios|efi|efi-secure>", completion: .choices(QemuBoot.Firmware.allCases.map(\.rawValue)), help: "What --boot boots with (default: both for a hybrid, with boot code in sector 0 and a loader on the EFI system partition; else BIOS when sector 0 holds boot code, else UEFI when there is an EFI system partition); efi-secure: OVMF enforcing Secure Boot with Microsoft's keys."),
        .flag("json", help: "Print the report as JSON on stdout."),
        .flag("verbose", short: "v", help: "More detail on stderr."),
        backingOption,
    ],
    isolation: .readOnly,
    run: { arguments throws(UsageError) in
        let timeout = try arguments.value("timeout", as: Double.self, expected: "a number of seconds") ?? 30
        guard timeout > 0, timeout.isFinite else { throw UsageError(message: "'--timeout' must be a positive number of seconds.") }
        let firmware = try arguments.value("firmware", as: QemuBoot.Firmware.self, expected: "bios, efi or efi-secure")
        return VerifyCommand(image: arguments.positional(0)!, boot: arguments.flag("boot"), timeout: timeout,
                             firmware: firmware, json: arguments.flag("json"), verbose: arguments.flag("verbose"),
                             backing: arguments.flag("backing"), isolation: arguments.isolation).run()
    })

struct VerifyCommand {
    let image: String
    let boot: Bool
    let timeout: Double
    let firmware: QemuBoot.Firmware?
    let json: Bool
    let verbose: Bool
    let backing: Bool
    /// --isolate: the report is made in a throwaway VM; --boot still boots here, under qemu, on a
    /// copy-on-write overlay, so the host kernel never reads the image either way.
    let isolation: Isolation?

    func run() -> Int32 {
        let interruption = Interruption()
        let trap = SignalTrap(interruption)
        defer { withExtendedLifetime(trap) {} }
        let logger = makeLogger(label: "imgtool.verify", verbose: verbose, quiet: !verbose)
        var isolation = isolation
        isolation?.vm.interruption = interruption
        let report: VerifyReport
        do {
            report = try Verify.run(.init(image: image, isolation: isolation, backingFiles: backing), logger: logger)
        } catch {
            printError(error.description)
            // An image that cannot be opened is "unknown" (2), as verify documents; a VM that could
            // not run exits with its own code, as every command's does.
            if case .isolation(let failure) = error { return failure.exitCode }
            return 2
        }
        return finish(report, interruption: interruption, logger: logger)
    }

    /// --boot, then the report, whose verdict follows what the boots showed.
    func finish(_ report: VerifyReport, interruption: Interruption, logger: Logger) -> Int32 {
        var report = report
        if boot {
            do {
                report = try Verify.boot(report, image: image, firmware: firmware, timeout: timeout, backingFiles: backing,
                                         interruption: interruption, logger: logger)
            } catch {
                printError(error.description)
                return 2
            }
        }
        if json {
            printJSON(report.json)
        } else {
            writeAll(1, Array(render(report).utf8))
        }
        return report.exitCode
    }

    func render(_ r: VerifyReport) -> String {
        var out = "\(r.image): " + (r.bootable.map { $0 ? "bootable" : "NOT bootable" } ?? "cannot tell whether it boots") + "\n"
        out += "boot code: \(r.bootCode.description)\n"
        if let g = r.grub {
            out += "core.img: sector \(g.coreImage.sector), \(g.coreImage.sectors) sectors, prefix \(g.prefix ?? "none")\n"
            out += "modules: \(g.modules.joined(separator: " "))\n"
            if let config = g.config { out += "embedded config:\n" + config.split(separator: "\n").map { "  \($0)\n" }.joined() }
        }
        for p in r.problems { out += "\(p.severity): \(p.message)\n" }
        if let efi = r.efi {
            let verdict = efi.bootable.map { $0 ? "bootable" : "NOT bootable" } ?? "cannot tell"
            out += "UEFI: \(verdict); EFI system partition \(efi.partition)"
            if let loader = efi.loader { out += ", \(loader)" }
            if let machine = efi.machine, let subsystem = efi.subsystem { out += " (\(machine) \(subsystem))" }
            out += "\n"
            if let g = efi.grub {
                out += "  GRUB prefix \(g.prefix ?? "none"), modules: \(g.modules.joined(separator: " "))\n"
                if let config = g.config { out += "  embedded config:\n" + config.split(separator: "\n").map { "    \($0)\n" }.joined() }
            }
            for p in efi.problems { out += "  \(p.severity): \(p.message)\n" }
        }
        for b in r.boots {
            let boot = b.observation
            out += "booted under qemu with \(b.firmware.displayName) (\((boot.seconds * 10).rounded() / 10) s): \(boot.outcome.rawValue)"
            if !boot.menuEntries.isEmpty { out += ", menu: " + boot.menuEntries.joined(separator: " | ") }
            if let m = boot.message { out += ", \(m)" }
            out += "\n"
        }
        return out
    }
}

extension QemuBoot.Firmware: LosslessStringConvertible {
    public init?(_ description: String) { self.init(rawValue: description) }
    public var description: String { rawValue }
}
