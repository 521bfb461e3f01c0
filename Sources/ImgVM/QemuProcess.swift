import Glibc
import ImgSystem

/// One qemu process, from its private temp dir to its reaping: the lifecycle that `KernelVM`'s runs
/// and `QemuBoot`'s boot checks share.
///
/// qemu runs in its own process group (`Subprocess.spawnInOwnGroup`) with $TMPDIR pointing into
/// the private dir (a snapshot=on overlay goes there), its stderr in `qemu.err` there and, when
/// asked, its QMP monitor on its stdin and stdout (`QemuMonitor`); else those are /dev/null.
/// Whatever happens, the value's end SIGKILLs the whole process group (a throwaway guest's state is
/// worth nothing), reaps qemu and removes the dir. The `Interruption` given gets qemu registered,
/// so that its SIGTERM reaches qemu at once, and wins over qemu's own exit (`ending`).
package struct QemuProcess: ~Copyable {
    /// The qemu every VM here runs.
    package static let program = "qemu-system-x86_64"
    /// What a VM's error says when `program` is not in PATH.
    package static let missingMessage = "\(program) was not found in PATH; install the Debian package qemu-system-x86."

    package enum Ending: Sendable, Equatable {
        /// qemu exited by itself: the guest powered off or rebooted (-no-reboot), or qemu failed.
        case exited(status: Int32)
        /// Killed at the deadline.
        case timedOut
        /// Killed, or ended by the interruption's SIGTERM.
        case interrupted(signal: Int32)
    }

    /// The private directory, under $TMPDIR or /tmp, for qemu's files.
    package var directory: String { temporary.path }
    private let temporary: TemporaryDirectory
    /// The QMP connection, if `start` was asked for one.
    package private(set) var monitor: QemuMonitor?
    private let interruption: Interruption?
    /// qemu's pid, which is also its process group's id, once started.
    package private(set) var pid: pid_t?
    /// Set once qemu is reaped: its exit code, or 128 + the signal that ended it.
    package private(set) var exitStatus: Int32?

    /// Makes the private directory, named `temporaryPrefix` + 6 random characters; qemu starts
    /// with `start`.
    package init(temporaryPrefix: String, interruption: Interruption?) throws(SystemError) {
        let parent = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        temporary = try TemporaryDirectory(parent: parent, prefix: temporaryPrefix)
        self.interruption = interruption
    }

    /// A path in the private directory.
    package func file(_ name: String) -> String { "\(directory)/\(name)" }

    /// Starts `arguments[0]` with the rest; `monitor`: with QMP on its stdin and stdout.
    /// `descriptors` are passed on as (ours, the number qemu sees). Wraps posix_spawn(3).
    package mutating func start(_ arguments: [String], monitor wantsMonitor: Bool,
                                passing descriptors: [(ours: Int32, theirs: Int32)] = []) throws(SystemError) {
        precondition(pid == nil, "qemu is started once")
        var monitor: QemuMonitor?
        if wantsMonitor { monitor = try QemuMonitor() }
        let errors = file("qemu.err")
        let spawned = try Subprocess.spawnInOwnGroup(arguments[0], arguments, environment: environment()) { actions in
            if let monitor {
                monitor.redirect(&actions)
            } else {
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            }
            posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            for d in descriptors { posix_spawn_file_actions_adddup2(&actions, d.ours, d.theirs) }
        }
        monitor?.didSpawn()
        self.monitor = monitor
        pid = spawned
        interruption?.register(child: spawned)
    }

    /// Ours, with TMPDIR pointing into the private directory.
    private func environment() -> [String] {
        var environment: [String] = []
        var e = environ
        while let entry = e.pointee {
            let s = String(cString: entry)
            if !s.hasPrefix("TMPDIR=") { environment.append(s) }
            e += 1
        }
        return environment + ["TMPDIR=\(directory)"]
    }

    /// Whether qemu has exited, reaping it if so. Wraps waitpid(2).
    package mutating func hasExited() -> Bool {
        guard exitStatus == nil else { return true }
        guard let pid else { return false }
        var status: Int32 = 0
        do {
            if try systemCall("waitpid", on: "qemu", { waitpid(pid, &status, WNOHANG) }) == pid {
                exitStatus = exitCode(waitStatus: status)
            }
        } catch {
            // Not our child any more (ECHILD): nothing left to wait for, nor to kill.
            exitStatus = -1
        }
        return exitStatus != nil
    }

    /// Whether qemu has exited, waiting up to `seconds` for it.
    package mutating func hasExited(within seconds: Double) -> Bool {
        let deadline = monotonicNow() + seconds
        while !hasExited() && monotonicNow() < deadline { usleep(10_000) }
        return exitStatus != nil
    }

    /// How the run ended, qemu reaped; nil while qemu runs and neither `deadline` (monotonic
    /// seconds) nor an interruption has come. At the deadline or on an interruption qemu is killed.
    /// An interruption wins over qemu's own exit: `Interruption` records its signal before it sends
    /// SIGTERM, so a qemu that died of that SIGTERM is always seen with the signal recorded.
    package mutating func ending(deadline: Double) -> Ending? {
        if hasExited() {
            if let signal = interruption?.signal { return .interrupted(signal: signal) }
            return .exited(status: exitStatus!)
        }
        if let signal = interruption?.signal {
            kill()
            return .interrupted(signal: signal)
        }
        if monotonicNow() >= deadline {
            kill()
            // An interruption that came meanwhile is still the reason to report.
            if let signal = interruption?.signal { return .interrupted(signal: signal) }
            return .timedOut
        }
        return nil
    }

    /// SIGKILL to qemu's process group, then reaps qemu. Wraps kill(2) and waitpid(2).
    package mutating func kill() {
        guard let pid, exitStatus == nil else { return }
        exitStatus = Self.killAndReap(pid)
    }

    /// SIGKILL to the process group `pid`, then its exit status: -1 if it cannot be reaped.
    /// Wraps kill(2) and waitpid(2).
    private static func killAndReap(_ pid: pid_t) -> Int32 {
        bestEffort { Glibc.kill(-pid, SIGKILL) }
        var status: Int32 = 0
        guard (try? systemCall("waitpid", on: "qemu", { waitpid(pid, &status, 0) })) != nil else { return -1 }
        return exitCode(waitStatus: status)
    }

    /// The start of what qemu wrote to its stderr, at most `limit` bytes.
    package func errorOutput(limit: Int) -> String {
        String(decoding: readFileBytes(file("qemu.err"), limit: limit), as: UTF8.self)
    }

    deinit {
        if let pid {
            if exitStatus == nil { _ = Self.killAndReap(pid) }
            interruption?.unregister(child: pid)
        }
        // Only the files directly in it, no symlink followed: qemu and its callers put nothing else there.
        for name in directoryEntries(directory) { bestEffort { unlink(file(name)) } }
        try? temporary.remove()
    }
}
