import Glibc
import ImgFormats
import ImgSystem

/// What the offline install writes into: a copy of an image file that replaces the image only
/// once everything is written (`WorkingCopy`), or the image itself, written in place. In place
/// is for a block device, which is the isolated VM's disk, whose host side is itself a working
/// copy of the image (`InstallGrub.runIsolated`), or a disk the caller gave, with nothing to
/// rename it over; and for a file the caller made and discards on failure (`Create`).
enum OfflineTarget {
    case copy(WorkingCopy)
    /// The image open read-write (a block device O_EXCL: no mount of it, and no other exclusive
    /// user, while we write), and its size.
    case inPlace(FileHandle, size: UInt64)

    /// The copy of `image`, or `image` itself when it is a block device or `inPlace`. Wraps
    /// open(2) (O_EXCL for a device), ioctl(BLKGETSIZE64) and fstat(2).
    init(for image: String, inPlace: Bool = false) throws(SystemError) {
        if try fileStatus(image).st_mode & S_IFMT == S_IFBLK {
            let device = try FileHandle(path: image, flags: O_RDWR | O_EXCL)
            self = .inPlace(device, size: try BlockDevice.size(image))
        } else if inPlace {
            let file = try FileHandle(path: image, flags: O_RDWR)
            self = .inPlace(file, size: UInt64(try fileStatus(fd: file.fd, path: image).st_size))
        } else {
            self = .copy(try WorkingCopy(of: image))
        }
    }

    /// A path to what is written, for the tools given one (mtools, libext2fs).
    var path: String {
        switch self {
        case .copy(let copy): return copy.path
        case .inPlace(let file, _): return file.path
        }
    }

    var fd: Int32 {
        switch self {
        case .copy(let copy): return copy.file.fd
        case .inPlace(let file, _): return file.fd
        }
    }

    /// Reads what is written so far.
    func source() throws -> FileByteSource {
        switch self {
        case .copy(let copy): return try FileByteSource(path: copy.path)
        case .inPlace(let file, let size): return try FileByteSource(path: file.path, size: size)
        }
    }

    /// Makes the result the image's: the copy renamed over it (`tag` names it for that instant),
    /// or the image flushed. Wraps fsync(2).
    func finish(tag: String) throws(SystemError) {
        switch self {
        case .copy(let copy): try copy.commit(tag: tag)
        case .inPlace(let file, _): try systemCall("fsync", on: file.path) { fsync(file.fd) }
        }
    }
}
