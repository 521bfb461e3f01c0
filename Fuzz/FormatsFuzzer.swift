// libFuzzer entry point for the MBR/EBR, GPT, APM, container-header, LVM2, LUKS, boot-code, GRUB core.img (and grub-bios-setup's placement of it), FAT, PE/GRUB EFI, SYSLINUX patch area,
// ISOLINUX boot info table, ISO 9660, GRUB legacy, JSON and isolated-response parsers. Not a SwiftPM
// target: run.sh compiles it together with Sources/ImgFormats/*.swift into one module, so the
// parsers' internal API is visible without an import and the whole parser is instrumented for
// coverage.
//
// Besides crashes (traps, ASan reports, timeouts, memory blow-ups) it checks the invariants callers
// rely on, and traps when one breaks so libFuzzer saves the input.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let source = MemoryByteSource(bytes)

    let table: PartitionTable?
    do {
        table = try PartitionTable.read(from: source)
    } catch {
        // Reads from memory are bounds-checked by the parsers first, so a throw is a parser bug.
        fatalError("PartitionTable.read threw on an in-memory image: \(error)")
    }
    if let table {
        check(table, imageBytes: source.size)
        _ = EmbeddingArea.find(in: table)
    }

    // The input as the table create has just written, for TableIdentity to patch: it patches
    // inside the input or refuses, with either sector size; never a trap.
    let guid = GUID(string: "0FC63DAF-8483-4772-8E79-3D69D8477DE4")!
    for sectorSize in [512, 4096] {
        let gpt = try? TableIdentity.gptWrites(in: source, sectorSize: sectorSize, diskGUID: guid, entries: [
            .init(slot: 0, type: guid, unique: guid, attributes: 1 << 2), .init(slot: 127, unique: guid),
        ])
        let mbr = try? TableIdentity.mbrWrites(in: source, sectorSize: sectorSize, signature: 0x1234_5678, types: [1: 0x83, 5: 0x82, 9: 0x0C])
        for write in (gpt ?? []) + (mbr ?? []) where write.offset + UInt64(write.bytes.count) > source.size {
            fatalError("TableIdentity writes \(write.bytes.count) bytes at \(write.offset) of a \(source.size)-byte image")
        }
    }

    // The input as a JSON document (what an isolated VM's guest sends back): a value whose rendering
    // parses and renders the same again (2.0 renders as 2, so compare text, not values), or an
    // error; never a trap or a runaway recursion.
    if let value = try? JSONValue.parse(bytes) {
        let text = value.rendered()
        guard let again = try? JSONValue.parse(text), again.rendered() == text else {
            fatalError("a parsed JSON document does not survive rendering: \(text)")
        }
    }

    // The input as an isolated VM's answer: frames that lie within it, ending in a document that
    // survives encoding.
    if let (data, end) = ResponseFrame.decode(bytes) {
        if data.reduce(0, { $0 + $1.count }) > size { fatalError("data frames longer than the input") }
        guard let again = ResponseFrame.decode(end.encoded), again.data.isEmpty, again.end.encoded == end.encoded else {
            fatalError("a decoded response does not survive encoding: \(end)")
        }
    }

    // The input as an LVM2 physical volume, and as lvm2 metadata text: a volume's mapping stays
    // inside the numbers it came from, never a trap.
    if let pv = try? LVMPhysicalVolume.read(source, offset: 0, length: source.size) {
        for lv in pv.logicalVolumes { _ = pv.extent(of: lv) }
    }
    _ = try? LVMConfig.parse(bytes)
    if let luks = try? LUKSHeader.read(source, offset: 0), luks.keySlots.count > 8 && luks.version == 1 {
        fatalError("a LUKS1 header with \(luks.keySlots.count) key slots")
    }

    // The input as a container's header: identified or not, never a trap; what it names is bounded.
    if let container = try? DiskContainer.identify(source), let backing = container.backingFile,
       backing.utf8.count > DiskContainer.maxNameBytes * 3 {
        fatalError("a backing file name of \(backing.utf8.count) bytes")
    }

    // The input as an area libblkid will probe through a copy: every range lies inside the area,
    // sorted and apart, the head first; also with the input followed by zeros up to 1 TiB.
    for area: any ByteSource in [source, ZeroExtendedSource(bytes: bytes, size: 1 << 40)] {
        let ranges = ProbeWindow.ranges(area, offset: 0, length: area.size)
        for (i, r) in ranges.enumerated() where r.upperBound > area.size || r.isEmpty || (i > 0 && r.lowerBound <= ranges[i - 1].upperBound) {
            fatalError("probe window range \(r) of an area of \(area.size) bytes: \(ranges)")
        }
        if ranges.reduce(0, { $0 + ($1.upperBound - $1.lowerBound) }) > ProbeWindow.head + ProbeWindow.tail + 64 * ProbeWindow.maxRange {
            fatalError("probe window copies too much: \(ranges)")
        }
    }

    // The input as a container: opened or refused, then read at its start, middle and end, and
    // across a cluster boundary; every read gives exactly what was asked or an error.
    for disk in containerDisks(source) {
        for (offset, count) in [(0, 4096), (disk.size / 2, 65536 + 1), (disk.size &- 512, 512), (65536 - 7, 14)]
        where count > 0 && offset <= disk.size && UInt64(count) <= disk.size - offset {
            if let read = try? disk.read(at: offset, count: count), read.count != count {
                fatalError("a container read of \(count) bytes gave \(read.count)")
            }
        }
    }

    let boot = BootCode.identify(sector0: Array(bytes.prefix(512)))
    if boot.kind == .unknown, size >= 512, boot.details["sha256"]?.count != 64 {
        fatalError("unknown boot code without a 64-digit sha256: \(boot)")
    }

    // Problems are expected for almost every input; only traps and broken bounds count.
    if let core = try? GrubCoreDecoder.decode(source, bootSector: Array(bytes.prefix(512))) {
        check(core, imageBytes: source.size)
    }

    // The input as a disk receiving grub-bios-setup's bytes: its first sector as boot.img, the rest
    // as core.img, in the embedding area its table names (else a gap as long as the input).
    if size > 512 {
        let area = table.flatMap { try? EmbeddingArea.find(in: $0).get() }
            ?? EmbeddingArea(kind: .postMBRGap, startSector: 1, sectorCount: UInt64(size / 512))
        if let placement = try? GrubBIOSSetup.place(
            bootImage: Array(bytes.prefix(512)), coreImage: Array(bytes.dropFirst(512)), area: area, disk: source) {
            check(placement, area: area, coreBytes: size - 512)
        }
    }

    // The input as a FAT partition, and again followed by zeros up to 4 GiB: FAT16 and FAT32 need
    // at least 4085 and 65525 clusters, far more than an input holds, but their metadata fits.
    for fatSource: any ByteSource in [source, ZeroExtendedSource(bytes: bytes, size: 1 << 32)] {
        if let fs = try? FATFilesystem.open(fatSource, offset: 0, length: fatSource.size) { check(fs) }
    }

    if let pe = try? PEImage.parse(bytes) {
        check(pe, fileSize: size)
        if let grub = try? GrubEFIImage.decode(pe: pe), grub.modules.count > size / 8 {
            fatalError("\(grub.modules.count) modules from a \(size)-byte file")
        }
    }

    // The input as ldlinux.sys (its patch area, with its own first sector as the boot sector).
    if let patch = try? SyslinuxPatchArea(ldlinux: bytes) { check(patch, file: bytes) }
    if let major = SyslinuxBanner.majorVersion(bytes, product: "SYSLINUX"), major < 0 || major > 999 {
        fatalError("banner version \(major) has more than 3 digits")
    }

    // An isohybrid chain: sector 0's pointer to isolinux.bin, its boot info table, and the ISO 9660
    // volume that table names; the input also as a volume whose descriptor is at block 0 (so small
    // inputs reach the directories) and at block 16, and as the bytes of one directory.
    var descriptorBlocks: Set<UInt64> = [0, ISO9660Volume.primaryDescriptorBlock]
    if let sector = IsolinuxBootInfoTable.isolinuxSector(hybridMBR: bytes), sector < UInt64(size) / 512 {
        let head = Array(bytes[Int(sector) * 512..<min(size, Int(sector) * 512 + 2048)])
        if IsolinuxBootInfoTable.hasHybridSignature(head), let table = IsolinuxBootInfoTable(head) {
            _ = IsolinuxBootInfoTable.checksum(head)
            _ = SyslinuxBanner.majorVersion(head, product: "ISOLINUX")
            descriptorBlocks.insert(table.descriptorBlock)
        }
    }
    for block in descriptorBlocks {
        if let volume = try? ISO9660Volume(source, descriptorBlock: block) { check(volume) }
        // And as ls reads it: Rock Ridge, Joliet or plain names, every directory below the root
        // (bounded), each file streamed, never more bytes than the file's size.
        if let fs = try? ISO9660Filesystem.open(source, offset: 0, length: source.size, descriptorBlock: block) {
            var pending = [(fs.root, "/")], visited = 0
            while let (directory, path) = pending.popLast(), visited < 64 {
                visited += 1
                for file in (try? fs.list(directory, path: path)) ?? [] {
                    let child = path == "/" ? "/" + file.name : path + "/" + file.name
                    if file.kind == .directory { pending.append((file, child)); continue }
                    var streamed: UInt64 = 0
                    try? fs.stream(file, path: child) { chunk in streamed += UInt64(chunk.count); return true }
                    if streamed > file.size { fatalError("\(child): streamed \(streamed) bytes of a \(file.size)-byte file") }
                }
            }
        }
    }
    check(ISO9660Volume.records(bytes), directoryBytes: size)

    // GRUB legacy's chain as stage1 follows it: sector 0, the start sector it names, the header its
    // blocklist's first sector holds.
    if let stage1 = try? GrubLegacy.Stage1(Array(bytes.prefix(512))) {
        let startAt = Int(clamping: UInt64(stage1.stage2Sector) * 512)
        let sector0IsStart = startAt + 512 > size
        if let start = try? GrubLegacy.StartSector(sector0IsStart ? Array(bytes.prefix(512)) : Array(bytes[startAt..<startAt + 512])) {
            check(start)
            if let first = start.blocklist.first, first.sector < UInt64(size) / 512 {
                let at = Int(first.sector) * 512
                if let header = try? GrubLegacy.Stage2Header(Array(bytes[at..<at + 512])) { check(header) }
            }
        }
    }
    return 0
}

/// What a decoded patch area must satisfy: everything it names lies inside the file or the boot sector.
private func check(_ patch: SyslinuxPatchArea, file: [UInt8]) {
    guard patch.dataSectors >= 1, patch.dataSectors * 512 <= file.count, patch.checksumWords * 4 <= file.count,
        patch.offset % 4 == 0, patch.offset + 24 <= file.count,
        patch.extents.count <= file.count / 10, patch.extents.allSatisfy({ $0.sectors > 0 }),
        patch.currentDirectory.map({ !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F } }) ?? true
    else { fatalError("decoded patch area breaks its bounds: \(patch)") }
    guard patch.firstSector(bootSector: Array(file.prefix(512))) != nil else {
        fatalError("the boot sector pointers \(patch.firstSectorPointerLow), \(patch.firstSectorPointerHigh) lie outside 512 bytes")
    }
    _ = patch.checksumMatches(file)
}

/// What an opened ISO 9660 volume must satisfy, and a bounded walk over it: up to 16 directories,
/// 4 levels deep; every listed name must be found again by lookup.
private func check(_ volume: ISO9660Volume) {
    var directories: [(path: String, record: ISO9660Volume.Record)] = [("", volume.root)]
    var listed = 0
    while let (path, directory) = directories.popLast(), listed < 16 {
        listed += 1
        guard let records = try? volume.list(directory) else { continue }
        check(records, directoryBytes: Int(directory.size))
        // A name with "/" in it cannot be reached by a path (and "/" with a combining mark after it is
        // still a "/" to lookup, which splits on scalars).
        for record in records where !record.name.isEmpty && !record.name.unicodeScalars.contains("/") {
            let child = path + "/" + record.name
            guard let found = try? volume.lookup(child) else { fatalError("\(child) is listed but not found") }
            if found.isDirectory, directories.count < 16, child.split(separator: "/").count < 4 {
                directories.append((child, found))
            }
            _ = volume.isFile(child)
        }
    }
}

/// Records decoded from `directoryBytes` bytes: each takes at least 33 of them.
private func check(_ records: [ISO9660Volume.Record], directoryBytes: Int) {
    guard records.count <= directoryBytes / 33 else { fatalError("\(records.count) records in \(directoryBytes) bytes") }
}

/// A start sector's blocklist stays within its 12 slots, and ends at the first empty entry.
private func check(_ start: GrubLegacy.StartSector) {
    guard start.blocklist.count <= 12, start.blocklist.allSatisfy({ $0.count > 0 && $0.count <= 0xFFFF && $0.sector <= 0xFFFF_FFFF })
    else { fatalError("start sector blocklist breaks its bounds: \(start.blocklist)") }
}

private func check(_ header: GrubLegacy.Stage2Header) {
    guard header.version.utf8.count <= 16, header.configFile.utf8.count <= 128 else {
        fatalError("stage2 header strings exceed their bounds: \(header)")
    }
}

/// `bytes`, then zeros up to `size`: a sparse image whose tail was never written.
/// The readers that open the input as a container (no other file may be opened).
private func containerDisks(_ source: MemoryByteSource) -> [any ByteSource] {
    var disks: [any ByteSource] = []
    if let disk = try? QCOW2Disk(file: source, files: .none) { disks.append(disk) }
    if let disk = try? VMDKDisk(file: source, files: .none) { disks.append(disk) }
    if let disk = try? VHDDisk(file: source, files: .none) { disks.append(disk) }
    if let disk = try? VHDXDisk(file: source, files: .none) { disks.append(disk) }
    return disks
}

private struct ZeroExtendedSource: ByteSource {
    let bytes: [UInt8]
    let size: UInt64

    func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(max(count, 0)))
        guard count >= 0, !overflow, end <= size else { throw ByteSourceError("read of \(count) bytes at \(offset) past \(size)") }
        guard count <= 1 << 24 else { fatalError("a FAT read of \(count) bytes: the reader's bounds are broken") }
        var result = [UInt8](repeating: 0, count: count)
        if offset < UInt64(bytes.count) {
            let start = Int(offset)
            let available = min(count, bytes.count - start)
            result.replaceSubrange(0..<available, with: bytes[start..<start + available])
        }
        return result
    }
}

/// What an opened FAT volume must satisfy, and a bounded walk over it: the root, up to 8
/// subdirectories and up to 16 files, each read with a 64 KiB cap.
private func check(_ fs: FATFilesystem) {
    let expected: FATFilesystem.Kind = fs.clusterCount < 4085 ? .fat12 : fs.clusterCount < 65525 ? .fat16 : .fat32
    guard fs.kind == expected, [512, 1024, 2048, 4096].contains(fs.bytesPerSector),
        fs.sectorsPerCluster > 0, fs.sectorsPerCluster & (fs.sectorsPerCluster - 1) == 0,
        fs.kind != .fat32 || (fs.rootCluster >= 2 && fs.rootCluster <= fs.clusterCount + 1)
    else { fatalError("opened FAT volume breaks its bounds: \(fs)") }

    var directories = ["/"]
    var files = 0
    var listed = 0
    while let directory = directories.popLast(), listed < 8 {
        listed += 1
        guard let entries = try? fs.list(directory) else { continue }
        guard entries.count <= FATFilesystem.maximumDirectoryEntries else { fatalError("\(entries.count) entries in \(directory)") }
        for entry in entries {
            guard !entry.name.isEmpty, !entry.shortName.isEmpty else { fatalError("an entry without a name: \(entry)") }
            guard !entry.name.contains("/") else { continue }
            let path = (directory == "/" ? "" : directory) + "/" + entry.name
            // The listing's own names must be found again (perhaps as an earlier entry of the same name).
            guard let found = try? fs.lookup(path) else { fatalError("\(path) is listed but not found") }
            if found.isDirectory {
                if directories.count < 8, path.split(separator: "/").count < 4 { directories.append(path) }
            } else if files < 16 {
                files += 1
                // Streamed as cat streams it: never more than the file's size.
                var streamed = 0
                try? fs.stream(found, path: path) { chunk in streamed += chunk.count; return streamed < 1 << 20 }
                if streamed > Int(found.size) { fatalError("\(path): streamed \(streamed) bytes of a \(found.size)-byte file") }
                if let data = try? fs.read(path, maxBytes: 64 << 10), data.count != Int(found.size) || data.count > 64 << 10 {
                    fatalError("\(path): read \(data.count) bytes of a \(found.size)-byte file with a 64 KiB cap")
                }
            }
        }
    }
}

/// What a parsed PE image must satisfy: the section count bound and every section's bytes in the file.
private func check(_ pe: PEImage, fileSize: Int) {
    guard pe.sections.count <= PEImage.maximumSections else { fatalError("\(pe.sections.count) sections") }
    for section in pe.sections {
        guard section.rawSize == 0 || UInt64(section.rawPointer) + UInt64(section.rawSize) <= UInt64(fileSize),
            let bytes = pe.section(named: section.name), bytes.count <= fileSize
        else { fatalError("section \(section) lies outside the \(fileSize)-byte file") }
    }
}

/// What a decoded core.img must satisfy: the hard bounds the decoder promises.
private func check(_ core: GrubCoreImage, imageBytes: UInt64) {
    let imageSectors = imageBytes / 512
    guard core.sectors <= GrubCoreDecoder.maximumSectors, core.sectors == 1 + core.blocklist.reduce(0, { $0 + $1.count }),
        core.blocklist.count <= GrubCoreDecoder.maximumBlocklistEntries,
        core.blocklist.allSatisfy({ $0.count > 0 && $0.end <= imageSectors }), core.firstSector < imageSectors,
        core.uncompressedSize <= GrubCoreDecoder.maximumUncompressedSize
    else { fatalError("decoded core.img breaks its bounds: \(core)") }
}

/// What a placement must satisfy: core.img and its redundancy in ascending sectors of the area,
/// at least core.img's sectors and at most twice them (and 888).
private func check(_ placement: GrubBIOSSetup.Placement, area: EmbeddingArea, coreBytes: Int) {
    let sectors = placement.sectors
    let coreSectors = (coreBytes + 511) / 512
    guard placement.bootSector.count == 512, placement.core.count == sectors.count * 512,
        sectors.count >= coreSectors, sectors.count <= min(2 * coreSectors, GrubBIOSSetup.maximumSectors),
        placement.redundancyBytes == placement.core.count - coreBytes,
        zip(sectors, sectors.dropFirst()).allSatisfy({ $0 < $1 }),
        let first = sectors.first, let last = sectors.last,
        first >= area.startSector, last - area.startSector < area.sectorCount
    else { fatalError("placement breaks its bounds: sectors \(placement.sectors), area \(area), core.img \(coreBytes) bytes") }
}

/// What every table must satisfy, however hostile its bytes.
private func check(_ table: PartitionTable, imageBytes: UInt64) {
    let numbers = table.partitions.map(\.number)
    guard numbers == numbers.sorted(), Set(numbers).count == numbers.count, numbers.allSatisfy({ $0 >= 1 }) else {
        fatalError("partition numbers are not unique, positive and ascending: \(numbers)")
    }
    let limit: Int
    switch table.kind {
    case .dos: limit = 4 + MBR.maxEBRHops + 4 * BSDLabel.maxPartitions
    case .gpt: limit = Int(GPT.maxEntryArrayBytes) / GPT.minEntrySize
    case .mac: limit = APM.maxEntries
    }
    guard table.partitions.count <= limit else { fatalError("\(table.partitions.count) partitions exceed \(limit)") }

    // Free ranges: non-empty, ascending, disjoint, never touching (they would have been one), and
    // inside the image.
    let totalSectors = imageBytes / UInt64(table.sectorSize)
    var previousEnd: UInt64?
    for range in table.unallocated(totalSectors: totalSectors) {
        guard range.count > 0, range.start >= 1, range.end <= totalSectors else {
            fatalError("free range \(range) is empty or outside 1..<\(totalSectors)")
        }
        if let previousEnd, range.start <= previousEnd {
            fatalError("free range \(range) overlaps or touches the previous one (ending at \(previousEnd))")
        }
        previousEnd = range.end
    }
}
