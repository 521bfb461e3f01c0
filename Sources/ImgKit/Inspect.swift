import Glibc
import ImgFormats
import ImgSystem
import Logging

/// A forensic, read-only view of a disk image: its partition table (damaged ones included), the
/// filesystems in it, its boot code and the OS inside. The image is opened O_RDONLY; nothing is
/// attached or mounted and no root is needed.
public enum Inspect {
    /// The image to inspect, and whether to read it in a throwaway VM.
    public typealias Options = ReportOptions

    /// Reads everything the report needs. Problems with the image's contents are findings in the
    /// report, not errors; only an image that cannot be opened at all (or an isolated VM that
    /// could not run) is an error.
    public static func run(_ options: Options, logger: Logger) throws(ReportError) -> InspectReport {
        let made = try options.run(.inspect(options.local), logger: logger, decode: InspectReport.init(json:)) {
            path throws(ImageOpenError) in try report(path, backingFiles: options.backingFiles, logger: logger)
        }
        // In the VM the container's virtual disk is the image; the report names the container too.
        guard options.isolation != nil, made.container == nil,
              let container = try? DiskContainer.identify(FileByteSource(path: options.image)) else { return made }
        return InspectReport(image: made.image, size: made.size, sectorSize: made.sectorSize,
                             partitionTable: made.partitionTable, filesystem: made.filesystem, bootCode: made.bootCode,
                             os: made.os, findings: made.findings, container: container, volumeGroups: made.volumeGroups,
                             encryptedVolumes: made.encryptedVolumes)
    }

    private static func report(_ path: String, backingFiles: Bool, logger: Logger) throws(ImageOpenError) -> InspectReport {
        let image = try OpenedImage.open(path, backing: backingFiles)
        // A container whose disk cannot be read: its facts, and why. Its own bytes are not a disk.
        guard let source = image.disk else {
            let file = image.file
            let sector0 = (try? file.read(at: 0, count: Int(min(512, file.size)))) ?? []
            return InspectReport(
                image: path, size: file.size, sectorSize: 512,
                partitionTable: InspectReport.Table(type: nil, id: nil, partitions: [], unallocated: []), filesystem: nil,
                bootCode: BootCode.identify(sector0: sector0), os: nil,
                findings: image.container?.findings(path: path, problem: image.problem) ?? [], container: image.container)
        }
        var findings: [Finding] = image.findings
        let sectorSize: Int
        var tableReport: InspectReport.Table
        var bare: InspectReport.Filesystem?
        var filesystems: [OSInspection.Filesystem] = []
        var physicalVolumes: [FoundPV] = []
        var encrypted: [InspectReport.EncryptedVolume] = []

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
                    fs = try? FilesystemProbe.probe(source, offset: offset, length: length, name: path)
                    if let fs, FilesystemKind(fs.type).isExt { filesystems.append(.init(partition: p.number, offset: offset)) }
                    if fs?.type == "LVM2_member", let pv = try? LVMPhysicalVolume.read(source, offset: offset, length: length) {
                        physicalVolumes.append(.init(pv: pv, partition: p.number, offset: offset))
                    }
                    if fs?.type == "crypto_LUKS", let header = try? LUKSHeader.read(source, offset: offset) {
                        encrypted.append(.init(partition: p.number, header: header))
                    }
                }
                partitions.append(InspectReport.Partition(p, filesystem: fs))
            }
            tableReport = InspectReport.Table(
                type: PartitionTableType(table.kind), id: table.kind == .mac ? nil : table.identifier, partitions: partitions,
                unallocated: table.unallocated(totalSectors: sectors), untrusted: table.untrusted)
            // A filesystem can span the whole image around the table: a hybrid ISO's ISO 9660
            // volume, which is what a BIOS or a CD drive reads. blkid -p reports it beside the table.
            if let fs = try? FilesystemProbe.probe(source, offset: 0, length: source.size, name: path) {
                bare = InspectReport.Filesystem(fs)
            }
        } else {
            sectorSize = 512
            // Labels imgtool does not parse are named, never read as something else. dos and gpt it
            // parses itself: when its reader found no table (a FAT or exFAT boot sector, which
            // Debian 12's libblkid still calls dos for exFAT), that reading stands.
            let label = source.size > 0 ? (try? partitionTableType(source, name: path))
                .flatMap { $0 == "dos" || $0 == "gpt" ? nil : $0 } : nil
            if let label {
                findings.append(Finding(.info, "a \(label) partition table (recognised by libblkid); imgtool does not parse it, so its partitions are not listed"))
            }
            tableReport = InspectReport.Table(type: label.map(PartitionTableType.unparsed), id: nil, partitions: [], unallocated: [])
            if source.size > 0, let fs = try? FilesystemProbe.probe(source, offset: 0, length: source.size, name: path) {
                bare = InspectReport.Filesystem(fs)
                if FilesystemKind(fs.type).isExt { filesystems.append(.init(partition: nil, offset: 0)) }
                if fs.type == "LVM2_member", let pv = try? LVMPhysicalVolume.read(source, offset: 0, length: source.size) {
                    physicalVolumes.append(.init(pv: pv, partition: nil, offset: 0))
                }
                if fs.type == "crypto_LUKS", let header = try? LUKSHeader.read(source, offset: 0) {
                    encrypted.append(.init(partition: nil, header: header))
                }
            }
        }

        let groups = volumeGroups(physicalVolumes, source: source, path: path, filesystems: &filesystems, findings: &findings)
        let sector0 = (try? source.read(at: 0, count: Int(min(512, source.size)))) ?? []
        let bootCode = BootCode.identify(sector0: sector0)
        let os = filesystems.isEmpty ? nil : OSInspection.inspect(image: path, source: source, filesystems: filesystems)
        logger.debug("inspected \(path)", metadata: ["partitions": "\(tableReport.partitions.count)"])
        return InspectReport(
            image: path, size: source.size, sectorSize: sectorSize, partitionTable: tableReport,
            filesystem: bare, bootCode: bootCode, os: os, findings: findings, container: image.container, volumeGroups: groups,
            encryptedVolumes: encrypted)
    }

    /// The partition's length in bytes, clipped to the image; nil when it starts past the end.
    static func boundedLength(_ p: Partition, sectorSize: Int, imageSize: UInt64) -> UInt64? {
        let (start, overflow) = p.startSector.multipliedReportingOverflow(by: UInt64(sectorSize))
        guard !overflow, start < imageSize else { return nil }
        let (length, overflow2) = p.sectorCount.multipliedReportingOverflow(by: UInt64(sectorSize))
        return min(overflow2 ? .max : length, imageSize - start)
    }

}

extension DiskContainer {
    /// Why qemu cannot be given this container alone, or nil when it can: qemu would open what it
    /// names (a backing file, extents, a parent), or cannot read it.
    var isolationRefusal: String? {
        guard format.qemuDriver != nil else { return "qemu does not read \(format.rawValue) files" }
        if let backingFile { return "it names \(backingFile) as its backing file, which imgtool never opens" }
        if encrypted { return "its contents are encrypted" }
        if format == .vmdk, variant != "monolithicSparse", variant != "streamOptimized" {
            return "its descriptor (\(variant ?? "no createType")) names extent files, which imgtool never opens"
        }
        if format == .vhd, variant == "differencing" { return "it is a differencing disk, whose parent imgtool never opens" }
        return nil
    }

    /// What a report says of a container whose disk cannot be read: why (`problem`), and how to
    /// look inside anyway.
    func findings(path: String, problem: String?) -> [Finding] {
        let size = virtualSize.map { " holding a \($0)-byte virtual disk" } ?? ""
        let convert = format.rawCopyCommand(path)
        let how = isolationRefusal == nil ? "Run it with --isolate (qemu reads the container), or convert it" : "Convert it"
        let why = problem.map { ": \($0)" } ?? ""
        var findings = [Finding(.error, "\(path) is a \(format.rawValue) container\(size) whose disk cannot be read\(why). Its partitions, filesystems and boot code are not shown. \(how) to a raw image to look inside (\(convert)).")]
        if encrypted { findings.append(Finding(.info, "its contents are encrypted")) }
        return findings
    }
}
