import ArgumentParser
import FoundationEssentials
import ImgKit
import ImgSystem
import Logging

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Tell whether a disk image will boot with BIOS, and why not. Read-only, no root.",
        discussion: """
            Decodes the boot sector and GRUB's core.img (blocklist, modules, prefix, embedded config) and \
            checks what core.img needs from the image. --boot also boots the image under qemu on a \
            copy-on-write overlay and reports what the screen shows. Exit codes: 0 bootable, 1 not bootable, \
            2 unknown or error. Not yet verified: EFI images, GRUB legacy, SYSLINUX and Microsoft boot code \
            (named only, verdict unknown).
            """)

    @Argument(help: "The raw disk image (or block device).")
    var image: String

    @Flag(help: "Also boot the image under qemu (TCG) and report what it shows.")
    var boot = false

    @Option(help: "Seconds to wait for the booted image to show something recognisable.")
    var timeout: Double = 30

    @Flag(help: "Print the report as JSON on stdout.")
    var json = false

    @Flag(name: .shortAndLong, help: "More detail on stderr.")
    var verbose = false

    struct Output: Encodable {
        let report: VerifyReport
        let boot: BootObservation?
        func encode(to encoder: any Encoder) throws {
            try report.encode(to: encoder)
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(boot, forKey: .boot)
        }
        enum CodingKeys: String, CodingKey { case boot }
    }

    func run() throws {
        let interruption = Interruption()
        let trap = SignalTrap(interruption)
        defer { withExtendedLifetime(trap) {} }
        let logger = makeLogger(label: "imgtool.verify", verbose: verbose, quiet: !verbose)
        let report: VerifyReport
        do {
            report = try Verify.run(image: image, logger: logger)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        var observation: BootObservation?
        if boot {
            do {
                observation = try QemuBoot.observe(image: image, timeout: timeout, interruption: interruption)
            } catch {
                printError(error.description)
                throw ExitCode(2)
            }
        }
        if json {
            try printJSON(Output(report: report, boot: observation))
        } else {
            writeAll(1, Array(render(report, observation).utf8))
        }
        throw ExitCode(report.exitCode)
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
