import CDevMapper
import Foundation
import Glibc
@testable import ImgSystem
import Logging
import Synchronization
import Testing
import TestSupport

/// Collects log events, for checking what libdevmapper's messages turn into.
final class CapturingLogHandler: LogHandler, @unchecked Sendable {
    struct Event: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: [String: String]
    }
    private let events = Mutex<[Event]>([])
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let meta = (event.metadata ?? [:]).mapValues { "\($0)" }
        events.withLock { $0.append(Event(level: event.level, message: "\(event.message)", metadata: meta)) }
    }
    var captured: [Event] { events.withLock { $0 } }

    static func logger() -> (Logger, CapturingLogHandler) {
        let handler = CapturingLogHandler()
        return (Logger(label: "imgtool.tests.dm") { _ in handler }, handler)
    }
}

/// Whether the kernel answers on /dev/mapper/control (not on the CI machine).
let kernelHasDeviceMapper: Bool = {
    let fd = open(DeviceMapper.controlPath, O_RDWR | O_CLOEXEC)
    if fd >= 0 { close(fd) }
    return fd >= 0
}()

/// What needs no device mapper in the kernel: names, UUIDs, tables as text, libdevmapper's log
/// routing, the error on a kernel without device mapper, and finding who holds a device. The
/// operations on real devices run in a VM (ImgKitTests' DeviceMapperVMTests).
@Suite(.serialized)
struct DeviceMapperTests {
    @Test("names: up to DM_NAME_LEN - 1 bytes, no '/', no control characters, not . or ..")
    func names() throws {
        #expect(DeviceMapper.maxNameBytes == 127)
        #expect(try DeviceMapper.Name("hda").value == "hda")
        #expect(try DeviceMapper.Name("imgtool-0badf00d-disk").description == "imgtool-0badf00d-disk")
        _ = try DeviceMapper.Name(String(repeating: "n", count: 127))
        _ = try DeviceMapper.Name("späce and ümlauts")  // passed on byte for byte (no mangling)
        for bad in ["", String(repeating: "n", count: 128), "a/b", "/", ".", "..", "tab\there", "nl\n",
                    "del\u{7f}", "c1\u{85}", String(repeating: "é", count: 64)] {
            #expect(throws: DeviceMapper.Error.self, "\(bad.debugDescription)") { try DeviceMapper.Name(bad) }
        }
        do {
            _ = try DeviceMapper.Name(String(repeating: "é", count: 64))
        } catch {
            #expect(error.description.contains("128 bytes long; the kernel takes at most 127"), "\(error)")
        }
    }

    @Test("UUIDs: up to DM_UUID_LEN - 1 bytes, no '/', no control characters")
    func uuids() throws {
        #expect(DeviceMapper.maxUUIDBytes == 128)
        _ = try DeviceMapper.UUID(String(repeating: "u", count: 128))
        _ = try DeviceMapper.UUID("part1-imgtool-0badf00d")
        for bad in ["", String(repeating: "u", count: 129), "a/b", "x\u{1}"] {
            #expect(throws: DeviceMapper.Error.self, "\(bad.debugDescription)") { try DeviceMapper.UUID(bad) }
        }
    }

    @Test("device numbers and table lines print as dmsetup does")
    func tableText() {
        let loop = DeviceMapper.DeviceNumber(major: 7, minor: 3)
        #expect(DeviceMapper.Target.linear(length: 2048, device: loop, offset: 4096).description == "0 2048 linear 7:3 4096")
        // dev_t's split encoding: minor bits above 8 live from bit 20 on.
        #expect(DeviceMapper.DeviceNumber(0x0010_0703) == DeviceMapper.DeviceNumber(major: 7, minor: 0x103))
        #expect(DeviceMapper.DeviceNumber(UInt64(259) << 8 | 1).description == "259:1")
        #expect(DeviceMapper.DeviceNumber(blockDevice: "/dev/null") == nil)  // a character device
    }

    @Test("create refuses a table it cannot pass on, before it asks the kernel")
    func createValidatesTable() throws {
        let name = try DeviceMapper.Name("imgtool-test-invalid")
        #expect(throws: DeviceMapper.Error.invalidTable(device: name.value, reason: "it has no targets")) {
            try DeviceMapper.create(name: name, uuid: nil, targets: [], logger: testLogger)
        }
        let smuggled = DeviceMapper.Target(start: 0, length: 8, type: "linear", params: "7:0 0\n0 8 zero")
        #expect(throws: DeviceMapper.Error.self) {
            try DeviceMapper.create(name: name, uuid: nil, targets: [smuggled], logger: testLogger)
        }
        let badType = DeviceMapper.Target(start: 0, length: 8, type: "linear 7:0", params: "0")
        #expect(throws: DeviceMapper.Error.self) {
            try DeviceMapper.create(name: name, uuid: nil, targets: [badType], logger: testLogger)
        }
    }

    @Test("libdevmapper's log reaches the Logger through the C trampoline, bounded, and its errors reach the thrown error")
    func logTrampoline() throws {
        let (logger, handler) = CapturingLogHandler.logger()
        let long = String(repeating: "x", count: 3000)
        // libdm checks the length itself and logs an error (libdm-common.c: `New uuid prefix %s
        // too long.`), with no task and no ioctl, so this runs without device mapper in the kernel.
        let error = #expect(throws: DeviceMapper.Error.self) {
            try DeviceMapper.libdm(logger) { (call) throws(DeviceMapper.Error) in
                try call.check(dm_set_uuid_prefix(long), "UUID prefix", try DeviceMapper.Name("prefix"))
            }
        }
        guard case .failed(let step, let device, _, let messages)? = error else {
            Issue.record("unexpected \(String(describing: error))")
            return
        }
        #expect(step == "UUID prefix" && device == "prefix")
        #expect(messages.count == 1)
        let message = try #require(messages.first)
        // vsnprintf into 1024 bytes: the message is cut and marked.
        #expect(message.utf8.count == 1023)
        #expect(message.hasPrefix("New uuid prefix xxxx"))
        #expect(message.hasSuffix("x..."))
        let event = try #require(handler.captured.first { $0.message.hasPrefix("libdevmapper error: New uuid prefix") })
        #expect(event.level == .debug)  // errors go into the thrown error; not logged twice
        #expect(event.metadata["libdm"]?.hasPrefix("libdm-common.c:") == true, "\(event.metadata)")
        #expect(error?.description.contains("(libdevmapper: New uuid prefix xxx") == true)
    }

    @Test("libdevmapper errors of a call that succeeds anyway are logged as warnings")
    func strayErrorsAreWarnings() throws {
        let (logger, handler) = CapturingLogHandler.logger()
        try DeviceMapper.libdm(logger) { (_) throws(DeviceMapper.Error) in
            _ = dm_set_uuid_prefix(String(repeating: "y", count: 200))  // logs; result ignored
        }
        #expect(handler.captured.contains { $0.level == .warning && $0.message.hasPrefix("libdevmapper: New uuid prefix yyy") })
    }

    @Test("what libdevmapper itself logs when the kernel has no device mapper",
          .enabled(if: isRoot && !kernelHasDeviceMapper, "needs root and a kernel without device mapper"))
    func libdmWithoutKernelSupport() throws {
        let (logger, handler) = CapturingLogHandler.logger()
        // Straight to libdm, past the /dev/mapper/control check of the public functions. libdm
        // checks the driver version in the first dm_task_create of a process, logs, and remembers
        // the verdict; no other test in this process creates a task where the kernel has no dm.
        let error = #expect(throws: DeviceMapper.Error.self) {
            try DeviceMapper.libdm(logger) { (call) throws(DeviceMapper.Error) in
                let task = try call.task(DM_DEVICE_LIST, "list", nil)
                try call.run(task, "list", nil, udev: false)
            }
        }
        let messages = error?.libdmDetail.messages ?? []
        // libdm: "/dev/mapper/control: open failed: No such device", "Failure to communicate with
        // kernel device-mapper driver.", "Check that device-mapper is available in the kernel.",
        // "Incompatible libdevmapper 1.02.185 (2022-05-18) and kernel driver (unknown version)."
        guard case .failed(let step, _, _, _)? = error else { return }
        #expect(step == "list (dm_task_create)")
        #expect(messages.contains { $0.contains("Failure to communicate with kernel device-mapper driver") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("/dev/mapper/control: open failed") }, "\(messages)")
        #expect(handler.captured.contains { $0.message.contains("libdevmapper error: Check that device-mapper is available") })
    }

    @Test("without device mapper in the kernel every operation says so and suggests --isolate",
          .enabled(if: !kernelHasDeviceMapper, "this kernel has device mapper"))
    func unavailable() throws {
        let name = try DeviceMapper.Name("imgtool-test-unavailable")
        let loop = DeviceMapper.DeviceNumber(major: 7, minor: 0)
        let operations: [(String, () throws(DeviceMapper.Error) -> Void)] = [
            ("check", { () throws(DeviceMapper.Error) in try DeviceMapper.checkAvailable(logger: testLogger) }),
            ("list", { () throws(DeviceMapper.Error) in _ = try DeviceMapper.list(logger: testLogger) }),
            ("info", { () throws(DeviceMapper.Error) in _ = try DeviceMapper.info(name: name, logger: testLogger) }),
            ("table", { () throws(DeviceMapper.Error) in _ = try DeviceMapper.table(name: name, logger: testLogger) }),
            ("status", { () throws(DeviceMapper.Error) in _ = try DeviceMapper.status(name: name, logger: testLogger) }),
            ("remove", { () throws(DeviceMapper.Error) in try DeviceMapper.remove(name: name, logger: testLogger) }),
            ("create", { () throws(DeviceMapper.Error) in
                try DeviceMapper.create(name: name, uuid: nil, targets: [.linear(length: 8, device: loop, offset: 0)],
                                        logger: testLogger)
            }),
        ]
        for (what, operation) in operations {
            do throws(DeviceMapper.Error) {
                try operation()
                Issue.record("\(what) succeeded without device mapper")
            } catch {
                if isRoot {
                    guard case .unavailable = error else {
                        Issue.record("\(what): \(error)")
                        continue
                    }
                    #expect(error.description.hasPrefix("This kernel has no device mapper (opening /dev/mapper/control: "),
                            "\(error)")
                    #expect(error.description.contains("--isolate"))
                } else {
                    #expect(error.description.contains("no device mapper") || error.description.contains("needs root"),
                            "\(error)")
                }
            }
        }
    }

    @Test("holders: processes holding a block device open are named", .enabled(if: kernelTestsBlocked == nil))
    func holdersNameProcesses() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("holders.img")
        try run(["truncate", "-s", "1M", image])
        let loop = try LoopDevice.attach(image, logger: testLogger)
        defer { try? loop.detach() }
        let number = try #require(DeviceMapper.DeviceNumber(blockDevice: loop.path))
        let holders = DeviceMapper.holders(of: number)
        #expect(holders.contains { $0.hasPrefix("this process (\(getpid()),") }, "\(holders)")

        // A second opener: a child process with the device open.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sh")
        child.arguments = ["-c", "exec 3<\(loop.path); exec sleep 30"]
        try child.run()
        defer {
            kill(child.processIdentifier, SIGKILL)  // SIGTERM may be blocked in this process and so in the child
            child.waitUntilExit()
        }
        let pid = child.processIdentifier
        #expect(waitUntil(seconds: 5) { DeviceMapper.holders(of: number).contains("process \(pid) (sleep)") },
                "\(DeviceMapper.holders(of: number))")
    }
}
