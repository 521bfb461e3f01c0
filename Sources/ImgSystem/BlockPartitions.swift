import CLinuxShim
import Glibc
import Logging

/// Partitions added to a whole-disk block device with BLKPG, for kernels (or loop devices) that do
/// not parse partition tables themselves. systemd-dissect and partx do the same.
public enum BlockPartitions {
    /// The node the kernel names partition `number` of `disk`: loop0 -> loop0p1, sda -> sda1.
    public static func nodePath(disk: String, number: Int) -> String {
        disk.last?.isNumber == true ? "\(disk)p\(number)" : "\(disk)\(number)"
    }

    /// Adds partition `number` spanning `length` bytes from `start`; returns its device node once
    /// devtmpfs shows it. Wraps ioctl(BLKPG, BLKPG_ADD_PARTITION).
    @discardableResult
    public static func add(disk: LoopDevice, number: Int, start: UInt64, length: UInt64,
                           logger: Logger) throws(SystemError) -> String {
        try shimCall("ioctl(BLKPG_ADD_PARTITION \(number))", on: disk.path,
                     imgtool_blkpg(disk.fd, IMGTOOL_BLKPG_ADD_PARTITION, Int32(number),
                                   Int64(start), Int64(length)))
        let node = nodePath(disk: disk.path, number: number)
        do {
            _ = try retrying([ENOENT], attempts: 12) { () throws(SystemError) in
                var st = stat()
                try systemCall("stat", on: node) { stat(node, &st) }
            }
        } catch {
            _ = try? remove(disk: disk, number: number, logger: logger)
            throw error
        }
        logger.debug("added \(node)", metadata: ["start": "\(start)", "length": "\(length)"])
        return node
    }

    /// Removes partition `number`, retrying while it is briefly busy (a just-closed opener).
    /// ENXIO means it is already gone. Wraps ioctl(BLKPG, BLKPG_DEL_PARTITION).
    public static func remove(disk: LoopDevice, number: Int, logger: Logger) throws(SystemError) {
        try remove(fd: disk.fd, disk: disk.path, number: number, logger: logger)
    }

    /// The same for a disk given by path, which may be a loop device no longer bound to anything
    /// (its partitions outlive the binding).
    public static func remove(diskPath: String, number: Int, logger: Logger) throws(SystemError) {
        let handle = try FileHandle(path: diskPath, flags: O_RDONLY)
        try remove(fd: handle.fd, disk: diskPath, number: number, logger: logger)
    }

    static func remove(fd: Int32, disk: String, number: Int, logger: Logger) throws(SystemError) {
        do {
            try retrying([EBUSY]) { () throws(SystemError) in
                try shimCall("ioctl(BLKPG_DEL_PARTITION \(number))", on: disk,
                             imgtool_blkpg(fd, IMGTOOL_BLKPG_DEL_PARTITION, Int32(number), 0, 0))
            }
        } catch where error.errno == ENXIO {
        }
        logger.debug("removed partition \(number) of \(disk)")
    }

    /// Removes every partition the kernel lists for `disk`.
    static func removeAll(fd: Int32, disk: String, logger: Logger) throws(SystemError) {
        for number in kernelPartitions(disk: disk) {
            try remove(fd: fd, disk: disk, number: number, logger: logger)
        }
    }

    /// Partition numbers the kernel currently has for `disk` (from /sys/block/<disk>/).
    public static func kernelPartitions(disk: String) -> [Int] {
        let name = String(disk.split(separator: "/").last ?? "")
        var numbers: [Int] = []
        for child in directoryEntries("/sys/block/\(name)") where child.hasPrefix(name) {
            let rest = child.dropFirst(name.count).drop(while: { $0 == "p" })
            if let n = Int(rest) { numbers.append(n) }
        }
        return numbers.sorted()
    }
}
