import Glibc
import ImgKit
import ImgSystem
import Logging

/// `--isolate`: the same command line, minus the isolation options, run by the same executable
/// inside a throwaway VM; its stdout, stderr and exit code become ours.
func runIsolated(_ command: CommandSpec, _ arguments: ParsedArguments, purpose: Isolation.Purpose) throws(UsageError) -> Int32 {
    guard let image = arguments.positional(0) else { throw UsageError(message: "missing argument <image>.") }
    var timeout = IsolatedVM.defaultTimeout
    if command.isolationOnly.contains("timeout") {
        timeout = try arguments.value("timeout", as: Double.self, expected: "a number of seconds") ?? timeout
        guard timeout > 0, timeout.isFinite else { throw UsageError(message: "'--timeout' must be a positive number of seconds.") }
    }
    let interruption = Interruption()
    let trap = SignalTrap(interruption)
    defer { withExtendedLifetime(trap) {} }
    var isolation = Isolation(kernel: arguments.value("kernel"), timeout: timeout,
                              executable: Isolation.processExecutable(), interruption: interruption)
    isolation.installStrategy = arguments.value("strategy").flatMap(InstallGrub.Strategy.init(rawValue:))
    let verbose = arguments.flag("verbose")
    let logger = makeLogger(label: "imgtool.isolate", verbose: verbose, quiet: !verbose)
    if command.name == verifyCommand.name && arguments.flag("boot") {
        let bootTimeout = try arguments.value("timeout", as: Double.self, expected: "a number of seconds") ?? 30
        guard bootTimeout > 0, bootTimeout.isFinite else { throw UsageError(message: "'--timeout' must be a positive number of seconds.") }
        let verify = VerifyCommand(image: image, boot: true, timeout: bootTimeout,
                                   firmware: try arguments.value("firmware", as: QemuBoot.Firmware.self, expected: "bios or efi"),
                                   json: arguments.flag("json"), verbose: verbose)
        return verifyBootingOnHost(verify, isolation: isolation, interruption: interruption, logger: logger)
    }
    let forwarded = arguments.forwarded(dropping: command.isolationOnly.union(["isolate"]))
    do {
        let r = try isolation.run([command.name] + forwarded, image: image, purpose: purpose, logger: logger)
        writeAll(1, r.stdout)
        writeAll(2, r.stderr)
        logger.debug("isolated VM finished", metadata: ["seconds": "\(r.seconds)", "qemu": "\(r.vmSeconds)",
                                                         "accelerator": "\(r.accelerator)", "resumed": "\(r.resumed)"])
        return r.status
    } catch {
        printError(error.description)
        return error.exitCode
    }
}

/// verify --isolate --boot: the report is made in the VM (`verify --json` there), the boot runs
/// here under qemu as without --isolate, on a copy-on-write overlay.
private func verifyBootingOnHost(_ verify: VerifyCommand, isolation: Isolation, interruption: Interruption,
                                 logger: Logger) -> Int32 {
    let inVM = ["verify", "--json"] + (verify.verbose ? ["--verbose"] : []) + ["--", verify.image]
    let r: IsolatedVM.Result
    do { r = try isolation.run(inVM, image: verify.image, purpose: .readOnly, logger: logger) } catch {
        printError(error.description)
        return error.exitCode
    }
    writeAll(2, r.stderr)
    // verify exits 0, 1 or 2 with a report; 2 without one (and anything else) is an error it printed.
    guard let document = try? JSONValue.parse(r.stdout), let report = VerifyReport(json: document) else {
        if r.status == 0 || r.status == 1 { printError("the isolated VM's verify report could not be read.") }
        return r.status == 0 || r.status == 1 ? 2 : r.status
    }
    return verify.finish(report, interruption: interruption)
}
