import ImgKit
import ImgSystem
import Logging

let verifyCommand = CommandSpec(
    name: "verify",
    abstract: "Tell whether a disk image will boot with BIOS, and why not. Read-only, no root.",
    discussion: """
        Decodes the boot sector and GRUB's core.img (blocklist, modules, prefix, embedded config) and \
        checks what core.img needs from the image. --boot also boots the image under qemu on a \
        copy-on-write overlay and reports what the screen shows. Exit codes: 0 bootable, 1 not bootable, \
        2 unknown or error. Not yet verified: EFI images, GRUB legacy, SYSLINUX and Microsoft boot code \
        (named only, verdict unknown).
        """,
    positionals: [PositionalSpec(name: "image", optional: false, help: "The raw disk image (or block device).")],
    options: [
        .flag("boot", help: "Also boot the image under qemu (TCG) and report what it shows."),
        .option("timeout", "<seconds>", help: "Seconds to wait for the booted image to show something recognisable (default 30)."),
        .flag("json", help: "Print the report as JSON on stdout."),
        .flag("verbose", short: "v", help: "More detail on stderr."),
    ],
    run: { arguments throws(UsageError) in
        let timeout = try arguments.value("timeout", as: Double.self, expected: "a number of seconds") ?? 30
        guard timeout > 0, timeout.isFinite else { throw UsageError(message: "'--timeout' must be a positive number of seconds.") }
        return VerifyCommand(image: arguments.positional(0)!, boot: arguments.flag("boot"), timeout: timeout,
                             json: arguments.flag("json"), verbose: arguments.flag("verbose")).run()
    })

struct VerifyCommand {
    let image: String
    let boot: Bool
    let timeout: Double
    let json: Bool
    let verbose: Bool

    func run() -> Int32 {
        let interruption = Interruption()
        let trap = SignalTrap(interruption)
        defer { withExtendedLifetime(trap) {} }
        let logger = makeLogger(label: "imgtool.verify", verbose: verbose, quiet: !verbose)
        let report: VerifyReport
        do {
            report = try Verify.run(image: image, logger: logger)
        } catch {
            printError(error.description)
            return 2
        }
        var observation: BootObservation?
        if boot {
            do {
                observation = try QemuBoot.observe(image: image, timeout: timeout, interruption: interruption)
            } catch {
                printError(error.description)
                return 2
            }
        }
        if json {
            // The report's keys plus "boot": what qemu showed, or null without --boot.
            guard case .object(var members) = report.json else { return 2 }
            members["boot"] = observation?.json ?? .null
            printJSON(.object(members))
        } else {
            writeAll(1, Array(render(report, observation).utf8))
        }
        return report.exitCode
    }

    func render(_ r: VerifyReport, _ boot: BootObservation?) -> String {
        var out = "\(r.image): " + (r.bootable.map { $0 ? "bootable" : "NOT bootable" } ?? "cannot tell whether it boots") + "\n"
        out += "boot code: \(r.bootCode.description)\n"
        if let g = r.grub {
            out += "core.img: sector \(g.coreImage.sector), \(g.coreImage.sectors) sectors, prefix \(g.prefix ?? "none")\n"
            out += "modules: \(g.modules.joined(separator: " "))\n"
            if let config = g.config { out += "embedded config:\n" + config.split(separator: "\n").map { "  \($0)\n" }.joined() }
        }
        for p in r.problems { out += "\(p.severity): \(p.message)\n" }
        if let boot {
            out += "booted under qemu (\((boot.seconds * 10).rounded() / 10) s): \(boot.outcome.rawValue)"
            if !boot.menuEntries.isEmpty { out += ", menu: " + boot.menuEntries.joined(separator: " | ") }
            if let m = boot.message { out += ", \(m)" }
            out += "\n"
        }
        return out
    }
}
