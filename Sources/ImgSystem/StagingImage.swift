import CLinuxShim
import Glibc

/// A new image built under a hidden name in its target's directory and renamed into place when
/// complete, so a failure, a signal or a crash never leaves a file at the target that looks
/// finished. Being in the same directory makes the rename atomic.
public final class StagingImage {
    /// The hidden file's path: `.NAME.imgtool-XXXXXX`.
    public let path: String
    private var done = false

    /// Creates the empty hidden file, with the mode a new file gets under the umask.
    /// Wraps mkstemp(3) and fchmod(2).
    public init(directory: String, name: String) throws(SystemError) {
        var template = Array("\(directory)/.\(name).imgtool-XXXXXX".utf8CString)
        let fd = try systemCall("mkstemp", on: directory) { mkstemp(&template) }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let mask = umask(0)
        umask(mask)
        _ = fchmod(fd, 0o666 & ~mask)
        closeDescriptor(fd)
    }

    /// Flushes the file and renames it to `target`; without `overwrite` an existing target is
    /// left alone and reported as EEXIST. Wraps fsync(2) and renameat2(2) (RENAME_NOREPLACE).
    public func commit(to target: String, overwrite: Bool) throws(SystemError) {
        let fd = try systemCall("open", on: path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { closeDescriptor(fd) }
        _ = try systemCall("fsync", on: path) { fsync(fd) }
        if overwrite {
            _ = try systemCall("rename", on: target) { rename(path, target) }
        } else {
            _ = try shimCall("renameat2(RENAME_NOREPLACE)", on: target, imgtool_rename_noreplace(path, target))
        }
        done = true
    }

    /// Removes the file. Wraps unlink(2).
    public func discard() {
        if !done { unlink(path) }
        done = true
    }

    deinit { discard() }
}
