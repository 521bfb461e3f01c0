import Synchronization

/// A Hyper-V VHDX presented as the raw disk it holds: fixed, dynamic and differencing disks,
/// read-only.
///
/// Layout ([MS-VHDX], little-endian throughout; GUIDs in Microsoft's mixed-endian order):
/// - "vhdxfile" at 0; two headers ("head") at 64 KiB and 128 KiB, each checked by its CRC-32C over
///   4 KiB: sequence number at 8, log GUID at 48, version at 66. The valid one with the higher
///   sequence number is current.
/// - the region table ("regi", CRC-32C over 64 KiB) at 192 KiB, its copy at 256 KiB: entries of
///   (GUID, file offset, length, required) locating the BAT and the metadata region.
/// - the metadata region: a table ("metadata") of items (GUID, offset, length, flags) giving the
///   file parameters (block size; bit 1 of the flags: has a parent), the virtual disk size, the
///   logical sector size and, for a differencing disk, the parent locator.
/// - the BAT: 64-bit entries, the state in bits 0..2 and the file offset in MiB in bits 20..63.
///   After every `chunk ratio` payload entries (2^23 × logical sector size / block size) comes the
///   entry of the sector bitmap block for that chunk: one bit per logical sector, least
///   significant first, telling a differencing disk's own sectors from its parent's.
///
/// A header naming a log (a non-zero log GUID) means writes that were never replayed into the
/// file; qemu replays them when it opens the file for writing, but a read-only reader cannot, so
/// such a file is refused rather than read stale.
public final class VHDXDisk: ByteSource {
    /// The virtual disk's size in bytes (the metadata's virtual disk size).
    public let size: UInt64
    /// The payload block size in bytes.
    public let blockSize: UInt64
    /// The logical sector size in bytes, 512 or 4096.
    public let logicalSectorSize: UInt64
    /// The parent a differencing disk names, when `ContainerFiles.openBacking` was nil, so the
    /// parent's sectors read as zeros; nil when there is no parent or it was opened.
    public let backingNotOpened: String?
    /// The parent's name from the parent locator (relative path first), for a differencing disk.
    public let parentName: String?

    private let file: any ByteSource
    private let parent: (any ByteSource)?
    private let table: TablePageCache
    private let batOffset: UInt64
    private let chunkRatio: UInt64
    private let differencing: Bool
    /// The part of a sector bitmap block the last partially present block needed.
    private let lastBitmap = Mutex<(offset: UInt64, bytes: [UInt8])?>(nil)

    static let headerOffsets: [UInt64] = [64 << 10, 128 << 10]
    static let regionTableOffsets: [UInt64] = [192 << 10, 256 << 10]
    static let regionTableBytes = 64 << 10
    static let maxVirtualSize: UInt64 = 64 << 40
    static let mib: UInt64 = 1 << 20

    static let batRegion = GUID(string: "2DC27766-F623-4200-9D64-115E9BFD4A08")!
    static let metadataRegion = GUID(string: "8B7CA206-4790-4B9A-B8FE-575F050F886E")!
    static let fileParameters = GUID(string: "CAA16737-FA36-4D43-B3B6-33F0AA44E76B")!
    static let virtualDiskSize = GUID(string: "2FA54224-CD1B-4876-B211-5DBED83BF4B8")!
    static let page83Data = GUID(string: "BECA12AB-B2E6-4523-93EF-C309E000C746")!
    static let logicalSectorSizeItem = GUID(string: "8141BF1D-A96F-4709-BA47-F233A8FAAB5F")!
    static let physicalSectorSize = GUID(string: "CDA348C7-445D-4471-9CC9-E9885251C556")!
    static let parentLocator = GUID(string: "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")!

    /// BAT entry states (bits 0..2).
    enum State: UInt64 {
        case notPresent = 0, undefined = 1, zero = 2, unmapped = 3, fullyPresent = 6, partiallyPresent = 7
    }

    /// Opens `file` as a VHDX. Throws a `ContainerError` for anything that is not a readable VHDX
    /// (no valid header or region table, a log to replay, an unknown required region or metadata
    /// item, an absurd size, block size or sector size, a table outside the file), and whatever
    /// `file` or `files.openBacking` throws.
    public init(file: any ByteSource, files: ContainerFiles) throws {
        self.file = file
        self.table = TablePageCache()
        guard let identifier = try file.readIfInBounds(at: 0, count: 8), identifier == Array("vhdxfile".utf8) else {
            throw ContainerError("not a VHDX: no \"vhdxfile\" identifier at 0")
        }
        var current: (sequence: UInt64, header: [UInt8])?
        for offset in Self.headerOffsets {
            guard let header = try file.readIfInBounds(at: offset, count: 4096), header.starts(with: Array("head".utf8)),
                  Self.crc32cMatches(header, checksumAt: 4), header.le16(66) == 1 else { continue }
            let sequence = header.le64(8)
            if current == nil || sequence > current!.sequence { current = (sequence, header) }
        }
        guard let header = current?.header else {
            throw ContainerError("VHDX has no valid header at 64 KiB or 128 KiB (signature, CRC-32C and version 1 checked)")
        }
        guard header[48..<64].allSatisfy({ $0 == 0 }) else {
            throw ContainerError("VHDX has a log of writes that were never replayed into the file; a read-only reader "
                + "cannot replay it and would read stale data. Open it once read-write with Hyper-V or qemu "
                + "(qemu-img check -r all) to replay it")
        }

        // The region table, or its copy when the first is damaged.
        var regions: [UInt8]?
        for offset in Self.regionTableOffsets {
            if let bytes = try file.readIfInBounds(at: offset, count: Self.regionTableBytes), bytes.starts(with: Array("regi".utf8)),
               Self.crc32cMatches(bytes, checksumAt: 4), bytes.le32(8) <= 2047 {
                regions = bytes
                break
            }
        }
        guard let regions else { throw ContainerError("VHDX has no valid region table at 192 KiB or 256 KiB") }
        var bat: (offset: UInt64, length: UInt64)?, metadata: (offset: UInt64, length: UInt64)?
        for i in 0..<Int(regions.le32(8)) {
            let entry = 16 + 32 * i
            let id = GUID(bytes: regions[entry..<(entry + 16)])!
            let region = (offset: regions.le64(entry + 16), length: UInt64(regions.le32(entry + 24)))
            guard region.offset % Self.mib == 0, region.offset >= Self.mib, VirtualDisk.fits(region.offset, region.length, in: file.size) else {
                throw ContainerError("VHDX region \(id) at \(region.offset) (\(region.length) bytes) is misaligned or outside the file (\(file.size) bytes)")
            }
            if id == Self.batRegion { bat = region }
            else if id == Self.metadataRegion { metadata = region }
            else if regions.le32(entry + 28) & 1 != 0 {
                throw ContainerError("VHDX requires region \(id), which this reader does not know")
            }
        }
        guard let bat, let metadata else { throw ContainerError("VHDX region table lacks the BAT or the metadata region") }

        // The metadata table and the items it locates.
        guard metadata.length >= 64 << 10 else { throw ContainerError("VHDX metadata region of \(metadata.length) bytes is too small for its table") }
        let items = try file.read(at: metadata.offset, count: 64 << 10)
        guard items.starts(with: Array("metadata".utf8)), items.le16(10) <= 2047 else {
            throw ContainerError("VHDX metadata region at \(metadata.offset) lacks its \"metadata\" table")
        }
        var found: [GUID: (offset: UInt64, length: UInt64)] = [:]
        let known = [Self.fileParameters, Self.virtualDiskSize, Self.page83Data, Self.logicalSectorSizeItem, Self.physicalSectorSize, Self.parentLocator]
        for i in 0..<Int(items.le16(10)) {
            let entry = 32 + 32 * i
            let id = GUID(bytes: items[entry..<(entry + 16)])!
            let offset = UInt64(items.le32(entry + 16)), length = UInt64(items.le32(entry + 20))
            if !known.contains(id) {
                if items.le32(entry + 24) & 4 != 0 { throw ContainerError("VHDX requires metadata item \(id), which this reader does not know") }
                continue
            }
            guard length == 0 || (offset >= 64 << 10 && VirtualDisk.fits(offset, length, in: metadata.length)) else {
                throw ContainerError("VHDX metadata item \(id) at \(offset) (\(length) bytes) lies outside its region")
            }
            found[id] = (metadata.offset + offset, length)
        }
        func item(_ id: GUID, _ name: String, bytes: Int) throws -> [UInt8] {
            guard let place = found[id], place.length >= UInt64(bytes) else {
                throw ContainerError("VHDX metadata lacks its \(name) item")
            }
            return try file.read(at: place.offset, count: bytes)
        }
        let parameters = try item(Self.fileParameters, "file parameters", bytes: 8)
        blockSize = UInt64(parameters.le32(0))
        differencing = parameters.le32(4) & 2 != 0
        size = try item(Self.virtualDiskSize, "virtual disk size", bytes: 8).le64(0)
        logicalSectorSize = UInt64(try item(Self.logicalSectorSizeItem, "logical sector size", bytes: 4).le32(0))
        guard blockSize >= Self.mib, blockSize <= 256 * Self.mib, blockSize & (blockSize - 1) == 0 else {
            throw ContainerError("VHDX block size \(blockSize) is not a power of two from 1 MiB to 256 MiB")
        }
        guard logicalSectorSize == 512 || logicalSectorSize == 4096 else {
            throw ContainerError("VHDX logical sector size \(logicalSectorSize) is neither 512 nor 4096")
        }
        guard size <= Self.maxVirtualSize, size % logicalSectorSize == 0 else {
            throw ContainerError("VHDX virtual size \(size) is over 64 TiB or not a multiple of the \(logicalSectorSize)-byte sector")
        }
        chunkRatio = (1 << 23) * logicalSectorSize / blockSize
        let dataBlocks = (size + blockSize - 1) / blockSize
        let entries = differencing
            ? (dataBlocks + chunkRatio - 1) / chunkRatio * (chunkRatio + 1)
            : dataBlocks + (dataBlocks == 0 ? 0 : (dataBlocks - 1) / chunkRatio)
        guard entries * 8 <= bat.length else {
            throw ContainerError("VHDX BAT region of \(bat.length) bytes is too small for \(entries) entries")
        }
        batOffset = bat.offset

        if differencing {
            guard let place = found[Self.parentLocator], place.length >= 20, place.length <= 64 << 10 else {
                throw ContainerError("differencing VHDX lacks a parent locator of at most 64 KiB")
            }
            let name = try Self.parentName(locator: try file.read(at: place.offset, count: Int(place.length)))
            parentName = name
            (parent, backingNotOpened) = try VirtualDisk.openParent(name, files: files, of: "differencing VHDX")
        } else {
            parentName = nil
            parent = nil
            backingNotOpened = nil
        }
    }

    static func crc32cMatches(_ bytes: [UInt8], checksumAt index: Int) -> Bool {
        var zeroed = bytes
        zeroed.replaceSubrange(index..<(index + 4), with: [0, 0, 0, 0])
        return CRC32C.checksum(zeroed) == bytes.le32(index)
    }

    /// The parent's path from the locator's UTF-16LE key-value pairs: relative_path, else
    /// absolute_win32_path, else volume_path, in the form `ContainerFiles` resolves.
    static func parentName(locator: [UInt8]) throws -> String {
        var values: [String: String] = [:]
        let count = Int(locator.le16(18))
        for i in 0..<count {
            let entry = 20 + 12 * i
            guard let keyOffset = locator.le32(at: entry), let valueOffset = locator.le32(at: entry + 4),
                  let keyLength = locator.le16(at: entry + 8), let valueLength = locator.le16(at: entry + 10) else {
                throw ContainerError("VHDX parent locator's \(count) entries run past its end")
            }
            guard VirtualDisk.fits(UInt64(keyOffset), UInt64(keyLength), in: UInt64(locator.count)),
                  VirtualDisk.fits(UInt64(valueOffset), UInt64(valueLength), in: UInt64(locator.count)) else {
                throw ContainerError("VHDX parent locator entry \(i) points outside the locator")
            }
            let key = VirtualDisk.utf16(locator[Int(keyOffset)..<Int(keyOffset + UInt32(keyLength))], bigEndian: false) ?? ""
            values[key] = VirtualDisk.utf16(locator[Int(valueOffset)..<Int(valueOffset + UInt32(valueLength))], bigEndian: false)
        }
        for key in ["relative_path", "absolute_win32_path", "volume_path"] {
            if let value = values[key], !value.isEmpty { return VirtualDisk.portableName(value) }
        }
        throw ContainerError("differencing VHDX's parent locator names no path")
    }

    /// Reads exactly `count` bytes of the virtual disk at `offset`, or throws.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        try VirtualDisk.checkRequest(offset: offset, count: count, size: size, what: "VHDX virtual disk")
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var position = offset
        let end = offset + UInt64(count)
        while position < end {
            let block = position / blockSize, within = position % blockSize
            let length = min(end - position, blockSize - within)
            let entry = try table.le64(file, at: batOffset + (block + block / chunkRatio) * 8, what: "VHDX BAT entry of block \(block)")
            let fileOffset = entry & ~(Self.mib - 1)  // bits 20..63: the offset in MiB, as bytes
            guard let state = State(rawValue: entry & 7) else {
                throw ContainerError("VHDX BAT entry of block \(block) has the undefined state \(entry & 7)")
            }
            // The block's bytes that lie inside the virtual disk (the last block may be partial).
            let blockBytes = min(blockSize, size - block * blockSize)
            switch state {
            case .notPresent where differencing:
                try VirtualDisk.appendParent(parent, at: position, count: Int(length), to: &out)
            case .notPresent, .undefined, .zero, .unmapped:
                out.append(contentsOf: [UInt8](repeating: 0, count: Int(length)))
            case .fullyPresent:
                try checkInFile(fileOffset, blockBytes, block)
                out.append(contentsOf: try file.read(at: fileOffset + within, count: Int(length)))
            case .partiallyPresent:
                guard differencing else {
                    throw ContainerError("VHDX BAT entry of block \(block) is partially present, but the disk has no parent")
                }
                try checkInFile(fileOffset, blockBytes, block)
                let bitmap = try sectorBitmap(of: block)
                try VirtualDisk.forEachRun(from: within, count: length, unit: logicalSectorSize, present: { sector in
                    bitmap[Int(sector / 8)] & (1 << UInt8(sector % 8)) != 0
                }) { runStart, runLength, present in
                    if present {
                        out.append(contentsOf: try file.read(at: fileOffset + runStart, count: Int(runLength)))
                    } else {
                        try VirtualDisk.appendParent(parent, at: block * blockSize + runStart, count: Int(runLength), to: &out)
                    }
                }
            }
            position += length
        }
        return out
    }

    private func checkInFile(_ offset: UInt64, _ length: UInt64, _ block: UInt64) throws {
        guard offset > 0, VirtualDisk.fits(offset, length, in: file.size) else {
            throw ContainerError("VHDX BAT entry of block \(block) points at \(offset), outside the file (\(file.size) bytes)")
        }
    }

    /// The bits of the sector bitmap block that cover `block` (at most 64 KiB: a 256 MiB block of
    /// 512-byte sectors).
    private func sectorBitmap(of block: UInt64) throws -> [UInt8] {
        let chunk = block / chunkRatio
        let entry = try table.le64(file, at: batOffset + (chunk * (chunkRatio + 1) + chunkRatio) * 8, what: "VHDX sector bitmap entry of chunk \(chunk)")
        guard entry & 7 == 6 else {
            throw ContainerError("VHDX block \(block) is partially present, but its sector bitmap block (state \(entry & 7)) is not")
        }
        let bytesPerBlock = blockSize / logicalSectorSize / 8
        let offset = (entry & ~(Self.mib - 1)) + (block % chunkRatio) * bytesPerBlock
        guard entry >> 20 > 0, VirtualDisk.fits(offset, bytesPerBlock, in: file.size) else {
            throw ContainerError("VHDX sector bitmap of chunk \(chunk) lies outside the file (\(file.size) bytes)")
        }
        if let hit = lastBitmap.withLock({ $0?.offset == offset ? $0?.bytes : nil }) { return hit }
        let bitmap = try file.read(at: offset, count: Int(bytesPerBlock))
        lastBitmap.withLock { $0 = (offset, bitmap) }
        return bitmap
    }
}

extension VHDXDisk: ContainerDisk {}
