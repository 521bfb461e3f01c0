import Glibc
import ImgFormats
import ImgSystem
import Logging

/// Runs one command inside a throwaway VM instead of on the host kernel: Debian's cloud kernel
/// (linux-image-cloud-amd64) under qemu, booted from an initramfs assembled from the host's own
/// files (`Initramfs`), with the image as the VM's virtio disk /dev/vda. The foundation of
/// `--isolate` and of the device-mapper strategy on hosts without device mapper.
///
/// ```swift
/// let r = try IsolatedVM.run(command: ["/usr/sbin/grub-install", "/dev/vda"], image: "disk.img",
///                            readOnly: false, timeout: 60)
/// print(r.status, String(decoding: r.stdout, as: UTF8.self))
/// ```
///
/// **The channel.** The command line arrives on the virtio-serial port imgtool.command (its length,
/// a newline, then a `set -- 'a' 'b'` file /init sources), filled before qemu starts or, when the
/// VM is being saved (`VMSnapshot`), right after; so /init and the initramfs do not depend on it.
/// Results come back on three virtio-serial ports, each captured by qemu into its own file: imgtool.stdout and imgtool.stderr
/// are the command's stdout and stderr as they are (no tty, no line discipline: byte-exact, binary
/// included); imgtool.status gets the exit status as decimal text, written only after the command
/// ended and both its outputs are closed. A guest's blocking write to a port returns only once qemu
/// has taken the data, so when the status arrives the outputs are complete; a missing status means
/// the command never finished, whatever the outputs hold. The serial console (ttyS0) carries the
/// kernel's warnings and /init's progress lines ("imgtool-vm: ...") for error reports.
///
/// **The VM.** qemu without network, default devices or user config; q35 with virtio-pci; the image
/// opened read-only by qemu itself (readonly=on, the guest sees a read-only disk) when asked. KVM
/// when a trial boot shows it works (its verdict is cached per host, qemu and kernel), else TCG.
/// Under TCG the kernel boots from its uncompressed ELF (PVH entry), extracted once into the cache:
/// the bzImage's decompressor costs about a second there. With a cache, the booted VM is saved once and
/// resumed by later runs (`VMSnapshot`). Timeouts and an `Interruption` kill qemu's process group; its
/// temp dir goes in every case.
public enum IsolatedVM {
    public static let defaultTimeout = 60.0
    /// The virtio-serial port names of the protocol above.
    public static let stdoutPort = "imgtool.stdout", stderrPort = "imgtool.stderr", statusPort = "imgtool.status"
    /// The host → guest port that carries the command.
    public static let commandPort = "imgtool.command"
    /// Modules every VM loads at boot, besides the machine's virtio transport.
    public static let baseModules = ["virtio_console"]
    /// Modules loaded once the command has arrived: the disk driver, so that a VM resumed from a
    /// saved state probes the disk it has now, not the one it was saved with.
    public static let diskModules = ["virtio_blk"]
    /// What /init prints when it waits for the command: a VM is saved at that point.
    static let waitingMarker = "imgtool-vm: waiting for the command"
    /// Debian's kernels for this, newest first: /boot/vmlinuz-*-cloud-amd64.
    public static let kernelPattern = (prefix: "vmlinuz-", suffix: "-cloud-amd64")

    public struct Result: Sendable {
        public let stdout: [UInt8]
        public let stderr: [UInt8]
        /// The command's exit status, or 128 + the signal that ended it.
        public let status: Int32
        /// Wall time of the whole run: assembly, boot, command, power-off.
        public let seconds: Double
        /// Of that, qemu's lifetime.
        public let vmSeconds: Double
        public let accelerator: KernelVM.Accelerator
        /// Whether the VM was resumed from a saved state (`VMSnapshot`) rather than booted.
        public var resumed = false
    }

    public enum Accelerator: String, Sendable {
        /// KVM if a trial boot under it worked on this host (the verdict is cached), else TCG.
        case automatic, tcg, kvm
    }

    public struct Options: Sendable {
        /// Host executables to include besides the command's own (its first word, when an absolute
        /// path on the host; otherwise it is looked up in the guest's PATH, where busybox applets are).
        public var executables: [String] = []
        /// Host directories to include at their paths (e.g. /usr/lib/grub/i386-pc).
        public var dataDirectories: [String] = []
        /// Host files to include at their paths.
        public var dataFiles: [String] = []
        /// Modules to load besides `baseModules` (e.g. "dm_mod", "loop", "vfat").
        public var modules: [String] = []
        /// Modules to load when the guest kernel has them, and to leave out when it does not.
        public var optionalModules: [String] = []
        public var accelerator: Accelerator = .automatic
        public var machine: KernelVM.Machine = .q35
        /// qemu's -cpu; nil: "host" under KVM, "qemu64,+rdrand" under TCG (see `KernelVM.Configuration`).
        public var cpu: String?
        public var memoryMiB = 256
        /// Where extracted kernels, KVM verdicts and assembled initramfs archives are kept; nil keeps
        /// nothing (every run then boots the compressed kernel and takes no KVM trial).
        public var cacheDirectory: String? = IsolatedVM.defaultCacheDirectory
        /// Boot the uncompressed ELF kernel (cached) when possible.
        public var uncompressedKernel = true
        /// Resume a VM saved in the cache, booted with the same kernel, qemu and files, instead of
        /// booting (saving one on the first run): see `VMSnapshot`.
        public var snapshots = true
        /// Added to the kernel command line.
        public var kernelArguments: [String] = []
        public var interruption: Interruption?
        public var busybox = "/bin/busybox"

        public init() {}
    }

    public enum Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        case kernelMissing(String)
        case modulesMissing(release: String)
        case moduleMissing(module: String, release: String, detail: String)
        case busyboxMissing(String)
        case executableMissing(String)
        case libraryMissing(executable: String, library: String)
        case toolMissing(tool: String, package: String)
        case qemuMissing
        case image(SystemError)
        case initramfs(String)
        case emptyCommand
        /// qemu ended before the guest printed anything: its complaint.
        case qemuFailed(status: Int32, stderr: String)
        /// The VM ended without the command's exit status: /init or the kernel failed.
        case noStatus(console: [String], qemuStderr: String)
        /// Killed after `seconds`; `commandStarted` tells a VM that never came up from a command that
        /// did not finish. `console` is the console's last lines.
        case timedOut(seconds: Double, commandStarted: Bool, console: [String])
        case interrupted(signal: Int32)
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
                return "\(KernelVM.qemuProgram) was not found in PATH; install the Debian package qemu-system-x86."
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

    /// $XDG_CACHE_HOME/imgtool, else /var/cache/imgtool for root, else ~/.cache/imgtool.
    public static var defaultCacheDirectory: String? {
        if let x = getenv("XDG_CACHE_HOME").map({ String(cString: $0) }), x.hasPrefix("/") { return "\(x)/imgtool" }
        if geteuid() == 0 { return "/var/cache/imgtool" }
        if let home = getenv("HOME").map({ String(cString: $0) }), home.hasPrefix("/") { return "\(home)/.cache/imgtool" }
        return nil
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
            let fd = open(image, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
            guard fd >= 0 else { throw .image(SystemError("open", on: image, errno: errno)) }
            close(fd)
        }
        guard Subprocess.find(KernelVM.qemuProgram) != nil else { throw .qemuMissing }

        let kernelPath: String
        if let kernel { kernelPath = kernel } else { kernelPath = try newestCloudKernel() }
        let release = try kernelRelease(kernelPath)
        guard access("/lib/modules/\(release)/modules.dep", R_OK) == 0 else { throw .modulesMissing(release: release) }

        var initramfs = Initramfs(kernelRelease: release)
        initramfs.busybox = options.busybox
        initramfs.executables = (program.hasPrefix("/") && access(program, X_OK) == 0 && program != options.busybox ? [program] : [])
        for e in options.executables where !initramfs.executables.contains(e) { initramfs.executables.append(e) }
        initramfs.dataDirectories = options.dataDirectories
        initramfs.dataFiles = options.dataFiles
        initramfs.modules = [options.machine.virtioTransportModule] + baseModules + options.modules
        initramfs.optionalModules = options.optionalModules
        initramfs.deferredModules = diskModules
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

        let cache = options.cacheDirectory.flatMap { prepareCacheDirectory($0) ? $0 : nil }
        var bootKernel = kernelPath
        if options.uncompressedKernel, let cache, let elf = uncompressedKernel(kernelPath, release: release, cache: cache, logger: logger) {
            bootKernel = elf
        }

        var configuration = KernelVM.Configuration(kernel: bootKernel, initrd: .bytes([]), commandLine: commandLine(options))
        configuration.machine = options.machine
        configuration.memoryMiB = options.memoryMiB
        configuration.cpu = options.cpu
        configuration.outputPorts = [stdoutPort, stderrPort, statusPort]
        configuration.inputPorts = [(commandPort, commandMessage(command, deadline: timeout + guestGrace))]
        if let image { configuration.disks = [KernelVM.Disk(path: image, readOnly: readOnly)] }
        configuration.accelerator = try chooseAccelerator(options.accelerator, configuration: configuration, archive: { () throws(Error) in try assemble().archive },
                                                          kernel: kernelPath, cache: cache, options: options, logger: logger)

        let snapshot = options.snapshots ? cache.flatMap { VMSnapshot(cache: $0, initramfs: initramfs, configuration: configuration) } : nil
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
            configuration.saveState = (snapshot.statePath, waitingMarker)
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
        let statusText = String(decoding: outcome.ports[statusPort] ?? [], as: UTF8.self)
        if let status = Int32(statusText.trimmingNewlines()) {
            return Result(stdout: outcome.ports[stdoutPort] ?? [], stderr: outcome.ports[stderrPort] ?? [],
                          status: status, seconds: monotonicNow() - started, vmSeconds: outcome.seconds,
                          accelerator: accelerator)
        }
        let console = outcome.consoleTail(20)
        switch outcome.ending {
        case .timedOut:
            let started = outcome.consoleTail(1000).contains { $0.hasPrefix("imgtool-vm: running command") }
            throw .timedOut(seconds: timeout, commandStarted: started, console: console)
        case .exited(let status):
            if status != 0 && outcome.console.isEmpty {
                throw .qemuFailed(status: status, stderr: outcome.qemuErrors.split(separator: "\n").joined(separator: " "))
            }
            throw .noStatus(console: console, qemuStderr: outcome.qemuErrors.split(separator: "\n").joined(separator: " "))
        }
    }

    static func commandLine(_ options: Options) -> String {
        // quiet: every console byte is an emulated UART write; panic=-1: a panic ends qemu (-no-reboot)
        // at once; random.trust_cpu: the RNG is ready at boot (RDRAND), so getrandom() does not stall;
        // cryptomgr.notests: the crypto self-tests take about 0.4 s under TCG; acpi=off: ACPI's
        // initialisation took 0.55 s of a 1.9 s boot (PCI is found through configuration space
        // and reboot resets through the keyboard controller without it); initcall_blacklist: the
        // slowest initcalls left, 0.3 s together, none of which the guest uses (kprobe tracing,
        // TCP congestion control, a KDF self-test).
        (["console=ttyS0", "panic=-1", "quiet", "random.trust_cpu=on", "cryptomgr.notests", "acpi=off",
          "initcall_blacklist=init_kprobe_trace,cubictcp_register,crypto_kdf108_init"] + options.kernelArguments)
            .joined(separator: " ")
    }

    /// The command file: the positional parameters, and the guest's own deadline.
    static func commandFile(_ command: [String], deadline: Double) -> [UInt8] {
        Array(("set -- " + command.map(shellQuote).joined(separator: " ") + "\ndeadline=\(Int(deadline.rounded(.up)))\n").utf8)
    }

    /// What the command port carries: the command file's length in bytes, a newline, the file.
    static func commandMessage(_ command: [String], deadline: Double) -> [UInt8] {
        let file = commandFile(command, deadline: deadline)
        return Array("\(file.count)\n".utf8) + file
    }

    /// Where /init puts the command file.
    static let commandPath = "/imgtool-command"

    /// The guest powers itself off this long after the host's timeout, so that a qemu whose parent
    /// died (SIGKILL leaves no chance to kill it) does not run on for ever.
    static let guestGrace = 10.0

    /// Single-quoted for sh: safe for any bytes but NUL.
    public static func shellQuote(_ s: String) -> String {
        "'" + s.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }

    /// The generated /init (busybox sh). `moduleLoading` runs at boot, `deferredModuleLoading` once
    /// the command has arrived.
    static func initScript(path: String, libraryPath: String, moduleLoading: [String], deferredModuleLoading: [String],
                           busybox: String = "/bin/busybox") -> String {
        let bb = shellQuote(busybox)
        return """
        #!\(busybox) sh
        # Generated by imgtool (IsolatedVM). Reads the command from the virtio-serial port
        # \(commandPort), runs it with its stdout and stderr on the ports \(stdoutPort) and
        # \(stderrPort), then writes its exit status to \(statusPort), last, and powers off.
        export PATH=\(shellQuote(path))
        export LD_LIBRARY_PATH=\(shellQuote(libraryPath))
        export HOME=/root IMGTOOL_ISOLATED=1
        bb=\(bb)
        $bb mount -t devtmpfs devtmpfs /dev
        $bb mount -t proc proc /proc
        $bb mount -t sysfs sysfs /sys
        exec </dev/null >/dev/console 2>&1
        say() { echo "imgtool-vm: $*"; }
        off() { $bb sync; $bb reboot -f; while :; do $bb sleep 1; done; }
        say "init started"
        \(moduleLoading.joined(separator: "\n"))
        # Port names arrive from the host shortly after virtio_console binds.
        out= err= st= in= n=0
        while :; do
            for p in /sys/class/virtio-ports/*; do
                name=
                read -r name < "$p/name" 2>/dev/null
                case "$name" in
                    \(stdoutPort)) out=/dev/${p##*/} ;;
                    \(stderrPort)) err=/dev/${p##*/} ;;
                    \(statusPort)) st=/dev/${p##*/} ;;
                    \(commandPort)) in=/dev/${p##*/} ;;
                esac
            done
            [ -n "$out" ] && [ -n "$err" ] && [ -n "$st" ] && [ -n "$in" ] && [ -e "$out" ] && [ -e "$err" ] && [ -e "$st" ] && [ -e "$in" ] && break
            n=$((n + 1))
            if [ $n -ge 2000 ]; then say "the output ports did not appear"; off; fi
            $bb usleep 5000
        done
        # A saved VM is saved here, and resumes here with another command waiting.
        say "waiting for the command"
        exec 3<"$in"
        len=
        read -r len <&3
        case "$len" in ''|*[!0-9]*) say "the command port sent no length"; off ;; esac
        $bb head -c "$len" <&3 >\(commandPath)
        exec 3<&-
        \(deferredModuleLoading.joined(separator: "\n"))
        # devtmpfs makes the disks' nodes just after the driver's probe.
        w=0
        for s in /sys/block/vd* /sys/block/vd*/vd*; do
            [ -e "$s" ] || continue
            while [ ! -e "/dev/${s##*/}" ] && [ $w -lt 3000 ]; do w=$((w + 1)); $bb usleep 1000; done
        done
        deadline=
        . \(commandPath)
        cd /
        if [ -n "$deadline" ]; then ( $bb sleep "$deadline"; say "the guest's deadline of $deadline s passed"; off ) & fi
        say "running command"
        ( exec "$@" ) <"/dev/null" >"$out" 2>"$err"
        status=$?
        $bb sync
        echo "$status" >"$st"
        say "command exited with status $status"
        off

        """
    }

    // MARK: The kernel

    /// The newest /boot/vmlinuz-*-cloud-amd64, by version.
    static func newestCloudKernel() throws(Error) -> String {
        guard let d = opendir("/boot") else { throw .kernelMissing("/boot cannot be read") }
        var found: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasPrefix(kernelPattern.prefix), name.hasSuffix(kernelPattern.suffix) { found.append(name) }
        }
        closedir(d)
        guard let newest = found.max(by: { versionLess($0, $1) }) else {
            throw .kernelMissing("no /boot/\(kernelPattern.prefix)*\(kernelPattern.suffix)")
        }
        return "/boot/\(newest)"
    }

    /// Compares like `sort -V`: runs of digits as numbers, the rest as text.
    static func versionLess(_ a: String, _ b: String) -> Bool {
        func parts(_ s: String) -> [(Int?, String)] {
            var out: [(Int?, String)] = []
            var current = "", digits = false
            for c in s {
                if c.isASCII && c.isNumber != digits, !current.isEmpty {
                    out.append((digits ? Int(current) : nil, current)); current = ""
                }
                digits = c.isASCII && c.isNumber
                current.append(c)
            }
            if !current.isEmpty { out.append((digits ? Int(current) : nil, current)) }
            return out
        }
        let (pa, pb) = (parts(a), parts(b))
        for (x, y) in zip(pa, pb) {
            if let nx = x.0, let ny = y.0 { if nx != ny { return nx < ny } } else if x.1 != y.1 { return x.1 < y.1 }
        }
        return pa.count < pb.count
    }

    /// The release from the bzImage header, else from the file name (vmlinuz-RELEASE).
    static func kernelRelease(_ kernel: String) throws(Error) -> String {
        let fd = open(kernel, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .kernelMissing("\(kernel) cannot be opened (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 65536)
        let n = read(fd, &head, head.count)
        if n > 0, let release = try? LinuxKernelImage.header(Array(head[..<n]), fileSize: Int.max).release { return release }
        let name = kernel.split(separator: "/").last.map(String.init) ?? kernel
        guard name.hasPrefix("vmlinuz-") else { throw .kernelMissing("\(kernel) has no release in its header or name") }
        return String(name.dropFirst("vmlinuz-".count))
    }

    /// The cached uncompressed ELF kernel for `kernel`, extracting it on first use; nil if the kernel
    /// cannot be booted that way (then the bzImage boots as it is).
    static func uncompressedKernel(_ kernel: String, release: String, cache: String, logger: Logger) -> String? {
        guard let key = fileKey(kernel) else { return nil }
        let path = "\(cache)/vmlinux-\(release)-\(key)"
        if access(path, R_OK) == 0 { return path }
        guard let bytes = try? Initramfs.readWholeFile(kernel) else { return nil }
        let started = monotonicNow()
        do {
            let elf = try LinuxKernelImage.extractELF(bytes)
            removeStaleKernels(in: cache, release: release)
            guard storeAtomically(elf, at: path) else { return nil }
            logger.debug("extracted the uncompressed kernel", metadata: ["path": "\(path)", "seconds": "\(monotonicNow() - started)"])
            return path
        } catch {
            logger.debug("booting the compressed kernel", metadata: ["reason": "\(error.description)"])
            return nil
        }
    }

    /// Extracted kernels are about 50 MB: drop older extractions of `release` (the kernel file
    /// changed) and those of releases whose modules are gone (the package was removed).
    static func removeStaleKernels(in cache: String, release: String) {
        guard let d = opendir(cache) else { return }
        var stale: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name.hasPrefix("vmlinux-"), let dash = name.lastIndex(of: "-") else { continue }
            let itsRelease = String(name[name.index(name.startIndex, offsetBy: "vmlinux-".count)..<dash])
            if itsRelease == release || access("/lib/modules/\(itsRelease)", F_OK) != 0 { stale.append(name) }
        }
        closedir(d)
        for name in stale { unlink("\(cache)/\(name)") }
    }

    // MARK: KVM or TCG

    /// KVM is used only after a trial boot under it ran a command: /dev/kvm can exist and open fine
    /// and still not run a Linux guest (on the CI machine qemu aborts on an MSR with -cpu host and
    /// hangs with qemu64). The verdict is cached per host kernel, qemu binary and guest kernel;
    /// without a cache there is no trial, and TCG it is.
    static func chooseAccelerator(_ requested: Accelerator, configuration: KernelVM.Configuration,
                                  archive: () throws(Error) -> [UInt8], kernel: String,
                                  cache: String?, options: Options, logger: Logger) throws(Error) -> KernelVM.Accelerator {
        switch requested {
        case .tcg: return .tcg
        case .kvm: return .kvm
        case .automatic: break
        }
        guard KernelVM.kvmDeviceAvailable(), let cache, let qemu = Subprocess.find(KernelVM.qemuProgram),
              let qemuKey = fileKey(qemu), let kernelKey = fileKey(kernel) else { return .tcg }
        var u = utsname()
        uname(&u)
        let host = withUnsafeBytes(of: u.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let verdictPath = "\(cache)/kvm-\(hexHash(host + qemuKey + kernelKey))"
        let verdict = String(decoding: (try? Initramfs.readWholeFile(verdictPath)) ?? [], as: UTF8.self)
        if verdict.hasPrefix("usable") { return .kvm }
        if verdict.hasPrefix("unusable") { return .tcg }

        var trial = configuration
        trial.accelerator = .kvm
        trial.disks = []
        trial.initrd = .bytes(try archive())
        trial.inputPorts = [(commandPort, commandMessage(["true"], deadline: kvmTrialTimeout + guestGrace))]
        let started = monotonicNow()
        var usable = false
        var why = ""
        do {
            let outcome = try KernelVM.run(trial, timeout: kvmTrialTimeout, interruption: options.interruption)
            let r = try result(of: outcome, timeout: kvmTrialTimeout, started: started, accelerator: .kvm)
            usable = r.status == 0
        } catch KernelVM.Error.interrupted(let signal) {
            throw .interrupted(signal: signal)
        } catch {
            why = "\(error)"
        }
        logger.debug("KVM trial", metadata: ["usable": "\(usable)", "seconds": "\(monotonicNow() - started)", "why": "\(why)"])
        _ = storeAtomically(Array((usable ? "usable\n" : "unusable\n").utf8), at: verdictPath)
        return usable ? .kvm : .tcg
    }

    /// A working KVM boots the VM and runs `true` well within this.
    static let kvmTrialTimeout = 10.0

    // MARK: The cache

    static func prepareCacheDirectory(_ path: String) -> Bool {
        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { return false }
        }
        return access(path, W_OK) == 0
    }

    /// A key that changes when the file does: device, inode, size, mtime and ctime.
    static func fileKey(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return hexHash("\(path) \(st.st_dev) \(st.st_ino) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_ctim.tv_sec)")
    }

    static func hexHash(_ text: String) -> String {
        String(SHA256.hexDigest(Array(text.utf8)).prefix(16))
    }

    /// Writes to a temp file beside `path` and renames it into place, so that a concurrent reader
    /// sees all or nothing.
    static func storeAtomically(_ bytes: [UInt8], at path: String) -> Bool {
        let temporary = "\(path).tmp-\(getpid())"
        do { try writeNewFile(temporary, bytes) } catch { unlink(temporary); return false }
        guard rename(temporary, path) == 0 else { unlink(temporary); return false }
        return true
    }
}

extension String {
    fileprivate func trimmingNewlines() -> String {
        var s = Substring(self)
        while let last = s.last, last == "\n" || last == "\r" || last == " " { s = s.dropLast() }
        return String(s)
    }
}
