import CZlib
import Synchronization

/// A VMware VMDK presented as the raw disk it holds, read-only: a hosted sparse extent
/// (monolithicSparse, streamOptimized) or a descriptor file naming FLAT, SPARSE and ZERO extents
/// (monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat), with or without a parent.
///
/// Layout (VMware's "Virtual Disk Format 1.1", little-endian):
/// - a sparse extent's header ("KDMV"): version at 4, flags at 8 (bit 2: zeroed-grain entries,
///   bit 16: compressed grains, bit 17: markers), capacity and grain size in sectors at 12 and 20,
///   the embedded descriptor's sector and length at 28 and 36, grain table entries per table at
///   44, the grain directory's sector at 56, the compression algorithm at 77 (1: deflate). A
///   grain directory at 0xFFFFFFFFFFFFFFFF (GD_AT_END, streamOptimized) is in the footer, a copy
///   of the header in the sector before the end-of-stream marker, 1024 bytes before the end.
/// - the grain directory holds the sector of each grain table, whose entries hold each grain's
///   sector (0: unallocated, read from the parent or as zeros; 1 with the zeroed-grain flag: zeros).
/// - a compressed grain is a marker {UInt64 LBA, UInt32 size} then `size` bytes of zlib data that
///   inflate to exactly one grain.
/// - a descriptor ("# Disk DescriptorFile") holds `createType=`, `parentFileNameHint=` and extent
///   lines `RW <sectors> FLAT "name" <offset>`, `RW <sectors> SPARSE "name"`, `RW <sectors> ZERO`.
public final class VMDKDisk: ByteSource {
    /// The virtual disk's size in bytes: the sparse extent's capacity, or the extents' total.
    public let size: UInt64
    /// The descriptor's createType ("monolithicSparse", "streamOptimized", "monolithicFlat", ...).
    public let createType: String?
    /// The descriptor's parentFileNameHint, for a disk with a parent.
    public let parentName: String?
    /// The parent the descriptor names, when `ContainerFiles.openBacking` was nil, so the
    /// parent's sectors read as zeros; nil when there is no parent or it was opened.
    public let backingNotOpened: String?

    private let extents: [Extent]
    private let parent: (any ByteSource)?
    private let tables = TablePageCache()
    /// The last grain inflated (extent number, grain number, bytes), so sequential small reads of a
    /// streamOptimized disk inflate each grain once.
    private let lastGrain = Mutex<(extent: Int, grain: UInt64, bytes: [UInt8])?>(nil)

    /// One extent: where it sits in the virtual disk and what holds it.
    struct Extent {
        var start: UInt64
        var length: UInt64
        var kind: Kind
    }

    enum Kind {
        case flat(any ByteSource, offset: UInt64)
        case zero
        case sparse(SparseExtent)
    }

    /// What a sparse extent's header (or, for GD_AT_END, its footer) says.
    struct SparseExtent {
        var file: any ByteSource
        var capacity: UInt64
        var grainBytes: UInt64
        var entriesPerTable: UInt64
        var directoryOffset: UInt64
        var directoryEntries: UInt64
        var compressed: Bool
        var markers: Bool
        var zeroedGrains: Bool
        var descriptor: [UInt8]?
    }

    static let maxExtents = 4096
    /// Grains beyond 1 MiB are refused: a compressed grain is inflated whole into memory.
    static let maxGrainSectors: UInt64 = 2048
    static let maxEntriesPerTable: UInt64 = 4096
    static let gdAtEnd: UInt64 = 0xFFFF_FFFF_FFFF_FFFF

    /// Opens `file` as a VMDK: a sparse extent or a descriptor whose extents are opened through
    /// `files.openExtent`. Throws a `ContainerError` for anything that is not a readable VMDK (a bad
    /// magic, version, grain size or table size, a directory outside the file, an extent type this
    /// reader does not read), and whatever the files or `files.openBacking` throw.
    public init(file: any ByteSource, files: ContainerFiles) throws {
        let head = try file.readIfInBounds(at: 0, count: 4) ?? []
        var descriptor: [UInt8]
        var extents: [Extent] = []
        if head == Array("KDMV".utf8) {
            let sparse = try Self.sparseExtent(file, name: "the VMDK")
            descriptor = sparse.descriptor ?? []
            extents = [Extent(start: 0, length: sparse.capacity, kind: .sparse(sparse))]
        } else if try file.readIfInBounds(at: 0, count: 21) == Array("# Disk DescriptorFile".utf8) {
            descriptor = try file.read(at: 0, count: Int(min(file.size, UInt64(DiskContainer.maxDescriptorBytes))))
        } else {
            throw ContainerError("not a VMDK: neither a sparse extent (\"KDMV\") nor a descriptor (\"# Disk DescriptorFile\")")
        }
        let parsed = try Self.parseDescriptor(descriptor)
        createType = parsed.createType
        if extents.isEmpty {
            var start: UInt64 = 0
            for line in parsed.extents {
                let length = line.sectors * 512
                let kind: Kind
                switch line.type {
                case "FLAT", "VMFS":
                    let source = try files.openExtent(line.name)
                    guard line.offset <= VirtualDisk.maxVirtualSize / 512,
                          VirtualDisk.fits(line.offset * 512, length, in: source.size) else {
                        throw ContainerError("VMDK flat extent \(line.name) of \(line.sectors) sectors at sector \(line.offset) runs past its file's end (\(source.size) bytes)")
                    }
                    kind = .flat(source, offset: line.offset * 512)
                case "ZERO":
                    kind = .zero
                case "SPARSE":
                    let sparse = try Self.sparseExtent(try files.openExtent(line.name), name: "VMDK extent \(line.name)")
                    guard sparse.capacity >= length else {
                        throw ContainerError("VMDK sparse extent \(line.name) holds \(sparse.capacity) bytes, less than the \(length) its descriptor line gives it")
                    }
                    kind = .sparse(sparse)
                default:
                    throw ContainerError("VMDK extent type \(line.type) (\(line.name)) is not one this reader reads (FLAT, SPARSE, ZERO)")
                }
                extents.append(Extent(start: start, length: length, kind: kind))
                start += length  // bounded: parseDescriptor checked the total
            }
        }
        self.extents = extents
        size = extents.last.map { $0.start + $0.length } ?? 0
        if let name = parsed.parent {
            parentName = name
            (parent, backingNotOpened) = try VirtualDisk.openParent(name, files: files, of: "VMDK")
        } else {
            parentName = nil
            parent = nil
            backingNotOpened = nil
        }
    }

    // MARK: the sparse extent

    /// Parses a sparse extent's header, taking the footer's copy when the grain directory is at
    /// the end, and checks every size and table against the file.
    static func sparseExtent(_ file: any ByteSource, name: String) throws -> SparseExtent {
        guard var header = try file.readIfInBounds(at: 0, count: 512), header.starts(with: Array("KDMV".utf8)) else {
            throw ContainerError("\(name) is not a sparse extent: no \"KDMV\" header")
        }
        if header.le64(56) == gdAtEnd {
            // streamOptimized: the footer (a header copy with the real directory offset) sits in the
            // sector before the end-of-stream marker, after the footer marker.
            guard file.size >= 1536, let footer = try file.readIfInBounds(at: file.size - 1024, count: 512),
                  footer.starts(with: Array("KDMV".utf8)), footer.le64(56) != gdAtEnd else {
                throw ContainerError("\(name) puts its grain directory at the end, but has no footer 1024 bytes before the end of the file")
            }
            header = footer
        }
        let version = header.le32(4), flags = header.le32(8)
        guard (1...3).contains(version) else { throw ContainerError("\(name) has sparse extent version \(version), not 1 to 3") }
        let capacitySectors = header.le64(12), grainSectors = header.le64(20)
        guard capacitySectors <= VirtualDisk.maxVirtualSize / 512 else {
            throw ContainerError("\(name) claims a capacity of \(capacitySectors) sectors, which is absurd")
        }
        guard grainSectors >= 1, grainSectors <= maxGrainSectors, grainSectors & (grainSectors - 1) == 0 else {
            throw ContainerError("\(name) has a grain of \(grainSectors) sectors, not a power of two from 1 to \(maxGrainSectors)")
        }
        let entriesPerTable = UInt64(header.le32(44))
        guard entriesPerTable >= 1, entriesPerTable <= maxEntriesPerTable else {
            throw ContainerError("\(name) has \(entriesPerTable) entries per grain table, not 1 to \(maxEntriesPerTable)")
        }
        let algorithm = header.le16(77)
        guard algorithm <= 1 else { throw ContainerError("\(name) compresses grains with algorithm \(algorithm), not deflate (1)") }
        let grainBytes = grainSectors * 512
        let bytesPerTable = entriesPerTable * grainBytes
        let directoryEntries = (capacitySectors * 512 + bytesPerTable - 1) / bytesPerTable
        let directorySector = header.le64(56)
        guard directorySector <= UInt64.max / 512, VirtualDisk.fits(directorySector * 512, directoryEntries * 4, in: file.size) else {
            throw ContainerError("\(name)'s grain directory at sector \(directorySector) (\(directoryEntries) entries) lies outside the file (\(file.size) bytes)")
        }
        // The embedded descriptor (monolithicSparse, streamOptimized), at most 64 KiB, read from the
        // first header: the footer repeats its offset.
        var descriptor: [UInt8]?
        let (descriptorSector, descriptorSectors) = (header.le64(28), header.le64(36))
        if descriptorSector > 0, descriptorSector <= UInt64.max / 512, descriptorSectors > 0,
           descriptorSectors <= UInt64(DiskContainer.maxDescriptorBytes / 512) {
            descriptor = try file.readIfInBounds(at: descriptorSector * 512, count: Int(descriptorSectors * 512))
        }
        return SparseExtent(file: file, capacity: capacitySectors * 512, grainBytes: grainBytes, entriesPerTable: entriesPerTable,
                            directoryOffset: directorySector * 512, directoryEntries: directoryEntries,
                            compressed: algorithm == 1, markers: flags & (1 << 17) != 0,
                            zeroedGrains: flags & (1 << 2) != 0, descriptor: descriptor)
    }

    /// Where a grain is.
    enum Grain {
        case unallocated
        case zeroed
        case atSector(UInt64)
    }

    /// Looks grain `grain` of extent `number` up in its directory and table, read on demand.
    private func locate(_ grain: UInt64, in sparse: SparseExtent, number: Int) throws -> Grain {
        let directoryIndex = grain / sparse.entriesPerTable
        guard directoryIndex < sparse.directoryEntries else {
            throw ContainerError("VMDK grain \(grain) lies past the extent's grain directory")
        }
        let tableSector = try tables.le32(sparse.file, file: number, at: sparse.directoryOffset + directoryIndex * 4,
                                          what: "VMDK grain directory entry \(directoryIndex)")
        guard tableSector != 0 else { return .unallocated }
        let entry = try tables.le32(sparse.file, file: number, at: UInt64(tableSector) * 512 + grain % sparse.entriesPerTable * 4,
                                    what: "VMDK grain table entry of grain \(grain)")
        switch entry {
        case 0: return .unallocated
        case 1 where sparse.zeroedGrains: return .zeroed
        default: return .atSector(UInt64(entry))
        }
    }

    /// Appends `count` bytes at `offset` of sparse extent `number`, which starts at `base` in the
    /// virtual disk.
    private func appendSparse(_ sparse: SparseExtent, number: Int, base: UInt64, offset: UInt64, count: UInt64,
                              to out: inout [UInt8]) throws {
        var position = offset
        let end = offset + count
        while position < end {
            let grain = position / sparse.grainBytes, within = position % sparse.grainBytes
            let length = min(end - position, sparse.grainBytes - within)
            switch try locate(grain, in: sparse, number: number) {
            case .unallocated:
                try VirtualDisk.appendParent(parent, at: base + position, count: Int(length), to: &out)
            case .zeroed:
                out.append(contentsOf: [UInt8](repeating: 0, count: Int(length)))
            case .atSector(let sector):
                if sparse.compressed {
                    let bytes = try inflatedGrain(grain, at: sector, of: sparse, number: number)
                    out.append(contentsOf: bytes[Int(within)..<Int(within + length)])
                } else {
                    let grainBytes = min(sparse.grainBytes, sparse.capacity - grain * sparse.grainBytes)
                    guard VirtualDisk.fits(sector * 512, grainBytes, in: sparse.file.size) else {
                        throw ContainerError("VMDK grain \(grain) at sector \(sector) lies outside the file (\(sparse.file.size) bytes)")
                    }
                    out.append(contentsOf: try sparse.file.read(at: sector * 512 + within, count: Int(length)))
                }
            }
            position += length
        }
    }

    /// The bytes of compressed grain `grain`, inflated (or the cached copy of the last one).
    private func inflatedGrain(_ grain: UInt64, at sector: UInt64, of sparse: SparseExtent, number: Int) throws -> [UInt8] {
        if let hit = lastGrain.withLock({ $0.flatMap { $0.extent == number && $0.grain == grain ? $0.bytes : nil } }) { return hit }
        let file = sparse.file
        // Deflate can grow incompressible data a little; anything beyond twice a grain is hostile.
        let maxCompressed = 2 * sparse.grainBytes + 4096
        var dataOffset = sector * 512, dataLength: UInt64
        if sparse.markers {
            guard let marker = try file.readIfInBounds(at: dataOffset, count: 12) else {
                throw ContainerError("VMDK compressed grain \(grain) at sector \(sector) lies outside the file (\(file.size) bytes)")
            }
            dataLength = UInt64(marker.le32(8))
            dataOffset += 12
        } else {
            // Without a marker the length is unknown: give zlib what may be there; it stops at the end.
            dataLength = min(maxCompressed, file.size > dataOffset ? file.size - dataOffset : 0)
        }
        guard dataLength > 0, dataLength <= maxCompressed, VirtualDisk.fits(dataOffset, dataLength, in: file.size) else {
            throw ContainerError("VMDK compressed grain \(grain) at sector \(sector) claims \(dataLength) bytes, absurd or past the end of the file")
        }
        let compressed = try file.read(at: dataOffset, count: Int(dataLength))
        // The last grain of a capacity that is not a whole number of grains may hold only the rest.
        let inCapacity = min(sparse.grainBytes, sparse.capacity - grain * sparse.grainBytes)
        var inflated = [UInt8](repeating: 0, count: Int(sparse.grainBytes))
        var inflatedLength = uLongf(sparse.grainBytes)
        var sourceLength = uLong(dataLength)
        let status = inflated.withUnsafeMutableBufferPointer { output in
            compressed.withUnsafeBufferPointer { input in
                uncompress2(output.baseAddress, &inflatedLength, input.baseAddress, &sourceLength)
            }
        }
        guard status == Z_OK, UInt64(inflatedLength) == sparse.grainBytes || UInt64(inflatedLength) == inCapacity else {
            throw ContainerError("VMDK compressed grain \(grain) at sector \(sector) does not inflate to one grain of \(sparse.grainBytes) bytes "
                + "(zlib status \(status), \(inflatedLength) bytes)")
        }
        lastGrain.withLock { $0 = (number, grain, inflated) }
        return inflated
    }

    // MARK: the descriptor

    /// One extent line: `RW 4192256 FLAT "disk-f001.vmdk" 0`.
    struct ExtentLine {
        var sectors: UInt64
        var type: String
        var name: String
        var offset: UInt64
    }

    /// Reads createType, parentFileNameHint and the extent lines; the extents' total must be a sane size.
    static func parseDescriptor(_ bytes: [UInt8]) throws -> (createType: String?, parent: String?, extents: [ExtentLine]) {
        let text = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        var createType: String?, parent: String?, extents: [ExtentLine] = []
        var total: UInt64 = 0
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = String(raw.drop { $0 == " " || $0 == "\t" })
            if let value = DiskContainer.Descriptor.value(line, "createType") { createType = value }
            if let value = DiskContainer.Descriptor.value(line, "parentFileNameHint"), !value.isEmpty { parent = value }
            let words = words(line)
            guard words.count >= 3, ["RW", "RDONLY", "NOACCESS"].contains(words[0]) else { continue }
            guard words[0] != "NOACCESS" else { throw ContainerError("VMDK descriptor has a NOACCESS extent: \(line)") }
            guard let sectors = UInt64(words[1]) else { throw ContainerError("VMDK extent line has no sector count: \(line)") }
            let type = words[2]
            let name = words.count > 3 ? words[3] : ""
            let offset = words.count > 4 ? UInt64(words[4]) : 0
            guard let offset, type == "ZERO" || !name.isEmpty else { throw ContainerError("VMDK extent line is malformed: \(line)") }
            let (sum, overflow) = total.addingReportingOverflow(sectors)
            guard !overflow, sum <= VirtualDisk.maxVirtualSize / 512, extents.count < maxExtents else {
                throw ContainerError("VMDK descriptor's extents add up to an absurd size or count")
            }
            total = sum
            extents.append(ExtentLine(sectors: sectors, type: type, name: name, offset: offset))
        }
        return (createType, parent, extents)
    }

    /// Splits a line at blanks, keeping a "quoted name" (which may hold blanks) as one word.
    static func words(_ line: String) -> [String] {
        var words: [String] = [], current = "", quoted = false, inWord = false
        for character in line {
            if character == "\"" {
                quoted.toggle()
                inWord = true
            } else if !quoted, character == " " || character == "\t" {
                if inWord { words.append(current) }
                current = ""
                inWord = false
            } else {
                current.append(character)
                inWord = true
            }
        }
        if inWord { words.append(current) }
        return words
    }

    // MARK: reading

    /// Reads exactly `count` bytes of the virtual disk at `offset`, or throws.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        try VirtualDisk.checkRequest(offset: offset, count: count, size: size, what: "VMDK virtual disk")
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var position = offset
        let end = offset + UInt64(count)
        // The extent holding `position`: the last one starting at or before it (extents are contiguous).
        var index = Self.extentIndex(extents, containing: position)
        while position < end {
            while extents[index].start + extents[index].length <= position { index += 1 }
            let extent = extents[index]
            let within = position - extent.start
            let length = min(end - position, extent.length - within)
            switch extent.kind {
            case .zero:
                out.append(contentsOf: [UInt8](repeating: 0, count: Int(length)))
            case .flat(let source, let base):
                out.append(contentsOf: try source.read(at: base + within, count: Int(length)))
            case .sparse(let sparse):
                try appendSparse(sparse, number: index, base: extent.start, offset: within, count: length, to: &out)
            }
            position += length
        }
        return out
    }

    private static func extentIndex(_ extents: [Extent], containing position: UInt64) -> Int {
        var low = 0, high = extents.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if extents[middle].start <= position { low = middle } else { high = middle - 1 }
        }
        return max(low, 0)
    }
}

extension VMDKDisk: ContainerDisk {}
