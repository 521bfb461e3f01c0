import ImgFormats
import ImgSystem

/// What `Inspect.run` found, and what `imgtool inspect --json` prints (`json`; it is also the
/// Codable form). Absent values are nil here and JSON null there, so scripts can rely on every key.
public struct InspectReport: Sendable, Equatable {
    /// A filesystem libblkid recognised.
    public struct Filesystem: Sendable, Equatable {
        /// What libblkid calls it.
        public let type: FilesystemKind
        /// The filesystem UUID as libblkid prints it; nil when it has none.
        public let uuid: String?
        /// The volume label; nil when unset.
        public let label: String?
        /// The filesystem's own version, where libblkid reads one ("1.0" for ext4).
        public let version: String?
        /// The filesystem's block size in bytes, where libblkid reports one.
        public let blockSize: Int?

        /// Makes a value, for an embedder's tests.
        public init(type: FilesystemKind, uuid: String?, label: String?, version: String?, blockSize: Int?) {
            self.type = type
            self.uuid = uuid
            self.label = label
            self.version = version
            self.blockSize = blockSize
        }

        init(_ p: FilesystemProbe) {
            self.init(type: FilesystemKind(p.type), uuid: p.uuid, label: p.label, version: p.version, blockSize: p.blockSize)
        }
    }

    /// One entry of the partition table.
    public struct Partition: Sendable, Equatable {
        /// 1-4 for MBR primaries, from 5 for logicals; the entry's index + 1 for GPT.
        public let number: Int
        /// In sectors, as sfdisk prints them.
        public let start: UInt64
        /// In sectors.
        public let size: UInt64
        /// The MBR type byte or the GPT type GUID.
        public let type: PartitionType
        /// The active flag (MBR) or the legacy-BIOS-bootable attribute (GPT).
        public let bootable: Bool
        /// The GPT partition's unique GUID.
        public let uuid: String?
        /// The GPT partition's name, when not empty.
        public let name: String?
        /// What libblkid finds in the partition; nil when it finds nothing (or the partition is an extended container).
        public let filesystem: Filesystem?

        /// The name people use for the type ("Linux"), when imgtool knows one.
        public var typeName: String? { type.name }

        /// Makes a value, for an embedder's tests.
        public init(number: Int, start: UInt64, size: UInt64, type: PartitionType, bootable: Bool, uuid: String?,
                    name: String?, filesystem: Filesystem?) {
            self.number = number
            self.start = start
            self.size = size
            self.type = type
            self.bootable = bootable
            self.uuid = uuid
            self.name = name
            self.filesystem = filesystem
        }

        init(_ p: ImgFormats.Partition, filesystem fs: FilesystemProbe?) {
            self.init(number: p.number, start: p.startSector, size: p.sectorCount,
                      type: p.typeGUID.map(PartitionType.gpt) ?? p.apmType.map(PartitionType.apm)
                        ?? p.bsdType.map(PartitionType.bsd) ?? .mbr(p.mbrType ?? 0),
                      bootable: p.bootable,
                      uuid: p.uuid?.description, name: p.name.flatMap { $0.isEmpty ? nil : $0 },
                      filesystem: fs.map(Filesystem.init))
        }
    }

    /// The partition table, or the name of one imgtool does not parse.
    public struct Table: Sendable, Equatable {
        /// nil when the image has no partition table.
        public let type: PartitionTableType?
        /// The MBR disk signature ("0x494d4754") or the GPT disk GUID.
        public let id: String?
        /// Ordered by number; empty when the table is absent or not parsed.
        public let partitions: [Partition]
        /// The ranges of sectors no partition covers.
        public let unallocated: [SectorRange]
        /// The partitions come from an entry array no checksum vouches for (a GPT whose every copy
        /// fails its CRC32): what is there, for a forensic view, with an error finding.
        public let untrusted: Bool

        /// Whether imgtool parsed the table (false for labels it only names).
        public var parsed: Bool {
            switch type {
            case .dos?, .gpt?, .mac?: return true
            case .unparsed?, nil: return false
            }
        }

        /// Makes a value, for an embedder's tests.
        public init(type: PartitionTableType?, id: String?, partitions: [Partition], unallocated: [SectorRange],
                    untrusted: Bool = false) {
            self.untrusted = untrusted
            self.type = type
            self.id = id
            self.partitions = partitions
            self.unallocated = unallocated
        }
    }

    /// The path as given.
    public let image: String
    /// In bytes.
    public let size: UInt64
    /// The logical sector size the table is laid out for (512 without a table).
    public let sectorSize: Int
    /// The partition table; its `type` is nil when there is none.
    public let partitionTable: Table
    /// A filesystem on the whole image: one that fills it (no partition table), or one that spans
    /// it around the table (a hybrid ISO's ISO 9660 volume), as `blkid -p` on the image reports it.
    public let filesystem: Filesystem?
    /// What the boot code in sector 0 is.
    public let bootCode: BootCode
    /// The operating system in the image's ext2/3/4 filesystems, if one is found.
    public let os: OSReport?
    /// What is unusual or damaged, by severity.
    public let findings: [Finding]
    /// The virtual-disk container the file is (qcow2, VMDK, VHD, VHDX, E01); nil for a raw image.
    public let container: DiskContainer?
    /// The LVM2 volume groups on the image's physical volumes.
    public let volumeGroups: [VolumeGroup]
    /// The LUKS volumes in partitions (or filling the image), identified and never opened.
    public let encryptedVolumes: [EncryptedVolume]

    /// Makes a value, for an embedder's tests.
    public init(image: String, size: UInt64, sectorSize: Int, partitionTable: Table, filesystem: Filesystem?,
                bootCode: BootCode, os: OSReport?, findings: [Finding], container: DiskContainer? = nil,
                volumeGroups: [VolumeGroup] = [], encryptedVolumes: [EncryptedVolume] = []) {
        self.container = container
        self.volumeGroups = volumeGroups
        self.encryptedVolumes = encryptedVolumes
        self.image = image
        self.size = size
        self.sectorSize = sectorSize
        self.partitionTable = partitionTable
        self.filesystem = filesystem
        self.bootCode = bootCode
        self.os = os
        self.findings = findings
    }
}
