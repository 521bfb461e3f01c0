import CExt2fs
import Glibc

/// Read-only lookups in an ext2/3/4 filesystem inside an image, through libext2fs: no mount, no root.
public enum Ext2Directory {
    /// Whether `path` (absolute, e.g. "/boot/grub") exists in the filesystem at byte `offset`
    /// of `image`. Wraps ext2fs_open2(3) with the `offset=` io option and ext2fs_namei(3).
    public static func exists(_ path: String, image: String, offset: UInt64) throws(SystemError) -> Bool {
        var handle: ext2_filsys?
        let err = ext2fs_open2(image, "offset=\(offset)", 0, 0, 0, imgtool_unix_io_manager(), &handle)
        guard err == 0, let fs = handle else {
            throw SystemError("ext2fs_open2 at offset \(offset) (\(String(cString: error_message(err))))",
                              on: image, errno: EIO)
        }
        defer { ext2fs_close_free(&handle) }
        var ino: ext2_ino_t = 0
        return ext2fs_namei(fs, ext2_ino_t(EXT2_ROOT_INO), ext2_ino_t(EXT2_ROOT_INO), path, &ino) == 0
    }
}
