import Glibc
import Logging

/// Owns everything an operation acquires. Each resource is pushed onto the cleanup stack the moment
/// it exists and released in reverse order by `close()`, on success, on error and on interruption.
/// Used from one thread at a time; `interruption` is the part other threads may touch.
public final class Session {
    public struct Interrupted: Error, CustomStringConvertible, Sendable {
        public let signal: Int32
        public init(signal: Int32) { self.signal = signal }
        public var description: String {
            "interrupted by \(String(cString: strsignal(signal))); everything attached was released."
        }
    }

    /// A release that failed: what it was and why. The resource is still held.
    public struct CleanupFailure: Error, CustomStringConvertible, Sendable {
        public let resource: String
        public let reason: String
        public var description: String { "could not release \(resource): \(reason)" }
    }

    public let id: String
    public let logger: Logger
    public let interruption: Interruption
    private var stack: [(resource: String, release: () throws -> Void)] = []

    public init(logger: Logger, interruption: Interruption = Interruption()) {
        self.id = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        var logger = logger
        logger[metadataKey: "session"] = "\(id)"
        self.logger = logger
        self.interruption = interruption
    }

    /// Registers `release` for `resource` (a name a user can act on, such as "/dev/loop3").
    public func onClose(_ resource: String, release: @escaping () throws -> Void) {
        stack.append((resource, release))
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
        while let (resource, release) = stack.popLast() {
            do {
                try release()
            } catch {
                logger.error("could not release \(resource): \(error)")
                failures.append(CleanupFailure(resource: resource, reason: "\(error)"))
            }
        }
        return failures
    }

    deinit { close() }
}
