import Glibc
import ImgFormats
import ImgSystem

/// Opens an image for the byte-level readers, read-only: a regular file, or a block device (whose
/// size needs an ioctl). Each workflow turns a `Failure` into its own error and exit code.
enum ImageSource {
    enum Failure: Error {
        case missing
        case notAnImage(kind: String)
        case unreadable(reason: String)
    }

    static func open(_ path: String) throws(Failure) -> FileByteSource {
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == ENOENT || errno == ENOTDIR { throw .missing }
            throw .unreadable(reason: String(cString: strerror(errno)))
        }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG || type == S_IFBLK else { throw .notAnImage(kind: kind(type)) }
        do {
            return type == S_IFBLK ? try FileByteSource(path: path, size: try BlockDevice.size(path))
                                   : try FileByteSource(path: path)
        } catch {
            throw .unreadable(reason: "\(error)")
        }
    }

    private static func kind(_ type: mode_t) -> String {
        switch type {
        case S_IFDIR: return "a directory"
        case S_IFCHR: return "a character device"
        case S_IFIFO: return "a FIFO"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }
}
