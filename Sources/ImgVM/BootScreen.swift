/// What a disk image showed on its screen when booted in a throwaway VM.
public struct BootObservation: Sendable, Equatable {
    /// What the screen showed, classified.
    public enum Outcome: String, Sendable {
        /// GRUB's menu: the image boots as far as its grub.cfg.
        case grubMenu
        /// GRUB's `grub>` command line: GRUB runs but found no grub.cfg.
        case grubPrompt
        /// `grub rescue>`: GRUB could not load its normal module (a wrong prefix, a missing module).
        case grubRescue
        /// GRUB printed an error and stopped.
        case grubError
        /// SYSLINUX, EXTLINUX or ISOLINUX: menu.c32's menu, the boot: prompt, or one of the messages
        /// its MBRs, boot sector and core print when they stop.
        case syslinuxMenu, syslinuxPrompt, syslinuxError
        /// The firmware found nothing to boot (SeaBIOS's message, or OVMF falling back to its shell).
        case noBootableDevice
        /// Nothing recognisable appeared within the time allowed.
        case timeout
        /// The screen settled on something imgtool does not classify.
        case other
    }
    /// What the screen showed.
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

    /// An observation, for tests and callers that classify screens of their own.
    public init(outcome: Outcome, screen: [String], menuEntries: [String], message: String?, seconds: Double) {
        self.outcome = outcome
        self.screen = screen
        self.menuEntries = menuEntries
        self.message = message
        self.seconds = seconds
    }
}

/// Reading a boot screen: the VGA text buffer's bytes (`decodeTextBuffer`) or a serial console's
/// (`renderTerminal`, in SerialTerminal.swift) become rows of text, and the rows a `Classification`:
/// GRUB's menu, grub> and grub rescue>, GRUB's errors, SYSLINUX's menu, prompt and errors,
/// SeaBIOS's "No bootable device", OVMF's shell. Pure: strings and bytes in, values out; `QemuBoot`
/// runs qemu and feeds it the screens.
public enum BootScreen {
    /// The VGA text buffer: where it is in the guest's memory, and its size in cells.
    static let textBuffer = (address: 0xB8000, columns: 80, rows: 25)

    /// What a screen shows, if it is a state worth reporting.
    public struct Classification: Sendable, Equatable {
        /// What the screen shows.
        public let outcome: BootObservation.Outcome
        /// For `.grubMenu` and `.syslinuxMenu`: the entry titles as shown.
        public let menuEntries: [String]
        /// The error or warning line, when the screen shows one.
        public let message: String?
    }

    /// Errors that GRUB prints and then carries on from: the searches for /.disk/info and
    /// /.disk/mini-info in the configuration built into Debian's signed GRUB, which fail on any
    /// disk that is not installer media before it falls back to the grub.cfg beside it.
    static let expectedErrors: Set<String> = ["error: no such device: /.disk/info.", "error: no such device: /.disk/mini-info."]

    /// Classifies a decoded screen; nil if it shows nothing recognisable (yet). The rows are the
    /// guest's, so nothing here assumes more than that they are strings.
    public static func classify(screen: [String]) -> Classification? {
        let rows = screen.map { trimTrailing($0) }
        let lastRow = rows.last(where: { !$0.isEmpty }) ?? ""
        // GRUB prints its errors at column 0 as "error: ...". Debian's signed GRUB, started from
        // the removable path, looks for installer media first and goes on when there is none.
        let error = rows.last(where: { $0.hasPrefix("error:") && !expectedErrors.contains($0) })
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
        // OVMF with no option that starts (under Secure Boot its shell is refused too) says so on
        // its console; a loader that Secure Boot refused is "Access Denied".
        if let line = rows.first(where: { $0.contains("No bootable option or device was found") }) {
            let refused = rows.first { $0.contains("Access Denied") || $0.contains("Security Viola") }
            let message = refused.map { _ in "Secure Boot refused the loader (Access Denied): it is not signed by a key the firmware trusts" }
            return Classification(outcome: .noBootableDevice, menuEntries: [],
                                  message: message ?? String(line.drop(while: { $0 == " " })))
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

    static let blank = [String](repeating: "", count: textBuffer.rows)

    /// Decodes a VGA text buffer (character, attribute pairs; attributes ignored) into rows with
    /// trailing spaces trimmed. Anything but exactly 80x25 cells decodes as a blank screen.
    public static func decodeTextBuffer(_ bytes: [UInt8]) -> [String] {
        let (columns, rows) = (textBuffer.columns, textBuffer.rows)
        guard bytes.count == columns * rows * 2 else { return blank }
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

private extension String {
    func droppingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}
