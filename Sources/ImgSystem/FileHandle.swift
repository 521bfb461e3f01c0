import Glibc
import Synchronization

/// An open file descriptor that closes itself once.
package final class FileHandle: Sendable {
    /// -1 once closed, so a late use fails with EBADF instead of reaching a reused descriptor.
    package var fd: Int32 { descriptor.withLock { $0 } }
    /// The path the descriptor was opened from; errors name it.
    package let path: String
    private let descriptor: Mutex<Int32>

    /// Opens with O_CLOEXEC added. Wraps open(2).
    package init(path: String, flags: Int32, mode: mode_t = 0) throws(SystemError) {
        self.path = path
        descriptor = Mutex(try systemCall("open", on: path) { open(path, flags | O_CLOEXEC, mode) })
    }

    /// Takes ownership of `fd`, already open; `path` names it in errors.
    package init(adopting fd: Int32, path: String) {
        self.path = path
        descriptor = Mutex(fd)
    }

    /// Closes once, whoever calls first. Wraps close(2).
    package func close() {
        let fd = descriptor.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        if fd >= 0 { closeDescriptor(fd) }
    }

    deinit { close() }
}
