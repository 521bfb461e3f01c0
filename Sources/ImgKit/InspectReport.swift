import ImgFormats
import ImgSystem

/// What `Inspect.run` found, and what `imgtool inspect --json` prints (`json`; it is also the
/// Codable form). Absent values are nil here and JSON null there, so scripts can rely on every key.
public struct InspectReport: Sendable, Equatable {
    /// A filesystem libblkid recognised.
    public struct Filesystem: Sendable, Equatable {
        public let type: FilesystemKind
        public let uuid: String?
        public let label: String?
        /// The filesystem's own version, where libblkid reads one ("1.0" for ext4).
        public let version: String?
        public let blockSize: Int?

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
        public let type: PartitionType
        /// The active flag (MBR) or the legacy-BIOS-bootable attribute (GPT).
        public let bootable: Bool
        /// The GPT partition's unique GUID.
        public let uuid: String?
        /// The GPT partition's name, when not empty.
        public let name: String?
        public let filesystem: Filesystem?

        /// The name people use for the type ("Linux"), when imgtool knows one.
        public var typeName: String? { type.name }

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
                      type: p.typeGUID.map(PartitionType.gpt) ?? .mbr(p.mbrType ?? 0), bootable: p.bootable,
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
        public let partitions: [Partition]
        /// The ranges of sectors no partition covers.
        public let unallocated: [SectorRange]

        /// Whether imgtool parsed the table (false for labels it only names).
        public var parsed: Bool {
            switch type {
            case .dos?, .gpt?: return true
            case .unparsed?, nil: return false
            }
        }

        public init(type: PartitionTableType?, id: String?, partitions: [Partition], unallocated: [SectorRange]) {
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
    public let partitionTable: Table
    /// A filesystem that fills the image (no partition table).
    public let filesystem: Filesystem?
    /// What the boot code in sector 0 is.
    public let bootCode: BootCode
    /// The operating system in the image's ext2/3/4 filesystems, if one is found.
    public let os: OSReport?
    /// What is unusual or damaged, by severity.
    public let findings: [Finding]

    public init(image: String, size: UInt64, sectorSize: Int, partitionTable: Table, filesystem: Filesystem?,
                bootCode: BootCode, os: OSReport?, findings: [Finding]) {
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
