import CLinuxShim
import Glibc

/// A private copy of an image file to change, which then replaces the image in one rename, so
/// that whatever stops the work (an error, a signal, SIGKILL, a power cut) leaves either the image
/// as it was or the finished result, never a half-written filesystem: libext2fs and FAT have no
/// journal that would cover writes made without the kernel.
///
/// The copy is an unnamed file (O_TMPFILE) in the image's directory: a run that dies leaves
/// nothing behind to clean up. It shares the image's blocks where the filesystem can clone
/// (FICLONE: btrfs, XFS), else copies the image's data extents (copy_file_range), holes staying
/// holes. `commit()` fsyncs it, names it beside the image, renames it over the image and fsyncs
/// the directory. The image's mode and owner carry over; its inode does not (other hard links to
/// it keep the old contents, as with `sed -i`), nor do extended attributes.
/// Not Sendable: one owner, one thread.
public final class WorkingCopy {
    /// The image this copy will replace.
    public let image: String
    /// The copy's descriptor, open read-write.
    package let file: FileHandle
    /// Whether the copy shares the image's blocks (a clone) rather than holding copies of them.
    public let cloned: Bool
    /// Bytes of data copied (0 for a clone).
    public private(set) var copiedBytes: UInt64 = 0
    private let directory: String
    private var committed = false

    /// The copy as a path this process, or a child of it, can open: its descriptor through /proc.
    public var path: String { "/proc/\(getpid())/fd/\(file.fd)" }

    /// Makes the copy of `image`. Wraps open(2) with O_TMPFILE, ioctl(2) FICLONE,
    /// copy_file_range(2), lseek(2) SEEK_DATA/SEEK_HOLE, fchmod(2) and fchown(2).
    public init(of image: String) throws(SystemError) {
        self.image = image
        directory = Self.directory(of: image)
        let source = try FileHandle(path: image, flags: O_RDONLY)
        let st = try fileStatus(fd: source.fd, path: image)
        guard st.st_mode & S_IFMT == S_IFREG else { throw SystemError("replacing (not a regular file)", on: image, errno: EINVAL) }
        let fd = imgtool_open_tmpfile(directory, UInt32(st.st_mode & 0o7777))
        guard fd >= 0 else { throw SystemError("open(O_TMPFILE) in \(directory)", on: image, errno: -fd) }
        file = FileHandle(adopting: fd, path: "a working copy of \(image)")
        // The owner first: fchown drops set-id bits, and fchmod puts the mode back.
        if st.st_uid != geteuid() || st.st_gid != getegid() {
            try systemCall("giving the replacement the image's owner \(st.st_uid):\(st.st_gid) (run as that user or as root)", on: image) { fchown(fd, st.st_uid, st.st_gid) }
        }
        try systemCall("fchmod", on: image) { fchmod(fd, st.st_mode & 0o7777) }
        if imgtool_ioctl_int(fd, IMGTOOL_FICLONE, UInt(source.fd)) == 0 {
            cloned = true
        } else {
            cloned = false
            try copyData(from: source, size: UInt64(st.st_size))
        }
    }

    /// Copies `source`'s data extents at the same offsets and sets the size, so holes stay holes.
    private func copyData(from source: FileHandle, size: UInt64) throws(SystemError) {
        try systemCall("ftruncate", on: image) { ftruncate(file.fd, off_t(size)) }
        var position: UInt64 = 0
        while position < size {
            let data: Int
            do {
                data = try systemCall("lseek(SEEK_DATA)", on: image) { lseek(source.fd, off_t(position), IMGTOOL_SEEK_DATA) }
            } catch where error.errno == ENXIO {
                return
            }
            let hole = try systemCall("lseek(SEEK_HOLE)", on: image) { lseek(source.fd, off_t(data), IMGTOOL_SEEK_HOLE) }
            var at = UInt64(data)
            while at < UInt64(hole) {
                let n = imgtool_copy_file_range(source.fd, Int64(at), file.fd, Int64(at), UInt64(hole) - at)
                guard n >= 0 else { throw SystemError("copy_file_range", on: image, errno: Int32(-n)) }
                guard n > 0 else { break }  // the image shrank under us: the size set above stands
                at += UInt64(n)
                copiedBytes += UInt64(n)
            }
            position = UInt64(hole)
        }
    }

    /// The directory `image` is in, where its copy is made: "." for a bare name, "/" at the top.
    public static func directory(of image: String) -> String {
        let slash = image.lastIndex(of: "/")
        return slash.map { $0 == image.startIndex ? "/" : String(image[..<$0]) } ?? "."
    }

    /// Removes the names that runs killed between naming their copy and renaming it left beside
    /// `image` (`.<name>.imgtool-<session>`). Call while holding the image's lock: no live run on
    /// the image can own one then. Returns the names removed. Wraps unlink(2).
    @discardableResult
    public static func removeLeftovers(of image: String) -> [String] {
        let directory = Self.directory(of: image)
        let prefix = "." + (image.split(separator: "/").last.map(String.init) ?? image) + ".imgtool-"
        var removed: [String] = []
        for name in directoryEntries(directory) where name.hasPrefix(prefix) && ResourceMarks.isSessionID(name.dropFirst(prefix.count)) {
            let path = (directory == "/" ? "" : directory) + "/" + name
            if (try? systemCall("unlink", on: path, { unlink(path) })) != nil { removed.append(path) }
        }
        return removed
    }

    /// Replaces the image with the copy: fsync, a name beside the image (`.<name>.imgtool-<tag>`,
    /// for the instant between the two calls), rename(2) over the image, fsync of the directory.
    /// Wraps fsync(2), linkat(2) and rename(2).
    public func commit(tag: String) throws(SystemError) {
        guard !committed else { return }
        try systemCall("fsync", on: path) { fsync(file.fd) }
        let base = image.split(separator: "/").last.map(String.init) ?? image
        let temporary = (directory == "/" ? "" : directory) + "/." + base + ".imgtool-" + tag
        try replace(image, withUnnamed: path, via: temporary)
        committed = true
        let dir = try FileHandle(path: directory, flags: O_RDONLY | O_DIRECTORY)
        try systemCall("fsync", on: directory) { fsync(dir.fd) }
    }
}

/// Gives the unnamed file open at `unnamed` (a /proc/PID/fd path) the name `temporary`, in
/// `target`'s directory, and renames that over `target`: rename(2) replaces atomically, and
/// linkat(2) cannot. The temporary name is removed if the rename fails.
/// Wraps linkat(2) (AT_SYMLINK_FOLLOW) and rename(2).
func replace(_ target: String, withUnnamed unnamed: String, via temporary: String) throws(SystemError) {
    try systemCall("linkat", on: temporary) { linkat(AT_FDCWD, unnamed, AT_FDCWD, temporary, AT_SYMLINK_FOLLOW) }
    do {
        try systemCall("rename to \(target)", on: temporary) { rename(temporary, target) }
    } catch {
        bestEffort { unlink(temporary) }
        throw error
    }
}
