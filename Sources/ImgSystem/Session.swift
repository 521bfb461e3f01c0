import Glibc
import Logging

/// Owns everything an operation acquires. Each resource is pushed onto the cleanup stack the moment
/// it exists and released in reverse order by `close()`, on success, on error and on interruption.
/// Used from one thread at a time; `interruption` is the part other threads may touch.
public final class Session {
    /// Thrown by `checkpoint()` once the session's interruption has a signal; the caller unwinds, and `close()` releases everything.
    public struct Interrupted: Error, CustomStringConvertible, Sendable {
        /// The signal that interrupted the work (SIGINT, SIGTERM or SIGHUP).
        public let signal: Int32
        /// Makes the error for signal number `signal`.
        public init(signal: Int32) { self.signal = signal }
        public var description: String {
            "interrupted by \(String(cString: strsignal(signal))); everything attached was released."
        }
    }

    /// A release that failed: what it was and why. The resource is still held.
    public struct CleanupFailure: Error, CustomStringConvertible, Sendable, Equatable {
        /// What could not be released, as `onClose` named it ("/dev/loop3").
        public let resource: String
        /// Why the release failed: the underlying error's message (for a busy mount: who holds it).
        public let reason: String
        public var description: String { "could not release \(resource): \(reason)" }

        /// Makes a value, for an embedder's tests.
        public init(resource: String, reason: String) {
            self.resource = resource
            self.reason = reason
        }
    }

    /// A unique identifier for the session; it appears in the journal's file name and the kernel tags of what the session holds.
    public let id: String
    /// Where the session and the resources it holds log.
    public let logger: Logger
    /// The stop request the session checks between steps; signal handlers and other threads set it.
    public let interruption: Interruption
    /// Where the session writes down what it is about to hold; nil for sessions that hold nothing
    /// a crash could leave behind.
    public let journal: SessionJournal?
    private var stack: [(resource: String, entry: SessionJournal.Entry?, release: () throws -> Void)] = []
    /// Once a release failed, the journal must outlive the session, also past a later close().
    private var releaseFailed = false
    /// When the session began: the debug log gives each step's time from it.
    private let started = monotonicNow()

    /// A session without a journal.
    public convenience init(logger: Logger, interruption: Interruption = Interruption()) {
        self.init(id: Self.newID(), logger: logger, interruption: interruption, journal: nil)
    }

    /// A session that keeps a journal of its resources (see SessionJournal), naming `image`; it
    /// needs write access to /run/imgtool.
    public convenience init(logger: Logger, interruption: Interruption = Interruption(),
                            journalFor image: String) throws(SystemError) {
        let id = Self.newID()
        self.init(id: id, logger: logger, interruption: interruption, journal: try SessionJournal(id: id, image: image))
    }

    private init(id: String, logger: Logger, interruption: Interruption, journal: SessionJournal?) {
        self.id = id
        var logger = logger
        logger[metadataKey: "session"] = "\(id)"
        self.logger = logger
        self.interruption = interruption
        self.journal = journal
    }

    /// Eight hex digits, zero-padded: tags and mount-point names embed it, and cleanup parses it
    /// back out of them.
    package static func newID() -> String {
        let hex = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }

    /// Writes down that `entry` is about to be acquired; make the acquisition only if this
    /// returns. A session without a journal records nothing.
    public func acquiring(_ kind: SessionJournal.Kind, _ name: String) throws(SystemError) {
        try injectFault(.acquire, "\(kind.rawValue) \(name)")
        try journal?.acquiring(SessionJournal.Entry(kind, name))
    }

    /// A step that changes something without holding it afterwards (running grub-install): a
    /// point where fault injection can fail the run.
    public func step(_ name: String) throws(SystemError) {
        logger.debug("step: \(name)", metadata: ["seconds": "\(monotonicNow() - started)"])
        try injectFault(.acquire, name)
    }

    // MARK: Fault injection (debug builds only)

    enum FaultPoint: String { case acquire, release }
    private var faultCounts: [FaultPoint: Int] = [:]

    /// In debug builds, IMGTOOL_INJECT_FAULT=acquire:K (or release:K) makes the Kth acquisition
    /// step (or release) of every session fail as the kernel would, with EIO, and kill:K kills the
    /// process with SIGKILL at the Kth acquisition step: the tests use them to stop each step in
    /// turn and check what is left. Release builds compile it out.
    private func injectFault(_ point: FaultPoint, _ what: String) throws(SystemError) {
        #if DEBUG
        faultCounts[point, default: 0] += 1
        guard let spec = getenv("IMGTOOL_INJECT_FAULT").map({ String(cString: $0) }) else { return }
        if point == .acquire, spec == "kill:\(faultCounts[point]!)" {
            logger.debug("killing this process at step \(faultCounts[point]!): \(what)")
            raise(SIGKILL)
        }
        guard spec == "\(point.rawValue):\(faultCounts[point]!)" else { return }
        logger.debug("injecting a fault at \(point.rawValue) step \(faultCounts[point]!): \(what)")
        throw SystemError("injected fault (\(spec))", on: what, errno: EIO)
        #endif
    }

    /// Registers `release` for `resource` (a name a user can act on, such as "/dev/loop3"); with
    /// `journal`, a successful release is written down as that entry's release.
    public func onClose(_ resource: String, journal entry: SessionJournal.Entry? = nil,
                        release: @escaping () throws -> Void) {
        stack.append((resource, entry, release))
    }

    /// Releases the latest resource registered as `resource` now, before the session closes (an
    /// undo file once its write is durable). If the release fails, the resource stays registered
    /// and `close()` tries again.
    public func release(_ resource: String) throws {
        guard let i = stack.lastIndex(where: { $0.resource == resource }) else { return }
        let (_, entry, release) = stack[i]
        try injectFault(.release, resource)
        try release()
        stack.remove(at: i)
        if let entry { journal?.released(entry) }
    }

    /// Throws `Interrupted` if a stop was requested; call between steps.
    public func checkpoint() throws(Interrupted) {
        if let signal = interruption.signal { throw Interrupted(signal: signal) }
    }

    /// Number of resources currently held.
    public var held: Int { stack.count }

    /// Releases everything in reverse order of acquisition. A failed release does not stop the
    /// others; every failure is returned (and logged) so the caller can report what is left.
    @discardableResult
    public func close() -> [CleanupFailure] {
        var failures: [CleanupFailure] = []
        while let (resource, entry, release) = stack.popLast() {
            do {
                try injectFault(.release, resource)
                try release()
                if let entry { journal?.released(entry) }
            } catch {
                logger.error("could not release \(resource): \(error)")
                failures.append(CleanupFailure(resource: resource, reason: "\(error)"))
                releaseFailed = true
            }
        }
        // A journal with something still held stays behind for `imgtool cleanup`.
        if !releaseFailed { journal?.finish() }
        return failures
    }

    deinit { close() }
}
