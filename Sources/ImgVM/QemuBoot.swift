import Glibc
import ImgSystem

/// What a disk image showed on its screen when booted in a throwaway VM.
public struct BootObservation: Sendable, Equatable {
    public enum Outcome: String, Sendable {
        case grubMenu, grubPrompt, grubRescue, grubError
        /// SYSLINUX, EXTLINUX or ISOLINUX: menu.c32's menu, the boot: prompt, or one of the messages
        /// its MBRs, boot sector and core print when they stop.
        case syslinuxMenu, syslinuxPrompt, syslinuxError
        case noBootableDevice, timeout, other
    }
    public let outcome: Outcome
    /// The 80x25 VGA text screen as last observed, one string a row, trailing spaces trimmed.
    public let screen: [String]
    /// For `.grubMenu`: the entry titles as shown.
    public let menuEntries: [String]
    /// GRUB's last "error: ..." line, SYSLINUX's error or warning (from the message on, such as
    /// "Missing operating system."), or SeaBIOS's "No bootable device." line.
    public let message: String?
    /// From starting qemu to the observation.
    public let seconds: Double

    public init(outcome: Outcome, screen: [String], menuEntries: [String], message: String?, seconds: Double) {
        self.outcome = outcome
        self.screen = screen
        self.menuEntries = menuEntries
        self.message = message
        self.seconds = seconds
    }
}

/// Boots a disk image under qemu and reads what the screen shows, from the VGA text buffer rather
/// than a serial console, so that it works for any image, whatever its grub.cfg says.
///
/// qemu runs as a `QemuProcess` under TCG with no network and no default devices, its QMP monitor on
/// its stdin and stdout. Every ~150 ms QMP `pmemsave` dumps the text buffer at 0xB8000 into a file
/// in the process's private temp dir, which is decoded from CP437 character/attribute pairs.
public enum QemuBoot {
    public static let qemuProgram = "qemu-system-x86_64"

    /// What the VM boots with: SeaBIOS (qemu's default), or OVMF for UEFI images.
    public enum Firmware: String, Sendable, CaseIterable {
        case bios, efi
    }
    /// Debian's OVMF build (package ovmf): the code, read-only, and a template of its variable store,
    /// of which each boot gets a private copy.
    static let ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    static let ovmfVariables = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    /// The private temp dir (`QemuProcess`) holds the dump, qemu's stderr and its snapshot overlay.
    public static let temporaryPrefix = "imgtool-qemu-"
    static let pollInterval = 0.15
    static let textBuffer = (address: 0xB8000, columns: 80, rows: 25)

    public enum Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        case qemuMissing
        /// OVMF's firmware files are not installed.
        case firmwareMissing(String)
        case image(SystemError)
        case system(SystemError)
        /// qemu exited before the guest showed anything; `stderr` is its (truncated) complaint.
        case qemuFailed(status: Int32, stderr: String)
        case monitor(String)
        case interrupted(signal: Int32)

        public var description: String {
            switch self {
            case .qemuMissing:
                return "\(QemuBoot.qemuProgram) was not found in PATH; install the Debian package qemu-system-x86."
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

    /// Boots `image` (raw) read-only via a copy-on-write overlay (snapshot=on, kept in the private temp
    /// dir) so the image never changes, under TCG, without network. Polls the screen until it settles
    /// into a recognisable state (the same classification twice in a row) or `timeout` seconds pass:
    /// with SeaBIOS the VGA text buffer; with OVMF the serial console, because UEFI draws on a
    /// graphics framebuffer and copies its text console, GRUB's included, to the serial port. Always
    /// kills qemu and removes its temp dir, also when `interruption` fires.
    public static func observe(image: String, timeout: Double, firmware: Firmware = .bios,
                               interruption: Interruption? = nil) throws(QemuBoot.Error) -> BootObservation {
        guard let qemu = Subprocess.find(qemuProgram) else { throw .qemuMissing }
        if firmware == .efi {
            for path in [ovmfCode, ovmfVariables] where access(path, R_OK) != 0 { throw .firmwareMissing(path) }
        }
        // Fail with the image's own errno rather than qemu's paraphrase of it.
        do {
            let fd = try systemCall("open", on: image) { open(image, O_RDONLY | O_CLOEXEC) }
            close(fd)
        } catch { throw .image(error) }

        var process: QemuProcess
        do { process = try QemuProcess(temporaryPrefix: temporaryPrefix, interruption: interruption) } catch { throw .system(error) }
        let started = monotonicNow()
        do {
            try process.start(try arguments(qemu: qemu, image: image, firmware: firmware, dir: process.directory), monitor: true)
        } catch { throw .system(error) }
        guard let monitor = process.monitor else { throw .monitor("was not started") }

        var last = blankScreen
        var previous: Classification?
        func observation(_ outcome: BootObservation.Outcome, _ c: Classification?) -> BootObservation {
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
                let c = classify(screen: last)
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
                last = decodeTextBuffer(bytes)
            case .efi:
                // The last MiB: a console that keeps talking only ever needs its latest screens.
                last = renderTerminal(readFileBytes(process.file("serial.log"), limit: 1 << 20, fromEnd: true))
            }
            let c = classify(screen: last)
            // Screens are drawn a line at a time: only a classification seen twice counts as settled.
            if let c, c == previous { return observation(c.outcome, c) }
            previous = c
            if monotonicNow() >= started + timeout { return observation(c?.outcome ?? .timeout, c) }
            usleep(UInt32(pollInterval * 1_000_000))
        }
    }

    /// qemu's command line: the image read-only through a snapshot=on overlay (in the private dir,
    /// where QemuProcess points TMPDIR) and, for OVMF, a private copy of the variable store.
    static func arguments(qemu: String, image: String, firmware: Firmware, dir: String) throws(SystemError) -> [String] {
        // file.driver=file keeps qemu from reading a protocol ("nbd:", "json:") into the path.
        var arguments = [
            qemu, "-accel", "tcg", "-m", firmware == .efi ? "256" : "128", "-nodefaults", "-no-user-config",
            "-display", "none", "-vga", "std", "-no-reboot", "-nic", "none",
            "-drive", "file.driver=file,file.filename=\(KernelVM.escape(image)),format=raw,if=ide,snapshot=on",
        ] + QemuMonitor.qemuArguments
        if firmware == .efi {
            // The variable store is written by the firmware: a private copy, removed with the dir.
            let variables = "\(dir)/ovmf-vars.fd"
            try writeNewFile(variables, readFileBytes(ovmfVariables, limit: 64 << 20))
            arguments += [
                "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=\(ovmfCode)",
                "-drive", "if=pflash,format=raw,unit=1,file=\(variables)",
                "-serial", "file:\(dir)/serial.log",
            ]
        }
        return arguments
    }

    /// Dumps the VGA text buffer into `path` with QMP pmemsave and reads it back.
    static func dumpTextBuffer(_ monitor: QemuMonitor, into path: String, deadline: Double,
                               interruption: Interruption?) throws(Error) -> [UInt8] {
        let size = textBuffer.columns * textBuffer.rows * 2
        unlink(path)
        do {
            try monitor.command("{\"execute\":\"pmemsave\",\"arguments\":{\"val\":\(textBuffer.address),\"size\":\(size),"
                                + "\"filename\":\(jsonString(path))}}", deadline: deadline, interruption: interruption)
        } catch { throw Error(error) }
        return readFileBytes(path, limit: size + 1)  // one more, to notice a longer file
    }

    // MARK: Reading the screen

    /// What a screen shows, if it is a state worth reporting.
    public struct Classification: Sendable, Equatable {
        public let outcome: BootObservation.Outcome
        public let menuEntries: [String]
        public let message: String?
    }

    /// Classifies a decoded screen; nil if it shows nothing recognisable (yet). The rows are the
    /// guest's, so nothing here assumes more than that they are strings.
    public static func classify(screen: [String]) -> Classification? {
        let rows = screen.map { trimTrailing($0) }
        let lastRow = rows.last(where: { !$0.isEmpty }) ?? ""
        // GRUB prints its errors at column 0 as "error: ...".
        let error = rows.last(where: { $0.hasPrefix("error:") })
        if lastRow.hasPrefix("grub rescue>") { return Classification(outcome: .grubRescue, menuEntries: [], message: error) }
        if lastRow.hasPrefix("grub>") { return Classification(outcome: .grubPrompt, menuEntries: [], message: error) }
        if let error { return Classification(outcome: .grubError, menuEntries: [], message: error) }
        if let entries = menuEntries(rows), !entries.isEmpty {
            return Classification(outcome: .grubMenu, menuEntries: entries, message: nil)
        }
        if let entries = syslinuxMenuEntries(rows), !entries.isEmpty {
            return Classification(outcome: .syslinuxMenu, menuEntries: entries, message: nil)
        }
        // A failed label returns to the prompt: the prompt is the outcome, the error its message.
        let syslinuxMessage = syslinuxError(rows)
        if lastRow.hasPrefix("boot:"), rows.contains(where: isSyslinuxBanner) {
            let warning = rows.first { $0.hasPrefix("WARNING: No configuration file found") }
            return Classification(outcome: .syslinuxPrompt, menuEntries: [], message: syslinuxMessage ?? warning)
        }
        // SYSLINUX's MBRs end with INT 18h, so SeaBIOS's give-up follows on the screen: the cause wins.
        if let syslinuxMessage { return Classification(outcome: .syslinuxError, menuEntries: [], message: syslinuxMessage) }
        if let line = rows.first(where: { $0.contains("No bootable device") }) {
            return Classification(outcome: .noBootableDevice, menuEntries: [],
                                  message: String(line.drop(while: { $0 == " " })))
        }
        // OVMF falls back to its built-in UEFI shell when no boot option starts.
        if lastRow.hasPrefix("Shell>") {
            return Classification(outcome: .noBootableDevice, menuEntries: [],
                                  message: "UEFI firmware found nothing to boot and started its shell")
        }
        return nil
    }

    /// GRUB's text menu: a ┌─┐ frame whose rows are "│" + a marker column ("*" on the highlighted
    /// entry) + the title + "│". The hints below it are not required: they are translated.
    static func menuEntries(_ rows: [String]) -> [String]? {
        guard let top = rows.firstIndex(where: { $0.contains("┌") && $0.contains("┐") }),
              let bottom = rows[(top + 1)...].firstIndex(where: { $0.contains("└") && $0.contains("┘") })
        else { return nil }
        var entries: [String] = []
        for row in rows[(top + 1)..<bottom] {
            guard let open = row.firstIndex(of: "│"), let close = row.lastIndex(of: "│"), open < close else { return nil }
            var inner = row[row.index(after: open)..<close]
            if !inner.isEmpty { inner = inner.dropFirst() }  // the marker column
            // GRUB shows ↑/↓ at the frame's edge when the list scrolls; they are not part of a title.
            let title = trimTrailing(String(inner)).droppingSuffix("↑").droppingSuffix("↓")
            if !title.isEmpty { entries.append(trimTrailing(title)) }
        }
        return entries
    }

    /// SYSLINUX's menu.c32: a ┌─┐ frame whose title row is closed by ├─┤, then one "│ title │" row
    /// an entry (the selection is a colour, not a marker). GRUB's frame has no ├ row.
    static func syslinuxMenuEntries(_ rows: [String]) -> [String]? {
        guard let top = rows.firstIndex(where: { $0.contains("┌") && $0.contains("┐") }),
              let separator = rows[(top + 1)...].firstIndex(where: { $0.contains("├") && $0.contains("┤") }),
              let bottom = rows[(separator + 1)...].firstIndex(where: { $0.contains("└") && $0.contains("┘") })
        else { return nil }
        var entries: [String] = []
        for row in rows[(separator + 1)..<bottom] {
            guard let open = row.firstIndex(of: "│"), let close = row.lastIndex(of: "│"), open < close else { return nil }
            let title = row[row.index(after: open)..<close].drop { $0 == " " }
            if !title.isEmpty { entries.append(trimTrailing(String(title))) }
        }
        return entries
    }

    /// What SYSLINUX 6 prints when it stops, fixed English strings: mbr.bin and altmbr.bin, gptmbr.bin,
    /// isohdpfx.bin, the SYSLINUX/EXTLINUX boot sector, ISOLINUX, and the core.
    static let syslinuxErrors = [
        "Missing operating system.", "Multiple active partitions", "Operating system load error.",
        "Missing OS", "Disk error", "isolinux.bin missing or corrupt.", "Boot error", "Load error",
        "Image checksum error", "Failed to locate CD-ROM device", "Failed to load ldlinux.c32",
        "Failed to load COM32 file", "Could not find kernel image", "Boot failed: please change disks",
    ]

    /// The first row with one of `syslinuxErrors`, from the earliest of them on (the banner may
    /// precede it on the same row: "SYSLINUX 6.04 EDD Load error - Boot error").
    static func syslinuxError(_ rows: [String]) -> String? {
        for row in rows {
            var i = row.startIndex
            while i < row.endIndex {
                if syslinuxErrors.contains(where: { row[i...].hasPrefix($0) }) { return String(row[i...]) }
                i = row.index(after: i)
            }
        }
        return nil
    }

    /// "SYSLINUX 6.04 EDD 20210613 Copyright (C) 1994-2015 H. Peter Anvin et al" and its siblings.
    static func isSyslinuxBanner(_ row: String) -> Bool {
        ["SYSLINUX ", "EXTLINUX ", "ISOLINUX ", "PXELINUX "].contains { name in
            row.hasPrefix(name) && row.dropFirst(name.count).first?.isNumber == true
        }
    }

    static let blankScreen = [String](repeating: "", count: textBuffer.rows)

    /// Decodes a VGA text buffer (character, attribute pairs; attributes ignored) into rows with
    /// trailing spaces trimmed. Anything but exactly 80x25 cells decodes as a blank screen.
    public static func decodeTextBuffer(_ bytes: [UInt8]) -> [String] {
        let (columns, rows) = (textBuffer.columns, textBuffer.rows)
        guard bytes.count == columns * rows * 2 else { return blankScreen }
        return (0..<rows).map { row in
            var line = String.UnicodeScalarView()
            for column in 0..<columns { line.append(cp437[Int(bytes[(row * columns + column) * 2])]) }
            return trimTrailing(String(line))
        }
    }

    /// Code page 437 as the VGA ROM font draws it: glyphs for 0x01-0x1F too, so that no byte of the
    /// guest's becomes a control character in our strings. 0x00 and 0xFF (NBSP) become spaces.
    static let cp437: [Unicode.Scalar] = {
        let low = " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"
        let ascii = (0x20...0x7E).map { Character(Unicode.Scalar(UInt8($0))) }
        let high = "⌂ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■ "
        return Array(low.unicodeScalars) + ascii.flatMap { $0.unicodeScalars } + Array(high.unicodeScalars)
    }()

    static func trimTrailing(_ s: String) -> String {
        var s = Substring(s)
        while s.last == " " { s = s.dropLast() }
        return String(s)
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

private extension String {
    func droppingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }

}
