import Glibc
import ImgFormats
import ImgSystem
import Logging

/// A forensic, read-only view of a disk image: its partition table (damaged ones included), the
/// filesystems in it, its boot code and the OS inside. The image is opened O_RDONLY; nothing is
/// attached or mounted and no root is needed.
public enum Inspect {
    /// What to inspect.
    public struct Options: Sendable, Equatable {
        /// The image file or block device.
        public var image: String

        public init(image: String) { self.image = image }
    }

    /// Reads everything the report needs. Problems with the image's contents are findings in the
    /// report, not errors; only an image that cannot be opened at all is an error.
    public static func run(_ options: Options, logger: Logger) throws(ImageOpenError) -> InspectReport {
        let path = options.image
        let source = try ImageSource.open(path)
        var findings: [Finding] = []
        let sectorSize: Int
        var tableReport: InspectReport.Table
        var bare: InspectReport.Filesystem?
        var filesystems: [OSInspection.Filesystem] = []

        if source.size == 0 { findings.append(Finding(.error, "the image is empty (0 bytes)")) }
        let table: PartitionTable?
        do {
            table = try PartitionTable.read(from: source)
        } catch {
            table = nil
            findings.append(Finding(.error, "reading the partition table failed: \(error)"))
        }
        if let table {
            sectorSize = table.sectorSize
            findings += table.findings
            let sectors = source.size / UInt64(sectorSize)
            var partitions: [InspectReport.Partition] = []
            for p in table.partitions {
                var fs: FilesystemProbe?
                if p.kind != .extended, let length = boundedLength(p, sectorSize: sectorSize, imageSize: source.size) {
                    let offset = p.startSector * UInt64(sectorSize)
                    fs = try? FilesystemProbe.probe(fd: source.fd, path: path, offset: offset, length: length)
                    if let fs, ["ext2", "ext3", "ext4"].contains(fs.type) { filesystems.append(.init(partition: p.number, offset: offset)) }
                }
                partitions.append(InspectReport.Partition(p, filesystem: fs))
            }
            tableReport = InspectReport.Table(
                type: table.kind.rawValue, id: table.identifier, parsed: true, partitions: partitions,
                unallocated: table.unallocated(totalSectors: sectors))
        } else {
            sectorSize = 512
            // Labels imgtool does not parse are named, never read as something else.
            let label = source.size > 0 ? try? partitionTableType(fd: source.fd, path: path, size: source.size) : nil
            if let label {
                findings.append(Finding(.info, "a \(label) partition table (recognised by libblkid); imgtool does not parse it, so its partitions are not listed"))
            }
            tableReport = InspectReport.Table(type: label, id: nil, parsed: false, partitions: [], unallocated: [])
            if source.size > 0, let fs = try? FilesystemProbe.probe(fd: source.fd, path: path, offset: 0, length: source.size) {
                bare = InspectReport.Filesystem(fs)
                if ["ext2", "ext3", "ext4"].contains(fs.type) { filesystems.append(.init(partition: nil, offset: 0)) }
            }
        }

        let sector0 = (try? source.read(at: 0, count: Int(min(512, source.size)))) ?? []
        let bootCode = BootCode.identify(sector0: sector0)
        let os = filesystems.isEmpty ? nil : OSInspection.inspect(image: path, filesystems: filesystems)
        logger.debug("inspected \(path)", metadata: ["partitions": "\(tableReport.partitions.count)"])
        return InspectReport(
            image: path, size: source.size, sectorSize: sectorSize, partitionTable: tableReport,
            filesystem: bare, bootCode: .init(bootCode), os: os,
            findings: findings.map { .init(severity: $0.severity.rawValue, message: $0.message) })
    }

    /// The partition's length in bytes, clipped to the image; nil when it starts past the end.
    static func boundedLength(_ p: Partition, sectorSize: Int, imageSize: UInt64) -> UInt64? {
        let (start, overflow) = p.startSector.multipliedReportingOverflow(by: UInt64(sectorSize))
        guard !overflow, start < imageSize else { return nil }
        let (length, overflow2) = p.sectorCount.multipliedReportingOverflow(by: UInt64(sectorSize))
        return min(overflow2 ? .max : length, imageSize - start)
    }

}

/// What `imgtool inspect --json` prints. Absent values are JSON null, so scripts can rely on
/// every key being there.
public struct InspectReport: Sendable {
    public struct Filesystem: Sendable {
        public let type: String
        public let uuid: String?
        public let label: String?
        public let version: String?
        public let blockSize: Int?

        init(_ p: FilesystemProbe) {
            type = p.type; uuid = p.uuid; label = p.label; version = p.version; blockSize = p.blockSize
        }

    }

    public struct Partition: Sendable {
        public let number: Int
        /// In sectors, as sfdisk prints them.
        public let start: UInt64
        public let size: UInt64
        /// "0x83" for MBR, the uppercase type GUID for GPT.
        public let type: String
        public let typeName: String?
        public let bootable: Bool
        public let uuid: String?
        public let name: String?
        public let filesystem: Filesystem?

        init(_ p: ImgFormats.Partition, filesystem fs: FilesystemProbe?) {
            number = p.number
            start = p.startSector
            size = p.sectorCount
            if let guid = p.typeGUID {
                type = guid.description
                typeName = PartitionTypeNames.name(gptType: guid)
            } else {
                let t = p.mbrType ?? 0
                type = "0x" + (t < 16 ? "0" : "") + String(t, radix: 16)
                typeName = PartitionTypeNames.name(mbrType: t)
            }
            bootable = p.bootable
            uuid = p.uuid?.description
            name = p.name.flatMap { $0.isEmpty ? nil : $0 }
            filesystem = fs.map(Filesystem.init)
        }

    }

    public struct Table: Sendable {
        /// "dos", "gpt", the libblkid name of a label imgtool does not parse, or nil.
        public let type: String?
        public let id: String?
        /// Whether imgtool parsed the table (false for labels it only names).
        public let parsed: Bool
        public let partitions: [Partition]
        public let unallocated: [SectorRange]

    }

    public struct BootCodeSummary: Sendable {
        public let kind: String
        public let description: String
        public let details: [String: String]
        init(_ b: BootCode) { kind = b.kind.rawValue; description = b.description; details = b.details }
        init(kind: String, description: String, details: [String: String]) {
            self.kind = kind
            self.description = description
            self.details = details
        }
    }

    public struct FindingEntry: Sendable {
        public let severity: String
        public let message: String
    }

    public let image: String
    public let size: UInt64
    public let sectorSize: Int
    public let partitionTable: Table
    /// A filesystem that fills the image (no partition table).
    public let filesystem: Filesystem?
    public let bootCode: BootCodeSummary
    public let os: OSReport?
    public let findings: [FindingEntry]

}
