import Glibc
import ImgFormats
import ImgSystem

/// Why an image could not be opened at all. `description` is the message a user reads.
public struct ImageOpenError: Error, CustomStringConvertible, Sendable {
    /// What is wrong with the path.
    public enum Problem: Sendable, Equatable {
        /// Nothing exists at the path.
        case missing
        /// The path is something other than a regular file or block device; `kind` names it ("a directory").
        case notAnImage(kind: String)
        /// The path exists but could not be opened or read; `reason` is the system's message.
        case unreadable(reason: String)
    }
    /// The image path as given.
    public let path: String
    /// Why it could not be opened.
    public let problem: Problem

    /// The error for `path`, for an embedder's tests.
    public init(path: String, problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public var exitStatus: ExitStatus { .noInput }

    public var description: String {
        switch problem {
        case .missing: return "\(path) does not exist. Check the path."
        case .notAnImage(let kind): return "\(path) is \(kind), not a disk image. Give a raw image file or a block device."
        case .unreadable(let reason): return "cannot read \(path): \(reason). Check its permissions (reading needs read access only, no root)."
        }
    }
}

/// Opens an image for the byte-level readers, read-only: a regular file, or a block device (whose
/// size needs an ioctl).
enum ImageSource {
    static func open(_ path: String) throws(ImageOpenError) -> FileByteSource {
        let type = try check(path)
        do {
            return type == S_IFBLK ? try FileByteSource(path: path, size: try BlockDevice.size(path))
                                   : try FileByteSource(path: path)
        } catch {
            throw ImageOpenError(path: path, problem: .unreadable(reason: "\(error)"))
        }
    }

    /// The checks `open` makes before it opens: `path` exists and is a regular file or block device
    /// (whose type it returns). What an isolated run checks on the host, which never reads the image.
    static func check(_ path: String) throws(ImageOpenError) -> mode_t {
        let st: stat
        do {
            st = try fileStatus(path)
        } catch {
            if error.errno == ENOENT || error.errno == ENOTDIR { throw ImageOpenError(path: path, problem: .missing) }
            throw ImageOpenError(path: path, problem: .unreadable(reason: String(cString: strerror(error.errno))))
        }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG || type == S_IFBLK else {
            throw ImageOpenError(path: path, problem: .notAnImage(kind: kind(type)))
        }
        return type
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
