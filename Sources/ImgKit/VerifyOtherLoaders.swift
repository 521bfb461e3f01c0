import ImgFormats
import ImgSystem

/// The verdict on boot code other than GRUB 2: whether it boots (nil: imgtool cannot tell) and why not.
struct LoaderVerdict {
    var bootable: Bool?
    var problems: [Finding]

    /// Errors mean it does not boot; otherwise it does.
    init(_ problems: [Finding]) {
        self.problems = problems
        bootable = !problems.contains { $0.severity == .error }
    }

    /// imgtool cannot tell: what decides it is something imgtool does not read.
    static func unknown(_ problems: [Finding]) -> LoaderVerdict {
        var v = LoaderVerdict(problems)
        v.bootable = v.bootable == false ? false : nil
        return v
    }
}

/// SYSLINUX (its MBRs, the SYSLINUX/EXTLINUX boot sector and ldlinux.sys), ISOLINUX on isohybrid
/// images, and GRUB legacy's stage1: what each one's code reads at boot, checked in the order it
/// reads it, so the first problem is the one the machine stops at. Layouts are SYSLINUX 6.04's
/// (Debian's syslinux, extlinux and isolinux packages) and GRUB 0.97's; the messages quoted are
/// what those loaders print, as seen when booting the broken images under qemu.
extension Verify {
    // MARK: SYSLINUX on a partitioned disk

    /// mbr.bin, gptmbr.bin and altmbr.bin pick a partition and run its first sector; isohdpfx.bin and
    /// isohdppx.bin load isolinux.bin from the sector recorded at 0x1B0.
    static func checkSyslinux(bootCode: BootCode, table: PartitionTable?, source: any ByteSource, path: String) -> LoaderVerdict {
        let image = bootCode.details["image"] ?? ""
        guard let sector0 = try? source.read(at: 0, count: 512) else {
            return LoaderVerdict([Finding(.error, "sector 0 cannot be read")])
        }
        let missing = image == "gptmbr.bin" ? "Missing OS" : "Missing operating system."
        let chosen: (number: Int, start: UInt64, sectors: UInt64)
        switch image {
        case "isohdpfx.bin", "isohdppx.bin":
            return checkIsohybrid(image: image, sector0: sector0, source: source)
        case "mbr.bin":
            // mbr.bin reads the four entries in sector 0 itself, whatever table inspect sees.
            let entries = (0..<4).map { i in
                (number: i + 1, status: sector0[446 + 16 * i], type: sector0[446 + 16 * i + 4],
                 start: UInt64(sector0.le32(446 + 16 * i + 8)), sectors: UInt64(sector0.le32(446 + 16 * i + 12)))
            }
            let active = entries.filter { $0.status == 0x80 }
            guard let first = active.first else {
                return LoaderVerdict([Finding(.error, "no partition is marked active: SYSLINUX's mbr.bin prints \"Missing operating system.\" and the BIOS moves on to the next boot device. Mark the SYSLINUX partition active (sfdisk --activate IMAGE N).")])
            }
            guard active.count == 1 else {
                return LoaderVerdict([Finding(.error, "partitions \(active.map { String($0.number) }.joined(separator: " and ")) are \(active.count == 2 ? "both" : "all") marked active: SYSLINUX's mbr.bin prints \"Multiple active partitions.\" and stops. Keep the flag on one partition only.")])
            }
            if [0x05, 0x0F, 0x85].contains(first.type) {
                return .unknown([Finding(.info, "the active partition \(first.number) is an extended partition; imgtool does not follow mbr.bin into it")])
            }
            chosen = (first.number, first.start, first.sectors)
        case "gptmbr.bin":
            guard let table, table.kind == .gpt else {
                return LoaderVerdict([Finding(.error, "SYSLINUX's gptmbr.bin boots a partition of a GPT, and this image has \(table == nil ? "no partition table" : "an msdos partition table"): it finds nothing to boot. Use mbr.bin on an msdos disk.")])
            }
            // gptmbr.bin boots the one partition with attribute bit 2, "legacy BIOS bootable".
            let flagged = table.partitions.filter { $0.bootable }
            guard let first = flagged.first else {
                return LoaderVerdict([Finding(.error, "no GPT partition has the legacy BIOS bootable attribute (bit 2): SYSLINUX's gptmbr.bin prints \"Missing OS\" and the BIOS moves on to the next boot device. Set it on the SYSLINUX partition (sgdisk -A N:set:2 IMAGE).")])
            }
            guard flagged.count == 1 else {
                return LoaderVerdict([Finding(.error, "partitions \(flagged.map { String($0.number) }.joined(separator: " and ")) \(flagged.count == 2 ? "both" : "all") have the legacy BIOS bootable attribute: SYSLINUX's gptmbr.bin prints \"Multiple active partitions\" and stops. Keep it on one partition only.")])
            }
            // In 512-byte sectors; an overflowing (hostile) start is reported as past the end.
            func sectors512(_ n: UInt64) -> UInt64 {
                let (bytes, overflow) = n.multipliedReportingOverflow(by: UInt64(table.sectorSize))
                return overflow ? .max : bytes / 512
            }
            chosen = (first.number, sectors512(first.startSector), sectors512(first.sectorCount))
        case "altmbr.bin":
            // altmbr.bin ignores the active flags and boots the partition numbered in byte 439.
            let number = Int(sector0[439])
            guard number != 0 else {
                return LoaderVerdict([Finding(.error, "altmbr.bin's partition number (byte 439) is 0, so it boots no partition: it prints \"Missing operating system.\". Write the number there (printf '\\001' | dd of=IMAGE bs=1 seek=439 conv=notrunc).")])
            }
            guard let p = table?.partition(number: number), p.kind != .extended, p.sectorCount > 0 else {
                return LoaderVerdict([Finding(.error, "altmbr.bin boots partition \(number), which this image does not have: it prints \"Missing operating system.\"")])
            }
            chosen = (number, p.startSector, p.sectorCount)
        default:
            return .unknown([Finding(.info, "imgtool does not verify \(bootCode.description)")])
        }
        return checkSyslinuxPartition(number: chosen.number, start: chosen.start, sectors: chosen.sectors, missing: missing,
                                      source: source, path: path)
    }

    /// What the SYSLINUX/EXTLINUX boot sector of a partition needs: its signature, then ldlinux.sys
    /// exactly where the boot sector and ldlinux.sys's own sector map say it is, intact, then
    /// ldlinux.c32 and a configuration file.
    static func checkSyslinuxPartition(number: Int, start: UInt64, sectors: UInt64, missing: String,
                                       source: any ByteSource, path: String) -> LoaderVerdict {
        let (offset, overflow) = start.multipliedReportingOverflow(by: 512)
        guard !overflow, offset < source.size, source.size - offset >= 512 else {
            return LoaderVerdict([Finding(.error, "partition \(number) starts at sector \(start), past the end of the image: SYSLINUX's MBR cannot read its boot sector and stops with an error")])
        }
        let length = min(sectors.multipliedReportingOverflow(by: 512).overflow ? .max : sectors * 512, source.size - offset)
        guard let vbr = try? source.read(at: offset, count: 512) else {
            return LoaderVerdict([Finding(.error, "the first sector of partition \(number) cannot be read")])
        }
        guard vbr[510] == 0x55, vbr[511] == 0xAA else {
            return LoaderVerdict([Finding(.error, "the first sector of partition \(number) has no boot signature (55AA): SYSLINUX's MBR prints \"\(missing)\" and the BIOS moves on to the next boot device. Install SYSLINUX into the partition (syslinux --install for FAT, extlinux --install for ext).")])
        }
        guard SyslinuxPatchArea.isSyslinuxBootSector(vbr) else {
            return .unknown([Finding(.info, "partition \(number)'s boot sector is not SYSLINUX's (no ldlinux signature FE 02 B2 3E at 0x1F8); imgtool does not verify what it holds")])
        }

        let (opened, fatProblem) = LoaderFilesystem.open(source: source, path: path, offset: offset, length: length)
        guard let fs = opened else {
            let why = fatProblem.map { "its FAT filesystem cannot be read (\($0))" }
                ?? "its filesystem is neither FAT nor ext2/3/4, which imgtool reads"
            return .unknown([Finding(.info, "partition \(number) holds a SYSLINUX boot sector, but \(why), so ldlinux.sys is not checked")])
        }
        let candidates = fs.find("ldlinux.sys")
        guard !candidates.isEmpty else {
            return LoaderVerdict([Finding(.error, "there is no ldlinux.sys on partition \(number) (\(fs.name)): the boot sector still points at the sectors it was installed to, which are now free space, and once they are reused SYSLINUX prints \"Boot error\". Reinstall: syslinux --install (FAT) or extlinux --install (ext).")])
        }
        // Several copies: the one the boot sector points at is the installed one.
        var checked: (path: String, problems: [Finding], ldlinux: [UInt8])?
        for candidate in candidates {
            guard let bytes = fs.read(candidate, maxBytes: SyslinuxPatchArea.maximumLdlinuxBytes) else {
                checked = checked ?? (candidate, [Finding(.error, "\(candidate) on partition \(number) cannot be read (or is larger than \(SyslinuxPatchArea.maximumLdlinuxBytes >> 10) KiB): it is not a SYSLINUX ldlinux.sys")], [])
                continue
            }
            let problems = checkLdlinux(bytes, path: candidate, vbr: vbr, partition: number, offset: offset, length: length, source: source)
            if checked == nil || !problems.contains(where: { $0.severity == .error }) { checked = (candidate, problems, bytes) }
            if !problems.contains(where: { $0.severity == .error }) { break }
        }
        guard let checked else { return LoaderVerdict([]) }  // unreachable: candidates is not empty
        var problems = checked.problems
        if problems.contains(where: { $0.severity == .error }) { return LoaderVerdict(problems) }

        // ldlinux.sys's current directory (stored by the installer), then SYSLINUX's fixed list.
        let ldlinuxDirectory = directory(of: checked.path)
        let current = (try? SyslinuxPatchArea(ldlinux: checked.ldlinux))?.currentDirectory ?? ldlinuxDirectory
        if SyslinuxBanner.majorVersion(checked.ldlinux, product: "SYSLINUX").map({ $0 >= 5 }) ?? true {
            let dirs = unique([current, "/boot/isolinux", "/isolinux", "/boot/syslinux", "/syslinux", "/"])
            if !dirs.contains(where: { fs.isFile(join($0, "ldlinux.c32")) }) {
                problems.append(Finding(.error, "there is no ldlinux.c32 on partition \(number) (looked in \(dirs.joined(separator: ", "))): SYSLINUX prints \"Failed to load ldlinux.c32\" and stops. Copy it from the same SYSLINUX version (/usr/lib/syslinux/modules/bios/ldlinux.c32), or reinstall."))
            }
        }
        let dirs = unique([current, "/boot/syslinux", "/syslinux", "/"])
        if !dirs.contains(where: { d in ["extlinux.conf", "syslinux.cfg"].contains { fs.isFile(join(d, $0)) } }) {
            problems.append(Finding(.warning, "there is no syslinux.cfg or extlinux.conf on partition \(number) (looked in \(dirs.joined(separator: ", "))): SYSLINUX prints \"WARNING: No configuration file found\" and stops at a boot: prompt"))
        }
        return LoaderVerdict(problems)
    }

    /// Follows what the boot sector and ldlinux.sys do at boot: the boot sector loads ldlinux.sys's
    /// first sector from the pointer the installer patched into it, that sector loads the rest from
    /// the sector map in ldlinux.sys's patch area, and the whole is checked against its checksum.
    static func checkLdlinux(_ file: [UInt8], path: String, vbr: [UInt8], partition number: Int, offset: UInt64,
                             length: UInt64, source: any ByteSource) -> [Finding] {
        let reinstall = "Reinstall: syslinux --install (FAT) or extlinux --install (ext)."
        guard let patch = try? SyslinuxPatchArea(ldlinux: file), let first = patch.firstSector(bootSector: vbr) else {
            return [Finding(.error, "\(path) on partition \(number) has no usable SYSLINUX patch area: it is not an ldlinux.sys of SYSLINUX 4 or later, or it is damaged: the boot sector loads something else in its place and SYSLINUX prints \"Boot error\". \(reinstall)")]
        }
        func sector(_ relative: UInt64) -> [UInt8]? {
            guard relative < length / 512 else { return nil }
            return try? source.read(at: offset + relative * 512, count: 512)
        }
        guard let loaded = sector(first), loaded.elementsEqual(file[0..<512]) else {
            return [Finding(.error, "the boot sector of partition \(number) loads sector \(first) of the partition as the start of ldlinux.sys, but that sector does not hold \(path)'s first sector (ldlinux.sys was copied or rewritten instead of installed, or its sectors were reused): SYSLINUX prints \"Boot error\". \(reinstall)")]
        }
        // The rest, extent by extent, must be the file's sectors 1..<dataSectors.
        var next = 1
        for extent in patch.extents where next < patch.dataSectors {
            for k in 0..<UInt64(extent.sectors) where next < patch.dataSectors {
                let (lba, overflow) = extent.lba.addingReportingOverflow(k)
                guard !overflow, let bytes = sector(lba), bytes.elementsEqual(file[next * 512..<(next + 1) * 512]) else {
                    return [Finding(.error, "ldlinux.sys's sector map puts its sector \(next) at sector \(extent.lba &+ k) of partition \(number), which does not hold it (the file was moved or rewritten since it was installed): SYSLINUX prints \"Load error - Boot error\". \(reinstall)")]
                }
                next += 1
            }
        }
        guard next == patch.dataSectors else {
            return [Finding(.error, "ldlinux.sys's sector map covers \(next) of its \(patch.dataSectors) sectors: SYSLINUX loads it incompletely and prints \"Load error - Boot error\". \(reinstall)")]
        }
        guard patch.checksumMatches(file) else {
            return [Finding(.error, "\(path) on partition \(number) fails its own checksum (it was damaged after installation): SYSLINUX prints \"Load error - Boot error\". \(reinstall)")]
        }
        return []
    }

    // MARK: ISOLINUX on an isohybrid image

    /// isohdpfx.bin loads isolinux.bin from the 512-byte sector at 0x1B0 (64-bit; xorriso and isohybrid
    /// write it as 4 x the 2048-byte block), checks its hybrid signature and its checksum; isolinux.bin
    /// then reads the rest of itself from its boot info table and needs ldlinux.c32 from the ISO.
    static func checkIsohybrid(image: String, sector0: [UInt8], source: any ByteSource) -> LoaderVerdict {
        guard let sector = IsolinuxBootInfoTable.isolinuxSector(hybridMBR: sector0) else {
            return LoaderVerdict([Finding(.error, "sector 0 cannot be read")])
        }
        let sectors = source.size / 512
        let rebuild = "Rebuild the image with xorriso -isohybrid-mbr (or run isohybrid on the ISO)."
        guard sector < sectors, sectors - sector >= 4, let head = try? source.read(at: sector * 512, count: 2048) else {
            return LoaderVerdict([Finding(.error, "\(image) loads isolinux.bin from sector \(sector) (the 8 bytes at 0x1B0), past the end of the image (\(sectors) sectors): it prints \"isolinux.bin missing or corrupt.\" and the BIOS moves on to the next boot device. \(rebuild)")])
        }
        guard IsolinuxBootInfoTable.hasHybridSignature(head), let table = IsolinuxBootInfoTable(head) else {
            return LoaderVerdict([Finding(.error, "\(image) loads isolinux.bin from sector \(sector) (the 8 bytes at 0x1B0), which does not hold it (no ISOLINUX hybrid signature at its byte 64): it prints \"isolinux.bin missing or corrupt.\" and the BIOS moves on to the next boot device. \(rebuild)")])
        }
        let file = table.fileBlock, bytes = table.length
        guard UInt64(file) * 4 == sector else {
            return LoaderVerdict([Finding(.error, "isolinux.bin's boot info table says it starts at block \(file) (2048 bytes each), but \(image) loads it from sector \(sector), \(sector % 4 == 0 ? "which is block \(sector / 4)" : "which is not on a block boundary"): ISOLINUX reads the rest of itself from the wrong place and prints \"Image checksum error, sorry...\". Rebuild the image with xorriso -boot-info-table.")])
        }
        guard bytes > 64, bytes <= IsolinuxBootInfoTable.maximumBytes, UInt64(bytes) <= source.size - sector * 512,
              let body = try? source.read(at: sector * 512, count: Int(bytes)) else {
            return LoaderVerdict([Finding(.error, "isolinux.bin's boot info table gives its length as \(bytes) bytes, which does not fit in the image: \(image) prints \"isolinux.bin missing or corrupt.\". \(rebuild)")])
        }
        guard IsolinuxBootInfoTable.checksum(body) == table.checksum else {
            return LoaderVerdict([Finding(.error, "isolinux.bin at sector \(sector) does not match the checksum in its boot info table (it was changed after the ISO was built): it does not start (\(image) prints \"isolinux.bin missing or corrupt.\" or ISOLINUX \"Image checksum error, sorry...\"). \(rebuild)")])
        }
        guard let iso = try? ISO9660Volume(source, descriptorBlock: table.descriptorBlock) else {
            return LoaderVerdict([Finding(.error, "there is no ISO 9660 volume descriptor at block \(table.descriptorBlock), where isolinux.bin's boot info table says: ISOLINUX cannot read the filesystem and finds neither ldlinux.c32 nor its configuration. \(rebuild)")])
        }
        var problems: [Finding] = []
        if SyslinuxBanner.majorVersion(body, product: "ISOLINUX").map({ $0 >= 5 }) ?? true {
            let dirs = ["/boot/isolinux", "/isolinux", "/boot/syslinux", "/syslinux", "/"]
            if !dirs.contains(where: { iso.isFile(join($0, "ldlinux.c32")) }) {
                problems.append(Finding(.error, "there is no ldlinux.c32 on the ISO (looked in \(dirs.joined(separator: ", "))): ISOLINUX prints \"Failed to load ldlinux.c32\" and stops. Add it (from /usr/lib/syslinux/modules/bios/, the same version as isolinux.bin) next to isolinux.bin."))
            }
        }
        let dirs = ["/boot/isolinux", "/isolinux", "/"]
        if !dirs.contains(where: { iso.isFile(join($0, "isolinux.cfg")) }) {
            problems.append(Finding(.warning, "there is no isolinux.cfg on the ISO (looked in \(dirs.joined(separator: ", "))): ISOLINUX stops at a boot: prompt"))
        }
        return LoaderVerdict(problems)
    }

    // MARK: GRUB legacy

    /// GRUB legacy's stage1 loads one sector, the start sector of stage2 or stage1.5, to its stage2
    /// address and jumps there; that sector loads the rest from the blocklist at its end, whose first
    /// sector begins with stage2's header (decoded by ImgFormats' GrubLegacy).
    static func checkGrubLegacy(bootCode: BootCode, table: PartitionTable?, source: any ByteSource, path: String) -> LoaderVerdict {
        guard let sector0 = try? source.read(at: 0, count: 512), let stage1 = try? GrubLegacy.Stage1(sector0) else {
            return LoaderVerdict([Finding(.error, "sector 0 cannot be read")])
        }
        var problems: [Finding] = []
        if stage1.versionMajor != GrubLegacy.compatibilityMajor || stage1.versionMinor != GrubLegacy.compatibilityMinor {
            problems.append(Finding(.warning, "stage1 has compatibility version \(stage1.versionMajor).\(stage1.versionMinor), not 3.2 as every GRUB 0.9x writes: the stage2 it loads may not match it"))
        }
        let address = stage1.stage2Address
        let startSector = UInt64(stage1.stage2Sector)
        let sectors = source.size / 512
        let reinstall = "Reinstall GRUB (legacy: grub-install; or install GRUB 2 with imgtool install-grub)."
        guard startSector < sectors, let startBytes = try? source.read(at: startSector * 512, count: 512) else {
            return LoaderVerdict(problems + [Finding(.error, "stage1 loads sector \(startSector), past the end of the image (\(sectors) sectors): the read fails and stage1 prints \"GRUB Geom Error\" or \"GRUB Read Error\". \(reinstall)")])
        }
        let start: GrubLegacy.StartSector
        do {
            start = try GrubLegacy.StartSector(startBytes)
        } catch {
            return LoaderVerdict(problems + [Finding(.error, "stage1 loads sector \(startSector), which holds no GRUB stage2 or stage1.5 (\(error)): stage1 jumps into it and the machine hangs (GRUB legacy's stage1 prints \"GRUB \" over and over, or nothing). \(reinstall)")])
        }
        let kind = start.kind.rawValue
        if let link = start.linkAddress, link != address {
            return LoaderVerdict(problems + [Finding(.error, "the \(kind) start sector at sector \(startSector) runs at 0x\(hex(link)), but stage1 jumps to it at 0x\(hex(address)): it crashes. \(reinstall)")])
        }
        guard let body = start.blocklist.first else {
            return LoaderVerdict(problems + [Finding(.error, "the \(kind) start sector at sector \(startSector) has an empty blocklist: it loads nothing and the machine hangs. \(reinstall)")])
        }
        for b in start.blocklist where b.sector >= sectors || b.count > sectors - b.sector {
            return LoaderVerdict(problems + [Finding(.error, "the \(kind) blocklist names sectors \(b.sector)..<\(b.sector + b.count), past the end of the image (\(sectors) sectors): the start sector prints \"Read Error\". \(reinstall)")])
        }
        guard let headerBytes = try? source.read(at: body.sector * 512, count: 512), let header = try? GrubLegacy.Stage2Header(headerBytes) else {
            return LoaderVerdict(problems + [Finding(.error, "the \(kind) start sector at sector \(startSector) loads the rest of \(kind) from sector \(body.sector), which is not GRUB legacy's (no version 3.2 at its byte 6): it jumps into it and the machine hangs. \(reinstall)")])
        }
        let version = header.version, config = header.configFile
        if !header.isStage1_5 {
            // stage2's menu comes from a filesystem partition imgtool does not resolve; without it GRUB
            // legacy still shows its grub> prompt, so the loader itself boots either way.
            problems.append(Finding(.info, "GRUB legacy \(version) stage2 (sectors from \(startSector)) reads its menu from \(config.isEmpty ? "its config file" : config), which imgtool does not check: without it GRUB stops at a grub> prompt"))
            return LoaderVerdict(problems)
        }
        // stage1.5 loads stage2 as a file from a filesystem; that file decides the boot.
        let name = header.stage1_5FileName ?? "stage1.5 (id \(header.id))"
        problems.append(Finding(.info, "GRUB legacy \(version) \(name) (sectors from \(startSector)) loads \(config.isEmpty ? "stage2" : config) from a filesystem; imgtool does not check that file, so it cannot tell whether GRUB starts"))
        return .unknown(problems)
    }

    // MARK: helpers

    private static func hex(_ value: UInt16) -> String { String(value, radix: 16, uppercase: true) }

    private static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    private static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    private static func unique(_ paths: [String]) -> [String] {
        var seen: Set<String> = []
        return paths.filter { p in
            let key = p.count > 1 && p.hasSuffix("/") ? String(p.dropLast()) : p
            return seen.insert(key.lowercased()).inserted
        }
    }
}

/// The files SYSLINUX reads, from FAT (FATFilesystem) or ext2/3/4 (Ext2Filesystem), by path.
private enum LoaderFilesystem {
    case fat(FATFilesystem)
    case ext(Ext2Filesystem)

    /// Bounds of the search for ldlinux.sys, whose directory the boot sector does not name.
    static let maximumDepth = 3
    static let maximumDirectories = 256

    /// The filesystem, or nil and, when the boot sector's BPB passed for FAT's, why FAT could not be read.
    static func open(source: any ByteSource, path: String, offset: UInt64, length: UInt64) -> (LoaderFilesystem?, String?) {
        let fatProblem: FATFilesystem.Problem
        do {
            return (.fat(try FATFilesystem.open(source, offset: offset, length: length)), nil)
        } catch {
            fatProblem = error
        }
        if let ext = try? Ext2Filesystem(source: source, offset: offset, name: path) { return (.ext(ext), nil) }
        switch fatProblem {
        case .noBootSignature, .invalidBPB: return (nil, nil)  // not FAT at all (EXTLINUX's BPB is empty)
        default: return (nil, fatProblem.description)
        }
    }

    var name: String {
        switch self {
        case .fat(let f): return f.kind.rawValue
        case .ext: return "ext2/3/4"
        }
    }

    func read(_ path: String, maxBytes: Int) -> [UInt8]? {
        switch self {
        case .fat(let f): return try? f.read(path, maxBytes: maxBytes)
        case .ext(let e):
            guard let entry = try? e.stat(path), entry.kind == .file, entry.size <= UInt64(maxBytes) else { return nil }
            return try? e.read(path, maxBytes: maxBytes)
        }
    }

    func isFile(_ path: String) -> Bool {
        switch self {
        case .fat(let f): return (try? f.lookup(path)).flatMap { $0 }.map { !$0.isDirectory } ?? false
        case .ext(let e): return (try? e.stat(path))?.kind == .file
        }
    }

    /// Paths of the regular files called `name` (case-insensitively, as on FAT), breadth first.
    func find(_ name: String) -> [String] {
        var found: [String] = []
        var queue: [(path: String, depth: Int)] = [("/", 0)]
        var visited = 0
        while !queue.isEmpty, visited < Self.maximumDirectories {
            let (dir, depth) = queue.removeFirst()
            visited += 1
            for (entry, isDirectory) in list(dir) {
                let path = dir == "/" ? "/" + entry : dir + "/" + entry
                if isDirectory {
                    if depth + 1 <= Self.maximumDepth, entry != ".", entry != ".." { queue.append((path, depth + 1)) }
                } else if entry.lowercased() == name {
                    found.append(path)
                }
            }
        }
        return found
    }

    private func list(_ dir: String) -> [(String, Bool)] {
        switch self {
        case .fat(let f): return ((try? f.list(dir)) ?? []).map { ($0.name, $0.isDirectory) }
        case .ext(let e): return ((try? e.list(dir, limit: 10_000)) ?? []).map { ($0.name, $0.kind == .directory) }
        }
    }
}
