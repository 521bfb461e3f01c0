import Glibc
import ImgFormats
import ImgSystem

/// Boots a disk image under qemu and reads what the screen shows, from the VGA text buffer rather
/// than a serial console, so that it works for any image, whatever its grub.cfg says.
///
/// qemu runs as a `QemuProcess` under TCG with no network and no default devices, its QMP monitor on
/// its stdin and stdout. Every ~150 ms QMP `pmemsave` dumps the text buffer at 0xB8000 into a file
/// in the process's private temp dir, which is decoded from CP437 character/attribute pairs.
public enum QemuBoot {
    package static let qemuProgram = QemuProcess.program

    /// What the VM boots with: SeaBIOS (qemu's default), or OVMF for UEFI images.
    public enum Firmware: String, Sendable, CaseIterable {
        /// SeaBIOS: the boot code in sector 0.
        case bios
        /// OVMF: \EFI\BOOT\BOOTX64.EFI on the EFI system partition.
        case efi
        /// OVMF enforcing Secure Boot with Microsoft's keys enrolled (Debian's
        /// OVMF_CODE_4M.secboot.fd and OVMF_VARS_4M.ms.fd, on q35 with SMM): only signed loaders start.
        case efiSecure = "efi-secure"

        /// OVMF, with or without Secure Boot.
        public var isEFI: Bool { self != .bios }

        /// The firmware as reports name it: "SeaBIOS", "OVMF", "OVMF enforcing Secure Boot".
        public var displayName: String {
            switch self {
            case .bios: "SeaBIOS"
            case .efi: "OVMF"
            case .efiSecure: "OVMF enforcing Secure Boot"
            }
        }
    }
    /// Debian's OVMF build (package ovmf): the code, read-only, and a template of its variable store,
    /// of which each boot gets a private copy.
    static let ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    static let ovmfVariables = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    static let ovmfSecureCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
    static let ovmfMicrosoftVariables = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    /// The private temp dir (`QemuProcess`) holds the dump, qemu's stderr and its snapshot overlay.
    package static let temporaryPrefix = "imgtool-qemu-"
    static let pollInterval = 0.15

    /// Why the image could not be booted and watched. `description` names the Debian package to
    /// install where something is missing.
    public enum Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        /// qemu-system-x86_64 is not installed.
        case qemuMissing
        /// OVMF's firmware files are not installed.
        case firmwareMissing(String)
        /// The image cannot be opened for qemu.
        case image(SystemError)
        /// A host system call failed.
        case system(SystemError)
        /// qemu exited before the guest showed anything; `stderr` is its (truncated) complaint.
        case qemuFailed(status: Int32, stderr: String)
        /// qemu's QMP monitor failed: what it said.
        case monitor(String)
        /// An `Interruption` stopped the boot.
        case interrupted(signal: Int32)

        public var description: String {
            switch self {
            case .qemuMissing:
                return QemuProcess.missingMessage
            case .firmwareMissing(let path):
                return "UEFI firmware \(path) is missing; install the Debian package ovmf."
            case .image(let e): return "Cannot read the image to boot: \(e.description)."
            case .system(let e): return "Cannot run qemu: \(e.description)."
            case .qemuFailed(let status, let stderr):
                return "qemu exited with status \(status) before the guest showed a screen: \(stderr)"
            case .monitor(let what): return "qemu's QMP monitor \(what)."
            case .interrupted(let signal): return "Interrupted by signal \(signal); qemu was stopped."
            }
        }
    }

    /// Boots `image` (opened as qemu's `format`, always named, never probed: "raw", "qcow2", ...)
    /// read-only via a copy-on-write overlay (snapshot=on, kept in the private temp
    /// dir) so the image never changes, under TCG, without network. Polls the screen until it settles
    /// into a recognisable state (the same classification twice in a row) or `timeout` seconds pass:
    /// with SeaBIOS the VGA text buffer; with OVMF the serial console, because UEFI draws on a
    /// graphics framebuffer and copies its text console, GRUB's included, to the serial port. Always
    /// kills qemu and removes its temp dir, also when `interruption` fires.
    public static func observe(image: String, format: String = "raw", sectorSize: Int = 512, timeout: Double,
                               firmware: Firmware = .bios, interruption: Interruption? = nil) throws(QemuBoot.Error) -> BootObservation {
        guard let qemu = Subprocess.find(qemuProgram) else { throw .qemuMissing }
        if firmware.isEFI {
            for path in firmware == .efi ? [ovmfCode, ovmfVariables] : [ovmfSecureCode, ovmfMicrosoftVariables]
            where !accessible(path, R_OK) { throw .firmwareMissing(path) }
        }
        // Fail with the image's own errno rather than qemu's paraphrase of it.
        do { try FileHandle(path: image, flags: O_RDONLY).close() } catch { throw .image(error) }

        var process: QemuProcess
        do { process = try QemuProcess(temporaryPrefix: temporaryPrefix, interruption: interruption) } catch { throw .system(error) }
        let started = monotonicNow()
        do {
            try process.start(try arguments(qemu: qemu, image: image, format: format, sectorSize: sectorSize, firmware: firmware,
                                          dir: process.directory), monitor: true)
        } catch { throw .system(error) }
        guard let monitor = process.monitor else { throw .monitor("was not started") }

        var last = BootScreen.blank
        var previous: BootScreen.Classification?
        func observation(_ outcome: BootObservation.Outcome, _ c: BootScreen.Classification?) -> BootObservation {
            BootObservation(outcome: outcome, screen: last, menuEntries: c?.menuEntries ?? [],
                            message: c?.message, seconds: monotonicNow() - started)
        }

        do { try monitor.handshake(deadline: started + max(timeout, 10), interruption: interruption) } catch {
            if case .interrupted(let signal) = error { throw .interrupted(signal: signal) }
            // Most often qemu refused its arguments or the image; its stderr says why.
            if process.hasExited(within: 1) {
                throw .qemuFailed(status: process.exitStatus!,
                                  stderr: process.errorOutput(limit: 2000).split(separator: "\n").joined(separator: " "))
            }
            throw Error(error)
        }
        while true {
            // No deadline here: at the timeout the last screen is judged below.
            if let ending = process.ending(deadline: .infinity) {
                if case .interrupted(let signal) = ending { throw .interrupted(signal: signal) }
                // A guest that powers off or reboots (-no-reboot) ends the run; judge its last screen.
                let c = BootScreen.classify(screen: last)
                return observation(c?.outcome ?? .other, c)
            }
            switch firmware {
            case .bios:
                let bytes: [UInt8]
                do {
                    bytes = try dumpTextBuffer(monitor, into: process.file("screen.bin"),
                                               deadline: monotonicNow() + 5, interruption: interruption)
                } catch .monitor(let what) {
                    // A guest that makes qemu exit closes the monitor a moment before qemu is
                    // reapable; give it that moment, then report its last screen above.
                    if process.hasExited(within: 1) { continue }
                    throw .monitor(what)
                }
                last = BootScreen.decodeTextBuffer(bytes)
            case .efi, .efiSecure:
                // The last MiB: a console that keeps talking only ever needs its latest screens.
                last = BootScreen.renderTerminal(readFileBytes(process.file("serial.log"), limit: 1 << 20, fromEnd: true))
            }
            let c = BootScreen.classify(screen: last)
            // Screens are drawn a line at a time: only a classification seen twice counts as settled.
            if let c, c == previous { return observation(c.outcome, c) }
            previous = c
            if monotonicNow() >= started + timeout { return observation(c?.outcome ?? .timeout, c) }
            usleep(UInt32(pollInterval * 1_000_000))
        }
    }

    /// The image as an IDE disk, or, for a disk of 4 KiB sectors (which IDE cannot present), a
    /// virtio-blk disk with that logical block size, which OVMF reads.
    static func disk(image: String, format: String, sectorSize: Int) -> [String] {
        let file = "\(KernelVM.fileOption(image)),format=\(format),snapshot=on"
        guard sectorSize != 512 else { return ["-drive", file + ",if=ide"] }
        return ["-drive", file + ",if=none,id=disk",
                "-device", "virtio-blk-pci,drive=disk,logical_block_size=\(sectorSize),physical_block_size=\(sectorSize)"]
    }

    /// qemu's command line: the image read-only through a snapshot=on overlay (in the private dir,
    /// where QemuProcess points TMPDIR) and, for OVMF, a private copy of the variable store.
    static func arguments(qemu: String, image: String, format: String = "raw", sectorSize: Int = 512, firmware: Firmware,
                          dir: String) throws(SystemError) -> [String] {
        var arguments = [
            qemu, "-accel", "tcg", "-m", firmware.isEFI ? "256" : "128", "-nodefaults", "-no-user-config",
            "-display", "none", "-vga", "std", "-no-reboot", "-nic", "none",
        ] + disk(image: image, format: format, sectorSize: sectorSize) + QemuMonitor.qemuArguments
        if firmware.isEFI {
            // The variable store is written by the firmware: a private copy, removed with the dir.
            let variables = "\(dir)/ovmf-vars.fd"
            let secure = firmware == .efiSecure
            try writeNewFile(variables, readFileBytes(secure ? ovmfMicrosoftVariables : ovmfVariables, limit: 64 << 20))
            // The Secure Boot build keeps its variables behind SMM, which needs q35.
            if secure { arguments += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"] }
            arguments += [
                "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=\(secure ? ovmfSecureCode : ovmfCode)",
                "-drive", "if=pflash,format=raw,unit=1,file=\(variables)",
                "-serial", "file:\(dir)/serial.log",
            ]
        }
        return arguments
    }

    /// Dumps the VGA text buffer into `path` with QMP pmemsave and reads it back. Wraps unlink(2).
    static func dumpTextBuffer(_ monitor: QemuMonitor, into path: String, deadline: Double,
                               interruption: Interruption?) throws(Error) -> [UInt8] {
        let textBuffer = BootScreen.textBuffer
        let size = textBuffer.columns * textBuffer.rows * 2
        bestEffort { unlink(path) }
        do {
            try monitor.command("{\"execute\":\"pmemsave\",\"arguments\":{\"val\":\(textBuffer.address),\"size\":\(size),"
                                + "\"filename\":\(JSONValue.string(path).rendered())}}", deadline: deadline, interruption: interruption)
        } catch { throw Error(error) }
        return readFileBytes(path, limit: size + 1)  // one more, to notice a longer file
    }
}

extension QemuBoot.Error {
    init(_ error: QemuMonitor.Error) {
        switch error {
        case .monitor(let what): self = .monitor(what)
        case .interrupted(let signal): self = .interrupted(signal: signal)
        }
    }
}
