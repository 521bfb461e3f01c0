import CBlkid
import Glibc

/// What libblkid finds at one place of a file or device.
public struct FilesystemProbe: Sendable, Equatable {
    public let type: String
    public let uuid: String?
    public let label: String?
    public let version: String?
    /// The filesystem's block size, where libblkid reports one (BLOCK_SIZE).
    public let blockSize: Int?

    public init(type: String, uuid: String?, label: String?, version: String?, blockSize: Int? = nil) {
        self.type = type
        self.uuid = uuid
        self.label = label
        self.version = version
        self.blockSize = blockSize
    }

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
        return FilesystemProbe(type: type, uuid: value(pr, "UUID"), label: value(pr, "LABEL"), version: value(pr, "VERSION"),
                               blockSize: value(pr, "BLOCK_SIZE").flatMap { Int($0) })
    }

    private static func value(_ pr: blkid_probe, _ name: String) -> String? {
        var data: UnsafePointer<CChar>?
        var len = 0
        guard blkid_probe_lookup_value(pr, name, &data, &len) == 0, let data else { return nil }
        return String(cString: data)
    }
}

/// The partition-table type libblkid recognises ("dos", "gpt", "sun", "bsd", "atari", ...), for
/// labels imgtool does not parse itself. Wraps blkid_do_safeprobe(3) with only partition probing.
public func partitionTableType(fd: Int32, path: String, size: UInt64) throws(SystemError) -> String? {
    guard let pr = blkid_new_probe() else { throw SystemError("blkid_new_probe", on: path, errno: ENOMEM) }
    defer { blkid_free_probe(pr) }
    if blkid_probe_set_device(pr, fd, 0, blkid_loff_t(size)) != 0 {
        throw SystemError("blkid_probe_set_device", on: path, errno: errno == 0 ? EIO : errno)
    }
    blkid_probe_enable_superblocks(pr, 0)
    blkid_probe_enable_partitions(pr, 1)
    guard blkid_do_safeprobe(pr) == 0 else { return nil }
    var data: UnsafePointer<CChar>?
    var len = 0
    guard blkid_probe_lookup_value(pr, "PTTYPE", &data, &len) == 0, let data else { return nil }
    return String(cString: data)
}
