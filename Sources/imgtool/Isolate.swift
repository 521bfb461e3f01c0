import ImgKit
import ImgSystem

/// `--isolate` (with `--kernel`, and `--timeout` where the command has no timeout of its own): the
/// `Isolation` the command's workflow runs in. The workflow sends a structured request into the VM
/// and gets back its result or its typed error, so the command prints what a local run prints.
func isolation(for command: CommandSpec, _ arguments: ParsedArguments) throws(UsageError) -> Isolation {
    var timeout = IsolatedVM.defaultTimeout
    if command.isolationOnly.contains("timeout") {
        timeout = try arguments.value("timeout", as: Double.self, expected: "a number of seconds") ?? timeout
        guard timeout > 0, timeout.isFinite else { throw UsageError(message: "'--timeout' must be a positive number of seconds.") }
    }
    return Isolation(kernel: arguments.value("kernel"), timeout: timeout, executable: Isolation.processExecutable())
}

/// Runs `body` with `isolation` (when there is one) stopped by SIGINT, SIGTERM and SIGHUP: the VM
/// is killed at once and the command exits 128 + the signal.
func withSignalsStopping<T, E: Error>(_ isolation: Isolation?, _ body: (Isolation?) throws(E) -> T) throws(E) -> T {
    guard var isolation else { return try body(nil) }
    let interruption = Interruption()
    let trap = SignalTrap(interruption)
    defer { withExtendedLifetime(trap) {} }
    isolation.vm.interruption = interruption
    return try body(isolation)
}
