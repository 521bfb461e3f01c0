import ImgFormats

/// What `Create` makes: a partition table of a kind, a disk size, and partitions in order, each
/// with a type, a size range and optionally a filesystem and its contents. Built from repart.d
/// definitions (`RepartDefinitions`), from `--partition` specs (`DiskLayout.Partition(spec:)`), or
/// by an embedder directly; `validate()` is the same check in every case.
public struct DiskLayout: Sendable, Equatable {
    /// MBR (msdos, with primary and logical partitions) or GPT.
    public enum TableKind: String, Sendable, CaseIterable {
        /// The table kinds.
        case gpt, mbr
    }

    /// The image's size: fixed, or the smallest that holds every partition at its minimum.
    public enum DiskSize: Sendable, Equatable {
        /// Exactly this many bytes.
        case bytes(UInt64)
        /// The smallest size that holds every partition.
        case auto
    }

    /// The partition table's kind.
    public var table: TableKind
    /// The image's size.
    public var size: DiskSize
    /// 512, or 4096 where a loop device carries it (Create refuses it otherwise).
    public var sectorSize: Int
    /// The partitions, in table order.
    public var partitions: [Partition]

    /// A layout; partitions in table order.
    public init(table: TableKind, size: DiskSize = .auto, sectorSize: Int = 512, partitions: [Partition]) {
        self.table = table
        self.size = size
        self.sectorSize = sectorSize
        self.partitions = partitions
    }

    /// Partitions start and end on 1 MiB boundaries, as fdisk, parted and repart place them.
    public static let alignment: UInt64 = 1 << 20

    /// One partition: what it is, how big, and what fills it.
    public struct Partition: Sendable, Equatable {
        /// What the partition is: its GPT type GUID or MBR type byte.
        public var type: PartitionKind
        /// GPT partition name; also the filesystem's label.
        public var label: String?
        /// GPT unique partition GUID; also the filesystem's UUID (ext) or serial (vfat: its first
        /// four bytes), as repart derives a filesystem's from its partition's. nil: from the seed.
        public var uuid: GUID?
        /// Size bounds in bytes (rounded up to `alignment`); nil: 0 and unbounded.
        public var sizeMin: UInt64?
        /// Upper size bound in bytes; nil: unbounded.
        public var sizeMax: UInt64?
        /// Share of the free space of a fixed-size disk, as repart's Weight= (default 1000).
        public var weight: UInt32
        /// The filesystem made in it; nil leaves it unformatted.
        public var format: Filesystem?
        /// Directories and tar archives copied into the filesystem, each at a target directory.
        public var copies: [Copy]
        /// Directories made in the filesystem (after the copies, as repart does).
        public var makeDirectories: [String]
        /// Make the partition no bigger than its contents need (repart's Minimize=guess/best).
        public var minimize: Bool
        /// GPT attribute bits (repart's Flags=).
        public var attributes: UInt64
        /// MBR: the active flag; GPT: the legacy-BIOS-bootable attribute (bit 2).
        public var bootable: Bool
        /// MBR: a logical partition inside the extended one.
        public var logical: Bool
        /// Where it was defined, for messages: "10-root.conf", "--partition 2".
        public var origin: String

        /// A partition of `type`; every other property defaults to repart's default.
        public init(type: PartitionKind, label: String? = nil, uuid: GUID? = nil, sizeMin: UInt64? = nil,
                    sizeMax: UInt64? = nil, weight: UInt32 = 1000, format: Filesystem? = nil, copies: [Copy] = [],
                    makeDirectories: [String] = [], minimize: Bool = false, attributes: UInt64 = 0,
                    bootable: Bool = false, logical: Bool = false, origin: String) {
            self.type = type
            self.label = label
            self.uuid = uuid
            self.sizeMin = sizeMin
            self.sizeMax = sizeMax
            self.weight = weight
            self.format = format
            self.copies = copies
            self.makeDirectories = makeDirectories
            self.minimize = minimize
            self.attributes = attributes
            self.bootable = bootable
            self.logical = logical
            self.origin = origin
        }
    }

    /// A filesystem `Create` can make without root: by mke2fs, mkfs.vfat or mkswap.
    public enum Filesystem: String, Sendable, CaseIterable {
        /// The filesystems.
        case ext2, ext3, ext4, vfat, swap
        var isExt: Bool { self == .ext2 || self == .ext3 || self == .ext4 }
    }

    /// A source (a directory or a tar archive) and the directory of the filesystem it lands in.
    public struct Copy: Sendable, Equatable {
        /// A directory or tar archive on this machine.
        public var source: String
        /// Where it lands in the filesystem.
        public var target: String
        /// `source` into `target` ("/": the filesystem's root).
        public init(source: String, target: String = "/") {
            self.source = source
            self.target = target
        }
    }
}

/// A partition's type: a name both tables know, a GPT type GUID or an MBR type byte.
public struct PartitionKind: Sendable, Equatable, CustomStringConvertible {
    /// The name given, or the GUID or byte as written.
    public let name: String
    /// The GPT type GUID; nil for an MBR-only type.
    public let gpt: GUID?
    /// The MBR type byte; nil for a GPT-only type.
    public let mbr: UInt8?

    public var description: String { name }

    /// A name from `names`, a GUID, or an MBR type in hex ("83", "0x83"); nil for anything else.
    public init?(_ text: String) {
        let lowered = text.lowercased()
        if let known = Self.names[lowered] {
            name = lowered
            gpt = GUID(string: known.gpt)
            mbr = known.mbr
        } else if let guid = GUID(string: text) {
            name = guid.description
            gpt = guid
            mbr = nil
        } else if let byte = Self.mbrByte(lowered) {
            name = "0x" + String(byte, radix: 16)
            gpt = nil
            mbr = byte
        } else {
            return nil
        }
    }

    private static func mbrByte(_ text: String) -> UInt8? {
        let digits = text.hasPrefix("0x") ? String(text.dropFirst(2)) : text
        guard (1...2).contains(digits.count), let byte = UInt8(digits, radix: 16), byte != 0 else { return nil }
        return byte
    }

    /// repart.d's Type= names (the Discoverable Partitions Specification's, for x86-64) and
    /// imgtool's own: bios-boot, linux, vfat, lvm, raid. MBR has no BIOS boot partition: core.img
    /// goes in the gap after the MBR.
    static let names: [String: (gpt: String, mbr: UInt8?)] = [
        "esp": ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", 0xEF),
        "xbootldr": ("BC13C2FF-59E6-4262-A352-B275FD6F7172", 0xEA),
        "bios-boot": ("21686148-6449-6E6F-744E-656564454649", nil),
        "swap": ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", 0x82),
        "home": ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", 0x83),
        "srv": ("3B8F8425-20E0-4F3B-907F-1A25A76F98E8", 0x83),
        "var": ("4D21B016-B534-45C2-A9FB-5C16E091FD2D", 0x83),
        "tmp": ("7EC6F557-3BC5-4ACA-B293-16EF5DF639D1", 0x83),
        "linux-generic": ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 0x83),
        "linux": ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 0x83),
        "root": ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", 0x83),
        "root-x86-64": ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", 0x83),
        "root-x86": ("44479540-F297-41B2-9AF7-D131D5F0458A", 0x83),
        "usr": ("8484680C-9521-48C6-9C11-B0720656F69E", 0x83),
        "usr-x86-64": ("8484680C-9521-48C6-9C11-B0720656F69E", 0x83),
        "vfat": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x0C),
        "lvm": ("E6D6D379-F507-44C2-A23C-238F2A3DF928", 0x8E),
        "raid": ("A19D880F-05FC-4D3B-A006-743F0F84911E", 0xFD),
    ]

    /// Every name `init` accepts, sorted, for messages and completions.
    public static var knownNames: [String] { names.keys.sorted() }

    var isESP: Bool { name == "esp" || gpt == GUID(string: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B") || mbr == 0xEF }
    var isBIOSBoot: Bool { gpt == GUID(string: "21686148-6449-6E6F-744E-656564454649") }
}
