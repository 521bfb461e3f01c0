import Glibc
import ImgFormats
import ImgSystem
import Logging

/// Installs GRUB 2 for BIOS (i386-pc), UEFI (x86_64-efi, at the removable path) or both into a
/// partitioned disk image with the distribution's grub-install, and leaves nothing attached or
/// mounted behind.
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
        /// The firmware to install for; nil chooses from the layout (`Firmware.chosen`).
        public var firmware: Firmware?
        /// UEFI through Debian's Microsoft-signed shim and signed GRUB, for firmware that enforces
        /// Secure Boot; without it the UEFI loader is GRUB's own unsigned image.
        public var secureBoot: Bool
        /// Offline: the time written into the files' records (`Create` passes SOURCE_DATE_EPOCH or
        /// its seed's time, for the same bytes on every run); nil: now.
        public var recordedTime: Int64?
        /// Offline: write the image file itself instead of a copy renamed over it. Only for a
        /// file no one else has yet (`Create`'s unfinished image), discarded if the install fails.
        package var writesInPlace = false

        /// Options for `image`; every other choice defaults to automatic.
        public init(image: String, strategy: Strategy? = nil, diskName: String? = nil, bootPartition: Int? = nil,
                    modules: [String] = [], showGrubOutput: Bool = false, isolation: Isolation? = nil,
                    firmware: Firmware? = nil, secureBoot: Bool = false) {
            self.isolation = isolation
            self.firmware = firmware
            self.secureBoot = secureBoot
            self.image = image
            self.strategy = strategy
            self.diskName = diskName
            self.bootPartition = bootPartition
            self.modules = modules
            self.showGrubOutput = showGrubOutput
        }
    }

    /// The firmware an install is for.
    public enum Firmware: String, Sendable, CaseIterable, Codable {
        /// BIOS: GRUB's i386-pc core.img in the post-MBR gap or the BIOS boot partition.
        case bios
        /// UEFI: GRUB's x86_64-efi image at the removable path, \EFI\BOOT\BOOTX64.EFI, of the EFI
        /// system partition (firmware starts it on a disk it has no NVRAM entry for).
        case uefi
        /// Both, with one /boot/grub (one grub.cfg) reached from either.
        case hybrid

        /// The GRUB platforms it installs.
        public var targets: [GrubTarget] {
            switch self {
            case .bios: return [.i386PC]
            case .uefi: return [.x86_64EFI]
            case .hybrid: return [.i386PC, .x86_64EFI]
            }
        }

        /// What the layout asks for: an EFI system partition and no place for core.img means
        /// UEFI, a place for core.img and no ESP means BIOS, both mean both.
        public static func chosen(hasESP: Bool, hasBIOSPlace: Bool) -> Firmware {
            hasESP ? (hasBIOSPlace ? .hybrid : .uefi) : .bios
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

        /// Where one firmware's loader went.
        public struct Loader: Sendable, Equatable {
            /// The firmware that starts it (`.bios` or `.uefi`).
            public let firmware: Firmware
            /// The partition holding it: the BIOS boot partition or the EFI system partition; nil
            /// for the post-MBR gap.
            public let partition: Int?
            /// Where in it: "post-MBR gap", "BIOS boot partition", "/EFI/BOOT/BOOTX64.EFI".
            public let location: String

            /// Makes a value, for an embedder's tests.
            public init(firmware: Firmware, partition: Int?, location: String) {
                self.firmware = firmware
                self.partition = partition
                self.location = location
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
        /// The GRUB platform installed (i386-pc, x86_64-efi; for a hybrid install the BIOS one).
        public let target: GrubTarget
        /// The firmware installed for.
        public let firmware: Firmware
        /// Where each firmware's loader went.
        public let loaders: [Loader]
        /// The UEFI loader is Debian's signed shim, which starts the signed GRUB.
        public let secureBoot: Bool
        /// grub-install's package version ("2.06-13+deb12u2"), when it can be read.
        public let grubInstallVersion: String?
        /// Wall time of the whole run.
        public let seconds: Double

        /// Makes a value, for an embedder's tests.
        public init(image: String, strategy: Strategy, diskDevice: String, bootPartition: BootPartition,
                    target: GrubTarget, firmware: Firmware = .bios, loaders: [Loader] = [], secureBoot: Bool = false,
                    grubInstallVersion: String?, seconds: Double) {
            self.secureBoot = secureBoot
            self.image = image
            self.strategy = strategy
            self.diskDevice = diskDevice
            self.bootPartition = bootPartition
            self.target = target
            self.firmware = firmware
            self.loaders = loaders
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
        if options.strategy == .offline || (options.strategy == nil && options.diskName == nil && !LoopDevice.usable()) {
            return try runOffline(plan, options: options, logger: logger, interruption: interruption, started: started)
        }
        guard geteuid() == 0 else { throw .notRoot(path: options.image) }
        try releaseLeftovers(of: plan.image, logger: logger)

        let order = try strategies(for: options.strategy ?? (options.diskName != nil ? .deviceMapper : nil),
                                   targets: plan.firmware.targets, secureBoot: plan.secureBoot, logger: logger)
        logger.info("\(plan.table.kind.rawValue) label, \(plan.firmware.rawValue), /boot on partition \(plan.bootPartition.number) (\(plan.bootFilesystem.type)); \(plan.loaders.map(\.description).joined(separator: ", "))")

        let session: Session
        do {
            // Absolute, so that a later run, from anywhere, knows the image for its own.
            session = try Session(logger: logger, interruption: interruption, journalFor: (try? realPath(plan.image)) ?? plan.image)
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
                target: plan.firmware.targets[0], firmware: plan.firmware, loaders: plan.loaders, secureBoot: plan.secureBoot,
                grubInstallVersion: GrubTools.version(), seconds: monotonicNow() - started)
        case .failure(let error):
            guard failures.isEmpty else { throw .cleanupFailed(failures, after: error.description) }
            throw error
        }
    }

    /// The offline strategy (`OfflineInstall`): no root, no loop device, no mount. The caller
    /// holds the image's lock.
    static func runOffline(_ plan: InstallPlan, options: Options, logger: Logger, interruption: Interruption,
                           started: Double) throws(InstallGrubError) -> Result {
        logger.info("\(plan.table.kind.rawValue) label, \(plan.firmware.rawValue), /boot on partition \(plan.bootPartition.number) (\(plan.bootFilesystem.type)), offline")
        try GrubTools.requireInstalled(needsUdevadm: false, targets: plan.firmware.targets, offline: true,
                                       writesFAT: plan.bootFilesystem.type == "vfat")
        if plan.secureBoot { try GrubTools.requireSigned() }
        if !options.writesInPlace { try prepareReplacement(of: plan.image, logger: logger) }
        let session = Session(logger: logger, interruption: interruption)
        defer { session.close() }
        try OfflineInstall.run(plan, options: options, session: session)
        logger.info("done: \(options.image) boots GRUB from partition \(plan.bootPartition.number); nothing was attached or mounted")
        return Result(
            image: plan.image, strategy: .offline, diskDevice: plan.image,
            bootPartition: .init(number: plan.bootPartition.number, device: "partition \(plan.bootPartition.number) of \(plan.image)",
                                 filesystem: FilesystemKind(plan.bootFilesystem.type), uuid: plan.bootFilesystem.uuid),
            target: plan.firmware.targets[0], firmware: plan.firmware, loaders: plan.loaders, secureBoot: plan.secureBoot,
            grubInstallVersion: GrubTools.version(), seconds: monotonicNow() - started)
    }

    /// What an image file replaced by a working copy needs, checked before the copy is made: the
    /// image and its directory writable. Removes the names runs killed mid-rename left beside it.
    /// The caller holds the image's lock.
    private static func prepareReplacement(of image: String, logger: Logger) throws(InstallGrubError) {
        guard (try? fileStatus(image).st_mode & S_IFMT) == S_IFREG else { return }
        if !accessible(image, W_OK) { throw .notWritable(path: image, what: "the image") }
        if !accessible(WorkingCopy.directory(of: image), W_OK | X_OK) { throw .notWritable(path: image, what: "its directory") }
        for name in WorkingCopy.removeLeftovers(of: image) { logger.notice("removed \(name), left by a run killed as it replaced the image") }
    }

    /// The job in a throwaway VM: the same imgtool runs it there through ImgKit, from a structured
    /// request, and hands back the result or the typed error (`IsolatedRequest`). Its log lines
    /// reach `logger`; `interruption` stops the VM as it stops a local run.
    ///
    /// Unless a loop strategy is asked for, the guest installs offline (grub-mkimage, libext2fs,
    /// mtools; no loop device, mount or grub-install in the VM), which is quicker under TCG. An
    /// image file is then the guest's disk only through a working copy the host made, renamed
    /// over the image once the guest has answered, so a killed VM or a failed install leaves the
    /// image as it was; a block device is written in place.
    static func runIsolated(_ options: Options, isolation: Isolation, logger: Logger,
                            interruption: Interruption) throws(InstallGrubError) -> Result {
        var local = options
        local.isolation = nil
        var isolation = isolation
        isolation.vm.interruption = interruption
        func send(_ local: Options, _ isolation: Isolation) throws(InstallGrubError) -> Result {
            try IsolatedRequest(.installGrub(local), logLevel: logger.logLevel)
                .send(through: isolation, logger: logger, errors: InstallGrubError.self, decode: Result.init(json:))
        }
        guard options.strategy == .offline || (options.strategy == nil && options.diskName == nil) else {
            return try send(local, isolation)
        }
        local.strategy = .offline
        isolation.installStrategy = .offline
        guard (try? fileStatus(options.image).st_mode & S_IFMT) == S_IFREG else { return try send(local, isolation) }

        let lock: ImageLock
        do { lock = try ImageLock(path: options.image) } catch { throw .busy(error) }
        defer { withExtendedLifetime(lock) {} }
        try prepareReplacement(of: options.image, logger: logger)
        let copy: WorkingCopy
        do { copy = try WorkingCopy(of: options.image) } catch { throw .system(error) }
        logger.debug(copy.cloned ? "cloned \(options.image) for the VM" : "copied \(copy.copiedBytes) bytes of \(options.image) for the VM")
        isolation.disk = copy.path
        let result = try send(local, isolation)
        do { try copy.commit(tag: Session.newID()) } catch { throw .system(error) }
        return result
    }

    /// Releases what killed runs left on this image, as `imgtool cleanup` would, before anything
    /// else is attached: a mount of its filesystems still there, or an ESP write stopped halfway,
    /// whose old blocks go back (`UndoFile`). The caller holds the image's lock.
    private static func releaseLeftovers(of image: String, logger: Logger) throws(InstallGrubError) {
        for stale in Sessions.stale(on: image) {
            let held = stale.holds.isEmpty ? "" : ": " + stale.holds.map(\.description).joined(separator: ", ")
            logger.notice("releasing what a killed imgtool run (session \(stale.id)) left on \(image)\(held)")
            let result = Sessions.cleanup(session: stale.id, force: false, logger: logger)
            guard result.failed.isEmpty, result.pending.isEmpty else {
                throw .leftovers(path: image, session: stale.id,
                                 failures: result.failed + result.pending.map { .init(resource: $0, reason: "still in use") })
            }
        }
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

    private static func strategies(for requested: Strategy?, targets: [GrubTarget], secureBoot: Bool,
                                   logger: Logger) throws(InstallGrubError) -> [Strategy] {
        if secureBoot { try GrubTools.requireSigned() }
        let hasUdevadm = Subprocess.find("udevadm") != nil
        if let requested {
            // grub-probe finds a partition's disk through udevadm for kernel partitions; device-mapper
            // maps it reads through libdevmapper.
            try GrubTools.requireInstalled(needsUdevadm: requested == .partscan || requested == .blkpg, targets: targets)
            if requested == .deviceMapper {
                // Before anything is attached: the usual reason is a kernel without device mapper.
                do { try DeviceMapper.checkAvailable(logger: logger) } catch {
                    throw .strategyUnavailable(requested, reason: error.description)
                }
            }
            return [requested]
        }
        try GrubTools.requireInstalled(needsUdevadm: false, targets: targets)
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

            // /boot/grub: in the mounted boot filesystem, or, when it is the EFI system partition
            // (which this kernel cannot mount), in the staging area its files are copied from.
            let staging = try plan.esp == nil ? nil : stagingArea(for: presented, session: session)
            let bootDirectory: String
            if plan.bootOnESP, let staging {
                bootDirectory = staging + "/boot"
                for dir in [bootDirectory, bootDirectory + "/grub"] {
                    try systemCall("mkdir", on: dir) { mkdir(dir, 0o755) }
                }
            } else {
                let mountPoint = try temporaryDirectory(session: session, prefix: ResourceMarks.mountDirectoryPrefix(session: session.id))
                try session.acquiring(.mount, mountPoint)
                let mount = try Mount(source: presented.bootDevice, target: mountPoint,
                                      filesystemType: plan.bootFilesystem.type,
                                      data: fastWriteOptions[plan.bootFilesystem.type], logger: session.logger)
                session.onClose("mount \(mountPoint)", journal: .init(.mount, mountPoint)) { try mount.unmount() }
                session.logger.info("mounted \(presented.bootDevice) on \(mountPoint)")
                bootDirectory = try BootDirectory.prepare(mountPoint: mountPoint, plan: plan)
            }
            try session.checkpoint()

            let modules = presented.extraModules + options.modules
            if plan.firmware != .uefi {
                try BootDirectory.writeDeviceMap(.firstHardDisk(presented.diskDevice), bootDirectory: bootDirectory,
                                                 session: session)
                try runGrubInstall(["--target=\(GrubTarget.i386PC)", "--boot-directory=\(bootDirectory)"], modules: modules,
                                   disk: presented.diskDevice, step: "grub-install", options: options, session: session)
            }
            if plan.firmware != .bios, let staging, let esp = presented.espDevice {
                // The removable path, and never the host's NVRAM: the image boots on any machine.
                // Debian's grub-install lays out shim and the signed GRUB whenever the signed package
                // is installed, unless told not to: the choice is always made explicitly.
                try runGrubInstall(["--target=\(GrubTarget.x86_64EFI)", "--removable", "--no-nvram", "--efi-directory=\(staging)",
                                    "--boot-directory=\(bootDirectory)", plan.secureBoot ? "--uefi-secure-boot" : "--no-uefi-secure-boot"],
                                   modules: modules, disk: nil, step: "grub-install x86_64-efi", options: options, session: session)
                try ESPWriter.copy(staging: staging, plan: plan, to: esp, session: session)
            }
            return presented
        } catch {
            throw InstallGrubError(wrapping: error)
        }
    }

    /// Runs grub-install with `arguments` (and `disk` last, for BIOS) as fault-injection step
    /// `step`. setpriv --pdeathsig: should imgtool itself be killed (SIGKILL leaves no teardown),
    /// grub-install dies with it instead of writing on into a disk nobody watches.
    private static func runGrubInstall(_ arguments: [String], modules: [String], disk: String?, step: String,
                                       options: Options, session: Session) throws {
        var arguments = ["grub-install"] + arguments
        if !modules.isEmpty { arguments.append("--modules=\(modules.joined(separator: " "))") }
        if let disk { arguments.append(disk) }
        try session.step(step)
        session.logger.info("running \(arguments.joined(separator: " "))")
        let logger = session.logger
        let run = try Subprocess.run(["setpriv", "--pdeathsig", "KILL", "--"] + arguments, interruption: session.interruption,
                                     onLine: options.showGrubOutput ? { logger.info("grub-install: \($0)") } : nil)
        try session.checkpoint()
        guard run.succeeded else { throw InstallGrubError.grubToolFailed(tool: "grub-install", status: run.status, stderr: run.stderr) }
    }

    /// A directory of the session's, removed when it closes; `prefix` is what the journal names.
    private static func temporaryDirectory(session: Session, prefix: String) throws -> String {
        // The directory's name is random past its prefix: the journal names the prefix.
        try session.acquiring(.directory, TemporaryDirectory.defaultParent + "/" + prefix)
        let directory = try TemporaryDirectory(prefix: prefix)
        session.onClose(directory.path, journal: .init(.directory, TemporaryDirectory.defaultParent + "/" + prefix)) {
            try directory.remove()
        }
        return directory.path
    }

    /// Where grub-install writes the EFI system partition's files: a tmpfs mounted with the ESP's
    /// device node as its source. grub-install finds the device of --efi-directory in
    /// /proc/self/mountinfo and reads its filesystem itself (GRUB's own FAT driver, in user
    /// space), so it accepts the ESP without the kernel mounting it; this kernel has no vfat.
    /// What it writes there is then copied into the ESP (`ESPWriter`).
    private static func stagingArea(for presented: PresentedDisk, session: Session) throws -> String {
        guard let esp = presented.espDevice else { throw SystemError("no device for the EFI system partition", on: presented.diskDevice, errno: ENODEV) }
        let staging = try temporaryDirectory(session: session, prefix: ResourceMarks.mountDirectoryPrefix(session: session.id) + "esp-")
        try session.acquiring(.mount, staging)
        let mount = try Mount(source: esp, target: staging, filesystemType: "tmpfs", data: "mode=0755,size=256m", logger: session.logger)
        session.onClose("mount \(staging)", journal: .init(.mount, staging)) { try mount.unmount() }
        return staging
    }

    private static func present(disk: ImageDisk, plan: InstallPlan, options: Options, order: [Strategy],
                                session: Session) throws -> PresentedDisk {
        var reasons: [String] = []
        for strategy in order {
            guard let presentation = strategy.presentation else { continue }
            do {
                return try presentation.present(disk: disk, plan: plan, options: options, session: session)
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
    /// Where each firmware's loader goes.
    var loaders: [InstallGrub.Result.Loader] {
        var loaders: [InstallGrub.Result.Loader] = []
        if let embedding {
            switch embedding.kind {
            case .postMBRGap: loaders.append(.init(firmware: .bios, partition: nil, location: "post-MBR gap"))
            case .biosBootPartition(let n): loaders.append(.init(firmware: .bios, partition: n, location: "BIOS boot partition"))
            }
        }
        if let esp { loaders.append(.init(firmware: .uefi, partition: esp.number, location: "/EFI/BOOT/BOOTX64.EFI")) }
        return loaders
    }
}

extension InstallGrub.Result.Loader: CustomStringConvertible {
    /// "uefi: /EFI/BOOT/BOOTX64.EFI on partition 1", "bios: post-MBR gap".
    public var description: String {
        "\(firmware.rawValue): \(location)" + (partition.map { location.hasPrefix("/") ? " on partition \($0)" : " \($0)" } ?? "")
    }
}

