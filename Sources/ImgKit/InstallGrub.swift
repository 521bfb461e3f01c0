import Glibc
import ImgFormats
import ImgSystem
import Logging

/// Installs GRUB 2 for BIOS (i386-pc) into a partitioned disk image with the distribution's
/// grub-install, and leaves nothing attached or mounted behind.
///
/// ```swift
/// let result = try InstallGrub.run(.init(image: "disk.img"), logger: Logger(label: "installer"))
/// ```
public enum InstallGrub {
    /// What to install into, and how.
    public struct Options: Sendable {
        /// The image file or block device.
        public var image: String
        /// nil picks the first strategy this kernel supports (`Strategy.automaticOrder`).
        public var strategy: Strategy?
        /// The device-mapper disk's name (strategy device-mapper); nil: `imgtool-<session>`.
        public var diskName: String?
        /// The partition for /boot/grub; nil finds it.
        public var bootPartition: Int?
        /// More GRUB modules to build into core.img.
        public var modules: [String]
        /// Passes each line grub-install prints to the logger at info level.
        public var showGrubOutput: Bool
        /// Run the whole job inside a throwaway VM instead of on this kernel (`Isolation`).
        public var isolation: Isolation?

        /// Options for `image`; every other choice defaults to automatic.
        public init(image: String, strategy: Strategy? = nil, diskName: String? = nil, bootPartition: Int? = nil,
                    modules: [String] = [], showGrubOutput: Bool = false, isolation: Isolation? = nil) {
            self.isolation = isolation
            self.image = image
            self.strategy = strategy
            self.diskName = diskName
            self.bootPartition = bootPartition
            self.modules = modules
            self.showGrubOutput = showGrubOutput
        }
    }

    /// What an install did, and what `imgtool install-grub --json` prints (its Codable form).
    public struct Result: Sendable, Equatable {
        /// Where /boot/grub went.
        public struct BootPartition: Sendable, Equatable {
            /// The partition's number in the image's table.
            public let number: Int
            /// The node grub-install saw it as (/dev/loop0p1, /dev/mapper/hda1, /dev/vda1).
            public let device: String
            /// The filesystem /boot/grub is on.
            public let filesystem: FilesystemKind
            /// The filesystem's UUID.
            public let uuid: String?

            /// Makes a value, for an embedder's tests.
            public init(number: Int, device: String, filesystem: FilesystemKind, uuid: String?) {
                self.number = number
                self.device = device
                self.filesystem = filesystem
                self.uuid = uuid
            }
        }

        /// The path as given.
        public let image: String
        /// How the image was presented as a disk.
        public let strategy: Strategy
        /// The whole-disk node grub-install got (/dev/loop0, /dev/mapper/imgtool-0a1b2c3d, /dev/vda).
        public let diskDevice: String
        /// The partition /boot/grub went into.
        public let bootPartition: BootPartition
        /// The GRUB platform installed (i386-pc).
        public let target: GrubTarget
        /// grub-install's package version ("2.06-13+deb12u2"), when it can be read.
        public let grubInstallVersion: String?
        /// Wall time of the whole run.
        public let seconds: Double

        /// Makes a value, for an embedder's tests.
        public init(image: String, strategy: Strategy, diskDevice: String, bootPartition: BootPartition,
                    target: GrubTarget, grubInstallVersion: String?, seconds: Double) {
            self.image = image
            self.strategy = strategy
            self.diskDevice = diskDevice
            self.bootPartition = bootPartition
            self.target = target
            self.grubInstallVersion = grubInstallVersion
            self.seconds = seconds
        }
    }

    /// Runs the whole job. `interruption` lets a signal handler or another thread stop it; the
    /// teardown still runs. Wraps grub-install(8).
    public static func run(_ options: Options, logger: Logger,
                           interruption: Interruption = Interruption()) throws(InstallGrubError) -> Result {
        if let isolation = options.isolation {
            return try runIsolated(options, isolation: isolation, logger: logger, interruption: interruption)
        }
        let started = monotonicNow()
        logger.info("checking \(options.image)")
        let plan = try InstallPlan.run(options, logger: logger)
        let lock: ImageLock
        do { lock = try ImageLock(path: options.image) } catch { throw .busy(error) }
        defer { withExtendedLifetime(lock) {} }
        guard geteuid() == 0 else { throw .notRoot(path: options.image) }

        let order = try strategies(for: options.strategy ?? (options.diskName != nil ? .deviceMapper : nil), logger: logger)
        logger.info("\(plan.table.kind.rawValue) label, /boot on partition \(plan.bootPartition.number) (\(plan.bootFilesystem.type)), core.img goes into \(plan.embeddingDescription)")

        let session: Session
        do {
            session = try Session(logger: logger, interruption: interruption, journalFor: plan.image)
        } catch {
            throw .sessionJournal(error)
        }
        let outcome: Swift.Result<PresentedDisk, InstallGrubError>
        do {
            outcome = .success(try install(plan, options: options, order: order, session: session))
        } catch {
            outcome = .failure(error)
        }
        let failures = session.close()
        switch outcome {
        case .success(let presented):
            guard failures.isEmpty else { throw .cleanupFailed(failures, after: nil) }
            try flushImage(plan.image)
            logger.info("done: \(options.image) boots GRUB from partition \(plan.bootPartition.number); nothing left attached")
            return Result(
                image: plan.image, strategy: presented.strategy, diskDevice: presented.diskDevice,
                bootPartition: .init(number: plan.bootPartition.number, device: presented.bootDevice,
                                     filesystem: FilesystemKind(plan.bootFilesystem.type), uuid: plan.bootFilesystem.uuid),
                target: GrubTools.target, grubInstallVersion: GrubTools.version(),
                seconds: monotonicNow() - started)
        case .failure(let error):
            guard failures.isEmpty else { throw .cleanupFailed(failures, after: error.description) }
            throw error
        }
    }

    /// The job in a throwaway VM: the same imgtool runs it there through ImgKit, from a structured
    /// request, and hands back the result or the typed error (`IsolatedRequest`). Its log lines
    /// reach `logger`; `interruption` stops the VM as it stops a local run.
    static func runIsolated(_ options: Options, isolation: Isolation, logger: Logger,
                            interruption: Interruption) throws(InstallGrubError) -> Result {
        var local = options
        local.isolation = nil
        var isolation = isolation
        isolation.vm.interruption = interruption
        return try IsolatedRequest(.installGrub(local), logLevel: logger.logLevel)
            .send(through: isolation, logger: logger, errors: InstallGrubError.self, decode: Result.init(json:))
    }

    /// grub-install fsyncs every file it copies (over 300), and each fsync of a journalling
    /// filesystem on a loop device makes the loop driver flush the whole image file: half of
    /// grub-install's time. Without barriers those flushes go away, and one fsync of the image once
    /// everything is detached makes the result durable. A crash in between leaves an unfinished
    /// install either way.
    static let fastWriteOptions = ["ext3": "barrier=0", "ext4": "barrier=0"]

    /// Makes the finished image durable. Wraps fsync(2).
    private static func flushImage(_ path: String) throws(InstallGrubError) {
        do {
            let h = try FileHandle(path: path, flags: O_RDONLY)
            try systemCall("fsync", on: path) { fsync(h.fd) }
        } catch {
            throw .system(error)
        }
    }

    private static func strategies(for requested: Strategy?, logger: Logger) throws(InstallGrubError) -> [Strategy] {
        let hasUdevadm = Subprocess.find("udevadm") != nil
        if let requested {
            // grub-probe finds a partition's disk through udevadm for kernel partitions; device-mapper
            // maps it reads through libdevmapper.
            try GrubTools.requireInstalled(needsUdevadm: requested == .partscan || requested == .blkpg)
            if requested == .deviceMapper {
                // Before anything is attached: the usual reason is a kernel without device mapper.
                do { try DeviceMapper.checkAvailable(logger: logger) } catch {
                    throw .strategyUnavailable(requested, reason: error.description)
                }
            }
            return [requested]
        }
        try GrubTools.requireInstalled(needsUdevadm: false)
        if !hasUdevadm {
            // grub-probe locates kernel partitions through udevadm; without it, only the strategies
            // that need no kernel partitions work.
            logger.debug("udevadm not found: trying device-mapper, then offset")
            return [.blockDevice, .deviceMapper, .offset]
        }
        return Strategy.automaticOrder
    }

    /// Everything between pre-flight and teardown; what it acquires is released by the caller.
    private static func install(_ plan: InstallPlan, options: Options, order: [Strategy],
                                session: Session) throws(InstallGrubError) -> PresentedDisk {
        do {
            try session.checkpoint()
            let disk = ImageDisk(plan: plan, session: session, partitionScan: order.contains(.partscan))
            let presented = try present(disk: disk, plan: plan, options: options, order: order, session: session)
            session.logger.info("strategy \(presented.strategy.rawValue): boot partition is \(presented.bootDevice)")
            try session.checkpoint()

            // The directory's name is random past its prefix: the journal names the prefix.
            let prefix = ResourceMarks.mountDirectoryPrefix(session: session.id)
            try session.acquiring(.directory, TemporaryDirectory.defaultParent + "/" + prefix)
            let mountPoint = try TemporaryDirectory(prefix: prefix)
            session.onClose(mountPoint.path, journal: .init(.directory, TemporaryDirectory.defaultParent + "/" + prefix)) {
                try mountPoint.remove()
            }
            try session.acquiring(.mount, mountPoint.path)
            let mount = try Mount(source: presented.bootDevice, target: mountPoint.path,
                                  filesystemType: plan.bootFilesystem.type,
                                  data: fastWriteOptions[plan.bootFilesystem.type], logger: session.logger)
            session.onClose("mount \(mountPoint.path)", journal: .init(.mount, mountPoint.path)) { try mount.unmount() }
            session.logger.info("mounted \(presented.bootDevice) on \(mountPoint.path)")

            let bootDirectory = try BootDirectory.prepare(mountPoint: mountPoint.path, plan: plan)
            try BootDirectory.writeDeviceMap(.firstHardDisk(presented.diskDevice), bootDirectory: bootDirectory,
                                             session: session)
            try session.checkpoint()

            let modules = presented.extraModules + options.modules
            var arguments = ["grub-install", "--target=\(GrubTools.target)", "--boot-directory=\(bootDirectory)"]
            if !modules.isEmpty { arguments.append("--modules=\(modules.joined(separator: " "))") }
            arguments.append(presented.diskDevice)
            try session.step("grub-install")
            session.logger.info("running \(arguments.joined(separator: " "))")
            let logger = session.logger
            // setpriv --pdeathsig: should imgtool itself be killed (SIGKILL leaves no teardown),
            // grub-install dies with it instead of writing on into a disk nobody watches.
            let run = try Subprocess.run(["setpriv", "--pdeathsig", "KILL", "--"] + arguments, interruption: session.interruption,
                                         onLine: options.showGrubOutput ? { logger.info("grub-install: \($0)") } : nil)
            try session.checkpoint()
            guard run.succeeded else { throw InstallGrubError.grubToolFailed(tool: "grub-install", status: run.status, stderr: run.stderr) }
            return presented
        } catch let e as InstallGrubError {
            throw e
        } catch let e as Session.Interrupted {
            throw .interrupted(signal: e.signal)
        } catch {
            throw InstallGrubError(wrapping: error)
        }
    }

    private static func present(disk: ImageDisk, plan: InstallPlan, options: Options, order: [Strategy],
                                session: Session) throws -> PresentedDisk {
        var reasons: [String] = []
        for strategy in order {
            do {
                return try strategy.presentation.present(disk: disk, plan: plan, options: options, session: session)
            } catch let unavailable as PresentationUnavailable {
                session.logger.debug("strategy \(strategy.rawValue) unavailable: \(unavailable.reason)")
                reasons.append(unavailable.reason)
                if order.count == 1 { throw InstallGrubError.strategyUnavailable(strategy, reason: unavailable.reason) }
            }
        }
        throw InstallGrubError.noStrategyWorked(path: plan.image, reasons: reasons)
    }
}

extension InstallPlan {
    var embeddingDescription: String {
        switch embedding.kind {
        case .postMBRGap: return "the post-MBR gap (\(embedding.sectorCount) sectors)"
        case .biosBootPartition(let n): return "BIOS boot partition \(n) (\(embedding.sectorCount) sectors)"
        }
    }
}

