import Glibc
import Synchronization

/// A request to stop, shared between whoever receives it (a signal handler, another task) and the
/// work in progress. The work polls it between steps and unwinds through its cleanup stack; a
/// running child process is asked to stop at once so that no step blocks the teardown for long.
/// Safe to share across threads.
public final class Interruption: Sendable {
    private struct State {
        var signal: Int32?
        var children: Set<pid_t> = []
    }
    private let state = Mutex(State())

    /// A request not yet made: `signal` is nil until `interrupt(signal:)`.
    public init() {}

    /// The first signal received, if any.
    public var signal: Int32? { state.withLock { $0.signal } }

    /// Records the request (the first signal wins) and terminates running children's process groups.
    /// Wraps kill(2).
    public func interrupt(signal: Int32) {
        let children = state.withLock { s -> Set<pid_t> in
            if s.signal == nil { s.signal = signal }
            return s.children
        }
        // A group that is already gone has nothing left to stop.
        for pid in children { bestEffort { kill(-pid, SIGTERM) } }
    }

    /// Registers a child; if an interruption already came, the child is stopped at once. Wraps kill(2).
    package func register(child pid: pid_t) {
        let already = state.withLock { s -> Bool in
            s.children.insert(pid)
            return s.signal != nil
        }
        if already { bestEffort { kill(-pid, SIGTERM) } }
    }

    package func unregister(child pid: pid_t) {
        _ = state.withLock { $0.children.remove(pid) }
    }
}

/// Turns SIGINT, SIGTERM and SIGHUP into an `Interruption` for as long as it lives. The default
/// action (dying mid-step with resources attached) is replaced; a second signal is recorded but
/// does not skip the teardown. Only a program's entry point should create one.
public final class SignalTrap: @unchecked Sendable {
    /// The signals a trap turns into an interruption: SIGINT, SIGTERM and SIGHUP.
    public static let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]
    private let thread: pthread_t

    /// Blocks the signals in every thread and waits for them on a dedicated thread with sigwait,
    /// which needs no async-signal-safe code.
    public init(_ interruption: Interruption) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in Self.signals { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let box = Unmanaged.passRetained(Box(set: set, interruption: interruption)).toOpaque()
        var t = pthread_t()
        pthread_create(&t, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            var set = box.set
            while true {
                var sig: Int32 = 0
                if sigwait(&set, &sig) == 0 { box.interruption.interrupt(signal: sig) }
            }
        }, box)
        thread = t
    }

    private final class Box {
        let set: sigset_t
        let interruption: Interruption
        init(set: sigset_t, interruption: Interruption) { self.set = set; self.interruption = interruption }
    }
}
