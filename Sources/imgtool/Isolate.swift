import Glibc
import ImgKit
import ImgSystem

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
    let isolation = Isolation(kernel: arguments.value("kernel"), timeout: timeout, interruption: interruption)
    let verbose = arguments.flag("verbose")
    let logger = makeLogger(label: "imgtool.isolate", verbose: verbose, quiet: !verbose)
    let forwarded = arguments.forwarded(dropping: command.isolationOnly.union(["isolate"]))
    do {
        let r = try isolation.run([command.name] + forwarded, image: image, purpose: purpose, logger: logger)
        writeAll(1, r.stdout)
        writeAll(2, r.stderr)
        logger.debug("isolated VM finished", metadata: ["seconds": "\(r.seconds)", "qemu": "\(r.vmSeconds)",
                                                         "accelerator": "\(r.accelerator)"])
        return r.status
    } catch {
        printError(error.description)
        return error.exitCode
    }
}
