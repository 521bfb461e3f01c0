import CLinuxShim
import Glibc

public enum BlockDevice {
    /// Size in bytes of a block device. Wraps ioctl(BLKGETSIZE64).
    public static func size(_ path: String) throws(SystemError) -> UInt64 {
        let h = try FileHandle(path: path, flags: O_RDONLY)
        var size: UInt64 = 0
        try shimCall("ioctl(BLKGETSIZE64)", on: path, imgtool_ioctl_ptr(h.fd, IMGTOOL_BLKGETSIZE64, &size))
        return size
    }
}
