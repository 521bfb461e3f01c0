/// A PE/COFF image as EFI firmware loads it: an EFI application or driver such as BOOTX64.EFI.
///
/// Layout (Microsoft's PE Format, all little-endian): "MZ" at 0 and e_lfanew u32 at 0x3C, the offset
/// of "PE\0\0"; the COFF header after it (machine u16 at +4, section count u16 at +6, optional
/// header size u16 at +20); the optional header at +24 (magic u16 at 0, subsystem u16 at 68); then
/// the section table, 40 bytes a section (name 8 bytes, virtual size u32 at 8, virtual address at
/// 12, raw size at 16, raw pointer at 20, characteristics at 36). Every offset and size is checked
/// against the file before use: hostile input yields a `Problem`, never a trap.
public struct PEImage: Sendable, Equatable {
    /// The CPU the image is built for (the COFF header's machine field).
    public enum Machine: Sendable, Equatable, CustomStringConvertible {
        /// IMAGE_FILE_MACHINE_I386 (0x14C), _AMD64 (0x8664) and _ARM64 (0xAA64).
        case i386, x86_64, aarch64
        /// Any other machine value, as stored.
        case other(UInt16)

        init(_ value: UInt16) {
            switch value {
            case 0x014C: self = .i386
            case 0x8664: self = .x86_64
            case 0xAA64: self = .aarch64
            default: self = .other(value)
            }
        }

        public var description: String {
            switch self {
            case .i386: return "i386"
            case .x86_64: return "x86-64"
            case .aarch64: return "aarch64"
            case .other(let value): return "machine 0x\(String(value, radix: 16))"
            }
        }
    }

    /// PE32 (magic 0x10B) or PE32+ (0x20B, 64-bit addresses).
    public enum Format: Sendable, Equatable { /** Magic 0x10B, or 0x20B for PE32+. */ case pe32, pe32Plus }

    /// What kind of program the image is (the optional header's subsystem field).
    public enum Subsystem: Sendable, Equatable, CustomStringConvertible {
        /// IMAGE_SUBSYSTEM_EFI_APPLICATION (10), _EFI_BOOT_SERVICE_DRIVER (11) and _EFI_RUNTIME_DRIVER (12).
        case efiApplication, efiBootServiceDriver, efiRuntimeDriver
        /// Any other subsystem value, as stored (a Windows program, say).
        case other(UInt16)

        init(_ value: UInt16) {
            switch value {
            case 10: self = .efiApplication
            case 11: self = .efiBootServiceDriver
            case 12: self = .efiRuntimeDriver
            default: self = .other(value)
            }
        }

        public var description: String {
            switch self {
            case .efiApplication: return "EFI application"
            case .efiBootServiceDriver: return "EFI boot service driver"
            case .efiRuntimeDriver: return "EFI runtime driver"
            case .other(let value): return "subsystem \(value)"
            }
        }
    }

    /// One section table entry.
    public struct Section: Sendable, Equatable {
        /// The 8-byte name up to its first NUL.
        public let name: String
        /// The section's size in memory, in bytes.
        public let virtualSize: UInt32
        /// The section's address in memory, relative to the image base.
        public let virtualAddress: UInt32
        /// The section's size in the file, in bytes (SizeOfRawData).
        public let rawSize: UInt32
        /// The section's offset in the file (PointerToRawData).
        public let rawPointer: UInt32
        /// IMAGE_SCN_* flags (0x20 code, 0x40 initialized data, 0x20000000 executable, ...).
        public let characteristics: UInt32
    }

    /// From the COFF header.
    public let machine: Machine
    /// From the optional header's magic.
    public let format: Format
    /// From the optional header.
    public let subsystem: Subsystem
    /// The section table, in file order; each lies within the file.
    public let sections: [Section]
    private let bytes: [UInt8]

    /// The loader refuses more (the PE spec's limit for images is 96).
    public static let maximumSections = 96

    /// Why the bytes are not a usable PE image. `description` is the message the user reads.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// No "MZ" at byte 0.
        case notMZ
        /// e_lfanew points outside the file.
        case peHeaderOutOfRange(offset: UInt32, fileSize: Int)
        /// No "PE\0\0" where e_lfanew points.
        case notPE(offset: UInt32)
        /// More sections than `maximumSections`.
        case tooManySections(Int)
        /// The COFF header, optional header or section table runs past the end of the file.
        case headersOutOfRange(end: Int, fileSize: Int)
        /// The optional header's magic is neither 0x10B nor 0x20B.
        case unknownOptionalHeader(magic: UInt16)
        /// The optional header is too small to hold the subsystem field.
        case optionalHeaderTooSmall(size: Int, needed: Int)
        /// A section's raw data runs past the end of the file.
        case sectionOutOfRange(name: String, pointer: UInt32, size: UInt32, fileSize: Int)

        public var description: String {
            let damaged = "the file is damaged or not an EFI binary; reinstall the boot loader"
            switch self {
            case .notMZ:
                return "the file does not start with \"MZ\", so it is not a PE/EFI binary; reinstall the boot loader"
            case .peHeaderOutOfRange(let offset, let fileSize):
                return "the DOS header points to the PE header at byte \(offset), past the end of the \(fileSize)-byte file; \(damaged)"
            case .notPE(let offset):
                return "there is no \"PE\\0\\0\" signature at byte \(offset), where the DOS header points; \(damaged)"
            case .tooManySections(let count):
                return "the COFF header claims \(count) sections, more than the \(PEImage.maximumSections) a loader accepts; \(damaged)"
            case .headersOutOfRange(let end, let fileSize):
                return "the optional header and section table end at byte \(end), past the end of the \(fileSize)-byte file; \(damaged)"
            case .unknownOptionalHeader(let magic):
                return "the optional header magic is 0x\(String(magic, radix: 16)), neither PE32 (0x10b) nor PE32+ (0x20b); \(damaged)"
            case .optionalHeaderTooSmall(let size, let needed):
                return "the optional header is \(size) bytes, too small for its \(needed) bytes of fixed fields; \(damaged)"
            case .sectionOutOfRange(let name, let pointer, let size, let fileSize):
                return "section \"\(name)\" claims \(size) bytes at byte \(pointer), past the end of the \(fileSize)-byte file; the file is truncated, reinstall the boot loader"
            }
        }
    }

    /// Parses the headers and section table of `bytes`, checking each section's raw data lies in the file.
    public static func parse(_ bytes: [UInt8]) throws(Problem) -> PEImage {
        guard bytes.count >= 64, bytes[0] == 0x4D, bytes[1] == 0x5A else { throw .notMZ }
        let peOffset = bytes.le32(0x3C)
        let pe = Int(peOffset)  // Int is 64 bits: no overflow below
        guard pe <= bytes.count - 24 else { throw .peHeaderOutOfRange(offset: peOffset, fileSize: bytes.count) }
        guard bytes[pe..<pe + 4].elementsEqual([0x50, 0x45, 0, 0]) else { throw .notPE(offset: peOffset) }
        let machine = Machine(bytes.le16(pe + 4))
        let sectionCount = Int(bytes.le16(pe + 6))
        let optionalSize = Int(bytes.le16(pe + 20))
        guard sectionCount <= maximumSections else { throw .tooManySections(sectionCount) }
        let optional = pe + 24
        let table = optional + optionalSize
        let end = table + sectionCount * 40
        guard end <= bytes.count else { throw .headersOutOfRange(end: end, fileSize: bytes.count) }

        guard optionalSize >= 2 else { throw .optionalHeaderTooSmall(size: optionalSize, needed: 2) }
        let magic = bytes.le16(optional)
        let format: Format
        switch magic {
        case 0x10B: format = .pe32
        case 0x20B: format = .pe32Plus
        default: throw .unknownOptionalHeader(magic: magic)
        }
        // The standard and Windows-specific fields, up to NumberOfRvaAndSizes.
        let needed = format == .pe32 ? 96 : 112
        guard optionalSize >= needed else { throw .optionalHeaderTooSmall(size: optionalSize, needed: needed) }
        let subsystem = Subsystem(bytes.le16(optional + 68))

        var sections: [Section] = []
        for index in 0..<sectionCount {
            let at = table + index * 40
            let section = Section(
                name: String(decoding: bytes[at..<at + 8].prefix { $0 != 0 }, as: UTF8.self),
                virtualSize: bytes.le32(at + 8), virtualAddress: bytes.le32(at + 12), rawSize: bytes.le32(at + 16),
                rawPointer: bytes.le32(at + 20), characteristics: bytes.le32(at + 36))
            // Uninitialised data (.bss) has no raw bytes, whatever its pointer says.
            if section.rawSize > 0, UInt64(section.rawPointer) + UInt64(section.rawSize) > UInt64(bytes.count) {
                throw .sectionOutOfRange(
                    name: section.name, pointer: section.rawPointer, size: section.rawSize, fileSize: bytes.count)
            }
            sections.append(section)
        }
        return PEImage(machine: machine, format: format, subsystem: subsystem, sections: sections, bytes: bytes)
    }

    /// The file's bytes of the first section named `name`: its raw data, cut to its virtual size when
    /// that is smaller (the rest is padding to the file alignment); nil if there is no such section.
    public func section(named name: String) -> [UInt8]? {
        guard let section = sections.first(where: { $0.name == name }) else { return nil }
        let start = Int(section.rawPointer)
        let count = section.virtualSize == 0 ? section.rawSize : min(section.rawSize, section.virtualSize)
        return section.rawSize == 0 ? [] : Array(bytes[start..<start + Int(count)])  // checked by parse
    }
}

/// What a GRUB EFI image (grub-mkimage -O x86_64-efi, arm64-efi, i386-efi) carries in its "mods"
/// section: grub_module_info {u32 magic "mimg", [u32 padding,] offset, size}, 64-bit fields in a
/// PE32+ image and 32-bit ones in PE32, then the same module list as i386-pc's core.img.
public struct GrubEFIImage: Sendable, Equatable {
    /// Names from each ELF module's `.modname` section, in the order the kernel loads them.
    public let modules: [String]
    /// Module info object type 3; grub-mkimage's `-p`.
    public let prefix: String?
    /// Module info object type 2; grub-mkimage's `-c`.
    public let config: String?
    /// The type of every object that is not decoded (memdisk 1, pubkey 4, dtb 5, disable_shim_lock 6, ...).
    public let otherObjects: [UInt32]

    /// Makes a value as `decode` would, for tests and reports.
    public init(modules: [String], prefix: String?, config: String?, otherObjects: [UInt32]) {
        self.modules = modules
        self.prefix = prefix
        self.config = config
        self.otherObjects = otherObjects
    }

    static let moduleInfoMagic: UInt32 = 0x676D_696D  // "mimg"

    /// Why the module list cannot be decoded. `description` is the message the user reads.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// The image has no `mods` section.
        case modsSectionMissing
        /// The `mods` section does not start with module info ("mimg").
        case moduleInfoMissing
        /// The module info's size reaches past the end of the `mods` section.
        case moduleInfoOutOfRange(offset: UInt64, size: UInt64, sectionSize: Int)
        /// A module info entry's type, size or offset is out of range.
        case moduleEntryInvalid(entry: Int, offset: Int, reason: String)
        /// A module's ELF has no readable `.modname` section.
        case moduleNameMissing(entry: Int, reason: String)

        public var description: String {
            let reinstall = "the image is damaged, reinstall GRUB with grub-install"
            switch self {
            case .modsSectionMissing:
                return "the EFI binary has no \"mods\" section, so it is not a GRUB image made by grub-mkimage"
            case .moduleInfoMissing:
                return "the \"mods\" section does not start with GRUB's module info (\"mimg\"); \(reinstall)"
            case .moduleInfoOutOfRange(let offset, let size, let sectionSize):
                return "GRUB's module info says its modules lie at \(offset)..<\(size), outside the \(sectionSize)-byte \"mods\" section; \(reinstall)"
            case .moduleEntryInvalid(let entry, let offset, let reason):
                return "module info entry \(entry) at offset \(offset) of the \"mods\" section is invalid: \(reason); \(reinstall)"
            case .moduleNameMissing(let entry, let reason):
                return "module \(entry) has no readable name: \(reason); \(reinstall)"
            }
        }
    }

    /// Decodes the module list in `pe`'s "mods" section, where GRUB's EFI kernel finds it at run time.
    public static func decode(pe: PEImage) throws(Problem) -> GrubEFIImage {
        guard let mods = pe.section(named: "mods") else { throw .modsSectionMissing }
        let wide = pe.format == .pe32Plus
        let headerSize = wide ? 24 : 12
        guard mods.count >= headerSize, mods.le32(0) == moduleInfoMagic else { throw .moduleInfoMissing }
        let offset = wide ? mods.le64(8) : UInt64(mods.le32(4))
        let size = wide ? mods.le64(16) : UInt64(mods.le32(8))
        guard offset >= UInt64(headerSize), offset <= size, size <= UInt64(mods.count) else {
            throw .moduleInfoOutOfRange(offset: offset, size: size, sectionSize: mods.count)
        }
        do throws(GrubModuleList.Problem) {
            let objects = try GrubModuleList.walk(mods, from: Int(offset), to: Int(size), elf64: wide)
            return GrubEFIImage(
                modules: objects.modules, prefix: objects.prefix, config: objects.config, otherObjects: objects.other)
        } catch {
            switch error {
            case .entryInvalid(let entry, let offset, let reason): throw .moduleEntryInvalid(entry: entry, offset: offset, reason: reason)
            case .nameMissing(let entry, let reason): throw .moduleNameMissing(entry: entry, reason: reason)
            }
        }
    }
}
