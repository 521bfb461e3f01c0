import Glibc
import Synchronization

/// A private (0700) directory for mount points, under a known parent so that imgtool's own
/// mounts are recognisable.
package final class TemporaryDirectory: @unchecked Sendable {
    /// Where directories are made unless the caller says otherwise: /run/imgtool.
    package static let defaultParent = ResourceMarks.runDirectory
    /// The directory's absolute path.
    package let path: String
    private var removed = false

    /// Makes `parent` too if it is missing. Wraps mkdir(2) and mkdtemp(3).
    package init(parent: String = TemporaryDirectory.defaultParent, prefix: String) throws(SystemError) {
        try makeDirectory(parent, mode: 0o700)
        var template = Array("\(parent)/\(prefix)XXXXXX".utf8CString)
        try template.withUnsafeMutableBufferPointer { t throws(SystemError) in
            _ = try systemCall("mkdtemp", on: parent, failed: { $0 == nil }) { mkdtemp(t.baseAddress!) }
        }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// Removes the directory with rmdir only: never recursively, so that a mount that failed to
    /// come off cannot take the image's files with it. Idempotent. Wraps rmdir(2).
    package func remove() throws(SystemError) {
        try releasing.withLock { _ throws(SystemError) in
            guard !removed else { return }
            do throws(SystemError) { try systemCall("rmdir", on: path) { rmdir(path) } } catch where error.errno == ENOENT {}
            removed = true
        }
    }

    /// Sendable: concurrent `remove()` calls run one after the other.
    private let releasing = Mutex(())

    deinit { if !removed { bestEffort { rmdir(path) } } }
}
