/// What the boot code in sector 0 is: GRUB 2, GRUB legacy, SYSLINUX, Microsoft's MBR, nothing, or
/// something unknown (named by the SHA-256 of its code area).
///
/// Identification matches string sequences and a few structural bytes, never fixed string offsets:
/// distribution builds of the same loader move their code and messages around.
public struct BootCode: Sendable, Equatable {
    /// The loader found in sector 0.
    public enum Kind: String, Sendable {
        /// `none`: the code area is all zeros; `unknown`: code that matches no known loader.
        case none, grub2, grubLegacy, syslinux, microsoft, unknown
    }

    /// Which loader the code is; `details` keys depend on it.
    public let kind: Kind
    /// For people: "GRUB 2 boot.img (core.img at sector 1, boot drive from BIOS)".
    public let description: String
    /// For machines; keys per kind:
    /// - grub2: "image" ("boot.img" or "boot_hybrid.img"), "coreImageSector" (decimal),
    ///   "bootDrive" ("bios" for 0xFF, else hex such as "0x80"), "driveCheck" ("patched" when
    ///   grub-setup replaced the jump with 90 90, "shipped" for EB 05, else "unrecognized (xx xx)").
    /// - grubLegacy: "version" (stage1 compatibility version, "3.2" for GRUB 0.9x), "stage2Sector"
    ///   (decimal), "bootDrive" (as for grub2).
    /// - syslinux: "image" (the SYSLINUX file it matches: "mbr.bin", "gptmbr.bin", "altmbr.bin",
    ///   "isohdpfx.bin", "isohdppx.bin"); altmbr.bin adds "partition" (byte 439, the partition it boots).
    /// - microsoft: "messages" ("english", or "localized" when found through the message table).
    /// - unknown: "sha256" of the 440-byte code area (absent when the input is too short).
    public let details: [String: String]

    /// Makes a value as `identify` would, for tests and for callers that identified the code themselves.
    public init(kind: Kind, description: String, details: [String: String] = [:]) {
        self.kind = kind
        self.description = description
        self.details = details
    }

    /// Bytes 0..<440: everything before the disk signature. (446 counts the signature and the two
    /// bytes after it, which belong to the partition table tooling, not to the code.)
    public static let codeAreaSize = 440

    /// Identifies the boot code of `sector0`, which must hold at least 512 bytes (only the first
    /// 512 are looked at). Never traps; anything it cannot name is `.unknown`.
    public static func identify(sector0: [UInt8]) -> BootCode {
        guard sector0.count >= 512 else {
            return BootCode(
                kind: .unknown,
                description: "sector 0 has only \(sector0.count) bytes, not 512; boot code not identified")
        }
        let sector = Array(sector0.prefix(512))
        let code = Array(sector[0..<codeAreaSize])
        if code.allSatisfy({ $0 == 0 }) {
            return BootCode(kind: .none, description: "zeroed boot code")
        }
        if let found = grub2(sector) ?? grubLegacy(sector) ?? syslinux(sector) ?? microsoft(sector) {
            return found
        }
        let digest = SHA256.hexDigest(code)
        return BootCode(
            kind: .unknown, description: "unknown boot code (sha256 \(digest.prefix(16))…)", details: ["sha256": digest])
    }

    // MARK: GRUB

    /// GRUB's messages, NUL-terminated and in this order in both generations; only the last one
    /// tells them apart (GRUB 2 ends it with CR LF).
    private static let grubMessages = ["GRUB ", "Geom", "Hard Disk", "Read"]

    /// GRUB 2 boot.img or boot_hybrid.img: jump EB 63 90 over the BPB, then GRUB's messages.
    /// xorriso (grub-mkrescue with an Apple partition map) writes the APM's "ER" block 0 over the
    /// first bytes and jumps over it (EB 02) into boot_hybrid.img's NOP sled, which ends in a jump
    /// to the same place.
    static func grub2(_ sector: [UInt8]) -> BootCode? {
        let apmPrefixed = sector[0..<2].elementsEqual("ER".utf8) && sector[4..<6].elementsEqual([0xEB, 0x02])
        guard sector[0..<3].elementsEqual([0xEB, 0x63, 0x90]) || apmPrefixed,
            let offsets = findInOrder(grubMessages + [" Error\r\n"], in: sector, terminatedByNUL: true)
        else { return nil }
        // boot_hybrid.img keeps its floppy probe (with the "Floppy" message) in the BPB area and
        // moves the kernel sector to 0x1B0; in boot.img that code lies where the partition table
        // goes, so "Floppy" before "GRUB " marks the hybrid. The values decide when the message
        // is gone: boot.img never uses 0x1B0, and boot_hybrid.img leaves 0x5C zero.
        let floppyFirst = findInOrder(["Floppy"], in: sector, end: offsets[0], terminatedByNUL: true) != nil
        let standardSector = sector.le64(0x5C)
        let hybridSector = sector.le64(0x1B0)
        let hybrid = floppyFirst || (standardSector == 0 && hybridSector != 0)
        let coreSector = hybrid ? hybridSector : standardSector
        let image = hybrid ? "boot_hybrid.img" : "boot.img"
        let details = apmPrefixed ? ["apm": "xorriso's Apple partition map block 0 over its first 8 bytes"] : [:]

        let driveCheck: String
        switch (sector[0x66], sector[0x67]) {
        case (0x90, 0x90): driveCheck = "patched"
        case (0xEB, 0x05): driveCheck = "shipped"
        case let (a, b): driveCheck = "unrecognized (\(hex(a)) \(hex(b)))"
        }
        let (drive, driveText) = bootDrive(sector[0x64])
        return BootCode(
            kind: .grub2, description: "GRUB 2 \(image) (core.img at sector \(coreSector), \(driveText))",
            details: ["image": image, "coreImageSector": String(coreSector), "bootDrive": drive, "driveCheck": driveCheck]
                .merging(details) { a, _ in a })
    }

    /// GRUB legacy (0.9x) stage1: the same messages, but " Error" without CR LF.
    static func grubLegacy(_ sector: [UInt8]) -> BootCode? {
        guard findInOrder(grubMessages + [" Error"], in: sector, terminatedByNUL: true) != nil,
            let stage1 = try? GrubLegacy.Stage1(sector)
        else { return nil }
        let version = "\(stage1.versionMajor).\(stage1.versionMinor)"
        let stage2Sector = stage1.stage2Sector
        let (drive, driveText) = bootDrive(stage1.bootDrive)
        // Every 0.9x release writes compatibility version 3.2; anything else is worth pointing out.
        let versionText = version == "3.2" ? "version 3.2" : "unexpected version \(version)"
        return BootCode(
            kind: .grubLegacy,
            description: "GRUB legacy stage1 (\(versionText)), stage2 at sector \(stage2Sector), \(driveText)",
            details: ["version": version, "stage2Sector": String(stage2Sector), "bootDrive": drive])
    }

    /// GRUB's convention: 0xFF means "the drive the BIOS booted from" (DL at entry).
    private static func bootDrive(_ byte: UInt8) -> (detail: String, text: String) {
        byte == 0xFF ? ("bios", "boot drive from BIOS") : ("0x" + hex(byte), "boot drive 0x" + hex(byte))
    }

    // MARK: SYSLINUX

    /// SYSLINUX's MBRs print CR LF-terminated messages; each file has its own set (checked against
    /// Debian's syslinux-common and isolinux 6.04, including the _c and _f variants).
    static func syslinux(_ sector: [UInt8]) -> BootCode? {
        func has(_ messages: [String]) -> Bool {
            findInOrder(messages.map { $0 + "\r\n" }, in: sector, terminatedByNUL: false) != nil
        }
        func found(_ image: String, _ description: String, _ extra: [String: String] = [:]) -> BootCode {
            BootCode(kind: .syslinux, description: description, details: extra.merging(["image": image]) { a, _ in a })
        }
        if has(["isolinux.bin missing or corrupt."]) {
            // isohdppx.bin compares against the "!GPX" handover signature; isohdpfx.bin does not.
            return contains(Array("!GPX".utf8), in: sector)
                ? found("isohdppx.bin", "isohybrid MBR (isohdppx.bin)")
                : found("isohdpfx.bin", "isohybrid MBR (isohdpfx.bin)")
        }
        if has(["Missing OS", "Multiple active partitions", "Disk error"]) {
            return found("gptmbr.bin", "SYSLINUX GPT MBR (gptmbr.bin)")
        }
        if has(["Missing operating system.", "Multiple active partitions.", "Operating system load error."]) {
            return found("mbr.bin", "SYSLINUX MBR (mbr.bin)")
        }
        if has(["Missing operating system.", "Operating system load error."]) {
            // altmbr.bin boots the partition whose number the installer wrote at byte 439.
            let partition = sector[439]
            let text = partition == 0 ? "partition number not set" : "boots partition \(partition)"
            return found("altmbr.bin", "SYSLINUX alternate MBR (altmbr.bin, \(text))", ["partition": String(partition)])
        }
        return nil
    }

    // MARK: Microsoft

    /// Microsoft's MBRs (MS-DOS through Windows 10) set up the stack with `33 C0 8E D0 BC 00 7C`;
    /// MS-DOS and Windows 9x put a CLI (FA) in front. The prologue alone is too common to trust
    /// (other loaders copy it), so a message check is required as well: the English messages, or
    /// for localized Windows MBRs the message table at 0x1B5..0x1B7 (three increasing bytes, each
    /// the low byte of a message offset 0x100 + b that holds text: localized messages use the OEM
    /// code page, so any byte but a control character counts).
    static func microsoft(_ sector: [UInt8]) -> BootCode? {
        let prologue: [UInt8] = [0x33, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C]
        guard sector[0..<7].elementsEqual(prologue) || sector[0..<8].elementsEqual([0xFA] + prologue) else { return nil }
        let english = ["Invalid partition table", "Error loading operating system", "Missing operating system"]
        if findInOrder(english, in: sector, end: codeAreaSize, terminatedByNUL: false) != nil {
            return BootCode(kind: .microsoft, description: "Microsoft MBR", details: ["messages": "english"])
        }
        let table = [sector[0x1B5], sector[0x1B6], sector[0x1B7]].map { 0x100 + Int($0) }
        let increasing = table[0] < table[1] && table[1] < table[2]
        // Each message needs a few characters of text and must end before the table itself.
        let text = table.allSatisfy { start in
            start + 4 <= 0x1B5 && sector[start..<start + 4].allSatisfy { $0 >= 0x20 && $0 != 0x7F }
        }
        if increasing && text {
            return BootCode(kind: .microsoft, description: "Microsoft MBR (localized messages)", details: ["messages": "localized"])
        }
        return nil
    }

    // MARK: byte searching

    /// The offsets of `strings`, found one after another (each after the end of the previous) in
    /// `sector[0..<end]`; nil if any is missing. With `terminatedByNUL` each must be followed by 0.
    static func findInOrder(_ strings: [String], in sector: [UInt8], end: Int = codeAreaSize, terminatedByNUL: Bool) -> [Int]? {
        var offsets: [Int] = []
        var position = 0
        for string in strings {
            let needle = Array(string.utf8) + (terminatedByNUL ? [0] : [])
            guard let offset = find(needle, in: sector, from: position, end: min(end, sector.count)) else { return nil }
            offsets.append(offset)
            position = offset + needle.count
        }
        return offsets
    }

    static func contains(_ needle: [UInt8], in sector: [UInt8]) -> Bool {
        find(needle, in: sector, from: 0, end: min(codeAreaSize, sector.count)) != nil
    }

    /// First offset of `needle` lying wholly inside `haystack[from..<end]`. Naive, which is fine for
    /// a 440-byte area.
    private static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int, end: Int) -> Int? {
        guard !needle.isEmpty, from >= 0, end - from >= needle.count else { return nil }
        for start in from...(end - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<start + needle.count].elementsEqual(needle) { return start }
        }
        return nil
    }

    private static func hex(_ byte: UInt8) -> String {
        let text = String(byte, radix: 16)
        return text.count == 1 ? "0" + text : text
    }
}
