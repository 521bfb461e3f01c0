import CLinuxShim
import Glibc
import Logging

/// Runs a program to completion, capturing its output. The child gets its own process group, default
/// signal dispositions and an empty signal mask, so that an `Interruption` can stop it and everything
/// it started, whatever the parent blocks.
public enum Subprocess {
    /// How a program run ended, and what it wrote.
    public struct Result: Sendable {
        /// The exit code, or 128 + N when signal N killed it.
        public let status: Int32          // exit code, or 128 + signal
        /// Everything the program wrote to stdout.
        public let output: [UInt8]
        /// Everything the program wrote to stderr.
        public let errorOutput: [UInt8]
        /// `output` as text; bytes that are not UTF-8 appear as U+FFFD.
        public var stdout: String { String(decoding: output, as: UTF8.self) }
        /// `errorOutput` as text; bytes that are not UTF-8 appear as U+FFFD.
        public var stderr: String { String(decoding: errorOutput, as: UTF8.self) }
        /// Whether the exit code is 0.
        public var succeeded: Bool { status == 0 }
    }

    /// Why a program could not be run (not why it failed: that is in `Result.status`).
    public enum Error: Swift.Error, CustomStringConvertible, Sendable {
        /// No executable of this name in PATH (or at this path).
        case notFound(program: String)
        /// Setting up or waiting for the child failed (pipe, posix_spawn, poll, waitpid).
        case system(SystemError)
        public var description: String {
            switch self {
            case .notFound(let p): return "\(p) was not found in PATH."
            case .system(let e): return e.description
            }
        }
    }

    /// Whether `program` resolves to an executable in PATH (or is an executable path). Wraps access(2).
    public static func find(_ program: String) -> String? {
        if program.contains("/") { return accessible(program, X_OK) ? program : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in path.split(separator: ":") where accessible("\(dir)/\(program)", X_OK) {
            return "\(dir)/\(program)"
        }
        return nil
    }

    /// Runs `arguments[0]` found in PATH. `onLine` sees each line of output as it arrives (for
    /// `--verbose`). Wraps pipe2(2), posix_spawn(3), poll(2), read(2), kill(2) and waitpid(2).
    public static func run(_ arguments: [String], interruption: Interruption? = nil,
                           onLine: ((String) -> Void)? = nil) throws(Error) -> Result {
        guard let executable = find(arguments[0]) else { throw .notFound(program: arguments[0]) }
        var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        do throws(SystemError) {
            try shimCall("pipe2", on: executable, imgtool_pipe_cloexec(&outPipe))
            do {
                try shimCall("pipe2", on: executable, imgtool_pipe_cloexec(&errPipe))
            } catch {
                closeDescriptor(outPipe[0]); closeDescriptor(outPipe[1])
                throw error
            }
        } catch {
            throw .system(error)
        }

        let pid: pid_t
        do {
            pid = try spawnInOwnGroup(executable, arguments) { actions in
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
                posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
            }
        } catch {
            (outPipe + errPipe).forEach(closeDescriptor)
            throw .system(error)
        }
        closeDescriptor(outPipe[1]); closeDescriptor(errPipe[1])
        interruption?.register(child: pid)
        defer { interruption?.unregister(child: pid) }

        // A child that ignores the SIGTERM of an interruption gets SIGKILL a few seconds later, so
        // that it cannot hold up the teardown.
        var killAt: Double?
        let escalate = {
            guard interruption?.signal != nil else { return }
            let now = monotonicNow()
            if killAt == nil { killAt = now + killGraceSeconds } else if now >= killAt! { bestEffort { kill(-pid, SIGKILL) } }
        }
        let (out, err) = drain(outPipe[0], errPipe[0], onLine: onLine, onIdle: escalate)
        closeDescriptor(outPipe[0]); closeDescriptor(errPipe[0])

        var status: Int32 = 0
        while true {
            // A failure (ECHILD) would repeat forever; there is no status to wait for.
            guard let r = try? systemCall("waitpid", on: executable, { waitpid(pid, &status, WNOHANG) }), r != pid else { break }
            escalate()
            usleep(10_000)
        }
        return Result(status: exitCode(waitStatus: status), output: out, errorOutput: err)
    }

    /// Starts `executable` in its own process group with default signal dispositions and an empty
    /// signal mask, so that an `Interruption` can stop it and everything it starts, whatever the
    /// parent blocks. `redirect` sets up its file descriptors. `environment` nil inherits ours.
    /// Wraps posix_spawn(3).
    package static func spawnInOwnGroup(_ executable: String, _ arguments: [String], environment: [String]? = nil,
                                redirect: (inout posix_spawn_file_actions_t) -> Void) throws(SystemError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        redirect(&actions)

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t(), defaults = sigset_t()
        sigemptyset(&empty)
        sigemptyset(&defaults)
        for s in SignalTrap.signals + [SIGPIPE] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        var pid = pid_t()
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { $0.map { strdup($0) } + [nil] }
        defer { argv.forEach { free($0) }; envp?.forEach { free($0) } }
        let r = envp.map { posix_spawn(&pid, executable, &actions, &attr, argv, $0) }
            ?? posix_spawn(&pid, executable, &actions, &attr, argv, environ)
        guard r == 0 else { throw SystemError("posix_spawn", on: executable, errno: r) }
        return pid
    }

    /// How long an interrupted child has between SIGTERM and SIGKILL.
    public static let killGraceSeconds = 3.0

    /// Reads both pipes until both close, so neither can fill up and stall the child; `onIdle` runs
    /// whenever nothing arrived for 100 ms. A pipe that fails to read counts as closed. Wraps poll(2)
    /// and read(2).
    private static func drain(_ outFD: Int32, _ errFD: Int32, onLine: ((String) -> Void)?,
                              onIdle: () -> Void) -> ([UInt8], [UInt8]) {
        var buffers: [[UInt8]] = [[], []]
        var pending: [[UInt8]] = [[], []]
        var fds = [pollfd(fd: outFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: errFD, events: Int16(POLLIN), revents: 0)]
        var chunk = [UInt8](repeating: 0, count: 16384)
        while fds.contains(where: { $0.fd >= 0 }) {
            guard let ready = try? systemCall("poll", on: "the output pipes", { poll(&fds, nfds_t(fds.count), 100) }) else { break }
            if ready == 0 { onIdle(); continue }
            for i in fds.indices where fds[i].fd >= 0 && fds[i].revents != 0 {
                let fd = fds[i].fd
                guard let n = try? systemCall("read", on: "an output pipe", { read(fd, &chunk, chunk.count) }), n > 0 else {
                    fds[i].fd = -1
                    continue
                }
                buffers[i] += chunk[0..<n]
                guard let onLine else { continue }
                pending[i] += chunk[0..<n]
                while let nl = pending[i].firstIndex(of: UInt8(ascii: "\n")) {
                    onLine(String(decoding: pending[i][..<nl], as: UTF8.self))
                    pending[i].removeSubrange(...nl)
                }
            }
        }
        if let onLine { for p in pending where !p.isEmpty { onLine(String(decoding: p, as: UTF8.self)) } }
        return (buffers[0], buffers[1])
    }
}

/// Seconds on CLOCK_MONOTONIC, for durations. Wraps clock_gettime(2), which cannot fail with this clock.
package func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A waitpid(2) status as a shell reports it: the exit code, or 128 + the signal that ended it.
package func exitCode(waitStatus status: Int32) -> Int32 {
    (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}
