import CDevMapper
import CDevMapperShim
import Glibc
import Logging
import Synchronization

/// Device-mapper devices through libdevmapper (libdm, linked statically: see
/// Scripts/build-libdevmapper.sh): create with a table, remove, and read back table, status, info
/// and the device list.
///
/// - One libdm call at a time in this process: libdm keeps global state (its log function, its
///   udev and kernel-version caches, the stack of pending /dev/mapper node operations), so every
///   function here holds one lock while it talks to libdm.
/// - libdm's log goes into the `Logger` of the call in progress (through CDevMapperShim's C
///   trampoline, since libdm's log callback is variadic). Its errors become part of the thrown
///   error when the call fails, and are logged as warnings when it succeeds anyway; its warnings
///   are warnings, its notices and info messages debug, its debug messages trace.
/// - udev: when udevd runs (/run/udev/control exists: libudev's own test, which the libudev shim
///   linked into libdm repeats) and its rules include device mapper's (95-dm-notify.rules), libdm's
///   udev sync is on: each change carries a cookie (a SysV semaphore the rules complete with
///   `dmsetup udevcomplete`) and we wait for it, so udev's /dev/mapper/NAME link exists when
///   `create` returns and is gone when `remove` returns. Otherwise libdm creates and removes the
///   nodes itself. Waiting for a cookie is bounded (`udevTimeoutSeconds`); on a timeout libdm's
///   own node code takes over.
/// - Names reach the kernel byte for byte (libdm's name mangling is off), so `list()` returns
///   what was created.
/// - Every failure names the device and the step; `.unavailable` says that the kernel has no
///   device mapper, which is the case on the CI machine.
public enum DeviceMapper {
    public static let controlPath = "/dev/mapper/control"
    public static let directory = "/dev/mapper"
    /// The longest name the kernel takes, in bytes (DM_NAME_LEN less the terminating NUL).
    public static let maxNameBytes = Int(DM_NAME_LEN) - 1
    /// The longest UUID the kernel takes, in bytes (DM_UUID_LEN less the terminating NUL).
    public static let maxUUIDBytes = Int(DM_UUID_LEN) - 1
    /// How long to wait for udev to confirm a change (its rules run blkid on new devices).
    public static let udevTimeoutSeconds = 30.0
    /// Where udev rules may live; device mapper's are 55-dm.rules and 95-dm-notify.rules (package dmsetup).
    static let udevRulesDirectories = ["/etc/udev/rules.d", "/run/udev/rules.d", "/lib/udev/rules.d", "/usr/lib/udev/rules.d"]

    // MARK: Values

    /// A device-mapper name: 1 to `maxNameBytes` bytes, no '/', no control characters, not "." or
    /// ".." (it becomes /dev/mapper/NAME).
    public struct Name: Hashable, Sendable, CustomStringConvertible, Comparable {
        public let value: String
        public init(_ value: String) throws(Error) {
            if let reason = DeviceMapper.problem(with: value, maxBytes: DeviceMapper.maxNameBytes) {
                throw .invalidName(value, reason: reason)
            }
            if value == "." || value == ".." {
                throw .invalidName(value, reason: "it cannot be a node in /dev/mapper")
            }
            self.value = value
        }
        /// A name the kernel reported: taken as it is.
        init(kernel value: String) { self.value = value }
        public var description: String { value }
        public static func < (a: Name, b: Name) -> Bool { a.value < b.value }
    }

    /// A device-mapper UUID: 1 to `maxUUIDBytes` bytes, no '/', no control characters. Not an RFC
    /// 4122 UUID: a free-form identifier ("part1-imgtool-...", "LVM-..."), unique among devices.
    public struct UUID: Hashable, Sendable, CustomStringConvertible {
        public let value: String
        public init(_ value: String) throws(Error) {
            if let reason = DeviceMapper.problem(with: value, maxBytes: DeviceMapper.maxUUIDBytes) {
                throw .invalidUUID(value, reason: reason)
            }
            self.value = value
        }
        init(kernel value: String) { self.value = value }
        public var description: String { value }
    }

    /// Why `value` cannot be a name or UUID, or nil if it can.
    static func problem(with value: String, maxBytes: Int) -> String? {
        let bytes = value.utf8.count
        if bytes == 0 { return "it is empty" }
        if bytes > maxBytes { return "it is \(bytes) bytes long; the kernel takes at most \(maxBytes)" }
        if value.contains("/") { return "it contains '/'" }
        if value.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) }) {
            return "it contains a control character"
        }
        return nil
    }

    /// A block device number, written major:minor as in dm tables.
    public struct DeviceNumber: Hashable, Sendable, CustomStringConvertible {
        public let major: UInt32
        public let minor: UInt32
        public init(major: UInt32, minor: UInt32) {
            self.major = major
            self.minor = minor
        }
        /// From a dev_t (st_rdev), with the kernel's encoding (glibc's major()/minor() are macros).
        public init(_ dev: UInt64) {
            major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff))
            minor = UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~0xff))
        }
        /// The number of the block device at `path` (stat(2)); nil if it is not a block device.
        public init?(blockDevice path: String) {
            var st = stat()
            guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFBLK else { return nil }
            self.init(UInt64(st.st_rdev))
        }
        public var description: String { "\(major):\(minor)" }
    }

    /// One line of a table: `length` sectors (512 bytes) from `start`, mapped by target `type`
    /// with `params`, as `dmsetup table` prints it.
    public struct Target: Hashable, Sendable, CustomStringConvertible {
        public var start: UInt64
        public var length: UInt64
        public var type: String
        public var params: String
        public init(start: UInt64, length: UInt64, type: String, params: String) {
            self.start = start
            self.length = length
            self.type = type
            self.params = params
        }
        /// `length` sectors of `device` from its sector `offset`.
        public static func linear(start: UInt64 = 0, length: UInt64, device: DeviceNumber, offset: UInt64) -> Target {
            Target(start: start, length: length, type: "linear", params: "\(device) \(offset)")
        }
        public var description: String { "\(start) \(length) \(type) \(params)" }
    }

    /// One line of `dmsetup status`: a target's range and type, and what it reports (empty for linear).
    public struct TargetStatus: Hashable, Sendable, CustomStringConvertible {
        public let start: UInt64
        public let length: UInt64
        public let type: String
        public let status: String
        public var description: String { "\(start) \(length) \(type)" + (status.isEmpty ? "" : " \(status)") }
    }

    /// What the kernel says about an existing device (DM_DEV_STATUS).
    public struct Info: Hashable, Sendable {
        public let name: Name
        public let uuid: UUID?
        public let device: DeviceNumber
        /// Openers of the device; the kernel refuses to remove it while this is above 0.
        public let openCount: Int
        public let readOnly: Bool
        public let suspended: Bool
        public let hasLiveTable: Bool
        public let targetCount: Int
        /// /dev/mapper/NAME.
        public var path: String { "\(DeviceMapper.directory)/\(name)" }
        /// The kernel's name for it: dm-MINOR, as in /sys/block.
        public var kernelName: String { "dm-\(device.minor)" }
    }

    /// One device of `list()`.
    public struct Entry: Hashable, Sendable {
        public let name: Name
        public let device: DeviceNumber
    }

    public enum Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        case invalidName(String, reason: String)
        case invalidUUID(String, reason: String)
        /// A table with no targets, or one that cannot be passed on.
        case invalidTable(device: String, reason: String)
        /// The kernel has no device mapper (the CI machine's has none).
        case unavailable(reason: String)
        /// Device mapper needs root (CAP_SYS_ADMIN).
        case permissionDenied(reason: String)
        /// A libdm call failed: `step` names it, `errno` is the ioctl's (0 when libdm did not say),
        /// `messages` are libdm's errors during it.
        case failed(step: String, device: String, errno: Int32, messages: [String])
        /// Create-with-table failed; `leftBehind` says whether the half-made device is still there
        /// after libdm's revert and ours.
        case createFailed(device: String, errno: Int32, messages: [String], leftBehind: Bool)
        case alreadyExists(device: String)
        case notFound(device: String)
        /// The device is open (`openCount` openers) and so cannot be removed; `holders` are the
        /// openers found (processes, stacked devices, mounts).
        case busy(device: String, openCount: Int, holders: [String])
        /// The kernel still lists the device after a remove that succeeded.
        case stillPresent(device: String)

        public var description: String {
            switch self {
            case .invalidName(let n, let reason):
                return "\"\(n)\" cannot be a device-mapper name: \(reason)."
            case .invalidUUID(let u, let reason):
                return "\"\(u)\" cannot be a device-mapper UUID: \(reason)."
            case .invalidTable(let d, let reason):
                return "The table for device-mapper device \(d) is not valid: \(reason)."
            case .unavailable(let reason):
                return "This kernel has no device mapper (\(reason)). Use --isolate to run the operation in a throwaway VM whose kernel has it."
            case .permissionDenied(let reason):
                return "Device mapper needs root (\(reason)); run imgtool as root."
            case .failed(let step, let d, let e, let messages):
                return "device-mapper \(step) of \(d) failed" + DeviceMapper.because(e, messages) + "."
            case .createFailed(let d, let e, let messages, let left):
                return "device-mapper could not create \(d) with its table" + DeviceMapper.because(e, messages)
                    + (left ? ". The half-made device is still there: remove it with `dmsetup remove \(d)`."
                            : ". No device was left behind.")
            case .alreadyExists(let d):
                return "A device-mapper device named \(d) already exists; remove it (`dmsetup remove \(d)`) or choose another name."
            case .notFound(let d):
                return "There is no device-mapper device named \(d) (see `dmsetup ls`)."
            case .busy(let d, let count, let holders):
                let who = holders.isEmpty
                    ? "no process, stacked device or mount of this namespace was found holding it (another mount namespace or a loop device may)"
                    : "held by " + holders.joined(separator: ", ")
                return "device-mapper device \(d) is open (open count \(count)), so it cannot be removed: \(who). Close it and try again."
            case .stillPresent(let d):
                return "device-mapper device \(d) is still listed by the kernel after its removal succeeded."
            }
        }
    }

    static func because(_ errno: Int32, _ messages: [String]) -> String {
        var s = errno > 0 ? ": " + String(cString: strerror(errno)) : ""
        if !messages.isEmpty { s += " (libdevmapper: " + messages.joined(separator: "; ") + ")" }
        return s
    }

    // MARK: Operations

    /// Creates `name` with `targets` and makes it live: libdm's create-with-table runs
    /// DM_DEV_CREATE, DM_TABLE_LOAD and DM_DEV_SUSPEND (resume), and when the load or the resume
    /// fails it removes the half-made device itself (`_create_and_load_v4` in lvm2's
    /// libdm/ioctl/libdm-iface.c, "revert"). We check that the device is gone afterwards, and
    /// remove it ourselves if libdm's revert failed too, but only when it carries our UUID:
    /// without a UUID a device of that name might not be ours. Refuses a name that exists.
    /// Returns the device's info once /dev/mapper/NAME exists. Wraps dm_task_run(DM_DEVICE_CREATE).
    @discardableResult
    public static func create(name: Name, uuid: UUID?, targets: [Target], readOnly: Bool = false,
                              logger: Logger) throws(Error) -> Info {
        guard !targets.isEmpty else { throw .invalidTable(device: name.value, reason: "it has no targets") }
        for t in targets {
            // DM_MAX_TYPE_NAME is 16 with the NUL.
            if t.type.isEmpty || t.type.contains(" ") || problem(with: t.type, maxBytes: 15) != nil {
                throw .invalidTable(device: name.value, reason: "\"\(t.type)\" is not a target type")
            }
            if t.params.unicodeScalars.contains(where: { $0.value < 0x20 }) {
                throw .invalidTable(device: name.value, reason: "the parameters of \(t.type) contain a control character")
            }
        }
        return try libdm(logger) { (call) throws(Error) in
            try call.available()
            if try call.info(name) != nil { throw .alreadyExists(device: name.value) }
            let task = try call.task(DM_DEVICE_CREATE, "create", name)
            try call.check(dm_task_set_name(task.handle, name.value), "create (name)", name)
            if let uuid { try call.check(dm_task_set_uuid(task.handle, uuid.value), "create (UUID)", name) }
            if readOnly { try call.check(dm_task_set_ro(task.handle), "create (read-only)", name) }
            for t in targets {
                try call.check(dm_task_add_target(task.handle, t.start, t.length, t.type, t.params),
                               "create (target \(t))", name)
            }
            do throws(Error) {
                try call.run(task, "create", name)
            } catch {
                let (errno, messages) = error.libdmDetail
                var leftBehind = false
                if let left = try? call.info(name) {
                    leftBehind = true
                    if let uuid, left.uuid == uuid {
                        logger.warning("libdevmapper left \(name) behind after the failed create; removing it")
                        leftBehind = (try? call.removeNow(name)) == nil
                    }
                }
                throw .createFailed(device: name.value, errno: errno, messages: messages, leftBehind: leftBehind)
            }
            guard let info = try call.info(name) else {
                throw .failed(step: "create (the device vanished right after it)", device: name.value, errno: ENXIO, messages: [])
            }
            logger.debug("created device-mapper device \(name) (\(info.device))",
                         metadata: ["uuid": "\(uuid?.value ?? "")", "table": "\(targets.map(\.description).joined(separator: "; "))"])
            return info
        }
    }

    /// Creates the device, runs `body` with its info, and removes it again, also when `body`
    /// throws (then the removal is best effort and `body`'s error is thrown).
    public static func withDevice<T>(name: Name, uuid: UUID?, targets: [Target], readOnly: Bool = false,
                                     logger: Logger, _ body: (Info) throws -> T) throws -> T {
        let info = try create(name: name, uuid: uuid, targets: targets, readOnly: readOnly, logger: logger)
        let result: T
        do {
            result = try body(info)
        } catch {
            do { try remove(name: name, logger: logger) } catch let removal {
                logger.warning("\(removal)")
            }
            throw error
        }
        try remove(name: name, logger: logger)
        return result
    }

    /// Removes `name`, never while it is open: an open count above 0 is given a moment (udev's
    /// blkid probe opens a new device briefly), then refused with the openers we can find. The
    /// remove itself retries EBUSY (an opener that came in between) with backoff, and the kernel
    /// is asked afterwards whether the device is gone. Wraps dm_task_run(DM_DEVICE_REMOVE).
    public static func remove(name: Name, logger: Logger) throws(Error) {
        try libdm(logger) { (call) throws(Error) in
            try call.available()
            guard var info = try call.info(name) else { throw .notFound(device: name.value) }
            let attempts = 12  // about 1.5 s in all
            for attempt in 1...attempts {
                if info.openCount == 0 {
                    do throws(Error) {
                        try call.removeNow(name)
                        break
                    } catch let error where error.libdmDetail.errno == EBUSY {
                        // Opened between our info and the remove.
                        logger.debug("\(name): remove got EBUSY", metadata: ["attempt": "\(attempt)"])
                        if attempt == attempts { info = (try call.info(name)) ?? info }
                    }
                }
                if attempt == attempts {
                    throw .busy(device: name.value, openCount: info.openCount, holders: holders(of: info.device))
                }
                backoffSleep(attempt: attempt, baseMicroseconds: 2_000, capMicroseconds: 250_000)
                guard let now = try call.info(name) else { break }  // removed by someone else meanwhile
                info = now
            }
            if try call.info(name) != nil { throw .stillPresent(device: name.value) }
            logger.debug("removed device-mapper device \(name)")
        }
    }

    /// Whether /dev/mapper/NAME is a block node left without its device: what a process killed
    /// between the kernel's removal and libdm's unlink of the node leaves (libdm makes and removes
    /// the nodes itself when udev does not). A node whose number some device-mapper device has is
    /// not stale, whatever its name.
    public static func isStaleNode(name: Name, logger: Logger) -> Bool {
        var st = stat()
        guard lstat("\(directory)/\(name.value)", &st) == 0, st.st_mode & S_IFMT == S_IFBLK else { return false }
        do throws(Error) {
            guard try info(name: name, logger: logger) == nil else { return false }
            return try !list(logger: logger).contains { $0.device == DeviceNumber(UInt64(st.st_rdev)) }
        } catch {
            return false
        }
    }

    /// Removes /dev/mapper/NAME if it is a stale node (`isStaleNode`). Wraps unlink(2).
    public static func removeStaleNode(name: Name, logger: Logger) throws(Error) {
        guard isStaleNode(name: name, logger: logger) else { return }
        let path = "\(directory)/\(name.value)"
        guard unlink(path) == 0 || errno == ENOENT else {
            throw .failed(step: "unlink of the stale node", device: name.value, errno: errno, messages: [])
        }
        logger.debug("removed the stale node \(path)")
    }

    /// The device's info, or nil if there is no device `name`. Wraps dm_task_run(DM_DEVICE_INFO).
    public static func info(name: Name, logger: Logger) throws(Error) -> Info? {
        try libdm(logger) { (call) throws(Error) in
            try call.available()
            return try call.info(name)
        }
    }

    /// The live table, as `dmsetup table NAME`. Wraps dm_task_run(DM_DEVICE_TABLE).
    public static func table(name: Name, logger: Logger) throws(Error) -> [Target] {
        try libdm(logger) { (call) throws(Error) in
            try call.available()
            return try call.targets(DM_DEVICE_TABLE, "table", name).map {
                Target(start: $0.start, length: $0.length, type: $0.type, params: $0.params)
            }
        }
    }

    /// The targets' status, as `dmsetup status NAME`. Wraps dm_task_run(DM_DEVICE_STATUS).
    public static func status(name: Name, logger: Logger) throws(Error) -> [TargetStatus] {
        try libdm(logger) { (call) throws(Error) in
            try call.available()
            return try call.targets(DM_DEVICE_STATUS, "status", name).map {
                TargetStatus(start: $0.start, length: $0.length, type: $0.type, status: $0.params)
            }
        }
    }

    /// Every device-mapper device, sorted by name. Wraps dm_task_run(DM_DEVICE_LIST).
    public static func list(logger: Logger) throws(Error) -> [Entry] {
        try libdm(logger) { (call) throws(Error) in
            try call.available()
            let task = try call.task(DM_DEVICE_LIST, "list", nil)
            try call.run(task, "list", nil, udev: false)
            guard var names = dm_task_get_names(task.handle) else {
                throw .failed(step: "list (reading the names)", device: "all devices", errno: 0, messages: call.errors)
            }
            var entries: [Entry] = []
            if names.pointee.dev == 0 { return [] }  // libdm's way of saying "no devices"
            while true {
                entries.append(Entry(name: Name(kernel: String(cString: imgtool_dm_names_name(names))),
                                     device: DeviceNumber(names.pointee.dev)))
                let next = names.pointee.next
                if next == 0 { break }
                names = UnsafeMutableRawPointer(names).advanced(by: Int(next)).assumingMemoryBound(to: dm_names.self)
            }
            return entries.sorted { $0.name < $1.name }
        }
    }

    /// Whether this kernel has device mapper, and we may use it; throws `.unavailable` or
    /// `.permissionDenied` saying why not.
    public static func checkAvailable(logger: Logger) throws(Error) {
        try libdm(logger) { (call) throws(Error) in try call.available() }
    }

    /// Who holds the block device `device` open, as far as this process can see: processes with a
    /// descriptor on it (/proc/PID/fd), devices stacked on it (/sys/dev/block/M:m/holders) and
    /// mounts of it (/proc/self/mountinfo). An opener in another mount namespace's mount table or
    /// a loop device over it is not found.
    public static func holders(of device: DeviceNumber) -> [String] {
        var found: [String] = []
        for holder in directoryEntries("/sys/dev/block/\(device)/holders") {
            if let name = try? readTextFile("/sys/block/\(holder)/dm/name") {
                found.append("device-mapper device \(name.trimmingTrailingNewlines) (\(holder))")
            } else {
                found.append("block device \(holder)")
            }
        }
        if let mountinfo = try? readTextFile("/proc/self/mountinfo") {
            for line in mountinfo.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: false)
                if fields.count > 4, fields[2] == "\(device)" {
                    found.append("a mount at \(Mount.unescapeMountField(fields[4]))")
                }
            }
        }
        let me = getpid()
        for pidName in directoryEntries("/proc") {
            guard let pid = Int32(pidName) else { continue }
            let fdDirectory = "/proc/\(pid)/fd"
            let holds = directoryEntries(fdDirectory).contains { fd in
                var st = stat()
                return stat("\(fdDirectory)/\(fd)", &st) == 0 && st.st_mode & S_IFMT == S_IFBLK
                    && DeviceNumber(UInt64(st.st_rdev)) == device
            }
            guard holds else { continue }
            let comm = (try? readTextFile("/proc/\(pid)/comm"))?.trimmingTrailingNewlines ?? "?"
            found.append(pid == me ? "this process (\(pid), \(comm))" : "process \(pid) (\(comm))")
        }
        return found
    }

    // MARK: libdm plumbing

    /// Serialises libdm use in this process; see the type's notes.
    private static let lock = Mutex(())
    /// The call in progress, for the log sink. Only read and written while `lock` is held (libdm
    /// logs synchronously, on the calling thread).
    nonisolated(unsafe) private static var current: Call?
    /// Set once: our log sink, and no name mangling.
    private static let setUp: Void = {
        imgtool_dm_log_route(logSink)
        _ = dm_set_name_mangling_mode(DM_STRING_MANGLING_NONE)
    }()
    /// Whether /dev/mapper/control answered once in this process.
    nonisolated(unsafe) private static var knownAvailable = false

    /// Runs `body` with libdm to itself, its messages going to `logger`.
    static func libdm<T: Sendable>(_ logger: Logger, _ body: (Call) throws(Error) -> T) throws(Error) -> T {
        try lock.withLock { (_) throws(Error) -> T in
            _ = setUp
            let call = Call(logger: logger)
            current = call
            defer {
                current = nil
                call.reportStrayErrors()
            }
            return try body(call)
        }
    }

    /// Receives libdm's formatted messages (CDevMapperShim's trampoline calls it).
    private static let logSink: imgtool_dm_log_sink = { level, file, line, errnoOrClass, message in
        guard let message else { return }
        let text = String(cString: message)
        let file = file.map { String(cString: $0) } ?? "?"
        DeviceMapper.current?.receive(level: level & IMGTOOL_DM_LOG_LEVEL_MASK, file: file,
                                      line: Int(line), errno: errnoOrClass, text: text)
    }

    /// One libdm call: its logger and the errors libdm reported during it.
    final class Call {
        let logger: Logger
        /// libdm's error messages not yet consumed by a thrown error.
        private(set) var errors: [String] = []

        init(logger: Logger) { self.logger = logger }

        func receive(level: Int32, file: String, line: Int, errno: Int32, text: String) {
            let origin: Logger.Metadata = ["libdm": "\(file.split(separator: "/").last ?? ""):\(line)"]
            switch level {
            case ...IMGTOOL_DM_LOG_ERR:
                errors.append(text)
                logger.debug("libdevmapper error: \(text)", metadata: origin)
            case IMGTOOL_DM_LOG_WARN:
                logger.warning("libdevmapper: \(text)", metadata: origin)
            case IMGTOOL_DM_LOG_NOTICE, IMGTOOL_DM_LOG_INFO:
                logger.debug("libdevmapper: \(text)", metadata: origin)
            default:
                if text != "<backtrace>" { logger.trace("libdevmapper: \(text)", metadata: origin) }
            }
        }

        /// Errors libdm logged that no thrown error took up: the call succeeded despite them.
        func reportStrayErrors() {
            for e in errors { logger.warning("libdevmapper: \(e)") }
            errors = []
        }

        /// Takes the errors collected so far, for a thrown error.
        func takeErrors() -> [String] {
            defer { errors = [] }
            return errors
        }

        /// Opens /dev/mapper/control once per process to tell "no device mapper" and "not root"
        /// apart from other failures, with a message that says what to do. libdm would otherwise
        /// report either as "Failure to communicate with kernel device-mapper driver".
        func available() throws(Error) {
            if DeviceMapper.knownAvailable { return }
            let fd = open(DeviceMapper.controlPath, O_RDWR | O_CLOEXEC)
            let e = errno
            if fd >= 0 {
                close(fd)
                DeviceMapper.knownAvailable = true
                return
            }
            let listed = (try? readTextFile("/proc/misc"))?.split(separator: "\n")
                .contains { $0.hasSuffix(" device-mapper") } ?? false
            switch e {
            case EACCES, EPERM:
                throw .permissionDenied(reason: "opening \(DeviceMapper.controlPath): \(String(cString: strerror(e)))")
            case ENOENT where listed:
                return  // the kernel has it but the node is missing: libdm creates it from /proc/misc
            case ENOENT, ENODEV, ENXIO:
                throw .unavailable(reason: "opening \(DeviceMapper.controlPath): \(String(cString: strerror(e)))"
                                   + (listed ? "" : "; /proc/misc lists no device-mapper"))
            default:
                throw .failed(step: "open", device: DeviceMapper.controlPath, errno: e, messages: [])
            }
        }

        final class Task {
            let handle: OpaquePointer
            init(_ handle: OpaquePointer) { self.handle = handle }
            deinit { dm_task_destroy(handle) }
        }

        func task(_ type: Int, _ step: String, _ name: Name?) throws(Error) -> Task {
            // Fails when libdm's first use in this process found no usable kernel driver (it
            // checks the version once and remembers), or on malloc failure; libdm logged which.
            guard let handle = dm_task_create(Int32(type)) else {
                throw .failed(step: "\(step) (dm_task_create)", device: name?.value ?? "all devices",
                              errno: 0, messages: takeErrors())
            }
            return Task(handle)
        }

        func check(_ ok: Int32, _ step: String, _ name: Name) throws(Error) {
            if ok == 0 { throw .failed(step: step, device: name.value, errno: 0, messages: takeErrors()) }
        }

        /// dm_task_run. Tasks that change devices carry a udev cookie when udev sync is on; see
        /// `waitForUdev`. Without sync the cookie is 0 and the wait performs libdm's own node
        /// operations (mknod/unlink under /dev/mapper), which it stacks until then.
        func run(_ task: Task, _ step: String, _ name: Name?, udev: Bool = true) throws(Error) {
            let device = name?.value ?? "all devices"
            var cookie: UInt32 = 0
            if udev {
                dm_udev_set_sync_support(DeviceMapper.udevSyncUsable(logger) ? 1 : 0)
                // DM_SUBSYSTEM_UDEV_FLAG1 is multipath-tools' "skip kpartx": udev's kpartx rule
                // would otherwise map the partitions of an "mpath-" disk itself, beside ours.
                guard dm_task_set_cookie(task.handle, &cookie, UInt16(DM_SUBSYSTEM_UDEV_FLAG1)) != 0 else {
                    throw .failed(step: "\(step) (udev cookie)", device: device, errno: 0, messages: takeErrors())
                }
            }
            let ok = dm_task_run(task.handle) != 0
            let errno = dm_task_get_errno(task.handle)
            // Also after a failure: libdm may have stacked node operations or a revert's cookie.
            if udev { waitForUdev(cookie, device: device) }
            if !ok { throw .failed(step: step, device: device, errno: errno, messages: takeErrors()) }
        }

        /// dm_udev_wait without its unbounded wait: polls dm_udev_wait_immediate until udev's
        /// rules completed the cookie, up to `udevTimeoutSeconds`; then completes it ourselves
        /// (as `dmsetup udevcomplete` would) so that libdm's own node code takes over.
        private func waitForUdev(_ cookie: UInt32, device: String) {
            if cookie == 0 {
                _ = dm_udev_wait(0)
                return
            }
            var ready: Int32 = 0
            let start = monotonicNow()
            var attempt = 0
            while dm_udev_wait_immediate(cookie, &ready) != 0, ready == 0 {
                if monotonicNow() - start > DeviceMapper.udevTimeoutSeconds {
                    logger.warning("udev did not confirm the change to \(device) within \(Int(DeviceMapper.udevTimeoutSeconds)) s (cookie \(cookie)); creating /dev/mapper nodes without it")
                    for _ in 0..<16 where ready == 0 {
                        _ = dm_udev_complete(cookie)
                        if dm_udev_wait_immediate(cookie, &ready) == 0 { break }
                    }
                    return
                }
                attempt += 1
                backoffSleep(attempt: attempt, baseMicroseconds: 500, capMicroseconds: 20_000)
            }
        }

        func info(_ name: Name) throws(Error) -> Info? {
            let task = try task(DM_DEVICE_INFO, "info", name)
            try check(dm_task_set_name(task.handle, name.value), "info (name)", name)
            try run(task, "info", name, udev: false)
            var i = dm_info()
            try check(dm_task_get_info(task.handle, &i), "info (reading it)", name)
            guard i.exists != 0 else { return nil }
            let uuid = dm_task_get_uuid(task.handle).map { String(cString: $0) } ?? ""
            return Info(name: name, uuid: uuid.isEmpty ? nil : UUID(kernel: uuid),
                        device: DeviceNumber(major: i.major, minor: i.minor), openCount: Int(i.open_count),
                        readOnly: i.read_only != 0, suspended: i.suspended != 0, hasLiveTable: i.live_table != 0,
                        targetCount: Int(i.target_count))
        }

        /// One DM_DEVICE_REMOVE, without retries.
        func removeNow(_ name: Name) throws(Error) {
            let task = try task(DM_DEVICE_REMOVE, "remove", name)
            try check(dm_task_set_name(task.handle, name.value), "remove (name)", name)
            try run(task, "remove", name)
        }

        func targets(_ type: Int, _ step: String, _ name: Name) throws(Error) -> [Target] {
            let task = try task(type, step, name)
            try check(dm_task_set_name(task.handle, name.value), "\(step) (name)", name)
            do throws(Error) {
                try run(task, step, name, udev: false)
            } catch {
                if error.libdmDetail.errno == ENXIO { throw .notFound(device: name.value) }
                throw error
            }
            var i = dm_info()
            try check(dm_task_get_info(task.handle, &i), "\(step) (reading it)", name)
            guard i.exists != 0 else { throw .notFound(device: name.value) }
            var targets: [Target] = []
            var next: UnsafeMutableRawPointer? = nil
            repeat {
                var start: UInt64 = 0, length: UInt64 = 0
                var type: UnsafeMutablePointer<CChar>? = nil, params: UnsafeMutablePointer<CChar>? = nil
                next = dm_get_next_target(task.handle, next, &start, &length, &type, &params)
                if let type {
                    targets.append(Target(start: start, length: length, type: String(cString: type),
                                          params: params.map { String(cString: $0) } ?? ""))
                }
            } while next != nil
            return targets
        }
    }

    /// udev sync is usable when udevd runs (what libudev checks: /run/udev/control) and has device
    /// mapper's rules: without 95-dm-notify.rules nothing would ever complete a cookie.
    static func udevSyncUsable(_ logger: Logger) -> Bool {
        guard access("/run/udev/control", F_OK) == 0 else { return false }
        if udevRulesDirectories.contains(where: { access("\($0)/95-dm-notify.rules", F_OK) == 0 }) { return true }
        logger.debug("udevd runs but has no device-mapper rules (95-dm-notify.rules, package dmsetup); libdevmapper makes the /dev/mapper nodes itself")
        return false
    }
}

extension DeviceMapper.Error {
    /// The ioctl errno and libdm's messages a failure carries (0 and [] for other errors).
    var libdmDetail: (errno: Int32, messages: [String]) {
        switch self {
        case .failed(_, _, let e, let m): return (e, m)
        case .createFailed(_, let e, let m, _): return (e, m)
        default: return (0, [])
        }
    }
}

