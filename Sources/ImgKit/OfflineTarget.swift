import Glibc
import ImgFormats
import ImgSystem

/// What the offline install writes into: a copy of an image file that replaces the image only
/// once everything is written (`WorkingCopy`), or a block device, written in place. A block
/// device is the isolated VM's disk, whose host side is itself a working copy of the image
/// (`InstallGrub.runIsolated`), or a disk the caller gave; there is nothing to rename it over.
enum OfflineTarget {
    case copy(WorkingCopy)
    /// The device open O_EXCL (no mount of it, and no other exclusive user, while we write),
    /// and its size.
    case device(FileHandle, size: UInt64)

    /// The copy of `image`, or `image` itself when it is a block device. Wraps open(2) O_EXCL and
    /// ioctl(BLKGETSIZE64) for a device.
    init(for image: String) throws(SystemError) {
        if try fileStatus(image).st_mode & S_IFMT == S_IFBLK {
            let device = try FileHandle(path: image, flags: O_RDWR | O_EXCL)
            self = .device(device, size: try BlockDevice.size(image))
        } else {
            self = .copy(try WorkingCopy(of: image))
        }
    }

    /// A path to what is written, for the tools given one (mtools, libext2fs).
    var path: String {
        switch self {
        case .copy(let copy): return copy.path
        case .device(let device, _): return device.path
        }
    }

    var fd: Int32 {
        switch self {
        case .copy(let copy): return copy.file.fd
        case .device(let device, _): return device.fd
        }
    }

    /// Reads what is written so far.
    func source() throws -> FileByteSource {
        switch self {
        case .copy(let copy): return try FileByteSource(path: copy.path)
        case .device(let device, let size): return try FileByteSource(path: device.path, size: size)
        }
    }

    /// Makes the result the image's: the copy renamed over it (`tag` names it for that instant),
    /// or the device flushed. Wraps fsync(2).
    func finish(tag: String) throws(SystemError) {
        switch self {
        case .copy(let copy): try copy.commit(tag: tag)
        case .device(let device, _): try systemCall("fsync", on: device.path) { fsync(device.fd) }
        }
    }
}
