import CLinuxShim
import Glibc
import Logging
import Synchronization

/// A loop device this process attached. It holds the device open, and the device carries
/// LO_FLAGS_AUTOCLEAR, so if this process dies the kernel detaches it once nothing else holds it.
/// `detach()` releases it explicitly and waits until the kernel confirms.
public final class LoopDevice: @unchecked Sendable {
    /// How to configure the device (struct loop_config's loop_info64).
    public struct Options: Sendable {
        /// Where in the backing file the device starts, in bytes (lo_offset).
        public var offset: UInt64 = 0
        /// 0 means up to the end of the backing file.
        public var sizeLimit: UInt64 = 0
        /// Attach read-only (LO_FLAGS_READ_ONLY).
        public var readOnly = false
        /// Ask the kernel to scan the partition table and make loopNpM nodes (LO_FLAGS_PARTSCAN).
        public var partitionScan = false
        /// Stored in lo_file_name (up to 63 bytes) after `ResourceMarks.loopTagPrefix`.
        public var tag = ""
        /// The logical block size the device presents (512, or 4096 for a disk laid out for 4 KiB
        /// sectors); 0 leaves the kernel's default, 512.
        public var blockSize: UInt32 = 0
        /// Makes options; the defaults attach the whole file read-write without a partition scan.
        public init(offset: UInt64 = 0, sizeLimit: UInt64 = 0, readOnly: Bool = false,
                    partitionScan: Bool = false, tag: String = "", blockSize: UInt32 = 0) {
            self.offset = offset
            self.sizeLimit = sizeLimit
            self.readOnly = readOnly
            self.partitionScan = partitionScan
            self.tag = tag
            self.blockSize = blockSize
        }
    }

    /// Why attaching or detaching failed. `description` is the message the user reads.
    public enum Error: Swift.Error, CustomStringConvertible, Sendable {
        /// A system call failed; the error names it and the device.
        case system(SystemError)
        /// The kernel accepted the configuration but reports other settings (`what`: the offset, size limit, autoclear or read-only flag); the device was detached again.
        case settingsIgnored(device: String, what: String)
        /// The kernel still reports a backing file after LOOP_CLR_FD: something else holds the device open.
        case stillAttached(device: String)

        public var description: String {
            switch self {
            case .system(let e): return e.description
            case .settingsIgnored(let d, let what):
                return "\(d): the kernel did not apply the \(what) asked for; the loop device was detached again."
            case .stillAttached(let d):
                return "\(d) is still attached after LOOP_CLR_FD; something holds it open (see `losetup -l` and `fuser -m \(d)`)."
            }
        }
    }

    /// N of /dev/loopN.
    public let number: Int
    /// The device node: "/dev/loopN".
    public let path: String
    /// The options the device was attached with (what was asked for; `flags` holds what the kernel took).
    public let options: Options
    /// Flags the kernel reports after configuration (PARTSCAN may be dropped by some kernels).
    public let flags: UInt32
    private let handle: FileHandle
    /// LOOP_CLR_FD done and our descriptor closed.
    private var cleared = false
    /// The kernel confirmed the device is unbound.
    private var detached = false
    private let logger: Logger

    /// Whether the kernel kept LO_FLAGS_PARTSCAN, so it made loopNpM nodes itself.
    public var partitionScanEnabled: Bool { flags & IMGTOOL_LO_FLAGS_PARTSCAN != 0 }

    /// The lo_file_name tag this device was given.
    public var tag: String { Self.fileName(for: options.tag) }

    /// The lo_file_name a device attached with `tag` carries.
    public static func fileName(for tag: String) -> String {
        String(decoding: Array((ResourceMarks.loopTagPrefix + tag).utf8.prefix(Int(IMGTOOL_LO_NAME_SIZE) - 1)), as: UTF8.self)
    }

    private init(number: Int, handle: FileHandle, options: Options, flags: UInt32, logger: Logger) {
        self.number = number
        self.path = handle.path
        self.handle = handle
        self.options = options
        self.flags = flags
        self.logger = logger
    }

    /// The open device; valid until `detach()`.
    public var fd: Int32 { handle.fd }

    /// Whether this process can have loop devices: root, and /dev/loop-control opens for writing
    /// (not in an unprivileged container, nor where the device is missing). Wraps open(2).
    public static func usable() -> Bool {
        guard geteuid() == 0 else { return false }
        guard let control = try? FileHandle(path: "/dev/loop-control", flags: O_RDWR) else { return false }
        control.close()
        return true
    }

    /// Attaches `backingPath` to a free loop device: lock /dev/loop-control, LOOP_CTL_GET_FREE,
    /// LOOP_CONFIGURE (falling back to LOOP_SET_FD + LOOP_SET_STATUS64), then read the status back.
    /// Another process may grab the same free device between GET_FREE and CONFIGURE; that is EBUSY,
    /// and we pick again after a jittered backoff. Wraps flock(2) and ioctl(2).
    public static func attach(_ backingPath: String, options: Options = Options(),
                              logger: Logger) throws(Error) -> LoopDevice {
        let device: LoopDevice
        do {
            let backing = try FileHandle(path: backingPath, flags: options.readOnly ? O_RDONLY : O_RDWR)
            let control = try FileHandle(path: "/dev/loop-control", flags: O_RDWR)
            device = try retrying([EBUSY], attempts: 32) { () throws(SystemError) in
                // The lock serialises allocation with other cooperating tools (systemd does the same).
                try systemCall("flock(LOCK_EX)", on: control.path) { flock(control.fd, LOCK_EX) }
                defer { bestEffort { flock(control.fd, LOCK_UN) } }  // closing the control node drops it anyway
                let n = try shimCall("ioctl(LOOP_CTL_GET_FREE)", on: control.path,
                                     imgtool_ioctl_int(control.fd, IMGTOOL_LOOP_CTL_GET_FREE, 0))
                return try configure(number: Int(n), backing: backing, options: options, logger: logger)
            }
        } catch {
            throw .system(error)
        }
        try device.verify()
        logger.debug("attached \(device.path) to \(backingPath)",
                     metadata: ["offset": "\(options.offset)", "sizelimit": "\(options.sizeLimit)"])
        return device
    }

    private static func configure(number: Int, backing: FileHandle, options: Options,
                                  logger: Logger) throws(SystemError) -> LoopDevice {
        let path = "/dev/loop\(number)"
        let handle = try openWhenPresent(path, flags: options.readOnly ? O_RDONLY : O_RDWR)
        var info = loop_info64()
        info.lo_offset = options.offset
        info.lo_sizelimit = options.sizeLimit
        info.lo_flags = IMGTOOL_LO_FLAGS_AUTOCLEAR
            | (options.readOnly ? IMGTOOL_LO_FLAGS_READ_ONLY : 0)
            | (options.partitionScan ? IMGTOOL_LO_FLAGS_PARTSCAN : 0)
        imgtool_loop_info_set_file_name(&info, fileName(for: options.tag))
        var config = loop_config()
        config.fd = UInt32(bitPattern: backing.fd)
        config.block_size = options.blockSize
        config.info = info
        let r = imgtool_ioctl_ptr(handle.fd, IMGTOOL_LOOP_CONFIGURE, &config)
        if r == -EINVAL || r == -ENOTTY {
            // Kernels before 5.8 lack LOOP_CONFIGURE: the older two-step way.
            try shimCall("ioctl(LOOP_SET_FD)", on: path,
                         imgtool_ioctl_int(handle.fd, IMGTOOL_LOOP_SET_FD, UInt(backing.fd)))
            do {
                try retrying([EAGAIN]) { () throws(SystemError) in
                    try shimCall("ioctl(LOOP_SET_STATUS64)", on: path,
                                 imgtool_ioctl_ptr(handle.fd, IMGTOOL_LOOP_SET_STATUS64, &info))
                }
                if options.blockSize != 0 {
                    try shimCall("ioctl(LOOP_SET_BLOCK_SIZE)", on: path,
                                 imgtool_ioctl_int(handle.fd, IMGTOOL_LOOP_SET_BLOCK_SIZE, UInt(options.blockSize)))
                }
            } catch {
                _ = imgtool_ioctl_int(handle.fd, IMGTOOL_LOOP_CLR_FD, 0)
                throw error
            }
        } else {
            try shimCall("ioctl(LOOP_CONFIGURE)", on: path, r)
        }
        let status = try readStatus(handle.fd, path: path)
        if !options.partitionScan {
            // Partitions added with BLKPG outlive LOOP_CLR_FD when the kernel does not scan: a
            // device that a crashed run left them on would show them over our image.
            do {
                try BlockPartitions.removeAll(fd: handle.fd, disk: path, logger: logger)
            } catch {
                _ = imgtool_ioctl_int(handle.fd, IMGTOOL_LOOP_CLR_FD, 0)
                throw error
            }
        }
        return LoopDevice(number: number, handle: handle, options: options, flags: status.lo_flags, logger: logger)
    }

    /// Some kernels silently ignore settings; compare what the kernel holds with what we asked for.
    private func verify() throws(Error) {
        let status: loop_info64
        do { status = try Self.readStatus(fd, path: path) } catch { throw .system(error) }
        var mismatch: String?
        if status.lo_offset != options.offset { mismatch = "offset \(options.offset)" }
        if status.lo_sizelimit != options.sizeLimit { mismatch = "size limit \(options.sizeLimit)" }
        if status.lo_flags & IMGTOOL_LO_FLAGS_AUTOCLEAR == 0 { mismatch = "autoclear flag" }
        if options.readOnly && status.lo_flags & IMGTOOL_LO_FLAGS_READ_ONLY == 0 { mismatch = "read-only flag" }
        if options.blockSize != 0 {
            var size: Int32 = 0
            if imgtool_ioctl_ptr(fd, IMGTOOL_BLKSSZGET, &size) != 0 || UInt32(size) != options.blockSize {
                mismatch = "logical block size \(options.blockSize)"
            }
        }
        if let mismatch {
            try? detach()
            throw .settingsIgnored(device: path, what: mismatch)
        }
    }

    static func readStatus(_ fd: Int32, path: String) throws(SystemError) -> loop_info64 {
        var info = loop_info64()
        try shimCall("ioctl(LOOP_GET_STATUS64)", on: path, imgtool_ioctl_ptr(fd, IMGTOOL_LOOP_GET_STATUS64, &info))
        return info
    }

    /// A device imgtool attached earlier, found by its tag, so that what a dead session left can be
    /// released with `detach()`. nil when `path` is not bound or carries no imgtool tag.
    public static func adopt(_ path: String, logger: Logger) throws(Error) -> LoopDevice? {
        guard let number = Int(path.dropFirst("/dev/loop".count)), path.hasPrefix("/dev/loop") else { return nil }
        do {
            let handle = try FileHandle(path: path, flags: O_RDWR)
            guard let (info, name) = try boundStatus(handle.fd, path: path), name.hasPrefix(ResourceMarks.loopTagPrefix) else { return nil }
            let options = Options(offset: info.lo_offset, sizeLimit: info.lo_sizelimit, tag: String(name.dropFirst(ResourceMarks.loopTagPrefix.count)))
            return LoopDevice(number: number, handle: handle, options: options, flags: info.lo_flags, logger: logger)
        } catch {
            throw .system(error)
        }
    }

    /// The device node may lag LOOP_CTL_GET_FREE briefly where udev or devtmpfs create it.
    private static func openWhenPresent(_ path: String, flags: Int32) throws(SystemError) -> FileHandle {
        try retrying([ENOENT], attempts: 10) { () throws(SystemError) in try FileHandle(path: path, flags: flags) }
    }

    /// The tag (lo_file_name) of an attached loop device, or nil if it is not bound. Wraps
    /// ioctl(LOOP_GET_STATUS64).
    public static func fileName(ofDevice path: String) throws(SystemError) -> String? {
        let handle = try FileHandle(path: path, flags: O_RDONLY)
        return try boundStatus(handle.fd, path: path)?.name
    }

    /// The status and lo_file_name of the device open at `fd`; nil when it is not bound (ENXIO).
    /// Wraps ioctl(2) with LOOP_GET_STATUS64.
    private static func boundStatus(_ fd: Int32, path: String) throws(SystemError) -> (info: loop_info64, name: String)? {
        var info = loop_info64()
        let r = imgtool_ioctl_ptr(fd, IMGTOOL_LOOP_GET_STATUS64, &info)
        if r == -ENXIO { return nil }
        try shimCall("ioctl(LOOP_GET_STATUS64)", on: path, r)
        var buf = [CChar](repeating: 0, count: Int(IMGTOOL_LO_NAME_SIZE) + 1)
        imgtool_loop_info_get_file_name(&info, &buf)
        return (info, buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
    }

    /// Detaches: removes BLKPG partitions (they would outlive the device), LOOP_CLR_FD (retrying
    /// EBUSY), closes our descriptor, then asks the kernel until it confirms the device is unbound.
    /// The kernel finishes the detach asynchronously after the last close, so the exit code of
    /// LOOP_CLR_FD alone proves nothing. Idempotent; after a `stillAttached` error a second call
    /// asks the kernel again.
    public func detach() throws(Error) {
        try releasing.withLock { _ throws(Error) in try detachOnce() }
    }

    /// Sendable: concurrent `detach()` calls run one after the other (the state they change is
    /// only touched under this lock, and by deinit).
    private let releasing = Mutex(())

    private func detachOnce() throws(Error) {
        guard !detached else { return }
        if !cleared {
            do {
                try BlockPartitions.removeAll(fd: fd, disk: path, logger: logger)
                let r = imgtool_ioctl_int(fd, IMGTOOL_LOOP_CLR_FD, 0)
                if r < 0 && r != -ENXIO {
                    try retrying([EBUSY]) { () throws(SystemError) in
                        let r = imgtool_ioctl_int(fd, IMGTOOL_LOOP_CLR_FD, 0)
                        if r != -ENXIO { try shimCall("ioctl(LOOP_CLR_FD)", on: path, r) }
                    }
                }
            } catch {
                throw .system(error)
            }
            handle.close()
            cleared = true
        }
        let expectedName = tag
        for attempt in 1...60 {
            switch Result(catching: { () throws(SystemError) in try Self.fileName(ofDevice: path) }) {
            case .success(nil):
                detached = true
                logger.debug("detached \(path)")
                return
            case .failure(let e) where e.errno == ENOENT:  // the node itself is gone: unbound
                detached = true
                logger.debug("detached \(path)")
                return
            case .success(let name?) where name != expectedName:  // already reused by someone else
                detached = true
                return
            default: backoffSleep(attempt: attempt, baseMicroseconds: 1_000, capMicroseconds: 50_000)
            }
        }
        throw .stillAttached(device: path)
    }

    /// Best effort only: closing the descriptor lets AUTOCLEAR detach the device.
    deinit {
        if !cleared {
            try? BlockPartitions.removeAll(fd: fd, disk: path, logger: logger)
            handle.close()
        }
    }
}
