import CLinuxShim
import Glibc

/// A file that lives in memory only (memfd): gone when its last descriptor closes, whatever ends
/// the process, so a kill leaves nothing behind. Tools that write to a path (grub-mkimage,
/// mtools) reach it through /proc.
package final class MemoryFile {
    /// Its descriptor, read-write.
    package let file: FileHandle

    /// The file as a path this process or a child of it can open.
    package var path: String { "/proc/\(getpid())/fd/\(file.fd)" }

    /// An empty file of `size` bytes (a hole); `name` shows in /proc and names it in errors.
    /// Wraps memfd_create(2) and ftruncate(2).
    package init(name: String, size: UInt64 = 0) throws(SystemError) {
        let fd = imgtool_memfd_create(name)
        guard fd >= 0 else { throw SystemError("memfd_create", on: name, errno: -fd) }
        file = FileHandle(adopting: fd, path: name)
        guard size <= UInt64(off_t.max) else { throw SystemError("ftruncate(memfd)", on: name, errno: EFBIG) }
        if size > 0 { try systemCall("ftruncate(memfd)", on: name) { ftruncate(fd, off_t(size)) } }
    }

    /// A file holding `contents`. Wraps memfd_create(2) and pwrite(2).
    package convenience init(name: String, contents: [UInt8]) throws(SystemError) {
        try self.init(name: name)
        try writeFully(file.fd, contents, at: 0, path: name)
    }

    /// Everything in it. Wraps fstat(2) and pread(2).
    package func contents() throws(SystemError) -> [UInt8] {
        let size = Int(try fileStatus(fd: file.fd, path: file.path).st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        let n = try readFully(file.fd, into: &bytes, count: size, at: 0, path: file.path)
        return Array(bytes.prefix(n))
    }
}
