import Glibc
import ImgFormats
import ImgSystem
import Logging

/// Whether an image will boot with BIOS, decided from its bytes alone: the boot code, GRUB's
/// core.img (decoded), and what core.img needs from the partition it names. Read-only, no root.
public enum Verify {
    /// The image to verify, and whether to read it in a throwaway VM.
    public typealias Options = ReportOptions

    /// Reads the image and gives the verdict. Only an image that cannot be opened (or an isolated
    /// VM that could not run) is an error.
    public static func run(_ options: Options, logger: Logger) throws(ReportError) -> VerifyReport {
        try options.run(.verify(options.local), logger: logger, decode: VerifyReport.init(json:)) { path throws(ImageOpenError) in
            try report(path, backingFiles: options.backingFiles, logger: logger)
        }
    }

    private static func report(_ path: String, backingFiles: Bool, logger: Logger) throws(ImageOpenError) -> VerifyReport {
        let image = try OpenedImage.open(path, backing: backingFiles)
        guard let source = image.disk else {
            let file = image.file
            let sector0 = (try? file.read(at: 0, count: Int(min(512, file.size)))) ?? []
            return VerifyReport(image: path, bootable: nil, biosBootable: nil, bootCode: BootCode.identify(sector0: sector0),
                                grub: nil, problems: image.container?.findings(path: path, problem: image.problem) ?? [], efi: nil)
        }
        let sector0 = (try? source.read(at: 0, count: Int(min(512, source.size)))) ?? []
        let bootCode = BootCode.identify(sector0: sector0)
        let table = try? PartitionTable.read(from: source)
        // A backing file not opened leaves parts of the disk unread, so no verdict can stand on it.
        var problems = image.findings.map { Finding(.info, $0.message) }
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
                bootable = verdict(problems)
            } catch {
                problems.append(Finding(.error, "GRUB's boot.img is there but its core.img is not usable: \(error)"))
                bootable = false
            }
        case .syslinux:
            let v = checkSyslinux(bootCode: bootCode, table: table, source: source, path: path)
            problems += v.problems
            bootable = v.bootable
        case .grubLegacy:
            let v = checkGrubLegacy(bootCode: bootCode, table: table, source: source, path: path)
            problems += v.problems
            bootable = v.bootable
        case .microsoft, .unknown:
            problems.append(Finding(.info, "imgtool does not verify \(bootCode.description) yet; it can only name it"))
        }
        let efi = checkEFI(table: table, source: source, path: path)
        let overall = combined(bios: bootable, efi: efi)
        logger.debug("verified \(path)", metadata: ["bootable": "\(overall.map(String.init) ?? "unknown")"])
        return VerifyReport(image: path, bootable: overall, biosBootable: bootable, bootCode: bootCode, grub: grub,
                            problems: problems, efi: efi)
    }

    /// The format qemu opens `image` with to boot it (`verify --boot`): "raw", or a container's
    /// own driver. Throws, with the reason, for a container qemu cannot be given: one it does not
    /// read (E01), an encrypted one, or one that names other files (a backing file, VMDK extents,
    /// a parent), which qemu would open itself; a backing file only when `backingFiles` allows it.
    public static func bootFormat(image: String, backingFiles: Bool) throws(BootRefusal) -> String {
        guard let file = try? ImageSource.open(image), let container = try? DiskContainer.identify(file) else { return "raw" }
        return try bootFormat(image: image, container: container, backingFiles: backingFiles)
    }

    /// The logical sector size the disk is laid out for (its partition table's, 512 without one):
    /// what `verify --boot` presents the disk with.
    public static func bootSectorSize(image: String) -> Int {
        guard let file = try? ImageSource.open(image), let table = try? PartitionTable.read(from: file) else { return 512 }
        return table.sectorSize
    }

    private static func bootFormat(image: String, container: DiskContainer, backingFiles: Bool) throws(BootRefusal) -> String {
        var refusal = container.isolationRefusal
        // Allowed, a backing file or parent is the only other file qemu opens, and it opens it as
        // imgtool would: next to the image.
        let namesBacking = container.backingFile != nil || (container.format == .vhd && container.variant == "differencing")
        let namesExtents = container.format == .vmdk && !["monolithicSparse", "streamOptimized"].contains(container.variant ?? "")
        if backingFiles, namesBacking, !namesExtents, !container.encrypted, container.format.qemuDriver != nil { refusal = nil }
        guard let driver = container.format.qemuDriver, refusal == nil else {
            let next = namesBacking && !backingFiles ? ", or pass --backing to let qemu open its backing file" : ""
            throw BootRefusal(description: "\(image) cannot be booted as it is: \(refusal ?? "qemu cannot open it"). Convert it to a raw image and boot that (\(container.format.rawCopyCommand(image)))\(next).")
        }
        return driver
    }

    /// Why an image cannot be booted by `verify --boot`; `description` is the message the user reads.
    public struct BootRefusal: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Errors: it does not boot. Something imgtool could not check: it cannot tell. Else it boots.
    static func verdict(_ problems: [Finding]) -> Bool? {
        problems.contains { $0.severity == .error } ? false : problems.contains { $0.severity == .info } ? nil : true
    }

    /// An image boots if it boots one way, BIOS or UEFI; it does not if every way it offers fails.
    static func combined(bios: Bool?, efi: VerifyReport.EFI?) -> Bool? {
        guard let efi else { return bios }
        if bios == true || efi.bootable == true { return true }
        if bios == false && efi.bootable == false { return false }
        return nil
    }

    /// Where core.img lies (never over a partition), then what it needs from the image.
    static func checkCore(_ core: GrubCoreImage, table: PartitionTable?, source: any ByteSource, path: String) -> [Finding] {
        var problems: [Finding] = []
        // A hybrid ISO (grub-mkrescue, xorriso): core.img is a file of the ISO 9660 volume that
        // spans the image, and the partitions are windows into that read-only volume, so they
        // may overlap it. The volume's descriptor is at block 16, where libblkid also looks.
        let iso = try? ISO9660Volume(source)
        if let table, iso == nil {
            for range in core.blocklist + [SectorRange(start: core.firstSector, count: 1)] {
                for p in table.partitions where p.kind != .extended && p.typeGUID != .biosBoot
                    && range.start < p.endSector && p.startSector < range.end {
                    problems.append(Finding(.error, "core.img (sectors \(range.start)..<\(range.end)) overlaps partition \(p.number): writes to that partition will break GRUB, and GRUB reads garbage"))
                }
            }
        }
        if let iso, let prefix = core.prefix, let (device, directory) = Optional(splitPrefix(prefix)),
           device == nil || device == "" {
            return problems + checkWholeDiskISO(iso, modules: core.modules, directory: directory)
        }
        return problems + checkGrubNeeds(image: "core.img", modules: core.modules, prefix: core.prefix, config: core.config,
                                         platform: "i386-pc", loadedFrom: nil, espFAT: nil, table: table, source: source,
                                         path: path)
    }

    /// A prefix without a device on a hybrid ISO: GRUB's root is the whole disk it booted from,
    /// read as ISO 9660, with no partition map in the way; normal.mod and grub.cfg must be files
    /// of the volume.
    static func checkWholeDiskISO(_ iso: ISO9660Volume, modules: [String], directory: String) -> [Finding] {
        var problems: [Finding] = []
        if !modules.contains("iso9660") {
            problems.append(Finding(.error, "core.img lacks iso9660: GRUB cannot read the ISO 9660 volume its prefix \(directory) lies on and stops at grub rescue>"))
        }
        if !modules.contains("normal") && !iso.isFile("\(directory)/i386-pc/normal.mod") {
            problems.append(Finding(.error, "\(directory)/i386-pc/normal.mod is missing from the ISO 9660 volume: GRUB stops at grub rescue>"))
        } else if !iso.isFile("\(directory)/grub.cfg") {
            problems.append(Finding(.warning, "there is no \(directory)/grub.cfg in the ISO 9660 volume: GRUB boots to a grub> prompt"))
        }
        return problems
    }

    /// What a GRUB image needs to reach normal.mod, for BIOS core.img and EFI images alike: a
    /// partition-map module for the table, the partition its prefix names (or its embedded config
    /// searches for; a prefix without a device means the partition GRUB was loaded from, the ESP),
    /// a module for that filesystem, and the prefix directory with `platform`/normal.mod in it.
    static func checkGrubNeeds(image: String, modules: [String], prefix: String?, config: String?, platform: String,
                               loadedFrom: Partition?, espFAT: FATFilesystem?, table: PartitionTable?,
                               source: any ByteSource, path: String) -> [Finding] {
        var problems: [Finding] = []
        let sectorSize = UInt64(table?.sectorSize ?? 512)
        guard let prefix else {
            problems.append(Finding(.error, "\(image) has no prefix: GRUB does not know where its modules are and stops at grub rescue>"))
            return problems
        }
        guard let table else {
            problems.append(Finding(.error, "the image has no partition table GRUB can read, so the prefix \(prefix) cannot be resolved"))
            return problems
        }
        let (device, directory) = splitPrefix(prefix)
        let partmap = table.kind.grubModule
        // Also for a prefix without a device: GRUB finds the partition it was loaded from by reading
        // the table (without part_gpt an EFI GRUB stops at "unknown filesystem").
        if !modules.contains(partmap) {
            problems.append(Finding(.error, "\(image) lacks \(partmap): GRUB cannot read the \(table.kind.rawValue) partition table and stops at grub rescue>"))
        }

        // Which partition: "(,msdos1)/boot/grub" names it; "($root)/boot/grub" takes it from the
        // embedded config's search.fs_uuid; "/EFI/BOOT" is where GRUB was loaded from.
        var partition: Partition?
        var filesystem: FilesystemProbe?
        // Hostile tables may hold sizes that overflow or lie past the end: bounded as inspect does.
        func probe(_ p: Partition) -> FilesystemProbe? {
            guard let length = Inspect.boundedLength(p, sectorSize: Int(sectorSize), imageSize: source.size) else { return nil }
            return try? FilesystemProbe.probe(source, offset: p.startSector * sectorSize, length: length, name: path)
        }
        if let number = partitionNumber(device) {
            partition = table.partitions.first { $0.number == number && $0.kind != .extended }
            if partition == nil {
                problems.append(Finding(.error, "\(image)'s prefix \(prefix) names partition \(number), which this image does not have: GRUB stops at grub rescue>"))
                return problems
            }
            filesystem = partition.flatMap(probe)
        } else if device == "$root" || device == nil, let uuid = searchUUID(config) {
            // The embedded config's search sets root; a prefix without a device then lies there
            // (grub-install's --modules recipe embeds "search.fs_uuid U root" and prefix /boot/grub).
            for p in table.partitions where p.kind != .extended {
                if let fs = probe(p), fs.uuid?.lowercased() == uuid.lowercased() { partition = p; filesystem = fs; break }
            }
            if partition == nil {
                problems.append(Finding(.error, "\(image)'s embedded config searches for filesystem UUID \(uuid), which no partition of this image has: GRUB stops at grub rescue>"))
                return problems
            }
        } else if device == nil, let loadedFrom {
            partition = loadedFrom
            filesystem = probe(loadedFrom)
        } else {
            problems.append(Finding(.info, "\(image)'s prefix \(prefix) does not name a partition imgtool can resolve, so what GRUB loads next is not checked"))
            return problems
        }
        guard let partition, let filesystem else {
            problems.append(Finding(.error, "the partition \(image)'s prefix points at holds no filesystem: GRUB stops at grub rescue>"))
            return problems
        }
        guard let module = InstallPlan.grubFilesystemModules[filesystem.type] else {
            problems.append(Finding(.error, "partition \(partition.number) holds \(filesystem.type), which GRUB cannot read: it stops at grub rescue>"))
            return problems
        }
        if !modules.contains(module) {
            problems.append(Finding(.error, "\(image) lacks \(module): GRUB cannot read the \(filesystem.type) filesystem on partition \(partition.number) and stops at grub rescue>"))
        }

        // normal.mod and grub.cfg, read without mounting: ext through libext2fs, FAT through
        // imgtool's own reader. A normal module built into the image needs no normal.mod.
        let exists: (String) -> Bool
        if InstallPlan.isExt(filesystem) {
            guard let ext = try? Ext2Filesystem(source: source, offset: partition.startSector * sectorSize, name: path) else {
                problems.append(Finding(.error, "the ext filesystem on partition \(partition.number) cannot be opened: GRUB will not read it either"))
                return problems
            }
            exists = { ext.exists($0) }
        } else if filesystem.type == "vfat", let fat = espFAT.flatMap({ partition.number == loadedFrom?.number ? $0 : nil })
            ?? Inspect.boundedLength(partition, sectorSize: Int(sectorSize), imageSize: source.size).flatMap({
                try? FATFilesystem.open(source, offset: partition.startSector * sectorSize, length: $0) }) {
            exists = { ((try? fat.lookup($0)) ?? nil) != nil }
        } else {
            problems.append(Finding(.info, "imgtool cannot read \(filesystem.type) (it reads ext2/3/4 and FAT), so whether \(directory)/\(platform)/normal.mod and grub.cfg are on partition \(partition.number) is not checked"))
            return problems
        }
        if !modules.contains("normal") && !exists("\(directory)/\(platform)/normal.mod") {
            problems.append(Finding(.error, "\(directory)/\(platform)/normal.mod is missing on partition \(partition.number): GRUB stops at grub rescue>"))
        } else if !exists("\(directory)/grub.cfg") {
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
