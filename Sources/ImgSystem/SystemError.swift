import Glibc
import Synchronization

/// A failed system call, described as what was attempted on what:
/// `ioctl(LOOP_CONFIGURE) on /dev/loop3: Device or resource busy`.
public struct SystemError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What was attempted: the call and its argument, such as "ioctl(LOOP_CONFIGURE)".
    public let operation: String
    /// What it was attempted on: a path, or a name such as a dm device.
    public let path: String
    /// The errno value the call left, captured before anything else could change it.
    public let errno: Int32

    /// Makes the error for `operation` on `path` failing with `errno`.
    public init(_ operation: String, on path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String {
        "\(operation) on \(path): \(String(cString: strerror(errno)))"
    }
}

/// Runs a libc call that returns -1 and sets errno, retrying EINTR; captures errno at once.
@discardableResult
package func systemCall(_ operation: @autoclosure () -> String, on path: String,
             _ body: () -> Int32) throws(SystemError) -> Int32 {
    try systemCall(operation(), on: path, failed: { $0 < 0 }, body)
}

/// `systemCall` for calls that return ssize_t or off_t: read, write, pread, lseek, readlink.
@discardableResult
package func systemCall(_ operation: @autoclosure () -> String, on path: String,
                       _ body: () -> Int) throws(SystemError) -> Int {
    try systemCall(operation(), on: path, failed: { $0 < 0 }, body)
}

/// `systemCall` for calls that report failure with some other value and errno, such as a nil
/// pointer (opendir, mkdtemp, realpath): `failed` tells a failed result. The one EINTR loop.
@discardableResult
package func systemCall<T>(_ operation: @autoclosure () -> String, on path: String,
                          failed: (T) -> Bool, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let r = body()
        let e = Glibc.errno  // before anything else can change it
        guard failed(r) else { return r }
        if e != EINTR { throw SystemError(operation(), on: path, errno: e) }
    }
}

/// Runs a libc call whose failure is deliberately ignored (best-effort cleanup, where nobody is
/// left to tell or the next step copes), still retrying EINTR. Not for close(2): see
/// `closeDescriptor`.
package func bestEffort(_ body: () -> Int32) {
    _ = try? systemCall("", on: "", body)
}

/// Closes `fd`, ignoring failure. Never retried: Linux frees the descriptor even when close
/// reports EINTR, so a retry could close one another thread has just been given. Wraps close(2).
package func closeDescriptor(_ fd: Int32) {
    _ = Glibc.close(fd)
}

/// Checks a shim call that returns -errno.
@discardableResult
func shimCall(_ operation: @autoclosure () -> String, on path: String,
              _ result: Int32) throws(SystemError) -> Int32 {
    if result < 0 { throw SystemError(operation(), on: path, errno: -result) }
    return result
}

/// Sleeps for a backoff step with jitter, so that racing processes do not retry in lockstep. A
/// signal only shortens the step. Wraps usleep(3).
func backoffSleep(attempt: Int, baseMicroseconds: UInt32 = 5_000, capMicroseconds: UInt32 = 200_000) {
    let exp = min(capMicroseconds, baseMicroseconds << UInt32(min(attempt, 8)))
    usleep(exp / 2 + UInt32.random(in: 0...(exp / 2)))
}

@discardableResult
/// Retries `body` while it fails with one of `errnos`, with jittered backoff, up to `attempts` times.
func retrying<T>(_ errnos: Set<Int32>, attempts: Int = 20,
                 _ body: () throws(SystemError) -> T) throws(SystemError) -> T {
    var attempt = 0
    while true {
        do {
            return try body()
        } catch {
            attempt += 1
            guard errnos.contains(error.errno), attempt < attempts else { throw error }
            backoffSleep(attempt: attempt)
        }
    }
}
