import CLinuxShim
import Glibc

/// A new image built as an unnamed file (O_TMPFILE) in its target's directory and given the
/// target's name only when complete, so that a failure, a signal, SIGKILL or a crash leaves
/// nothing behind, least of all a file at the target that looks finished. Being in the target's
/// directory makes the naming atomic. Where the filesystem has no O_TMPFILE, or there is no /proc
/// to reach an unnamed file through, the file has a hidden name (`.NAME.imgtool-XXXXXX`) until
/// then, which only SIGKILL or a crash can leave.
/// Not Sendable: one owner, one thread.
public final class StagingImage {
    /// The file as a path this process, or a child of it, can open: its descriptor through /proc,
    /// or the hidden name.
    public let path: String
    private let file: FileHandle
    private let directory: String
    private let name: String
    /// The fallback's hidden name; nil for an unnamed file.
    private let hidden: String?
    private var done = false

    /// Creates the empty file, with the mode a new file gets under the umask. Wraps open(2) with
    /// O_TMPFILE, or mkstemp(3), fcntl(2) and fchmod(2) where the filesystem has no O_TMPFILE.
    public convenience init(directory: String, name: String) throws(SystemError) {
        try self.init(directory: directory, name: name, unnamed: true)
    }

    /// `unnamed: false` goes straight to the hidden name, as on a filesystem without O_TMPFILE.
    init(directory: String, name: String, unnamed: Bool) throws(SystemError) {
        self.directory = directory
        self.name = name
        var fd = unnamed ? imgtool_open_tmpfile(directory, 0o666) : -EOPNOTSUPP
        // The tools given the file open it through /proc: without /proc (a bare container) it
        // needs a name.
        if fd >= 0, access("/proc/\(getpid())/fd/\(fd)", R_OK | W_OK) != 0 {
            closeDescriptor(fd)
            fd = -EOPNOTSUPP
        }
        if fd >= 0 {
            file = FileHandle(adopting: fd, path: "the new \(name)")
            hidden = nil
            path = "/proc/\(getpid())/fd/\(fd)"
            return
        }
        // EOPNOTSUPP: the filesystem has none; EISDIR: the kernel predates it.
        guard -fd == EOPNOTSUPP || -fd == EISDIR else {
            throw SystemError("open(O_TMPFILE)", on: directory, errno: -fd)
        }
        var template = Array("\(directory)/.\(name).imgtool-XXXXXX".utf8CString)
        let named = try systemCall("mkstemp", on: directory) { mkstemp(&template) }
        let hiddenPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        file = FileHandle(adopting: named, path: hiddenPath)
        hidden = hiddenPath
        path = hiddenPath
        _ = fcntl(named, F_SETFD, FD_CLOEXEC)
        let mask = umask(0)
        umask(mask)
        _ = fchmod(named, 0o666 & ~mask)
    }

    /// Flushes the file and gives it the name `target`; without `overwrite` an existing target is
    /// left alone and reported as EEXIST. An unnamed file is linked in (linkat(2)), straight to
    /// the target, or with `overwrite` to a hidden name renamed over it; a hidden file is renamed
    /// (renameat2(2) RENAME_NOREPLACE without `overwrite`). Then the directory is flushed.
    /// Wraps fsync(2), linkat(2), rename(2) and renameat2(2).
    public func commit(to target: String, overwrite: Bool) throws(SystemError) {
        _ = try systemCall("fsync", on: target) { fsync(file.fd) }
        switch (hidden, overwrite) {
        case (nil, false):
            try systemCall("linkat", on: target) { linkat(AT_FDCWD, path, AT_FDCWD, target, AT_SYMLINK_FOLLOW) }
        case (nil, true):
            try replace(target, withUnnamed: path, via: "\(directory)/.\(name).imgtool-\(Session.newID())")
        case (let hidden?, false):
            _ = try shimCall("renameat2(RENAME_NOREPLACE)", on: target, imgtool_rename_noreplace(hidden, target))
        case (let hidden?, true):
            _ = try systemCall("rename", on: target) { rename(hidden, target) }
        }
        done = true
        if let dir = try? FileHandle(path: directory, flags: O_RDONLY | O_DIRECTORY) { bestEffort { fsync(dir.fd) } }
    }

    /// Drops the file (an unnamed one goes with its descriptor) and closes it. Wraps unlink(2)
    /// and close(2).
    public func discard() {
        if !done, let hidden { unlink(hidden) }
        done = true
        file.close()
    }

    deinit { discard() }
}
