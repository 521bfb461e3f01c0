import Glibc
import ImgFormats
import ImgSystem
import Logging

/// Everything install-grub decides before it touches the kernel, read from the image without
/// changing it and without root.
public struct InstallPlan: Sendable {
    /// The image path as given.
    public let image: String
    /// The image's size in bytes.
    public let imageSize: UInt64
    /// The image's partition table.
    public let table: PartitionTable
    /// The firmware the install is for: the options' choice, else what the layout asks for.
    public let firmware: InstallGrub.Firmware
    /// Where core.img goes: the post-MBR gap or the BIOS boot partition, large enough for it; nil
    /// for a UEFI-only install.
    public let embedding: EmbeddingArea?
    /// The EFI system partition (GPT EF00, or MBR type 0xEF) that gets \EFI\BOOT\BOOTX64.EFI; nil
    /// for a BIOS-only install.
    public let esp: Partition?
    /// The UEFI loader is Debian's signed shim and GRUB (`InstallGrub.Options.secureBoot`).
    public let secureBoot: Bool
    /// The partition that gets /boot/grub.
    public let bootPartition: Partition
    /// What libblkid found on `bootPartition`.
    public let bootFilesystem: FilesystemProbe
    /// GRUB's module for the boot filesystem ("ext2" for ext2/3/4).
    public let grubFilesystemModule: String

    /// GRUB reads these; the kernel can mount them read-write for grub-install. blkid type -> module.
    static let grubFilesystemModules: [String: String] = [
        "ext2": "ext2", "ext3": "ext2", "ext4": "ext2", "xfs": "xfs", "btrfs": "btrfs",
        "vfat": "fat", "exfat": "exfat", "f2fs": "f2fs", "jfs": "jfs", "reiserfs": "reiserfs",
        "nilfs2": "nilfs2", "hfsplus": "hfsplus",
    ]

    /// Runs install-grub's pre-flight checks for `options`, in the order a user would fix them:
    /// the path, the image's size, its partition table, room for core.img, then a filesystem for
    /// /boot. Reads the image without changing it; needs no root.
    public static func run(_ options: InstallGrub.Options, logger: Logger) throws(InstallGrubError) -> InstallPlan {
        let path = options.image, requested = options.bootPartition, extraModules = options.modules
        let (source, size) = try openImage(path)
        let table: PartitionTable
        do {
            guard let t = try PartitionTable.read(from: source) else {
                let fs = try? FilesystemProbe.probe(fd: source.fd, path: path, offset: 0, length: size)
                throw InstallGrubError.noPartitionTable(path: path, filesystem: fs?.type)
            }
            table = t
        } catch let e as InstallGrubError {
            throw e
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
        // Entries no checksum vouches for are a forensic view, never a place to write.
        if table.untrusted, let damage = table.findings.first(where: { $0.severity == .error }) {
            throw .damagedPartitionTable(path: path, detail: damage.message)
        }
        // A table describing more disk than there is means the file was cut short; say that
        // rather than calling the table damaged.
        let sectors = size / UInt64(table.sectorSize)
        for p in table.partitions where p.endSector > sectors {
            throw .truncated(path: path, detail: "partition \(p.number) ends at sector \(p.endSector) but the image has only \(sectors) sectors (\(size) bytes)")
        }
        if let damage = table.findings.first(where: { $0.severity == .error }) {
            throw .damagedPartitionTable(path: path, detail: damage.message)
        }

        let biosPlace = EmbeddingArea.find(in: table)
        let espPartition = table.partitions.first {
            $0.kind != .extended && ($0.typeGUID == .efiSystem || (table.kind == .dos && $0.mbrType == 0xEF))
        }
        // BIOS reads 512-byte sectors (int 13h); on a disk of 4 KiB sectors only UEFI can boot.
        let biosPossible = table.sectorSize == 512 && (try? biosPlace.get()) != nil
        let firmware = options.firmware ?? .chosen(hasESP: espPartition != nil, hasBIOSPlace: biosPossible)
        if firmware == .bios && options.secureBoot { throw .secureBootNeedsUEFI(path: path) }
        if firmware != .uefi && table.sectorSize != 512 { throw .biosNeeds512ByteSectors(path: path, sectorSize: table.sectorSize) }
        var embedding: EmbeddingArea?
        if firmware != .uefi {
            switch biosPlace {
            case .success(let area): embedding = area
            case .failure(.noPostMBRGap(let start)): throw .noPostMBRGap(path: path, firstPartitionStart: start)
            case .failure(.noBIOSBootPartition): throw .noBIOSBootPartition(path: path)
            case .failure(.unsupportedTable(let kind)): throw .unsupportedPartitionTable(path: path, table: kind.rawValue)
            }
        }
        var esp: Partition?
        if firmware != .bios {
            guard let espPartition else { throw .noESP(path: path) }
            esp = espPartition
        }

        let probes = PartitionProbes(source: source, path: path, sectorSize: UInt64(table.sectorSize))
        let (boot, fs) = try chooseBootPartition(path: path, table: table, probes: probes, requested: requested)
        // The kernel mounts no filesystem whose blocks are smaller than the disk's sectors.
        if let block = fs.blockSize, block < table.sectorSize, !(esp?.number == boot.number) {
            throw .bootPartitionInvalid(path: path, number: boot.number, reason: "its \(fs.type) filesystem has \(block)-byte blocks, smaller than the disk's \(table.sectorSize)-byte sectors, so no kernel can mount it from this disk (make it with mke2fs -b \(table.sectorSize))")
        }
        let module = grubFilesystemModules[fs.type]!
        let plan = InstallPlan(image: path, imageSize: size, table: table, firmware: firmware, embedding: embedding, esp: esp,
                               secureBoot: options.secureBoot,
                               bootPartition: boot, bootFilesystem: fs, grubFilesystemModule: module)
        try plan.checkEmbeddingRoom(extraModules: extraModules, logger: logger)
        try plan.checkESP(source: source, probes: probes, logger: logger)
        try plan.checkFilesystemRoom(logger: logger)
        return plan
    }

    private static func openImage(_ path: String) throws(InstallGrubError) -> (FileByteSource, UInt64) {
        let source: FileByteSource
        do {
            source = try ImageSource.open(path)
        } catch {
            throw .unusableImage(error)
        }
        guard source.size > 0 else { throw .empty(path: path) }
        if let container = try? DiskContainer.identify(source) { throw .container(path: path, format: container.format.rawValue) }
        guard source.size >= 512 else {
            throw .truncated(path: path, detail: "it has \(source.size) bytes, less than the one sector a partition table needs")
        }
        return (source, source.size)
    }

    /// The partition for /boot: the one asked for, else the one whose filesystem already holds
    /// /boot/grub (or /grub on a separate /boot), else the only or the active readable one.
    private static func chooseBootPartition(path: String, table: PartitionTable, probes: PartitionProbes,
                                            requested: Int?) throws(InstallGrubError) -> (Partition, FilesystemProbe) {
        let sectorSize = UInt64(table.sectorSize)
        let probe = probes.probe
        let usable = table.partitions.filter { $0.kind != .extended && $0.typeGUID != .biosBoot }
        if let requested {
            guard let p = table.partitions.first(where: { $0.number == requested }) else {
                let numbers = usable.map { String($0.number) }.joined(separator: ", ")
                throw .bootPartitionInvalid(path: path, number: requested, reason: "there is no such partition (the image has \(numbers))")
            }
            guard p.kind != .extended, p.typeGUID != .biosBoot else {
                throw .bootPartitionInvalid(path: path, number: requested, reason: "it is \(p.kind == .extended ? "the extended partition container" : "the BIOS boot partition")")
            }
            guard let fs = probe(p) else {
                throw .bootPartitionInvalid(path: path, number: requested, reason: "it holds no filesystem")
            }
            guard grubFilesystemModules[fs.type] != nil else {
                throw .bootPartitionInvalid(path: path, number: requested, reason: "GRUB cannot use its \(fs.type) filesystem for /boot")
            }
            return (p, fs)
        }
        var found: [String] = []
        var candidates: [(Partition, FilesystemProbe)] = []
        for p in usable {
            guard let fs = probe(p) else { continue }
            if grubFilesystemModules[fs.type] != nil { candidates.append((p, fs)) } else { found.append("\(fs.type) on \(p.number)") }
        }
        guard !candidates.isEmpty else { throw .noBootFilesystem(path: path, found: found) }
        if candidates.count == 1 { return candidates[0] }
        // An EFI system partition holds /boot/efi, not /boot/grub, unless it is all there is.
        let notESP = candidates.filter { p, _ in p.typeGUID != .efiSystem && p.mbrType != 0xEF }
        if !notESP.isEmpty { candidates = notESP }
        if candidates.count == 1 { return candidates[0] }
        let withGrub = candidates.filter { p, fs in
            guard isExt(fs), let ext = try? Ext2Filesystem(image: path, offset: p.startSector * sectorSize) else { return false }
            return ext.exists("/boot/grub") || ext.exists("/grub")
        }
        if withGrub.count == 1 { return withGrub[0] }
        let active = (withGrub.isEmpty ? candidates : withGrub).filter { $0.0.bootable }
        if active.count == 1 { return active[0] }
        throw .ambiguousBootPartition(path: path, candidates: (withGrub.isEmpty ? candidates : withGrub).map(\.0.number))
    }

    static func isExt(_ fs: FilesystemProbe) -> Bool { ["ext2", "ext3", "ext4"].contains(fs.type) }

    /// The logical block size loop devices present this image with: its table's sector size
    /// when that is not the kernel's default of 512.
    var loopBlockSize: UInt32 { table.sectorSize == 512 ? 0 : UInt32(table.sectorSize) }

    /// Whether /boot/grub is on the EFI system partition itself (there is no other place for it).
    public var bootOnESP: Bool { esp?.number == bootPartition.number }

    /// The EFI system partition must be FAT, readable, and have room for GRUB's EFI image (and,
    /// when /boot/grub lives there, GRUB's modules, fonts and translations); checked through
    /// imgtool's FAT reader, before anything is written.
    private func checkESP(source: FileByteSource, probes: PartitionProbes, logger: Logger) throws(InstallGrubError) {
        guard let esp else { return }
        let sectorSize = UInt64(table.sectorSize)
        let offset = esp.startSector * sectorSize, length = esp.sectorCount * sectorSize
        let fs = probes.probe(esp)
        guard fs?.type == "vfat" else {
            let found = fs.map { "it holds \($0.type)" } ?? "it holds no filesystem"
            throw .espInvalid(path: image, number: esp.number, reason: "\(found), and firmware reads only FAT there; make one with mkfs.vfat")
        }
        let fat: FATFilesystem
        let free: UInt64
        do {
            fat = try FATFilesystem.open(source, offset: offset, length: length)
            free = try fat.freeBytes()
        } catch {
            throw .espInvalid(path: image, number: esp.number, reason: "its FAT filesystem is damaged (\(error)); check it with fsck.fat -n")
        }
        var needed = secureBoot ? GrubTools.signedLoaderBytes() : GrubTools.efiImageBytes
        if bootOnESP { needed += firmware.targets.reduce(0) { $0 + GrubTools.moduleFilesBytes($1) } + GrubTools.sharedFilesBytes() }
        // Files take whole clusters: a few hundred of them waste up to a cluster each.
        needed += UInt64(bootOnESP ? 400 : 4) * UInt64(fat.clusterSize)
        let existing = (try? fat.lookup("/EFI/BOOT/BOOTX64.EFI")).flatMap { $0 }.map { UInt64($0.size) } ?? 0
        logger.debug("EFI system partition \(esp.number): \(free) bytes free, about \(needed) needed")
        if free + existing < needed {
            throw .espInvalid(path: image, number: esp.number, reason: "it has \(free / 1024) KiB free, and GRUB's UEFI files need about \(needed / 1024) KiB; grow it (256 MiB is usual) or free space")
        }
    }

    /// grub-install copies GRUB's platform files (and fonts and translations) into the boot
    /// filesystem; a filesystem without room for even the first would fail halfway through, after
    /// the image was changed. Checked for ext filesystems, which libext2fs reads without mounting,
    /// and only for a first install (a reinstall overwrites files of the same size).
    private func checkFilesystemRoom(logger: Logger) throws(InstallGrubError) {
        guard Self.isExt(bootFilesystem),
              let ext = try? Ext2Filesystem(image: image, offset: bootPartition.startSector * UInt64(table.sectorSize)) else { return }
        let new = firmware.targets.filter { !ext.exists("/boot/grub/\($0.rawValue)") && !ext.exists("/grub/\($0.rawValue)") }
        guard !new.isEmpty else { return }
        let needed = new.reduce(0) { $0 + GrubTools.moduleFilesBytes($1) }
        logger.debug("boot filesystem has \(ext.freeBytes) bytes free; GRUB's i386-pc files take \(needed)")
        if ext.freeBytes < needed {
            throw .bootFilesystemFull(path: image, number: bootPartition.number, free: ext.freeBytes, needed: needed)
        }
    }

    /// core.img must fit the embedding area. Any area of GRUB's load limit is enough; smaller ones
    /// are measured by building the same core.img grub-install would, since its size depends on
    /// the modules (btrfs is about 140 sectors, ext2 about 53).
    private func checkEmbeddingRoom(extraModules: [String], logger: Logger) throws(InstallGrubError) {
        guard let embedding, embedding.sectorCount < EmbeddingArea.maximumCoreSectors else { return }
        let partmap = table.kind.grubModule
        let needed = try GrubTools.coreImageSectors(modules: ["biosdisk", partmap, grubFilesystemModule] + extraModules,
                                                    logger: logger)
        guard needed > embedding.sectorCount else { return }
        switch embedding.kind {
        case .postMBRGap:
            throw .gapTooSmall(path: image, sectors: embedding.sectorCount, needed: needed)
        case .biosBootPartition(let number):
            throw .biosBootTooSmall(path: image, number: number, sectors: embedding.sectorCount, needed: needed)
        }
    }
}

extension PartitionTable.Kind {
    /// GRUB's module for reading this partition table.
    var grubModule: String {
        switch self {
        case .dos: return "part_msdos"
        case .gpt: return "part_gpt"
        case .mac: return "part_apple"
        }
    }
}

/// Each partition's filesystem, probed once: choosing /boot and checking the ESP both ask.
final class PartitionProbes {
    let source: FileByteSource, path: String, sectorSize: UInt64
    private var found: [Int: FilesystemProbe?] = [:]

    init(source: FileByteSource, path: String, sectorSize: UInt64) {
        self.source = source
        self.path = path
        self.sectorSize = sectorSize
    }

    /// libblkid's reading of partition `p`, nil when it finds no filesystem (or cannot read it).
    func probe(_ p: Partition) -> FilesystemProbe? {
        if let known = found[p.number] { return known }
        let fs = try? FilesystemProbe.probe(fd: source.fd, path: path, offset: p.startSector * sectorSize,
                                            length: p.sectorCount * sectorSize)
        found[p.number] = fs
        return fs
    }
}
