import Glibc
import ImgFormats
import ImgSystem

/// Boots a Linux kernel directly (qemu's -kernel, -initrd and -append) in a throwaway VM with disk
/// images as virtio disks and named virtio-serial ports whose output lands in files, and waits until
/// the guest powers off or reboots (-no-reboot makes both end qemu), or a deadline passes.
///
/// Knows qemu, not what runs inside: the protocol spoken over the ports is the caller's. qemu runs
/// as a `QemuProcess`, without network, default devices or a user config; its files (console,
/// ports, qemu's stderr, the initrd and fw_cfg blobs when given as bytes) live in that process's
/// private temp dir, removed before `run` returns, whatever happened. On the deadline and on an
/// `Interruption` the whole process group gets SIGKILL at once.
public enum KernelVM {
    package static let qemuProgram = QemuProcess.program
    package static let temporaryPrefix = "imgtool-vm-"

    /// How qemu runs the guest's CPU.
    public enum Accelerator: String, Sendable, CaseIterable {
        /// qemu's software emulation: works everywhere, slower.
        case tcg
        /// The host kernel's KVM: fast where /dev/kvm works for the guest.
        case kvm
    }

    /// The board; both put virtio on PCI. (microvm, with virtio-mmio, was tried and left out: under
    /// TCG it has no HPET or ACPI PM timer to calibrate the TSC against, and the guest hung in 4 of
    /// 5 boots on the CI machine.)
    public enum Machine: String, Sendable, CaseIterable {
        /// The Q35 chipset with PCIe (what OVMF and modern guests expect).
        case q35
        /// The i440FX PC.
        case pc
        var blockDevice: String { "virtio-blk-pci" }
        var serialBus: String { "virtio-serial-pci" }
        /// The guest driver for this machine's virtio transport.
        package var virtioTransportModule: String { "virtio_pci" }
    }

    /// A file the VM reads: a host file used in place, or bytes written into the private temp dir.
    package enum FileSource: Sendable {
        case path(String)
        case bytes([UInt8])
    }

    package struct Disk: Sendable {
        package var path: String
        /// qemu opens the file read-only and the guest sees a read-only disk (VIRTIO_BLK_F_RO).
        package var readOnly: Bool
        /// qemu's block driver for the file, always given (qemu never probes it): "raw", or a
        /// container's ("qcow2", "vmdk", "vpc", "vhdx"), whose virtual disk the guest then sees.
        package var format: String
        package init(path: String, readOnly: Bool, format: String = "raw") {
            self.path = path
            self.readOnly = readOnly
            self.format = format
        }
    }

    package struct Configuration: Sendable {
        package var kernel: String
        package var initrd: FileSource
        package var commandLine: String
        /// /dev/vda, /dev/vdb, ... in this order.
        package var disks: [Disk] = []
        /// Names of virtio-serial ports (guest → host), each captured byte for byte into a file.
        /// The guest finds them by name in /sys/class/virtio-ports/*/name.
        package var outputPorts: [String] = []
        /// Host → guest virtio-serial ports: the guest reads `contents` from the port `name`, and
        /// then nothing more (a further read blocks). Each goes through a FIFO that holds all of it:
        /// at most `maxInputBytes`.
        package var inputPorts: [(name: String, contents: [UInt8])] = []
        /// Resume the VM saved in this file (by `saveState`, with this configuration but other disk
        /// files) instead of booting.
        package var restoreState: String?
        /// Boot, and once the console shows `marker`, save the VM's state into `path` (whole or
        /// not at all), then fill the input ports and let it go on: the saved guest is one that
        /// waits for its input.
        package var saveState: (path: String, marker: String)?
        /// fw_cfg files, visible in the guest (module qemu_fw_cfg) as
        /// /sys/firmware/qemu_fw_cfg/by_name/opt/imgtool/NAME/raw.
        package var firmwareFiles: [(name: String, contents: FileSource)] = []
        package var accelerator: Accelerator = .tcg
        /// qemu's -cpu; nil picks "host" under KVM and "qemu64,+rdrand" under TCG: qemu64 keeps
        /// TCG's work small, RDRAND lets the guest's RNG be ready at once (random.trust_cpu=on)
        /// instead of stalling the first getrandom() for about a second.
        package var cpu: String?
        package var machine: Machine = .q35
        package var memoryMiB: Int = 256

        package init(kernel: String, initrd: FileSource, commandLine: String) {
            self.kernel = kernel
            self.initrd = initrd
            self.commandLine = commandLine
        }
    }

    package struct Outcome: Sendable {
        package enum Ending: Sendable, Equatable {
            /// qemu exited by itself: the guest powered off or rebooted, or qemu failed.
            case exited(status: Int32)
            /// Killed at the deadline.
            case timedOut
        }
        package let ending: Ending
        /// What arrived on each output port, by name (possibly partial after a timeout).
        package let ports: [String: [UInt8]]
        /// The last MiB of the serial console (ttyS0).
        package let console: [UInt8]
        /// qemu's own stderr, at most 4 KiB.
        package let qemuErrors: String
        /// From starting qemu to its end.
        package let seconds: Double
        /// With `saveState`: nil once the state was saved, else why it was not (the run went on).
        package let stateNotSaved: String?

        /// The last `count` non-empty console lines, control characters but tab dropped.
        package func consoleTail(_ count: Int) -> [String] {
            let text = String(decoding: console, as: UTF8.self)
            // isNewline: a serial console ends lines with "\r\n", which is one Character.
            let lines = text.split(whereSeparator: { $0.isNewline }).map { line in
                String(line.unicodeScalars.filter { $0.value >= 0x20 || $0 == "\t" }.map(Character.init))
            }.filter { !$0.isEmpty }
            return Array(lines.suffix(count))
        }
    }

    package enum Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        case qemuMissing
        case kernelMissing(String)
        case system(SystemError)
        case interrupted(signal: Int32)

        package var description: String {
            switch self {
            case .qemuMissing:
                return QemuProcess.missingMessage
            case .kernelMissing(let path):
                return "The VM's kernel \(path) cannot be read; install the Debian package linux-image-cloud-amd64."
            case .system(let e): return "Cannot run qemu: \(e.description)."
            case .interrupted(let signal): return "Interrupted by signal \(signal); the VM was stopped."
            }
        }
    }

    /// Boots `configuration` and waits for qemu to end, at most `timeout` seconds.
    package static func run(_ configuration: Configuration, timeout: Double,
                           interruption: Interruption? = nil) throws(Error) -> Outcome {
        guard let qemu = Subprocess.find(qemuProgram) else { throw .qemuMissing }
        guard accessible(configuration.kernel, R_OK) else { throw .kernelMissing(configuration.kernel) }
        if let signal = interruption?.signal { throw .interrupted(signal: signal) }

        var process: QemuProcess
        do { process = try QemuProcess(temporaryPrefix: temporaryPrefix, interruption: interruption) } catch { throw .system(error) }
        let dir = process.directory
        var arguments: [String]
        do { arguments = try qemuArguments(qemu, configuration, dir: dir) } catch { throw .system(error) }
        let inputs: [Int32]
        do { inputs = try openInputPorts(configuration, dir: dir) } catch { throw .system(error) }
        defer { inputs.forEach(closeDescriptor) }
        if configuration.saveState == nil {
            do { try fillInputPorts(configuration, inputs) } catch { throw .system(error) }
        }
        var state: FileHandle?
        if let restore = configuration.restoreState {
            do { state = try FileHandle(path: restore, flags: O_RDONLY) } catch { throw .system(error) }
            arguments += ["-incoming", "fd:\(stateDescriptor)"]
        }
        if configuration.saveState != nil { arguments += QemuMonitor.qemuArguments }

        let started = monotonicNow()
        do {
            try process.start(arguments, monitor: configuration.saveState != nil,
                              passing: state.map { [($0.fd, stateDescriptor)] } ?? [])
        } catch { throw .system(error) }
        state?.close()

        let ending: QemuProcess.Ending
        var stateNotSaved: String? = configuration.saveState == nil ? nil : "the console never showed the marker"
        var savePending = configuration.saveState != nil
        while true {
            if let e = process.ending(deadline: started + timeout) { ending = e; break }
            if savePending, let save = configuration.saveState, let monitor = process.monitor,
               contains(readFileBytes("\(dir)/console.log", limit: 1 << 20), Array(save.marker.utf8)) {
                savePending = false
                stateNotSaved = saveState(monitor, to: save.path, deadline: started + timeout, interruption: interruption)
                do { try fillInputPorts(configuration, inputs) } catch { stateNotSaved = stateNotSaved ?? "\(error)" }
                // The guest was paused for the save (qemu's "postmigrate"); it runs on either way.
                _ = try? monitor.command("{\"execute\":\"cont\"}", deadline: started + timeout, interruption: interruption)
            }
            usleep(5_000)
        }
        let seconds = monotonicNow() - started
        let outcomeEnding: Outcome.Ending
        switch ending {
        case .interrupted(let signal): throw .interrupted(signal: signal)
        case .exited(let status): outcomeEnding = .exited(status: status)
        case .timedOut: outcomeEnding = .timedOut
        }

        var ports: [String: [UInt8]] = [:]
        for (i, name) in configuration.outputPorts.enumerated() {
            ports[name] = readFileBytes("\(dir)/port\(i)", limit: Int.max)
        }
        return Outcome(ending: outcomeEnding, ports: ports,
                       console: readFileBytes("\(dir)/console.log", limit: 1 << 20, fromEnd: true),
                       qemuErrors: process.errorOutput(limit: 4096), seconds: seconds, stateNotSaved: stateNotSaved)
    }

    /// The descriptor qemu reads a saved state from (`-incoming fd:3`).
    static let stateDescriptor: Int32 = 3
    /// What an input port can carry: the FIFO's buffer, grown with F_SETPIPE_SZ, holds all of it.
    package static let maxInputBytes = 1 << 20

    /// Makes each input port's FIFOs (qemu's pipe chardev opens NAME.in and NAME.out) and opens
    /// NAME.in read-write, so it lives before qemu opens it and after the guest has read it.
    /// Wraps mkfifo(3) and open(2).
    static func openInputPorts(_ c: Configuration, dir: String) throws(SystemError) -> [Int32] {
        var fds: [Int32] = []
        do {
            for i in c.inputPorts.indices {
                for end in ["in", "out"] {
                    let path = "\(dir)/in\(i).\(end)"
                    _ = try systemCall("mkfifo", on: path) { mkfifo(path, 0o600) }
                }
                let path = "\(dir)/in\(i).in"
                fds.append(try systemCall("open", on: path) { open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC) })
            }
        } catch {
            fds.forEach(closeDescriptor)
            throw error
        }
        return fds
    }

    /// Writes each input port's contents into its FIFO at once. Wraps fcntl(2) and write(2).
    static func fillInputPorts(_ c: Configuration, _ fds: [Int32]) throws(SystemError) {
        for (i, port) in c.inputPorts.enumerated() {
            let path = "input port \(port.name)"
            guard port.contents.count <= maxInputBytes else { throw SystemError("write", on: path, errno: EFBIG) }
            let fSetPipeSize: Int32 = 1031  // F_SETPIPE_SZ, which Glibc's overlay does not export
            if port.contents.count > 65536 { _ = try systemCall("fcntl(F_SETPIPE_SZ)", on: path) { fcntl(fds[i], fSetPipeSize, Int32(maxInputBytes)) } }
            try writeFully(fds[i], port.contents, path: path)
        }
    }

    /// Saves the running VM into `path` with QMP's migrate (to a temp file beside it, renamed into
    /// place once complete). Returns nil on success, else what went wrong. The VM stays paused.
    /// Wraps chmod(2), rename(2) and unlink(2).
    static func saveState(_ monitor: QemuMonitor, to path: String, deadline: Double, interruption: Interruption?) -> String? {
        let temporary = "\(path).tmp-\(getpid())"
        do throws(QemuMonitor.Error) {
            try monitor.handshake(deadline: deadline, interruption: interruption)
            // qemu's default cap is 128 MiB/s; a file takes whatever comes.
            try monitor.command("{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"max-bandwidth\":\(UInt64(1) << 40)}}",
                                deadline: deadline, interruption: interruption)
            let uri = "exec:cat > '\(temporary)'"
            try monitor.command("{\"execute\":\"migrate\",\"arguments\":{\"uri\":\(JSONValue.string(uri).rendered())}}",
                                deadline: deadline, interruption: interruption)
            while true {
                let reply = try monitor.command("{\"execute\":\"query-migrate\"}", deadline: deadline, interruption: interruption)
                let status = QemuMonitor.stringMember("status", in: reply)
                if status == "completed" { break }
                if status == "failed" || status == "cancelled" {
                    bestEffort { unlink(temporary) }
                    return "qemu's migration \(status!): \(QemuMonitor.stringMember("error-desc", in: reply) ?? "")"
                }
                usleep(5_000)
            }
        } catch {
            bestEffort { unlink(temporary) }
            switch error {
            case .monitor(let what): return "qemu's QMP monitor \(what)"
            case .interrupted(let signal): return "interrupted by signal \(signal)"
            }
        }
        // cat made it with qemu's umask: the state holds the guest's memory, which is ours alone.
        do {
            try systemCall("chmod", on: temporary) { chmod(temporary, 0o600) }
            try systemCall("rename", on: temporary) { rename(temporary, path) }
        } catch {
            bestEffort { unlink(temporary) }
            return "cannot rename \(temporary): \(String(cString: strerror(error.errno)))"
        }
        return nil
    }

    private static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return needle.isEmpty }
        return (0...(haystack.count - needle.count)).contains { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
    }

    /// Whether /dev/kvm can be opened read-write and speaks KVM API version 12. Says nothing about
    /// whether a guest then runs: only a trial boot tells that. Wraps open(2) and ioctl(KVM_GET_API_VERSION).
    package static func kvmDeviceAvailable() -> Bool {
        guard let kvm = try? FileHandle(path: "/dev/kvm", flags: O_RDWR) else { return false }
        let kvmGetAPIVersion: UInt = 0xAE00  // _IO(KVMIO, 0x00)
        return (try? systemCall("ioctl(KVM_GET_API_VERSION)", on: kvm.path) { ioctl(kvm.fd, kvmGetAPIVersion) }) == 12
    }

    // MARK: qemu's command line

    /// qemu's -drive options naming `path` with its protocol driver given, so that qemu never reads
    /// a protocol ("nbd:", "json:") into the path: `file`, or `host_device` for a block device.
    static func fileOption(_ path: String) -> String {
        let isDevice = (try? fileStatus(path).st_mode & S_IFMT) == S_IFBLK
        return "file.driver=\(isDevice ? "host_device" : "file"),file.filename=\(escape(path))"
    }

    static func qemuArguments(_ qemu: String, _ c: Configuration, dir: String) throws(SystemError) -> [String] {
        func materialise(_ source: FileSource, _ name: String) throws(SystemError) -> String {
            switch source {
            case .path(let p): return p
            case .bytes(let b):
                let path = "\(dir)/\(name)"
                try writeNewFile(path, b)
                return path
            }
        }
        let initrd = try materialise(c.initrd, "initrd")
        let cpu = c.cpu ?? (c.accelerator == .kvm ? "host" : "qemu64,+rdrand")
        var a = [
            qemu, "-accel", c.accelerator.rawValue, "-machine", c.machine.rawValue, "-cpu", cpu,
            "-m", "\(c.memoryMiB)", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-nic", "none",
            "-kernel", c.kernel, "-initrd", initrd, "-append", c.commandLine,
            "-chardev", "file,id=console,path=\(escape(dir))/console.log", "-serial", "chardev:console",
        ]
        for (i, disk) in c.disks.enumerated() {
            a += ["-drive", "\(fileOption(disk.path)),format=\(escape(disk.format)),if=none,id=disk\(i),"
                    + "readonly=\(disk.readOnly ? "on" : "off")",
                  "-device", "\(c.machine.blockDevice),drive=disk\(i)"]
        }
        if !c.outputPorts.isEmpty || !c.inputPorts.isEmpty {
            a += ["-device", "\(c.machine.serialBus),id=ports"]
            for (i, name) in c.outputPorts.enumerated() {
                a += ["-chardev", "file,id=port\(i),path=\(escape(dir))/port\(i)",
                      // nr 0 is reserved for a console port.
                      "-device", "virtserialport,bus=ports.0,nr=\(i + 1),chardev=port\(i),name=\(escape(name))"]
            }
            for (i, port) in c.inputPorts.enumerated() {
                a += ["-chardev", "pipe,id=in\(i),path=\(escape(dir))/in\(i)",
                      "-device", "virtserialport,bus=ports.0,nr=\(c.outputPorts.count + i + 1),chardev=in\(i),name=\(escape(port.name))"]
            }
        }
        for (i, file) in c.firmwareFiles.enumerated() {
            let path = try materialise(file.contents, "fwcfg\(i)")
            a += ["-fw_cfg", "name=opt/imgtool/\(escape(file.name)),file=\(escape(path))"]
        }
        return a
    }

    /// qemu's option syntax escapes a comma by doubling it.
    static func escape(_ s: String) -> String {
        var out = ""
        for c in s { if c == "," { out += ",," } else { out.append(c) } }
        return out
    }

}
