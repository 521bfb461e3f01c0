import CBlkid
import CLinuxShim
import Glibc
import ImgFormats

/// What libblkid finds at one place of a file or device.
public struct FilesystemProbe: Sendable, Equatable {
    /// The filesystem or container type libblkid reports (TYPE): "ext4", "vfat", "swap", ...
    public let type: String
    /// The filesystem UUID as libblkid prints it (UUID); nil when it has none. For FAT, the volume serial ("ABCD-1234").
    public let uuid: String?
    /// The volume label (LABEL); nil when unset.
    public let label: String?
    /// The filesystem's version where libblkid reports one (VERSION: "1.0" for ext4, "FAT32" for vfat); nil otherwise.
    public let version: String?
    /// The filesystem's block size, where libblkid reports one (BLOCK_SIZE).
    public let blockSize: Int?

    /// Makes a probe result, for tests and for callers that probed by other means.
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
        let r = withoutProbers(probersThatCannotMatch(fd: fd, path: path, offset: offset, length: length), pr) {
            blkid_do_safeprobe(pr)
        }
        if r < 0 { throw SystemError("blkid_do_safeprobe at \(offset)", on: path, errno: errno == 0 ? EIO : errno) }
        guard r == 0, let type = value(pr, "TYPE") else { return nil }
        return FilesystemProbe(type: type, uuid: value(pr, "UUID"), label: value(pr, "LABEL"), version: value(pr, "VERSION"),
                               blockSize: value(pr, "BLOCK_SIZE").flatMap { Int($0) })
    }

    /// Probes `length` bytes at `offset` of `source`: through its descriptor when it is a file,
    /// else (a container's virtual disk) through a sparse copy of what the probers read
    /// (`ProbeWindow`). `name` names the image in errors.
    public static func probe(_ source: any ByteSource, offset: UInt64, length: UInt64, name: String) throws(SystemError) -> FilesystemProbe? {
        if let file = source as? FileByteSource {
            return try probe(fd: file.fd, path: name, offset: offset, length: length)
        }
        let copy = try ProbeCopy(source, offset: offset, length: length, name: name)
        return try probe(fd: copy.file.fd, path: name, offset: 0, length: length)
    }

    /// Two of libblkid's probers read 256 KiB at a time and are most of a probe's cost:
    /// zfs_member reads four labels, two at each end of the area, and matches only on the
    /// uberblock magic 0x00bab10c (either byte order) at the start of an uberblock slot;
    /// xfs_external_log reads the first 256 KiB and matches only on a log record starting with
    /// 0xFEEDBABE at a sector start. Both formats place these at multiples of 512 bytes from the
    /// start of the area. Where neither magic occurs at any such place, the prober cannot match,
    /// and skipping it leaves the result exactly blkid -p's. The ranges are taken generously (the
    /// first 512 KiB and the last MiB) so label placement does not matter, and only data extents
    /// are read: on a sparse image the rest are holes, which read as zeros. Returns the probers
    /// that cannot match. Wraps lseek(2) and pread(2).
    static func probersThatCannotMatch(fd: Int32, path: String, offset: UInt64, length: UInt64) -> [String] {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= UInt64(off_t.max) else { return [] }
        let head = offset..<offset + min(length, 512 * 1024)
        let tail = end - min(length, 1024 * 1024)..<end
        let areas = head.upperBound >= tail.lowerBound ? [head.lowerBound..<end] : [head, tail]
        var zfs = false, xfsLog = false
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)  // small: fresh pages cost more than reads
        for area in areas {
            var position = area.lowerBound
            while position < area.upperBound {
                let data: Int
                do {
                    data = try systemCall("lseek(SEEK_DATA)", on: path) { lseek(fd, off_t(position), IMGTOOL_SEEK_DATA) }
                } catch {
                    if error.errno == ENXIO { break } else { return [] }  // ENXIO: no data past `position`
                }
                guard UInt64(data) < area.upperBound else { break }
                guard let hole = try? systemCall("lseek(SEEK_HOLE)", on: path, { lseek(fd, off_t(data), IMGTOOL_SEEK_HOLE) }),
                      hole > data else { return [] }
                let extentEnd = min(UInt64(hole), area.upperBound)
                // From the sector boundary (counted from `offset`) at or before the data.
                position = offset + (UInt64(data) - offset) / 512 * 512
                while position < extentEnd {
                    let count = Int(min(UInt64(buffer.count), (extentEnd - position + 511) / 512 * 512))
                    let n = try? buffer.withUnsafeMutableBytes { b throws(SystemError) in
                        try readFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: b[..<count]), at: position, path: path)
                    }
                    guard let n, n > 0 else { return [] }
                    scanSectorStarts(buffer, count: n, zfs: &zfs, xfsLog: &xfsLog)
                    position += UInt64(n)
                }
            }
        }
        return (zfs ? [] : ["zfs_member"]) + (xfsLog ? [] : ["xfs_external_log"])
    }

    /// Looks at the first 8 bytes of every 512-byte sector in `bytes` (`count` of them read).
    private static func scanSectorStarts(_ bytes: [UInt8], count: Int, zfs: inout Bool, xfsLog: inout Bool) {
        let uberblock: UInt64 = 0x00ba_b10c, logRecord: UInt32 = 0xfeed_babe
        // Either byte order: a ZFS pool is written in its host's, and both are accepted for XFS's log.
        for i in stride(from: 0, to: min(count, bytes.count) - 7, by: 512) {
            if bytes.le64(i) == uberblock || bytes.be64(i) == uberblock { zfs = true }
            if bytes.le32(i) == logRecord || bytes.be32(i) == logRecord { xfsLog = true }
        }
    }

    /// Runs `body` with libblkid's superblock probers `names` filtered out, then lifts the filter.
    /// Wraps blkid_probe_filter_superblocks_type(3).
    private static func withoutProbers(_ names: [String], _ pr: blkid_probe, _ body: () -> Int32) -> Int32 {
        guard !names.isEmpty else { return body() }
        var cNames: [UnsafeMutablePointer<CChar>?] = names.map { strdup($0) } + [nil]
        defer { cNames.forEach { free($0) } }
        let filtered = cNames.withUnsafeMutableBufferPointer {
            blkid_probe_filter_superblocks_type(pr, BLKID_FLTR_NOTIN, $0.baseAddress!) == 0
        }
        defer { if filtered { blkid_probe_reset_superblocks_filter(pr) } }
        return body()
    }

    private static func value(_ pr: blkid_probe, _ name: String) -> String? {
        var data: UnsafePointer<CChar>?
        var len = 0
        guard blkid_probe_lookup_value(pr, name, &data, &len) == 0, let data else { return nil }
        return String(cString: data)
    }
}

/// `partitionTableType(fd:path:size:)` for any source: a container's virtual disk through a
/// sparse copy of its head and tail, where partition labels live.
package func partitionTableType(_ source: any ByteSource, name: String) throws(SystemError) -> String? {
    if let file = source as? FileByteSource { return try partitionTableType(fd: file.fd, path: name, size: source.size) }
    let copy = try ProbeCopy(source, offset: 0, length: source.size, name: name)
    return try partitionTableType(fd: copy.file.fd, path: name, size: source.size)
}

/// The partition-table type libblkid recognises ("dos", "gpt", "sun", "bsd", "atari", ...), for
/// labels imgtool does not parse itself. Wraps blkid_do_safeprobe(3) with only partition probing.
package func partitionTableType(fd: Int32, path: String, size: UInt64) throws(SystemError) -> String? {
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
