import CLinuxShim
import Glibc
import ImgFormats

/// Queries on block devices by path: size, geometry, and the kernel's partitions.
public enum BlockDevice {
    /// Size in bytes of a block device. Wraps ioctl(BLKGETSIZE64).
    public static func size(_ path: String) throws(SystemError) -> UInt64 {
        let h = try FileHandle(path: path, flags: O_RDONLY)
        var size: UInt64 = 0
        try shimCall("ioctl(BLKGETSIZE64)", on: path, imgtool_ioctl_ptr(h.fd, IMGTOOL_BLKGETSIZE64, &size))
        return size
    }

    /// The start of partition device `path` in 512-byte sectors, as HDIO_GETGEO reports it; nil
    /// where the driver has no geometry (loop devices). grub-probe falls back on this when it
    /// cannot ask udevadm. Wraps ioctl(HDIO_GETGEO).
    public static func geometryStart(_ path: String) -> UInt64? {
        guard let h = try? FileHandle(path: path, flags: O_RDONLY | O_NONBLOCK) else { return nil }
        var geometry = hd_geometry()
        guard imgtool_ioctl_ptr(h.fd, IMGTOOL_HDIO_GETGEO, &geometry) >= 0 else { return nil }
        return UInt64(geometry.start)
    }

    /// Start and length of partition `number` of whole disk `disk` (a node in /dev), in 512-byte
    /// sectors, as the kernel has them (/sys/class/block/<partition>/start and size).
    public static func kernelPartitionRange(disk: String, number: Int) -> SectorRange? {
        let name = BlockPartitions.nodePath(disk: disk, number: number).split(separator: "/").last.map(String.init) ?? ""
        guard let start = try? readTextFile("/sys/class/block/\(name)/start"),
              let size = try? readTextFile("/sys/class/block/\(name)/size"),
              let s = UInt64(start.trimmingTrailingNewlines), let n = UInt64(size.trimmingTrailingNewlines) else { return nil }
        return SectorRange(start: s, count: n)
    }

    /// Whether the block device numbered `device` is a partition rather than a whole disk.
    public static func isPartition(_ device: DeviceMapper.DeviceNumber) -> Bool {
        accessible("/sys/dev/block/\(device)/partition")
    }
}
