import CExt2fs
import Glibc

/// An ext2/3/4 filesystem inside an image, opened read-only through libext2fs: no mount, no root.
public final class Ext2Filesystem: @unchecked Sendable {
    private var handle: ext2_filsys?
    private let fs: ext2_filsys

    /// Opens the filesystem at byte `offset` of `image`. Wraps ext2fs_open2(3) with the `offset=`
    /// io option.
    public init(image: String, offset: UInt64) throws(SystemError) {
        let err = ext2fs_open2(image, "offset=\(offset)", 0, 0, 0, imgtool_unix_io_manager(), &handle)
        guard err == 0, let fs = handle else {
            throw SystemError("ext2fs_open2 at offset \(offset) (\(String(cString: error_message(err))))",
                              on: image, errno: EIO)
        }
        self.fs = fs
    }

    deinit { ext2fs_close_free(&handle) }

    /// Whether `path` (absolute, e.g. "/boot/grub") exists. Wraps ext2fs_namei(3).
    public func exists(_ path: String) -> Bool {
        var ino: ext2_ino_t = 0
        return ext2fs_namei(fs, ext2_ino_t(EXT2_ROOT_INO), ext2_ino_t(EXT2_ROOT_INO), path, &ino) == 0
    }

    /// Free bytes according to the superblock, the root reserve included (grub-install runs as root).
    public var freeBytes: UInt64 {
        UInt64(ext2fs_free_blocks_count(fs.pointee.super)) * UInt64(fs.pointee.blocksize)
    }
}
