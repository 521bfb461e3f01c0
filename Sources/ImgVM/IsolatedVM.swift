import Glibc
import ImgFormats
import ImgSystem
import Logging

/// Runs one command inside a throwaway VM instead of on the host kernel: Debian's cloud kernel
/// (`CloudKernel`) under qemu (`KernelVM`), booted from an initramfs assembled from the host's own
/// files (`Initramfs`), with the image as the VM's virtio disk /dev/vda. The foundation of
/// `--isolate` and of the device-mapper strategy on hosts without device mapper.
///
/// ```swift
/// let r = try IsolatedVM.run(command: ["/usr/sbin/grub-install", "/dev/vda"], image: "disk.img",
///                            readOnly: false, timeout: 60)
/// print(r.status, String(decoding: r.stdout, as: UTF8.self))
/// ```
///
/// The command goes in and its stdout, stderr and exit status come back over virtio-serial ports
/// (`GuestProtocol`, which also writes /init). qemu runs without network, default devices or user
/// config; q35 with virtio-pci; the image opened read-only by qemu itself (readonly=on, the guest
/// sees a read-only disk) when asked. KVM when a trial boot shows it works (`KVMTrial`), else TCG.
/// With a cache (`VMCache`), the uncompressed kernel is kept there and the booted VM is saved once
/// and resumed by later runs (`VMSnapshot`). Timeouts and an `Interruption` kill qemu's process
/// group; its temp dir goes in every case (`QemuProcess`).
public enum IsolatedVM {
    /// Seconds a run may take by default: boot (or resume), the command, power-off.
    public static let defaultTimeout = 60.0

    /// What the command did inside the VM.
    public struct Result: Sendable {
        /// The command's standard output, exactly.
        public let stdout: [UInt8]
        /// The command's standard error, exactly.
        public let stderr: [UInt8]
        /// The command's exit status, or 128 + the signal that ended it.
        public let status: Int32
        /// Wall time of the whole run: assembly, boot, command, power-off.
        public let seconds: Double
        /// Of that, qemu's lifetime.
        public let vmSeconds: Double
        /// What qemu ran the guest with.
        public let accelerator: KernelVM.Accelerator
        /// Whether the VM was resumed from a saved state (`VMSnapshot`) rather than booted.
        public var resumed = false
    }

    /// What goes into the VM besides the command, and how qemu runs it.
    public struct Options: Sendable {
        /// Host executables to include besides the command's own (its first word, when an absolute
        /// path on the host; otherwise it is looked up in the guest's PATH, where busybox applets are).
        public var executables: [String] = []
        /// Host directories to include at their paths (e.g. /usr/lib/grub/i386-pc).
        public var dataDirectories: [String] = []
        /// Host files to include at their paths.
        public var dataFiles: [String] = []
        /// Modules to load besides the virtio ones every VM loads (e.g. "dm_mod", "loop", "vfat").
        public var modules: [String] = []
        /// Modules to load when the guest kernel has them, and to leave out when it does not.
        public var optionalModules: [String] = []
        /// nil: KVM if a trial boot under it worked on this host (the verdict is cached), else TCG.
        public var accelerator: KernelVM.Accelerator?
        /// The board qemu emulates.
        public var machine: KernelVM.Machine = .q35
        /// qemu's -cpu; nil: "host" under KVM, "qemu64,+rdrand" under TCG (see `KernelVM.Configuration`).
        public var cpu: String?
        /// The guest's memory in MiB.
        public var memoryMiB = 256
        /// qemu's block driver for the image, given explicitly (qemu never probes it): "raw", or a
        /// self-contained container's ("qcow2", "vmdk", "vpc", "vhdx"), whose virtual disk the
        /// guest sees as /dev/vda. A container that names other files must not be given here.
        public var imageFormat = "raw"
        /// Where extracted kernels, KVM verdicts and assembled initramfs archives are kept; nil keeps
        /// nothing (every run then boots the compressed kernel and takes no KVM trial).
        public var cacheDirectory: String? = VMCache.defaultDirectory
        /// Boot the uncompressed ELF kernel (cached) when possible.
        public var uncompressedKernel = true
        /// Resume a VM saved in the cache, booted with the same kernel, qemu and files, instead of
        /// booting (saving one on the first run): see `VMSnapshot`.
        public var snapshots = true
        /// Added to the kernel command line.
        public var kernelArguments: [String] = []
        /// Stops the VM (qemu's process group is killed) and makes `run` throw `.interrupted`.
        public var interruption: Interruption?
        /// A static busybox: the guest's shell and tools (Debian package busybox-static).
        public var busybox = "/bin/busybox"

        /// The defaults: nothing extra in the VM, automatic accelerator, q35, 256 MiB, the cache.
        public init() {}
    }

    /// Why the command could not run in a VM, or the VM did not finish. `description` names the
    /// Debian package to install where something is missing.
    public enum Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        /// No guest kernel: which one was looked for.
        case kernelMissing(String)
        /// The kernel's modules directory is missing.
        case modulesMissing(release: String)
        /// A module the VM needs is not among the kernel's.
        case moduleMissing(module: String, release: String, detail: String)
        /// busybox (static) is missing: the path looked at.
        case busyboxMissing(String)
        /// A host executable to copy into the VM is missing: the path.
        case executableMissing(String)
        /// A shared library an executable needs cannot be found on the host.
        case libraryMissing(executable: String, library: String)
        /// A host tool imgtool runs is missing, with the Debian package that has it.
        case toolMissing(tool: String, package: String)
        /// qemu-system-x86_64 is not installed.
        case qemuMissing
        /// The image cannot be opened for qemu.
        case image(SystemError)
        /// The initramfs could not be assembled: why.
        case initramfs(String)
        /// `run` was given no command.
        case emptyCommand
        /// qemu ended before the guest printed anything: its complaint.
        case qemuFailed(status: Int32, stderr: String)
        /// The VM ended without the command's exit status: /init or the kernel failed.
        case noStatus(console: [String], qemuStderr: String)
        /// Killed after `seconds`; `commandStarted` tells a VM that never came up from a command that
        /// did not finish. `console` is the console's last lines.
        case timedOut(seconds: Double, commandStarted: Bool, console: [String])
        /// An `Interruption` stopped the VM.
        case interrupted(signal: Int32)
        /// A host system call failed.
        case system(SystemError)

        public var description: String {
            switch self {
            case .kernelMissing(let what):
                return "No kernel for the isolated VM: \(what). Install the Debian package linux-image-cloud-amd64."
            case .modulesMissing(let release):
                return "The modules of kernel \(release) are not in /lib/modules/\(release); install the Debian package linux-image-cloud-amd64 (or the linux-image package of that kernel)."
            case .moduleMissing(let module, let release, let detail):
                return "Kernel module \(module) cannot be found for \(release): \(detail). Install the Debian package linux-image-cloud-amd64."
            case .busyboxMissing(let path):
                return "\(path) is missing or not executable; install the Debian package busybox-static."
            case .executableMissing(let path):
                return "\(path) is missing or not executable on the host, so it cannot be copied into the isolated VM."
            case .libraryMissing(let executable, let library):
                return "ldd cannot find \(library), which \(executable) needs; install the package that provides it."
            case .toolMissing(let tool, let package):
                return "\(tool) is needed to assemble the isolated VM; install the Debian package \(package)."
            case .qemuMissing:
                return QemuProcess.missingMessage
            case .image(let e): return "Cannot use the image: \(e.description)."
            case .initramfs(let what): return "Cannot assemble the isolated VM's initramfs: \(what)."
            case .emptyCommand: return "No command was given to run in the isolated VM."
            case .qemuFailed(let status, let stderr):
                return "qemu exited with status \(status) before the VM started: \(stderr)"
            case .noStatus(let console, let qemuStderr):
                return "The isolated VM stopped before the command reported its exit status. Its console ended with:\n"
                    + console.joined(separator: "\n") + (qemuStderr.isEmpty ? "" : "\nqemu: \(qemuStderr)")
            case .timedOut(let seconds, let started, let console):
                let what = started ? "The command did not finish" : "The isolated VM did not come up"
                return "\(what) within \(Int(seconds.rounded())) s and was killed. Its console ended with:\n"
                    + console.joined(separator: "\n")
            case .interrupted(let signal): return "Interrupted by signal \(signal); the isolated VM was stopped."
            case .system(let e): return "\(e.description)."
            }
        }
    }

    /// Runs `command` in a fresh VM with `image` (if any) as /dev/vda, read-only if `readOnly`, and
    /// returns its stdout, stderr and exit status exactly. `timeout` covers boot, command and
    /// power-off; `kernel` defaults to the newest /boot/vmlinuz-*-cloud-amd64.
    public static func run(command: [String], image: String? = nil, readOnly: Bool = true,
                           timeout: Double = defaultTimeout, kernel: String? = nil, options: Options = Options(),
                           logger: Logger = Logger(label: "imgtool.isolated-vm")) throws(Error) -> Result {
        let started = monotonicNow()
        guard let program = command.first, !program.isEmpty else { throw .emptyCommand }
        if let image {
            do { try FileHandle(path: image, flags: readOnly ? O_RDONLY : O_RDWR).close() } catch { throw .image(error) }
        }
        guard Subprocess.find(KernelVM.qemuProgram) != nil else { throw .qemuMissing }

        let kernelPath: String
        if let kernel { kernelPath = kernel } else { kernelPath = try CloudKernel.newest() }
        let release = try CloudKernel.release(of: kernelPath)
        guard accessible("/lib/modules/\(release)/modules.dep", R_OK) else { throw .modulesMissing(release: release) }

        var initramfs = Initramfs(kernelRelease: release)
        initramfs.busybox = options.busybox
        initramfs.executables = (program.hasPrefix("/") && accessible(program, X_OK) && program != options.busybox ? [program] : [])
        for e in options.executables where !initramfs.executables.contains(e) { initramfs.executables.append(e) }
        initramfs.dataDirectories = options.dataDirectories
        initramfs.dataFiles = options.dataFiles
        initramfs.modules = [options.machine.virtioTransportModule] + GuestProtocol.baseModules + options.modules
        initramfs.optionalModules = options.optionalModules
        initramfs.deferredModules = GuestProtocol.diskModules
        var assembled: Initramfs.Assembled?
        func assemble() throws(Error) -> Initramfs.Assembled {
            if let assembled { return assembled }
            let assembleStarted = monotonicNow()
            let a = try initramfs.assemble()
            logger.debug("initramfs assembled", metadata: ["bytes": "\(a.archive.count)",
                                                            "seconds": "\(monotonicNow() - assembleStarted)"])
            assembled = a
            return a
        }

        let cache = options.cacheDirectory.flatMap { VMCache(preparing: $0) }
        var bootKernel = kernelPath
        if options.uncompressedKernel, let cache, let elf = CloudKernel.uncompressed(kernelPath, release: release, cache: cache, logger: logger) {
            bootKernel = elf
        }

        var configuration = KernelVM.Configuration(kernel: bootKernel, initrd: .bytes([]),
                                                   commandLine: GuestProtocol.kernelCommandLine(options.kernelArguments))
        configuration.machine = options.machine
        // The guest unpacks the archive into a RAM filesystem that may fill half its memory, and
        // holds the archive while it does: twice the payload and room to work, in 64 MiB steps.
        let payload = initramfs.payloadBytes()
        let needed = ((payload * 2) >> 20) + 160
        configuration.memoryMiB = max(options.memoryMiB, Int((needed + 63) / 64 * 64))
        logger.debug("guest memory", metadata: ["MiB": "\(configuration.memoryMiB)", "payload": "\(payload)"])
        configuration.cpu = options.cpu
        configuration.outputPorts = GuestProtocol.outputPorts
        configuration.inputPorts = [(GuestProtocol.commandPort,
                                     GuestProtocol.commandMessage(command, deadline: timeout + GuestProtocol.guestGrace))]
        if let image { configuration.disks = [KernelVM.Disk(path: image, readOnly: readOnly, format: options.imageFormat)] }
        configuration.accelerator = try KVMTrial.choose(options.accelerator, configuration: configuration,
                                                        archive: { () throws(Error) in try assemble().archive }, kernel: kernelPath,
                                                        cache: cache, interruption: options.interruption, logger: logger)

        // /init as GuestProtocol writes it, without the lines `initramfs` fills in (the snapshot's key
        // has those): a changed script retires the VMs saved with the old one.
        let initTemplate = GuestProtocol.initScript(path: "", libraryPath: "", moduleLoading: [], deferredModuleLoading: [],
                                                    busybox: initramfs.busybox)
        let snapshot = options.snapshots ? cache.flatMap {
            VMSnapshot(cache: $0, initramfs: initramfs, initTemplate: initTemplate, configuration: configuration)
        } : nil
        if let snapshot, snapshot.isUsable() {
            var resumed = configuration
            resumed.initrd = .bytes(VMSnapshot.placeholderInitrd)
            resumed.restoreState = snapshot.statePath
            let outcome = try runVM(resumed, timeout: timeout, interruption: options.interruption)
            if var r = try? result(of: outcome, timeout: timeout, started: started, accelerator: configuration.accelerator) {
                logger.debug("resumed the saved VM", metadata: ["state": "\(snapshot.statePath)"])
                r.resumed = true
                return r
            }
            if outcome.ending == .timedOut || !outcome.console.isEmpty {
                // The VM ran and the command did not finish: its own failure, not the snapshot's.
                return try result(of: outcome, timeout: timeout, started: started, accelerator: configuration.accelerator)
            }
            // qemu refused the state: boot instead, and save a new one.
            logger.debug("the saved VM could not be resumed; booting", metadata: ["qemu": "\(outcome.qemuErrors)"])
            snapshot.remove()
        }

        configuration.initrd = .bytes(try assemble().archive)
        if let snapshot, let sources = assembled?.sources, snapshot.prepare(sources: sources) {
            configuration.saveState = (snapshot.statePath, GuestProtocol.waitingMarker)
        }
        let outcome = try runVM(configuration, timeout: timeout, interruption: options.interruption)
        if let snapshot, configuration.saveState != nil {
            if let why = outcome.stateNotSaved {
                logger.debug("the VM was not saved", metadata: ["reason": "\(why)"])
                snapshot.remove()
            } else {
                logger.debug("saved the VM for later runs", metadata: ["state": "\(snapshot.statePath)"])
            }
        }
        return try result(of: outcome, timeout: timeout, started: started, accelerator: configuration.accelerator)
    }

    /// `KernelVM.run` with its errors as ours.
    static func runVM(_ configuration: KernelVM.Configuration, timeout: Double,
                      interruption: Interruption?) throws(Error) -> KernelVM.Outcome {
        do {
            return try KernelVM.run(configuration, timeout: timeout, interruption: interruption)
        } catch {
            switch error {
            case .qemuMissing: throw .qemuMissing
            case .kernelMissing(let path): throw .kernelMissing("\(path) cannot be read")
            case .interrupted(let signal): throw .interrupted(signal: signal)
            case .system(let e): throw .system(e)
            }
        }
    }

    /// Turns what came back into the command's result or the reason there is none.
    static func result(of outcome: KernelVM.Outcome, timeout: Double, started: Double,
                       accelerator: KernelVM.Accelerator) throws(Error) -> Result {
        if let status = GuestProtocol.exitStatus(outcome.ports) {
            return Result(stdout: outcome.ports[GuestProtocol.stdoutPort] ?? [], stderr: outcome.ports[GuestProtocol.stderrPort] ?? [],
                          status: status, seconds: monotonicNow() - started, vmSeconds: outcome.seconds,
                          accelerator: accelerator)
        }
        let console = outcome.consoleTail(20)
        switch outcome.ending {
        case .timedOut:
            let started = outcome.consoleTail(1000).contains { $0.hasPrefix(GuestProtocol.runningMarker) }
            throw .timedOut(seconds: timeout, commandStarted: started, console: console)
        case .exited(let status):
            if status != 0 && outcome.console.isEmpty {
                throw .qemuFailed(status: status, stderr: outcome.qemuErrors.split(separator: "\n").joined(separator: " "))
            }
            throw .noStatus(console: console, qemuStderr: outcome.qemuErrors.split(separator: "\n").joined(separator: " "))
        }
    }
}
