import Foundation
import Glibc
import ImgSystem
import Logging
import TestSupport

// What the tests in this target ask the kernel directly (sysfs, /proc, stat), so that no test has
// to trust a value that the code under test returned.

let testLogger = Logger(label: "imgtool.tests.system")

/// The trimmed contents of a sysfs or procfs file, or nil when it does not exist.
func sysfs(_ path: String) -> String? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    return text.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// /sys/block/loopN/loop/ATTRIBUTE (offset, sizelimit, autoclear, partscan, backing_file); nil while
/// the device is unbound (the kernel removes the `loop` group on detach).
func loopAttribute(_ number: Int, _ attribute: String) -> String? {
    sysfs("/sys/block/loop\(number)/loop/\(attribute)")
}

/// The last path component: /dev/loop3 -> loop3.
func deviceName(_ path: String) -> String { String(path.split(separator: "/").last ?? "") }

/// Polls `condition` every 10 ms until it holds or `seconds` pass; returns whether it held.
func waitUntil(seconds: Double = 3, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        if condition() { return true }
        if Date() >= deadline { return false }
        usleep(10_000)
    }
}

/// Whether `path` exists and is a block device node, and its device number.
func blockNode(_ path: String) -> (major: UInt32, minor: UInt32)? {
    var st = stat()
    guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFBLK else { return nil }
    let dev = st.st_rdev
    let major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff))
    let minor = UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~0xff))
    return (major, minor)
}

/// The partition numbers sysfs lists below /sys/block/<disk>/ (read here, independently of
/// BlockPartitions.kernelPartitions).
func sysfsPartitions(_ disk: String) -> [Int] {
    let name = deviceName(disk)
    let children = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/block/\(name)")) ?? []
    return children.compactMap { child -> Int? in
        guard child.hasPrefix(name + "p"), sysfs("/sys/block/\(name)/\(child)/partition") != nil else { return nil }
        return Int(child.dropFirst(name.count + 1))
    }.sorted()
}

/// One line of /proc/self/mountinfo, decoded enough for the tests.
struct MountInfo {
    let mountPoint: String     // still octal-escaped, as the kernel writes it
    let options: [String]      // per-mount options (field 6)
    let filesystemType: String
    let source: String
}

/// /proc/self/mountinfo, parsed here rather than through Mount.mountPoints().
func mountInfo() -> [MountInfo] {
    guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard fields.count > 6, let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count else { return nil }
        return MountInfo(mountPoint: fields[4], options: fields[5].split(separator: ",").map(String.init),
                         filesystemType: fields[dash + 1], source: fields[dash + 2])
    }
}

/// The mountinfo escaping of a path (space, tab, newline, backslash as \ooo), written out here so
/// that comparing with the kernel's text does not depend on the code under test.
func mountInfoEscaped(_ path: String) -> String {
    var out = ""
    for b in path.utf8 {
        switch b {
        case 0x20, 0x09, 0x0a, 0x5c: out += "\\" + String(format: "%03o", b)
        default: out += String(decoding: [b], as: UTF8.self)
        }
    }
    return out
}

func mountEntry(at path: String) -> MountInfo? {
    mountInfo().last { $0.mountPoint == mountInfoEscaped(path) }
}

/// A file of `size` bytes in which every 4-byte little-endian word holds its own byte offset / 4,
/// so that any read at the wrong place shows.
@discardableResult
func writePatternFile(_ path: String, size: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: size)
    bytes.withUnsafeMutableBytes { raw in
        let words = raw.bindMemory(to: UInt32.self)
        for i in words.indices { words[i] = UInt32(i).littleEndian }
    }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return bytes
}

/// Reads `count` bytes at `offset` of `path` with pread(2).
func readBytes(_ path: String, offset: Int, count: Int) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw TestFailure("open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { throw TestFailure("pread \(path): \(String(cString: strerror(errno)))") }
        if n == 0 { break }
        done += n
    }
    return Array(buffer[0..<done])
}

/// Partition `number` of `image` as sfdisk reads it: (start, size) in 512-byte sectors.
func sfdiskPartition(_ image: String, number: Int) throws -> (start: UInt64, size: UInt64) {
    let r = try run(["sfdisk", "--json", image])
    let json = try JSONSerialization.jsonObject(with: Data(r.output)) as? [String: Any]
    let table = json?["partitiontable"] as? [String: Any]
    let parts = table?["partitions"] as? [[String: Any]] ?? []
    guard parts.indices.contains(number - 1),
          let start = (parts[number - 1]["start"] as? NSNumber)?.uint64Value,
          let size = (parts[number - 1]["size"] as? NSNumber)?.uint64Value
    else { throw TestFailure("sfdisk lists no partition \(number) in \(image)") }
    return (start, size)
}

/// Last-resort cleanup for loop devices this process no longer holds an object for: detaches
/// /dev/loopN with losetup if it still carries `tag`, and drops partitions left on it.
func forceRelease(loop number: Int, tag: String) {
    let path = "/dev/loop\(number)"
    if (try? LoopDevice.fileName(ofDevice: path)) == tag {
        _ = try? Subprocess.run(["losetup", "-d", path])
    }
}

/// Removes partitions that sysfs still lists on an unbound loop device, so that a failing test
/// does not hand stale partitions to the next user of the device. Leaves a bound device alone: it
/// may already belong to someone else.
func dropStalePartitions(_ path: String) {
    guard let number = Int(deviceName(path).dropFirst("loop".count)), loopAttribute(number, "backing_file") == nil
    else { return }
    for n in sysfsPartitions(path) {
        _ = try? Subprocess.run(["delpart", path, "\(n)"])
    }
}

/// BlockPartitions.remove for cleanup paths, only while `dev.fd` is still open on this device:
/// after detach() it is a closed descriptor number that may already belong to another file.
func removePartitionsForCleanup(_ dev: LoopDevice, _ numbers: [Int]) {
    var held = stat(), node = stat()
    guard fstat(dev.fd, &held) == 0, stat(dev.path, &node) == 0, (held.st_mode & S_IFMT) == S_IFBLK,
          held.st_rdev == node.st_rdev else { return }
    for n in numbers { try? BlockPartitions.remove(disk: dev, number: n, logger: testLogger) }
}
