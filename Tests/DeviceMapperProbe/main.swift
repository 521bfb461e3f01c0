// DeviceMapperProbe: runs DeviceMapper's operations where the kernel has device mapper, inside
// IsolatedVM's throwaway VM (modules dm_mod and loop; udevd only for the udev scenario), for
// ImgKitTests' DeviceMapperVMTests. It asserts nothing itself: each scenario prints what it saw as
// "scenario.key: value" lines on stdout, and the test checks them. libdevmapper's log and ours go
// to stderr down to trace level, for the test's checks and failure messages.
//
// usage: DeviceMapperProbe [--disk /dev/vda] SCENARIO...  (linear, bad-table, busy, partitions, udev)
import Glibc
import ImgFormats
import ImgKit
import ImgSystem
import Logging

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .trace  // libdevmapper's debug messages arrive as trace
    return handler
}
let logger = Logger(label: "dm-probe")

func say(_ scenario: String, _ key: String, _ value: Any) {
    print("\(scenario).\(key): \(value)")
}

/// What is at `path`: "block MAJ:MIN" (a node, as libdm makes them), "symlink TARGET" (as udev's
/// rules make them), "absent" or "other".
func node(_ path: String) -> String {
    var st = stat()
    guard lstat(path, &st) == 0 else { return "absent" }
    if st.st_mode & S_IFMT == S_IFLNK {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buf, buf.count - 1)
        return "symlink " + (n > 0 ? String(cString: buf) : "?")
    }
    guard st.st_mode & S_IFMT == S_IFBLK else { return "other" }
    return "block \(DeviceMapper.DeviceNumber(UInt64(st.st_rdev)))"
}

func readBytes(_ path: String, offset: Int, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: count)
    let n = pread(fd, &buf, count, off_t(offset))
    return n > 0 ? Array(buf[..<n]) : []
}

/// A 4 MiB file whose sector N is filled with the byte N % 251, on a loop device.
func patternLoop(_ file: String) throws -> LoopDevice {
    let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw SystemError("open", on: file, errno: errno) }
    for sector in 0..<8192 {
        let bytes = [UInt8](repeating: UInt8(sector % 251), count: 512)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, 512) }
    }
    close(fd)
    return try LoopDevice.attach(file, logger: logger)
}

func describe(_ error: any Error) -> String { "\(error)".replacingNewlines }

extension String {
    var replacingNewlines: String { split(separator: "\n", omittingEmptySubsequences: false).joined(separator: " | ") }
}

/// A linear map over a loop device: table, status, info, list and the node, then remove.
func linear() throws {
    let s = "linear"
    say(s, "udev", access("/run/udev/control", F_OK) == 0 ? "running" : "absent")
    let loop = try patternLoop("/tmp/linear.img")
    defer { try? loop.detach() }
    let parent = DeviceMapper.DeviceNumber(blockDevice: loop.path)!
    say(s, "parent", parent)
    let name = try DeviceMapper.Name("imgtool-test-linear")
    let uuid = try DeviceMapper.UUID("imgtool-test-linear-uuid")
    let info = try DeviceMapper.create(name: name, uuid: uuid,
                                       targets: [.linear(length: 2048, device: parent, offset: 1000)], logger: logger)
    say(s, "device", info.device)
    say(s, "uuid", info.uuid?.value ?? "none")
    say(s, "open-count", info.openCount)
    say(s, "read-only", info.readOnly)
    say(s, "live-table", info.hasLiveTable)
    say(s, "node", node(info.path))
    say(s, "table", try DeviceMapper.table(name: name, logger: logger).map(\.description).joined(separator: "; "))
    say(s, "status", try DeviceMapper.status(name: name, logger: logger).map(\.description).joined(separator: "; "))
    say(s, "list", try DeviceMapper.list(logger: logger).map { "\($0.name)=\($0.device)" }.joined(separator: " "))
    // Sector 0 of the map is sector 1000 of the file, sector 2047 is 3047.
    say(s, "sector0", readBytes(info.path, offset: 0, count: 512).map(String.init).first ?? "unreadable")
    say(s, "sector2047", readBytes(info.path, offset: 2047 * 512, count: 512).first.map(String.init) ?? "unreadable")
    say(s, "past-end", readBytes(info.path, offset: 2048 * 512, count: 512).count)
    let readOnlyName = try DeviceMapper.Name("imgtool-test-linear-ro")
    try DeviceMapper.withDevice(name: readOnlyName, uuid: nil, targets: [.linear(length: 8, device: parent, offset: 0)],
                                readOnly: true, logger: logger) { ro in
        say(s, "ro.read-only", ro.readOnly)
        say(s, "ro.uuid", ro.uuid?.value ?? "none")
        // The block layer's own flag, as the kernel shows it.
        say(s, "ro.sysfs-ro", readBytes("/sys/block/\(ro.kernelName)/ro", offset: 0, count: 1).first.map { String(UnicodeScalar($0)) } ?? "?")
    }
    say(s, "ro.after", try DeviceMapper.info(name: readOnlyName, logger: logger).map { _ in "present" } ?? "removed")
    do {
        try DeviceMapper.create(name: name, uuid: nil, targets: [.linear(length: 8, device: parent, offset: 0)], logger: logger)
        say(s, "create-again", "succeeded")
    } catch {
        say(s, "create-again", describe(error))
    }
    try DeviceMapper.remove(name: name, logger: logger)
    say(s, "after.info", try DeviceMapper.info(name: name, logger: logger).map { "\($0.device)" } ?? "none")
    say(s, "after.node", node(info.path))
    say(s, "after.list", try DeviceMapper.list(logger: logger).map(\.name.value).joined(separator: " "))
    do {
        try DeviceMapper.remove(name: name, logger: logger)
        say(s, "remove-again", "succeeded")
    } catch {
        say(s, "remove-again", describe(error))
    }
}

/// With udevd running and device mapper's rules: changes go through udev cookies, and the nodes
/// are udev's (symlinks to ../dm-N), ready when create returns and gone when remove returns.
func udev() throws {
    let s = "udev"
    say(s, "control", access("/run/udev/control", F_OK) == 0 ? "present" : "absent")
    let loop = try patternLoop("/tmp/udev.img")
    defer { try? loop.detach() }
    let parent = DeviceMapper.DeviceNumber(blockDevice: loop.path)!
    let name = try DeviceMapper.Name("imgtool-test-udev")
    let started = monotonicNow()
    let info = try DeviceMapper.create(name: name, uuid: DeviceMapper.UUID("imgtool-test-udev-uuid"),
                                       targets: [.linear(length: 2048, device: parent, offset: 0)], logger: logger)
    say(s, "create-seconds", monotonicNow() - started)
    say(s, "device", info.device)
    say(s, "node", node(info.path))
    say(s, "dev-node", node("/dev/\(info.kernelName)"))
    say(s, "sector1", readBytes(info.path, offset: 512, count: 1).first.map(String.init) ?? "unreadable")
    try DeviceMapper.remove(name: name, logger: logger)
    say(s, "after.node", node(info.path))
    say(s, "after.info", try DeviceMapper.info(name: name, logger: logger).map { "\($0.device)" } ?? "none")
}

/// A table the kernel refuses: libdm's create-with-table must leave no device behind.
func badTable() throws {
    let s = "bad-table"
    let loop = try patternLoop("/tmp/bad.img")
    defer { try? loop.detach() }
    let parent = DeviceMapper.DeviceNumber(blockDevice: loop.path)!
    let name = try DeviceMapper.Name("imgtool-test-bad")
    for (what, targets) in [
        ("garbage", [DeviceMapper.Target(start: 0, length: 2048, type: "linear", params: "no-such-device 0")]),
        ("overlap", [DeviceMapper.Target.linear(length: 2048, device: parent, offset: 0),
                     DeviceMapper.Target.linear(start: 1024, length: 2048, device: parent, offset: 0)]),
        ("past-end", [DeviceMapper.Target.linear(length: 2048, device: parent, offset: 8000)]),  // the file has 8192
        ("unknown-type", [DeviceMapper.Target(start: 0, length: 8, type: "no-such-target", params: "")]),
    ] {
        do {
            try DeviceMapper.create(name: name, uuid: DeviceMapper.UUID("imgtool-test-bad-uuid"), targets: targets, logger: logger)
            say(s, "\(what).create", "succeeded")
        } catch {
            say(s, "\(what).create", describe(error))
        }
        say(s, "\(what).info", try DeviceMapper.info(name: name, logger: logger).map { "\($0.device)" } ?? "none")
        say(s, "\(what).node", node("\(DeviceMapper.directory)/\(name)"))
        say(s, "\(what).listed", try DeviceMapper.list(logger: logger).contains { $0.name == name })
    }
}

/// Remove refuses while the map is open, naming the holders, and succeeds once they are gone.
func busy() throws {
    let s = "busy"
    let loop = try patternLoop("/tmp/busy.img")
    defer { try? loop.detach() }
    let parent = DeviceMapper.DeviceNumber(blockDevice: loop.path)!
    let name = try DeviceMapper.Name("imgtool-test-busy")
    let info = try DeviceMapper.create(name: name, uuid: nil, targets: [.linear(length: 2048, device: parent, offset: 0)],
                                       logger: logger)
    let fd = open(info.path, O_RDONLY | O_CLOEXEC)
    say(s, "opened", fd >= 0)
    say(s, "open-count", try DeviceMapper.info(name: name, logger: logger)?.openCount ?? -1)
    do {
        try DeviceMapper.remove(name: name, logger: logger)
        say(s, "remove-while-open", "succeeded")
    } catch {
        say(s, "remove-while-open", describe(error))
    }
    say(s, "still-there", try DeviceMapper.info(name: name, logger: logger) != nil)
    close(fd)

    // A device stacked on it holds it too (/sys/block/dm-N/holders).
    let upper = try DeviceMapper.Name("imgtool-test-busy-upper")
    try DeviceMapper.create(name: upper, uuid: nil, targets: [.linear(length: 8, device: info.device, offset: 0)], logger: logger)
    do {
        try DeviceMapper.remove(name: name, logger: logger)
        say(s, "remove-while-stacked", "succeeded")
    } catch {
        say(s, "remove-while-stacked", describe(error))
    }
    try DeviceMapper.remove(name: upper, logger: logger)

    try DeviceMapper.remove(name: name, logger: logger)
    say(s, "after-close", try DeviceMapper.info(name: name, logger: logger).map { _ in "present" } ?? "removed")
}

/// The device-mapper presentation's pieces: a disk map over the VM's disk and kpartx's partition
/// maps over it, from DeviceMapperLayout; each partition map reads as the partition.
func partitions(disk: String) throws {
    let s = "partitions"
    let source = try FileByteSource(path: disk, size: BlockDevice.size(disk))
    guard let table = try PartitionTable.read(from: source) else { throw SystemError("no partition table", on: disk, errno: EINVAL) }
    let parent = DeviceMapper.DeviceNumber(blockDevice: disk)!
    let sectors = source.size / 512
    let diskName = try DeviceMapper.Name("hda")
    let diskUUID = try DeviceMapper.UUID("imgtool-test-disk")
    let diskInfo = try DeviceMapper.create(name: diskName, uuid: diskUUID,
                                           targets: [.linear(length: sectors, device: parent, offset: 0)], readOnly: true,
                                           logger: logger)
    let maps = try DeviceMapperLayout.partitionMaps(table: table, diskName: diskName, diskUUID: diskUUID, disk: diskInfo.device)
    var created: [DeviceMapper.Name] = []
    defer {
        for n in created.reversed() { try? DeviceMapper.remove(name: n, logger: logger) }
        try? DeviceMapper.remove(name: diskName, logger: logger)
    }
    for map in maps {
        let info = try DeviceMapper.create(name: map.name, uuid: map.uuid, targets: [map.target], readOnly: true, logger: logger)
        created.append(map.name)
        let table = try DeviceMapper.table(name: map.name, logger: logger).map(\.description).joined(separator: "; ")
        say(s, "\(map.name)", "uuid=\(info.uuid?.value ?? "none") table=\(table)")
        // The partition's first sectors through the map equal the disk's at the partition's start.
        let offset = Int(map.target.params.split(separator: " ")[1])! * 512
        let through = readBytes(info.path, offset: 0, count: 4096)
        let direct = readBytes(disk, offset: offset, count: through.count)
        say(s, "\(map.name).same-bytes", !through.isEmpty && through == direct)
        // ext2/3/4: the superblock magic 0xEF53 at byte 1080.
        let magic = readBytes(info.path, offset: 1080, count: 2)
        say(s, "\(map.name).ext-magic", magic == [0x53, 0xEF])
    }
    for n in created.reversed() { try DeviceMapper.remove(name: n, logger: logger) }
    created = []
    try DeviceMapper.remove(name: diskName, logger: logger)
    say(s, "left", try DeviceMapper.list(logger: logger).map(\.name.value).joined(separator: " "))
}

var arguments = Array(CommandLine.arguments.dropFirst())
var disk = "/dev/vda"
if arguments.first == "--disk", arguments.count > 1 {
    disk = arguments[1]
    arguments.removeFirst(2)
}
var failed = false
for scenario in arguments {
    do {
        switch scenario {
        case "linear": try linear()
        case "bad-table": try badTable()
        case "busy": try busy()
        case "partitions": try partitions(disk: disk)
        case "udev": try udev()
        default:
            say(scenario, "error", "unknown scenario")
            failed = true
        }
    } catch {
        say(scenario, "error", describe(error))
        failed = true
    }
}
exit(failed ? 1 : 0)
