import Glibc
import Synchronization

/// A private (0700) directory for mount points, under a known parent so that imgtool's own
/// mounts are recognisable.
public final class TemporaryDirectory: @unchecked Sendable {
    public static let defaultParent = ResourceMarks.runDirectory
    public let path: String
    private var removed = false

    /// Wraps mkdtemp(3).
    public init(parent: String = TemporaryDirectory.defaultParent, prefix: String) throws(SystemError) {
        if mkdir(parent, 0o700) != 0 && errno != EEXIST {
            throw SystemError("mkdir", on: parent, errno: errno)
        }
        var template = Array("\(parent)/\(prefix)XXXXXX".utf8CString)
        let r = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard r != nil else { throw SystemError("mkdtemp", on: parent, errno: errno) }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// Removes the directory with rmdir only: never recursively, so that a mount that failed to
    /// come off cannot take the image's files with it. Idempotent.
    public func remove() throws(SystemError) {
        try releasing.withLock { _ throws(SystemError) in
            guard !removed else { return }
            if rmdir(path) != 0 && errno != ENOENT { throw SystemError("rmdir", on: path, errno: errno) }
            removed = true
        }
    }

    /// Sendable: concurrent `remove()` calls run one after the other.
    private let releasing = Mutex(())

    deinit { if !removed { _ = rmdir(path) } }
}
