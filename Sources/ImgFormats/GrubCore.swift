import CLzma

/// GRUB 2's i386-pc core.img as the BIOS would load it: where it lies, and what the kernel will
/// find in it (its modules, its prefix, its embedded config).
public struct GrubCoreImage: Sendable, Equatable {
    /// From boot.img's kernel sector (0x5C, or 0x1B0 for boot_hybrid.img): where diskboot.img is.
    public let firstSector: UInt64
    /// The sectors diskboot.img loads after itself, in load order.
    public let blocklist: [SectorRange]
    /// Total core.img sectors, diskboot.img's included.
    public let sectors: UInt64
    /// Bytes of the LZMA stream after lzma_decompress.img, from the decompressor's header.
    public let compressedSize: UInt32
    /// Bytes the LZMA stream decompresses to (the kernel and its module info), from the decompressor's header.
    public let uncompressedSize: UInt32
    /// Names from each ELF module's `.modname` section, in the order the kernel loads them.
    public let modules: [String]
    /// Module info object type 3; grub-mkimage's `-p`.
    public let prefix: String?
    /// Module info object type 2; grub-mkimage's `-c`.
    public let config: String?
    /// The type of every object that is not decoded (memdisk 1, pubkey 4, dtb 5, ...), one per object.
    public let otherObjects: [UInt32]

    /// Makes a value as `decode` would, for tests and reports.
    public init(
        firstSector: UInt64, blocklist: [SectorRange], sectors: UInt64, compressedSize: UInt32,
        uncompressedSize: UInt32, modules: [String], prefix: String?, config: String?, otherObjects: [UInt32]
    ) {
        self.firstSector = firstSector
        self.blocklist = blocklist
        self.sectors = sectors
        self.compressedSize = compressedSize
        self.uncompressedSize = uncompressedSize
        self.modules = modules
        self.prefix = prefix
        self.config = config
        self.otherObjects = otherObjects
    }
}

/// Decodes core.img from an image, following the chain the BIOS and GRUB's own boot code follow.
///
/// Every value read from the image is checked before use: hostile input yields a `Problem`, never a
/// trap, an unbounded loop or an unbounded allocation.
public enum GrubCoreDecoder {
    /// i386-pc's sector size in bytes: boot.img and diskboot.img address 512-byte sectors.
    public static let sectorSize = 512
    /// GRUB loads at most this many sectors of core.img (grub-setup refuses more).
    public static let maximumSectors = EmbeddingArea.maximumCoreSectors
    /// diskboot.img's list runs downward from 0x1F4; 40 entries reach its code, so no real list is longer.
    public static let maximumBlocklistEntries = 40
    /// Real kernels plus modules stay well under a MiB; refusing beyond bounds the output buffer.
    public static let maximumUncompressedSize: UInt32 = 888 * 512 * 16
    /// lzma_decompress.img is 0xB20 bytes in GRUB 2.04-2.12; GRUB reserves at most 0xE00.
    static let maximumDecompressorSize = 0xE00
    /// Where diskboot.img loads core.img's second sector (segment 0x0820); the decompressor is linked there.
    static let decompressorLinkAddress: UInt32 = 0x8200
    static let firstBlocklistEntry = 0x1F4
    static let blocklistEntrySize = 12
    static let moduleInfoMagic: UInt32 = 0x676D_696D  // "mimg"
    static let moduleInfoHeaderSize = 12

    /// Why core.img cannot be decoded. `description` is the message the user reads.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// Sector 0 does not hold GRUB 2's boot.img.
        case notGrubBootImage
        /// The source refused a read; holds its message.
        case readFailed(String)
        /// boot.img's kernel sector lies past the end of the image.
        case coreOutsideImage(sector: UInt64, imageSectors: UInt64)
        /// The sector boot.img names does not hold diskboot.img.
        case notDiskboot(sector: UInt64)
        /// diskboot.img's blocklist has no zero-length entry within `maximumBlocklistEntries`.
        case blocklistUnterminated
        /// diskboot.img's blocklist has no entries.
        case blocklistEmpty
        /// A blocklist entry reaches past the end of the image.
        case blocklistOutsideImage(entry: Int, range: SectorRange, imageSectors: UInt64)
        /// A blocklist entry overlaps diskboot.img or an earlier entry.
        case blocklistOverlap(entry: Int, range: SectorRange)
        /// A blocklist entry's load segment does not follow on from the previous one.
        case blocklistSegment(entry: Int, found: UInt16, expected: UInt16)
        /// The blocklist adds up to more than `maximumSectors`.
        case tooManySectors(UInt64)
        /// core.img's second sector is not lzma_decompress.img.
        case notDecompressor
        /// The decompressor's no-Reed-Solomon length is 0xFFFF, GRUB's mark for a version mismatch.
        case versionMismatch
        /// The compressed size is larger than what the blocklist loads after the decompressor.
        case compressedOutsideCore(compressedSize: UInt32, available: Int)
        /// The uncompressed size is outside 12...`maximumUncompressedSize`.
        case uncompressedSizeInvalid(UInt32)
        /// The end of the decompressor code, where the LZMA stream starts, was not found.
        case lzmaStreamNotFound
        /// The LZMA stream ended before the expected number of bytes.
        case lzmaTruncated(decoded: Int, expected: Int)
        /// liblzma reported corrupt data after `decoded` bytes.
        case lzmaCorrupt(decoded: Int, expected: Int)
        /// No module info ("mimg") at the end of the decompressed kernel.
        case moduleInfoMissing
        /// A module info entry's type, size or offset is out of range.
        case moduleEntryInvalid(entry: Int, offset: Int, reason: String)
        /// A module's ELF has no readable `.modname` section.
        case moduleNameMissing(entry: Int, reason: String)

        public var description: String {
            switch self {
            case .notGrubBootImage:
                return "sector 0 does not hold GRUB 2's boot.img, so there is no core.img to follow; reinstall GRUB with grub-install"
            case .readFailed(let message):
                return "reading core.img failed: \(message)"
            case .coreOutsideImage(let sector, let imageSectors):
                return "boot.img points to core.img at sector \(sector), past the end of the image (\(imageSectors) sectors); reinstall GRUB with grub-install"
            case .notDiskboot(let sector):
                return "core.img's first sector (sector \(sector)) is not GRUB's diskboot.img; something overwrote the embedding area, reinstall GRUB with grub-install"
            case .blocklistUnterminated:
                return "diskboot.img's blocklist has no terminating entry within \(maximumBlocklistEntries) entries; reinstall GRUB with grub-install"
            case .blocklistEmpty:
                return "diskboot.img's blocklist is empty, so nothing after diskboot.img would be loaded; reinstall GRUB with grub-install"
            case .blocklistOutsideImage(let entry, let range, let imageSectors):
                return "blocklist entry \(entry) (sectors \(range.start)..<\(range.end)) points past the end of the image (\(imageSectors) sectors); reinstall GRUB with grub-install"
            case .blocklistOverlap(let entry, let range):
                return "blocklist entry \(entry) (sectors \(range.start)..<\(range.end)) overlaps diskboot.img or an earlier entry, so core.img would load itself in a loop; reinstall GRUB with grub-install"
            case .blocklistSegment(let entry, let found, let expected):
                return "blocklist entry \(entry) loads to segment 0x\(String(found, radix: 16)) instead of 0x\(String(expected, radix: 16)), leaving a gap or overlap in memory; reinstall GRUB with grub-install"
            case .tooManySectors(let count):
                return "core.img spans \(count) sectors, more than the \(maximumSectors) GRUB can load; install with fewer modules"
            case .notDecompressor:
                return "core.img's second sector is not GRUB's lzma_decompress.img (no far jump to 0x0000:0x82xx); reinstall GRUB with grub-install"
            case .versionMismatch:
                return "core.img's decompressor marks a version mismatch (no-Reed-Solomon length 0xFFFF); reinstall GRUB with grub-install"
            case .compressedOutsideCore(let size, let available):
                return "core.img claims \(size) compressed bytes but the blocklist loads only \(available) after the decompressor; reinstall GRUB with grub-install"
            case .uncompressedSizeInvalid(let size):
                return "core.img claims an uncompressed size of \(size) bytes (allowed: \(moduleInfoHeaderSize)...\(maximumUncompressedSize)); the image is damaged, reinstall GRUB with grub-install"
            case .lzmaStreamNotFound:
                return "the end of core.img's decompressor (where the LZMA stream starts) was not found; this GRUB build is unknown or the image is damaged"
            case .lzmaTruncated(let decoded, let expected):
                return "core.img's LZMA stream ends after \(decoded) of \(expected) bytes; the image is damaged, reinstall GRUB with grub-install"
            case .lzmaCorrupt(let decoded, let expected):
                return "core.img's LZMA stream is corrupt after \(decoded) of \(expected) bytes; the image is damaged, reinstall GRUB with grub-install"
            case .moduleInfoMissing:
                return "the decompressed core.img has no module info (\"mimg\") at its end; the image is damaged, reinstall GRUB with grub-install"
            case .moduleEntryInvalid(let entry, let offset, let reason):
                return "module info entry \(entry) at offset \(offset) is invalid: \(reason); the image is damaged, reinstall GRUB with grub-install"
            case .moduleNameMissing(let entry, let reason):
                return "module \(entry) has no readable name: \(reason); the image is damaged, reinstall GRUB with grub-install"
            }
        }
    }

    /// Follows boot.img -> diskboot.img -> blocklist -> decompressor header -> raw LZMA1 -> module info.
    /// Returns the decoded image or throws a `GrubCoreDecoder.Problem` whose description a user can act on.
    public static func decode(_ source: some ByteSource, bootSector: [UInt8]) throws(Problem) -> GrubCoreImage {
        guard bootSector.count >= sectorSize, let boot = BootCode.grub2(bootSector),
            let firstSector = boot.details["coreImageSector"].flatMap({ UInt64($0) })
        else { throw .notGrubBootImage }
        let imageSectors = source.size / UInt64(sectorSize)

        // diskboot.img: "push dx; push si; mov si, ..." then "mov di, 0x81F4" (its first blocklist entry).
        guard firstSector < imageSectors else { throw .coreOutsideImage(sector: firstSector, imageSectors: imageSectors) }
        let diskboot = try read(source, sector: firstSector, count: 1)
        guard diskboot[0..<3].elementsEqual([0x52, 0x56, 0xBE]), diskboot[9..<12].elementsEqual([0xBF, 0xF4, 0x81])
        else { throw .notDiskboot(sector: firstSector) }

        let blocklist = try parseBlocklist(diskboot, firstSector: firstSector, imageSectors: imageSectors)
        let sectors = 1 + blocklist.reduce(0) { $0 + $1.count }  // bounded by parseBlocklist

        var core = diskboot
        core.reserveCapacity(Int(sectors) * sectorSize)
        for range in blocklist { core += try read(source, sector: range.start, count: range.count) }

        let payload = try decompress(core)
        let objects = try parseModuleInfo(payload.bytes)
        return GrubCoreImage(
            firstSector: firstSector, blocklist: blocklist, sectors: sectors,
            compressedSize: payload.compressedSize, uncompressedSize: UInt32(payload.bytes.count),
            modules: objects.modules, prefix: objects.prefix, config: objects.config, otherObjects: objects.other)
    }

    // MARK: diskboot.img's blocklist

    /// Reads the entries {u64 start, u16 length, u16 segment} from 0x1F4 downward up to the one with
    /// length 0, checking each against the image, the others and the load address diskboot gives it.
    static func parseBlocklist(_ diskboot: [UInt8], firstSector: UInt64, imageSectors: UInt64) throws(Problem) -> [SectorRange] {
        var ranges: [SectorRange] = []
        var total: UInt64 = 1
        var segment: UInt16 = 0x0820  // diskboot loads core.img's sector 1 to 0x8200
        for entry in 0... {
            guard entry < maximumBlocklistEntries else { throw .blocklistUnterminated }
            let offset = firstBlocklistEntry - entry * blocklistEntrySize
            let length = diskboot.le16(offset + 8)
            if length == 0 { break }
            let range = SectorRange(start: diskboot.le64(offset), count: UInt64(length))
            let number = entry + 1
            total += range.count
            guard total <= maximumSectors else { throw .tooManySectors(total) }
            guard range.end <= imageSectors, range.end != .max else {
                throw .blocklistOutsideImage(entry: number, range: range, imageSectors: imageSectors)
            }
            // A sector loaded twice (or diskboot loading itself) means the list is corrupt.
            let own = SectorRange(start: firstSector, count: 1)
            if ([own] + ranges).contains(where: { $0.start < range.end && range.start < $0.end }) {
                throw .blocklistOverlap(entry: number, range: range)
            }
            let found = diskboot.le16(offset + 10)
            guard found == segment else { throw .blocklistSegment(entry: number, found: found, expected: segment) }
            segment &+= length &* 0x20  // cannot wrap: total <= 888 sectors
            ranges.append(range)
        }
        guard !ranges.isEmpty else { throw .blocklistEmpty }
        return ranges
    }

    // MARK: lzma_decompress.img and the LZMA stream

    /// Decodes the raw LZMA1 stream that follows the decompressor in `core` (diskboot.img first).
    static func decompress(_ core: [UInt8]) throws(Problem) -> (bytes: [UInt8], compressedSize: UInt32) {
        let header = sectorSize
        guard core.count >= header + sectorSize else { throw .notDecompressor }
        // "ljmp $0, $codestart": EA, a 16-bit offset into the decompressor linked at 0x8200, segment 0.
        let target = UInt32(core.le16(header + 1))
        guard core[header] == 0xEA, core.le16(header + 3) == 0,
            target >= decompressorLinkAddress, target < decompressorLinkAddress + UInt32(maximumDecompressorSize)
        else { throw .notDecompressor }
        let compressedSize = core.le32(header + 0x08)
        let uncompressedSize = core.le32(header + 0x0C)
        let noReedSolomon = Int(core.le16(header + 0x14))
        guard noReedSolomon != 0xFFFF else { throw .versionMismatch }
        guard uncompressedSize >= moduleInfoHeaderSize, uncompressedSize <= maximumUncompressedSize else {
            throw .uncompressedSizeInvalid(uncompressedSize)
        }

        let candidates = streamStarts(core)
        guard !candidates.isEmpty else { throw .lzmaStreamNotFound }
        var firstProblem: Problem?
        for start in candidates {
            let available = core.count - start
            guard Int(compressedSize) <= available else {
                firstProblem = firstProblem ?? .compressedOutsideCore(compressedSize: compressedSize, available: available)
                continue
            }
            do {
                let bytes = try lzma1(core[start..<start + Int(compressedSize)], size: Int(uncompressedSize))
                return (bytes, compressedSize)
            } catch {
                firstProblem = firstProblem ?? error
            }
        }
        throw firstProblem ?? .lzmaStreamNotFound
    }

    /// Where the LZMA stream may start, as offsets into `core`.
    ///
    /// The decompressor's size is not recorded in its header; only its code knows, as the operand of
    /// `mov esi, decompressor_end` (BE imm32, absolute at the 0x8200 link address) that hands the
    /// stream to the LZMA decoder. Scanning for that instruction adapts to other GRUB builds; a
    /// candidate must lie inside the decompressor's maximum size and point at a 00 byte (every LZMA
    /// range-coder stream starts with one). A stray match only costs a failed decode attempt.
    static func streamStarts(_ core: [UInt8]) -> [Int] {
        let base = sectorSize
        let end = min(core.count, base + maximumDecompressorSize)
        var found: [Int] = []
        var position = base + 0x18  // past the header fields
        while position + 5 <= end, found.count < 4 {
            defer { position += 1 }
            guard core[position] == 0xBE else { continue }
            let address = core.le32(position + 1)
            guard address > decompressorLinkAddress, address - decompressorLinkAddress <= UInt32(maximumDecompressorSize)
            else { continue }
            let start = base + Int(address - decompressorLinkAddress)
            if start >= position + 5, start < core.count, core[start] == 0, !found.contains(start) { found.append(start) }
        }
        return found
    }

    /// GRUB's LZMA settings (util/mkimage.c): raw LZMA1, lc=3, lp=0, pb=2, 64 KiB dictionary.
    static let dictionarySize: UInt32 = 64 << 10
    /// The decoder's memory depends only on the settings above, never on the input; refuse anything
    /// bigger than a sane margin in case liblzma's accounting changes.
    static let memoryLimit: UInt64 = 16 << 20
    /// lzma.h defines these through function-like macros, which Swift does not import.
    static let filterLZMA1: lzma_vli = 0x4000_0000_0000_0001
    static let filterListEnd: lzma_vli = .max  // LZMA_VLI_UNKNOWN

    /// Decodes exactly `size` bytes of raw LZMA1 from `input`. There is no end marker and no size in
    /// the stream: the decoder stops when the output is full, and running out of input first means
    /// the stream is truncated.
    static func lzma1(_ input: ArraySlice<UInt8>, size: Int) throws(Problem) -> [UInt8] {
        var options = lzma_options_lzma()
        options.dict_size = dictionarySize
        options.lc = 3
        options.lp = 0
        options.pb = 2
        var output = [UInt8](repeating: 0, count: size)
        let (status, produced): (lzma_ret, Int) = withUnsafeMutablePointer(to: &options) { optionsPointer in
            var filters = [
                lzma_filter(id: filterLZMA1, options: UnsafeMutableRawPointer(optionsPointer)),
                lzma_filter(id: filterListEnd, options: nil),
            ]
            let usage = lzma_raw_decoder_memusage(&filters)
            guard usage != UInt64.max, usage <= memoryLimit else { return (LZMA_MEMLIMIT_ERROR, 0) }
            var stream = lzma_stream()
            guard lzma_raw_decoder(&stream, &filters) == LZMA_OK else { return (LZMA_PROG_ERROR, 0) }
            defer { lzma_end(&stream) }
            return input.withUnsafeBufferPointer { inBuffer in
                output.withUnsafeMutableBufferPointer { outBuffer in
                    stream.next_in = inBuffer.baseAddress
                    stream.avail_in = inBuffer.count
                    stream.next_out = outBuffer.baseAddress
                    stream.avail_out = outBuffer.count
                    // One call can stop early (liblzma works in chunks); loop while it makes progress.
                    var status = LZMA_OK
                    while stream.avail_out > 0, status == LZMA_OK {
                        let before = (stream.avail_in, stream.avail_out)
                        status = lzma_code(&stream, LZMA_FINISH)
                        if status == LZMA_OK, before == (stream.avail_in, stream.avail_out) { status = LZMA_BUF_ERROR }
                    }
                    return (stream.avail_out == 0 ? LZMA_OK : status, outBuffer.count - stream.avail_out)
                }
            }
        }
        if produced == size { return output }
        switch status {
        // Out of input, or an end marker before the promised size: the stream is cut short.
        case LZMA_BUF_ERROR, LZMA_OK, LZMA_STREAM_END: throw .lzmaTruncated(decoded: produced, expected: size)
        default: throw .lzmaCorrupt(decoded: produced, expected: size)
        }
    }

    // MARK: module info

    /// The objects core.img carries, as `parseModuleInfo` found them.
    typealias Objects = GrubModuleList.Objects

    /// Reads grub_module_info32 {magic "mimg", u32 offset, u32 size} at `kernel.count - size` and the
    /// entries it covers, through the walker GRUB's EFI images share.
    static func parseModuleInfo(_ kernel: [UInt8]) throws(Problem) -> Objects {
        // The magic also occurs in kernel code, so trust only the header whose size reaches the end.
        var start: Int?
        var position = kernel.count - moduleInfoHeaderSize
        while position >= 0 {
            if kernel.le32(position) == moduleInfoMagic, Int(kernel.le32(position + 8)) == kernel.count - position {
                start = position
                break
            }
            position -= 1
        }
        guard let start else { throw .moduleInfoMissing }
        let offset = Int(kernel.le32(start + 4))
        guard offset >= moduleInfoHeaderSize, offset <= kernel.count - start else { throw .moduleInfoMissing }
        do throws(GrubModuleList.Problem) {
            return try GrubModuleList.walk(kernel, from: start + offset, to: kernel.count, elf64: false)
        } catch {
            switch error {
            case .entryInvalid(let entry, let offset, let reason): throw .moduleEntryInvalid(entry: entry, offset: offset, reason: reason)
            case .nameMissing(let entry, let reason): throw .moduleNameMissing(entry: entry, reason: reason)
            }
        }
    }

    // MARK: reading

    private static func read(_ source: some ByteSource, sector: UInt64, count: UInt64) throws(Problem) -> [UInt8] {
        // Callers have checked sector + count against the image, and count <= 888.
        do {
            return try source.read(at: sector * UInt64(sectorSize), count: Int(count) * sectorSize)
        } catch {
            throw .readFailed("\(error)")
        }
    }
}

/// GRUB's module list, the same in every platform's kernel image: i386-pc core.img carries it after
/// the decompressed kernel, the EFI images in their "mods" PE section. Only the header in front of
/// it (grub_module_info32 or grub_module_info64) and the ELF class of the modules differ.
enum GrubModuleList {
    /// The objects a module list holds.
    struct Objects: Equatable {
        var modules: [String] = []
        var prefix: String?
        var config: String?
        var other: [UInt32] = []
    }

    /// Why a module list cannot be walked; each decoder wraps this in its own `Problem`.
    enum Problem: Error {
        case entryInvalid(entry: Int, offset: Int, reason: String)
        case nameMissing(entry: Int, reason: String)
    }

    /// Walks the entries {u32 type, u32 size incl. this header} in `bytes[start..<end]`, each starting
    /// 4-byte aligned. Every size is checked against `end`, so the walk always terminates.
    static func walk(_ bytes: [UInt8], from start: Int, to end: Int, elf64: Bool) throws(Problem) -> Objects {
        var objects = Objects()
        var entry = 0
        var position = start
        while position < end {
            entry += 1
            guard end - position >= 8 else {
                throw .entryInvalid(entry: entry, offset: position, reason: "only \(end - position) bytes left for its 8-byte header")
            }
            let type = bytes.le32(position)
            let size = Int(bytes.le32(position + 4))  // Int is 64 bits: no overflow below
            guard size >= 8, size <= end - position else {
                throw .entryInvalid(entry: entry, offset: position, reason: "size \(size) is below 8 or runs past the end (\(end - position) bytes left)")
            }
            let body = Array(bytes[position + 8..<position + size])
            switch type {
            case 0:
                do throws(ElfProblem) {
                    objects.modules.append(try moduleName(elf: body, elf64: elf64))
                } catch {
                    throw .nameMissing(entry: entry, reason: error.reason)
                }
            case 2: objects.config = objects.config ?? cString(body)
            case 3: objects.prefix = objects.prefix ?? cString(body)
            default: objects.other.append(type)
            }
            position += (size + 3) & ~3
        }
        return objects
    }

    /// Text up to the first NUL; GRUB pads strings with NULs to the 4-byte alignment.
    static func cString(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    // MARK: ELF modules

    struct ElfProblem: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    /// The contents of the `.modname` section of a little-endian ELF32 (i386) or ELF64 (x86_64,
    /// arm64) module, read through its section header table with every offset checked against the
    /// module's bytes.
    static func moduleName(elf: [UInt8], elf64: Bool) throws(ElfProblem) -> String {
        guard elf.count >= (elf64 ? 64 : 52), elf[0..<4].elementsEqual([0x7F, 0x45, 0x4C, 0x46]) else { throw ElfProblem("not an ELF file") }
        guard elf[4] == (elf64 ? 2 : 1), elf[5] == 1 else {
            throw ElfProblem("not a little-endian \(elf64 ? 64 : 32)-bit ELF file")
        }
        let size = UInt64(elf.count)
        let tableOffset = elf64 ? elf.le64(0x28) : UInt64(elf.le32(0x20))
        let entrySize = Int(elf.le16(elf64 ? 0x3A : 0x2E))
        let count = Int(elf.le16(elf64 ? 0x3C : 0x30))
        let namesIndex = Int(elf.le16(elf64 ? 0x3E : 0x32))
        guard entrySize >= (elf64 ? 64 : 40), count > 0, namesIndex < count, tableOffset <= size,
            UInt64(count * entrySize) <= size - tableOffset
        else { throw ElfProblem("its section header table lies outside the module") }
        let table = Int(tableOffset)  // <= elf.count

        // Only the two sections read are bounds-checked: .bss and friends (SHT_NOBITS) have sizes
        // with no bytes in the file behind them.
        func contents(_ index: Int) throws(ElfProblem) -> ArraySlice<UInt8> {
            let header = table + index * entrySize
            let offset = elf64 ? elf.le64(header + 0x18) : UInt64(elf.le32(header + 16))
            let length = elf64 ? elf.le64(header + 0x20) : UInt64(elf.le32(header + 20))
            guard offset <= size, length <= size - offset else {
                throw ElfProblem("section \(index) lies outside the module")
            }
            return elf[Int(offset)..<Int(offset + length)]
        }
        let names = try contents(namesIndex)
        let wanted = Array(".modname".utf8) + [0]
        for index in 0..<count {
            let name = Int(elf.le32(table + index * entrySize))
            guard name <= names.count - wanted.count else { continue }
            let start = names.startIndex + name
            if names[start..<start + wanted.count].elementsEqual(wanted) {
                let text = String(decoding: try contents(index).prefix { $0 != 0 }, as: UTF8.self)
                guard !text.isEmpty else { throw ElfProblem("its .modname section is empty") }
                return text
            }
        }
        throw ElfProblem("it has no .modname section")
    }
}
