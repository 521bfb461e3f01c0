import CBlkid
import Glibc

/// What libblkid finds at one place of a file or device.
public struct FilesystemProbe: Sendable, Equatable {
    public let type: String
    public let uuid: String?
    public let label: String?
    public let version: String?

    /// Probes `length` bytes at `offset` of the file open read-only at `fd`; nil when libblkid
    /// finds no filesystem there (or finds ambiguous signatures, which it refuses to guess).
    /// Wraps blkid_do_safeprobe(3).
    public static func probe(fd: Int32, path: String, offset: UInt64, length: UInt64) throws(SystemError) -> FilesystemProbe? {
        guard let pr = blkid_new_probe() else { throw SystemError("blkid_new_probe", on: path, errno: ENOMEM) }
        defer { blkid_free_probe(pr) }
        if blkid_probe_set_device(pr, fd, blkid_loff_t(offset), blkid_loff_t(length)) != 0 {
            throw SystemError("blkid_probe_set_device", on: path, errno: errno == 0 ? EIO : errno)
        }
        blkid_probe_enable_superblocks(pr, 1)
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_UUID | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_VERSION)
        blkid_probe_enable_partitions(pr, 0)
        let r = blkid_do_safeprobe(pr)
        if r < 0 { throw SystemError("blkid_do_safeprobe at \(offset)", on: path, errno: errno == 0 ? EIO : errno) }
        guard r == 0, let type = value(pr, "TYPE") else { return nil }
        return FilesystemProbe(type: type, uuid: value(pr, "UUID"), label: value(pr, "LABEL"), version: value(pr, "VERSION"))
    }

    private static func value(_ pr: blkid_probe, _ name: String) -> String? {
        var data: UnsafePointer<CChar>?
        var len = 0
        guard blkid_probe_lookup_value(pr, name, &data, &len) == 0, let data else { return nil }
        return String(cString: data)
    }
}
