import Glibc
import ImgFormats
import ImgSystem
import Logging

/// Whether an image will boot with BIOS, decided from its bytes alone: the boot code, GRUB's
/// core.img (decoded), and what core.img needs from the partition it names. Read-only, no root.
public enum Verify {
    /// Reads the image and gives the verdict. Only an image that cannot be opened is an error.
    public static func run(image path: String, logger: Logger) throws(ImageOpenError) -> VerifyReport {
        let source = try ImageSource.open(path)
        let sector0 = (try? source.read(at: 0, count: Int(min(512, source.size)))) ?? []
        let bootCode = BootCode.identify(sector0: sector0)
        let table = try? PartitionTable.read(from: source)
        var problems: [Finding] = []
        var grub: VerifyReport.Grub?
        var bootable: Bool?

        switch bootCode.kind {
        case .none:
            problems.append(Finding(.error, "the boot code area of sector 0 is zeroed: there is nothing for the BIOS to run (it hangs on the zeros, or reports no bootable device without a 55AA signature). Install a bootloader, e.g. with imgtool install-grub."))
            bootable = false
        case .grub2:
            do {
                let core = try GrubCoreDecoder.decode(source, bootSector: sector0)
                grub = VerifyReport.Grub(core)
                problems += checkCore(core, table: table, source: source, path: path)
                bootable = !problems.contains { $0.severity == .error }
            } catch {
                problems.append(Finding(.error, "GRUB's boot.img is there but its core.img is not usable: \(error)"))
                bootable = false
            }
        case .grubLegacy, .syslinux, .microsoft, .unknown:
            problems.append(Finding(.info, "imgtool does not verify \(bootCode.description) yet; it can only name it"))
        }
        logger.debug("verified \(path)", metadata: ["bootable": "\(bootable.map(String.init) ?? "unknown")"])
        return VerifyReport(image: path, bootable: bootable, bootCode: .init(bootCode), grub: grub,
                            problems: problems.map { .init(severity: $0.severity.rawValue, message: $0.message) })
    }

    /// What core.img needs to reach normal.mod: a partition-map module for the table, the partition
    /// its prefix names (or its embedded config searches for), a module for that filesystem, and
    /// the prefix directory with normal.mod in it.
    static func checkCore(_ core: GrubCoreImage, table: PartitionTable?, source: FileByteSource, path: String) -> [Finding] {
        var problems: [Finding] = []
        let sectorSize = UInt64(table?.sectorSize ?? 512)
        if let table {
            for range in core.blocklist + [SectorRange(start: core.firstSector, count: 1)] {
                for p in table.partitions where p.kind != .extended && p.typeGUID != .biosBoot
                    && range.start < p.endSector && p.startSector < range.end {
                    problems.append(Finding(.error, "core.img (sectors \(range.start)..<\(range.end)) overlaps partition \(p.number): writes to that partition will break GRUB, and GRUB reads garbage"))
                }
            }
        }
        guard let prefix = core.prefix else {
            problems.append(Finding(.error, "core.img has no prefix: GRUB does not know where its modules are and stops at grub rescue>"))
            return problems
        }
        guard let table else {
            problems.append(Finding(.error, "the image has no partition table GRUB can read, so the prefix \(prefix) cannot be resolved"))
            return problems
        }
        let partmap = table.kind == .gpt ? "part_gpt" : "part_msdos"
        if !core.modules.contains(partmap) {
            problems.append(Finding(.error, "core.img lacks \(partmap): GRUB cannot read the \(table.kind.rawValue) partition table and stops at grub rescue>"))
        }

        // Which partition: "(,msdos1)/boot/grub" names it; "($root)/boot/grub" takes it from the
        // embedded config's search.fs_uuid.
        let (device, directory) = splitPrefix(prefix)
        var partition: Partition?
        var filesystem: FilesystemProbe?
        // Hostile tables may hold sizes that overflow or lie past the end: bounded as inspect does.
        func probe(_ p: Partition) -> FilesystemProbe? {
            guard let length = Inspect.boundedLength(p, sectorSize: Int(sectorSize), imageSize: source.size) else { return nil }
            return try? FilesystemProbe.probe(fd: source.fd, path: path, offset: p.startSector * sectorSize, length: length)
        }
        if let number = partitionNumber(device) {
            partition = table.partitions.first { $0.number == number && $0.kind != .extended }
            if partition == nil {
                problems.append(Finding(.error, "core.img's prefix \(prefix) names partition \(number), which this image does not have: GRUB stops at grub rescue>"))
                return problems
            }
            filesystem = partition.flatMap(probe)
        } else if device == "$root", let uuid = searchUUID(core.config) {
            for p in table.partitions where p.kind != .extended {
                if let fs = probe(p), fs.uuid?.lowercased() == uuid.lowercased() { partition = p; filesystem = fs; break }
            }
            if partition == nil {
                problems.append(Finding(.error, "core.img's config searches for filesystem UUID \(uuid), which no partition of this image has: GRUB stops at grub rescue>"))
                return problems
            }
        } else {
            problems.append(Finding(.warning, "core.img's prefix \(prefix) does not name a partition imgtool can resolve; the rest is not checked"))
            return problems
        }
        guard let partition, let filesystem else {
            problems.append(Finding(.error, "the partition core.img's prefix points at holds no filesystem: GRUB stops at grub rescue>"))
            return problems
        }
        guard let module = InstallPlan.grubFilesystemModules[filesystem.type] else {
            problems.append(Finding(.error, "partition \(partition.number) holds \(filesystem.type), which GRUB cannot read: it stops at grub rescue>"))
            return problems
        }
        if !core.modules.contains(module) {
            problems.append(Finding(.error, "core.img lacks \(module): GRUB cannot read the \(filesystem.type) filesystem on partition \(partition.number) and stops at grub rescue>"))
        }
        guard InstallPlan.isExt(filesystem) else {
            problems.append(Finding(.info, "the \(filesystem.type) filesystem is not read by imgtool, so normal.mod and grub.cfg are not checked"))
            return problems
        }
        guard let ext = try? Ext2Filesystem(image: path, offset: partition.startSector * sectorSize) else {
            problems.append(Finding(.error, "the ext filesystem on partition \(partition.number) cannot be opened: GRUB will not read it either"))
            return problems
        }
        if !ext.exists("\(directory)/i386-pc/normal.mod") {
            problems.append(Finding(.error, "\(directory)/i386-pc/normal.mod is missing on partition \(partition.number): GRUB stops at grub rescue>"))
        } else if !ext.exists("\(directory)/grub.cfg") {
            problems.append(Finding(.warning, "there is no \(directory)/grub.cfg on partition \(partition.number): GRUB boots to a grub> prompt"))
        }
        return problems
    }

    /// "(,msdos1)/boot/grub" -> (",msdos1", "/boot/grub"); "($root)/boot/grub" -> ("$root", ...).
    static func splitPrefix(_ prefix: String) -> (device: String?, directory: String) {
        var p = prefix.replacingQuotes()
        guard p.hasPrefix("("), let close = p.firstIndex(of: ")") else { return (nil, p) }
        let device = String(p[p.index(after: p.startIndex)..<close])
        p = String(p[p.index(after: close)...])
        return (device, p.isEmpty ? "/" : p)
    }

    /// The partition number of a GRUB device like ",msdos1", "hd0,gpt2" or ",1".
    static func partitionNumber(_ device: String?) -> Int? {
        guard let device, let comma = device.lastIndex(of: ",") else { return nil }
        let part = device[device.index(after: comma)...].drop { $0.isLetter || $0 == "_" }
        return Int(part)
    }

    /// The UUID in an embedded config's `search.fs_uuid UUID root` (or `search --fs-uuid`).
    static func searchUUID(_ config: String?) -> String? {
        guard let config else { return nil }
        for line in config.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if let i = words.firstIndex(where: { $0 == "search.fs_uuid" }), i + 1 < words.count { return String(words[i + 1]) }
            if words.first == "search", words.contains("--fs-uuid") || words.contains("-u"),
               let last = words.dropFirst().first(where: { !$0.hasPrefix("-") }) { return String(last) }
        }
        return nil
    }
}

private extension String {
    func replacingQuotes() -> String { filter { $0 != "'" && $0 != "\"" } }
}

/// What `imgtool verify --json` prints. Absent values are JSON null.
public struct VerifyReport: Sendable {
    public struct Grub: Sendable {
        public struct CoreImage: Sendable { public let sector: UInt64; public let sectors: UInt64 }
        public let coreImage: CoreImage
        public let modules: [String]
        public let prefix: String?
        public let config: String?

        init(_ core: GrubCoreImage) {
            coreImage = .init(sector: core.firstSector, sectors: core.sectors)
            modules = core.modules
            prefix = core.prefix
            config = core.config
        }

    }

    public let image: String
    /// true, false, or nil when imgtool cannot tell.
    public let bootable: Bool?
    public let bootCode: InspectReport.BootCodeSummary
    public let grub: Grub?
    public let problems: [InspectReport.FindingEntry]

    /// 0 bootable, 1 not bootable, 2 unknown.
    public var exitCode: Int32 { bootable.map { $0 ? 0 : 1 } ?? 2 }

}
