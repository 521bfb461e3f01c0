import ImgFormats

// The kinds a report names, as values: an embedder switches over them instead of comparing
// strings. Each prints (`description`) exactly as the CLI's JSON spells it.

/// An image's partition table, as `inspect` names it.
public enum PartitionTableType: Sendable, Hashable, CustomStringConvertible {
    /// MBR (msdos), as sfdisk names it.
    case dos
    /// GPT, with its protective MBR.
    case gpt
    /// The Apple partition map, as libblkid names it.
    case mac
    /// A label libblkid recognises and imgtool does not parse ("sun", "sgi", ...), by libblkid's name.
    case unparsed(String)

    /// From the name the JSON carries.
    public init(_ name: String) {
        switch name {
        case "dos": self = .dos
        case "gpt": self = .gpt
        case "mac": self = .mac
        default: self = .unparsed(name)
        }
    }

    init(_ kind: PartitionTable.Kind) {
        switch kind {
        case .dos: self = .dos
        case .gpt: self = .gpt
        case .mac: self = .mac
        }
    }

    public var description: String {
        switch self {
        case .dos: return "dos"
        case .gpt: return "gpt"
        case .mac: return "mac"
        case .unparsed(let name): return name
        }
    }
}

/// A partition's type: the MBR type byte or the GPT type GUID.
public enum PartitionType: Sendable, Hashable, CustomStringConvertible {
    /// An MBR partition's type byte (0x83 Linux).
    case mbr(UInt8)
    /// A GPT partition's type GUID.
    case gpt(GUID)
    /// An Apple partition map entry's type ("Apple_HFS").
    case apm(String)
    /// A BSD disklabel partition's filesystem type (7, "4.2BSD").
    case bsd(UInt8)

    /// From "0x83", a GUID or a BSD type name, as `description` prints them; nil for anything else. An APM type is
    /// any text, so it is read as `.apm` only where the table says mac (`init?(_:table:)`).
    public init?(_ text: String) {
        if text.hasPrefix("0x"), text.count == 4, let byte = UInt8(text.dropFirst(2), radix: 16) {
            self = .mbr(byte)
        } else if let guid = GUID(string: text) {
            self = .gpt(guid)
        } else if let type = PartitionTypeNames.bsdType(named: text) {
            self = .bsd(type)
        } else if text.hasPrefix(Self.bsdPrefix), let type = UInt8(text.dropFirst(Self.bsdPrefix.count)) {
            self = .bsd(type)
        } else {
            return nil
        }
    }

    /// How a BSD filesystem type without a name prints: "bsd fstype 42".
    static let bsdPrefix = "bsd fstype "

    /// From `description`'s text in a table of type `table`: an APM type in a mac table, else
    /// as `init?(_:)` reads it.
    public init?(_ text: String, table: PartitionTableType?) {
        if table == .mac { self = .apm(text) } else { self.init(text) }
    }

    /// "0x83" for MBR (two lowercase hex digits, as sfdisk prints them), the uppercase type GUID for
    /// GPT, the type string for APM, disklabel's name for a BSD partition's type ("4.2BSD").
    public var description: String {
        switch self {
        case .mbr(let t): return "0x" + (t < 16 ? "0" : "") + String(t, radix: 16)
        case .gpt(let guid): return guid.description
        case .apm(let type): return type
        case .bsd(let type): return PartitionTypeNames.name(bsdType: type) ?? Self.bsdPrefix + String(type)
        }
    }

    /// The name people use for it ("Linux", "EFI System"), when imgtool knows one.
    public var name: String? {
        switch self {
        case .mbr(let t): return PartitionTypeNames.name(mbrType: t)
        case .gpt(let guid): return PartitionTypeNames.name(gptType: guid)
        case .apm, .bsd: return nil
        }
    }
}

/// A filesystem, by libblkid's TYPE.
public enum FilesystemKind: Sendable, Hashable, CustomStringConvertible {
    /// A TYPE imgtool names: each prints as libblkid spells it ("vfat" for FAT12/16/32).
    case ext2, ext3, ext4, vfat, exfat, ntfs, xfs, btrfs, swap, iso9660, squashfs, erofs
    /// Any other TYPE libblkid reports.
    case other(String)

    private static let known: [FilesystemKind] = [.ext2, .ext3, .ext4, .vfat, .exfat, .ntfs, .xfs, .btrfs, .swap,
                                                  .iso9660, .squashfs, .erofs]

    /// From libblkid's TYPE.
    public init(_ type: String) {
        self = Self.known.first { $0.description == type } ?? .other(type)
    }

    /// libblkid's TYPE: "ext4", "vfat", "swap".
    public var description: String {
        switch self {
        case .ext2: return "ext2"
        case .ext3: return "ext3"
        case .ext4: return "ext4"
        case .vfat: return "vfat"
        case .exfat: return "exfat"
        case .ntfs: return "ntfs"
        case .xfs: return "xfs"
        case .btrfs: return "btrfs"
        case .swap: return "swap"
        case .iso9660: return "iso9660"
        case .squashfs: return "squashfs"
        case .erofs: return "erofs"
        case .other(let type): return type
        }
    }

    /// ext2, ext3 or ext4: what imgtool reads through libext2fs.
    public var isExt: Bool { self == .ext2 || self == .ext3 || self == .ext4 }
}

/// The GRUB platform an install is for.
public enum GrubTarget: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// BIOS.
    case i386PC = "i386-pc"
    /// 64-bit UEFI.
    case x86_64EFI = "x86_64-efi"

    /// Where the distribution keeps the platform's modules and images.
    var moduleDirectory: String { "/usr/lib/grub/\(rawValue)" }
    /// The Debian package that ships them.
    var package: String { self == .i386PC ? "grub-pc-bin" : "grub-efi-amd64-bin" }

    public var description: String { rawValue }
}

extension PEImage.Machine {
    /// From `description` ("x86-64", "machine 0x1c4"); nil for anything else.
    public init?(describing text: String) {
        switch text {
        case "i386": self = .i386
        case "x86-64": self = .x86_64
        case "aarch64": self = .aarch64
        default:
            guard text.hasPrefix("machine 0x"), let value = UInt16(text.dropFirst("machine 0x".count), radix: 16) else { return nil }
            self = .other(value)
        }
    }
}

extension PEImage.Subsystem {
    /// From `description` ("EFI application", "subsystem 3"); nil for anything else.
    public init?(describing text: String) {
        switch text {
        case "EFI application": self = .efiApplication
        case "EFI boot service driver": self = .efiBootServiceDriver
        case "EFI runtime driver": self = .efiRuntimeDriver
        default:
            guard text.hasPrefix("subsystem "), let value = UInt16(text.dropFirst("subsystem ".count)) else { return nil }
            self = .other(value)
        }
    }
}
