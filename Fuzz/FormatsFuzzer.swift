// libFuzzer entry point for the MBR/EBR, GPT, boot-code and GRUB core.img parsers. Not a SwiftPM
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

    let boot = BootCode.identify(sector0: Array(bytes.prefix(512)))
    if boot.kind == .unknown, size >= 512, boot.details["sha256"]?.count != 64 {
        fatalError("unknown boot code without a 64-digit sha256: \(boot)")
    }

    // Problems are expected for almost every input; only traps and broken bounds count.
    if let core = try? GrubCoreDecoder.decode(source, bootSector: Array(bytes.prefix(512))) {
        check(core, imageBytes: source.size)
    }
    return 0
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

/// What every table must satisfy, however hostile its bytes.
private func check(_ table: PartitionTable, imageBytes: UInt64) {
    let numbers = table.partitions.map(\.number)
    guard numbers == numbers.sorted(), Set(numbers).count == numbers.count, numbers.allSatisfy({ $0 >= 1 }) else {
        fatalError("partition numbers are not unique, positive and ascending: \(numbers)")
    }
    let limit = table.kind == .dos ? 4 + MBR.maxEBRHops : Int(GPT.maxEntryArrayBytes) / GPT.minEntrySize
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
