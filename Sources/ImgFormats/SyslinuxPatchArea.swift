/// ldlinux.sys's patch area, which the SYSLINUX/EXTLINUX installer fills in so the boot sector and
/// ldlinux.sys can load the rest of ldlinux.sys: SYSLINUX 4 to 6's `struct patch_area` at the first
/// 4-aligned LDLINUX_MAGIC in the file, and the `struct ext_patch_area` its `epaoffset` points at
/// (libinstaller/syslxint.h; all little-endian).
///
/// Every offset and count read from the file is checked against the file before use: a damaged or
/// foreign file yields a `Problem`, never a trap.
public struct SyslinuxPatchArea: Sendable, Equatable {
    /// LDLINUX_MAGIC: in the boot sector at `bootSectorMagicOffset`, and at the start of the patch area.
    public static let magic: UInt32 = 0x3EB2_02FE
    public static let bootSectorMagicOffset = 0x1F8
    /// ldlinux.sys is 58 KiB in SYSLINUX 6.04; anything much larger is not one.
    public static let maximumLdlinuxBytes = 1 << 20
    /// The installer looks for the magic in the first sector; 4 KiB leaves room for other builds.
    static let magicSearchBytes = 4096
    static let sectorSize = 512
    /// struct patch_area up to epaoffset, and struct ext_patch_area up to secptroffset's high half.
    static let patchAreaBytes = 24
    static let extendedAreaBytes = 20
    /// One sector map entry: {u64 lba, u16 count}.
    static let extentBytes = 10

    /// Sectors of ldlinux.sys (from its sector 1) stored contiguously on the partition.
    public struct Extent: Sendable, Equatable {
        /// Relative to the start of the partition, in 512-byte sectors.
        public let lba: UInt64
        public let sectors: UInt16

        public init(lba: UInt64, sectors: UInt16) {
            self.lba = lba
            self.sectors = sectors
        }
    }

    /// Where the patch area starts in the file.
    public let offset: Int
    /// ldlinux.sys's sectors, the two ADV sectors excluded.
    public let dataSectors: Int
    /// How many 32-bit words the checksum covers, from the start of the file.
    public let checksumWords: Int
    /// Offsets in the boot sector of the low and high 32 bits of the LBA of ldlinux.sys's first sector.
    public let firstSectorPointerLow: Int
    public let firstSectorPointerHigh: Int
    /// The sector map for sectors 1..., up to its first empty entry.
    public let extents: [Extent]
    /// The installer's --directory (where ldlinux.sys looks for its files first), or nil when it left
    /// the field empty or it holds something other than printable ASCII.
    public let currentDirectory: String?

    /// Why a file has no usable patch area. `description` is the message the user reads.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        case tooShort(bytes: Int)
        case noMagic
        case dataSectorsInvalid(sectors: Int, fileBytes: Int)
        case checksumRangeInvalid(words: Int, dataSectors: Int)
        case extendedAreaOutsideFile(offset: Int, fileBytes: Int)
        case sectorPointerOutsideBootSector(offset: Int)
        case sectorMapOutsideFile(offset: Int, entries: Int, fileBytes: Int)

        public var description: String {
            switch self {
            case .tooShort(let bytes):
                return "the file is \(bytes) bytes, shorter than ldlinux.sys's first sector"
            case .noMagic:
                return "there is no LDLINUX_MAGIC (FE 02 B2 3E) with a whole patch area after it in its first \(SyslinuxPatchArea.magicSearchBytes) bytes: it is not an ldlinux.sys of SYSLINUX 4 or later"
            case .dataSectorsInvalid(let sectors, let fileBytes):
                return "the patch area counts \(sectors) data sectors, which a \(fileBytes)-byte file does not have"
            case .checksumRangeInvalid(let words, let dataSectors):
                return "the checksum covers \(words) words, more than the \(dataSectors) data sectors hold"
            case .extendedAreaOutsideFile(let offset, let fileBytes):
                return "the extended patch area at byte \(offset) runs past the end of the \(fileBytes)-byte file"
            case .sectorPointerOutsideBootSector(let offset):
                return "the boot sector's pointer to ldlinux.sys is said to be at byte \(offset), outside the 512-byte boot sector"
            case .sectorMapOutsideFile(let offset, let entries, let fileBytes):
                return "the sector map (\(entries) entries at byte \(offset)) runs past the end of the \(fileBytes)-byte file"
            }
        }
    }

    /// Decodes the patch area of `file`, a whole ldlinux.sys.
    public init(ldlinux file: [UInt8]) throws(Problem) {
        guard file.count >= Self.sectorSize else { throw .tooShort(bytes: file.count) }
        // The installer takes the first 4-aligned magic.
        guard let at = stride(from: 0, to: min(file.count, Self.magicSearchBytes), by: 4)
            .first(where: { file.le32(at: $0) == Self.magic }),
            at + Self.patchAreaBytes <= file.count
        else { throw .noMagic }
        let dataSectors = Int(file.le16(at + 8))
        let checksumWords = Int(file.le32(at + 12))
        let epa = Int(file.le16(at + 22))
        guard dataSectors >= 1, dataSectors * Self.sectorSize <= file.count else {
            throw .dataSectorsInvalid(sectors: dataSectors, fileBytes: file.count)
        }
        guard checksumWords * 4 <= dataSectors * Self.sectorSize else {
            throw .checksumRangeInvalid(words: checksumWords, dataSectors: dataSectors)
        }
        guard epa + Self.extendedAreaBytes <= file.count else { throw .extendedAreaOutsideFile(offset: epa, fileBytes: file.count) }
        let directoryOffset = Int(file.le16(epa + 2)), directoryBytes = Int(file.le16(epa + 4))
        let mapOffset = Int(file.le16(epa + 10)), mapCount = Int(file.le16(epa + 12))
        let pointerLow = Int(file.le16(epa + 14)), pointerHigh = Int(file.le16(epa + 16))
        for pointer in [pointerLow, pointerHigh] where pointer + 4 > Self.sectorSize {
            throw .sectorPointerOutsideBootSector(offset: pointer)
        }
        guard mapOffset + mapCount * Self.extentBytes <= file.count else {
            throw .sectorMapOutsideFile(offset: mapOffset, entries: mapCount, fileBytes: file.count)
        }
        offset = at
        self.dataSectors = dataSectors
        self.checksumWords = checksumWords
        firstSectorPointerLow = pointerLow
        firstSectorPointerHigh = pointerHigh
        extents = (0..<mapCount).lazy.map { i in
            let entry = mapOffset + Self.extentBytes * i
            return Extent(lba: file.le64(entry), sectors: file.le16(entry + 8))
        }.prefix { $0.sectors != 0 }.map { $0 }
        currentDirectory = Self.printable(file, from: directoryOffset, maxLength: directoryBytes)
    }

    /// The installer makes the covered words sum to LDLINUX_MAGIC; ldlinux.sys checks that once loaded.
    public func checksumMatches(_ file: [UInt8]) -> Bool {
        guard checksumWords * 4 <= file.count else { return false }
        var sum: UInt32 = 0
        for i in 0..<checksumWords { sum &+= file.le32(i * 4) }
        return sum == Self.magic
    }

    /// The LBA (relative to the partition) at which `bootSector` loads ldlinux.sys's first sector,
    /// from the two halves the installer patched into it; nil when they lie past its end.
    public func firstSector(bootSector: [UInt8]) -> UInt64? {
        guard let low = bootSector.le32(at: firstSectorPointerLow), let high = bootSector.le32(at: firstSectorPointerHigh)
        else { return nil }
        return UInt64(high) << 32 | UInt64(low)
    }

    /// Whether `bootSector` is SYSLINUX's or EXTLINUX's: LDLINUX_MAGIC at 0x1F8.
    public static func isSyslinuxBootSector(_ bootSector: [UInt8]) -> Bool {
        bootSector.le32(at: bootSectorMagicOffset) == magic
    }

    /// The NUL-terminated text at `start`, if it is non-empty printable ASCII.
    private static func printable(_ file: [UInt8], from start: Int, maxLength: Int) -> String? {
        guard start < file.count else { return nil }
        let bytes = file[start..<min(file.count, start + maxLength)].prefix { $0 != 0 }
        guard !bytes.isEmpty, bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The version in a SYSLINUX-family banner ("SYSLINUX 6.04", "ISOLINUX 6.04"; EXTLINUX shares
/// ldlinux.sys and its banner).
public enum SyslinuxBanner {
    /// The major version after the first `product` followed by digits and a dot, or nil.
    public static func majorVersion(_ file: [UInt8], product: String) -> Int? {
        let needle = Array((product + " ").utf8)
        guard file.count > needle.count + 1 else { return nil }
        for i in 0..<(file.count - needle.count - 1) where file[i..<i + needle.count].elementsEqual(needle) {
            let digits = file[(i + needle.count)...].prefix { $0 >= 0x30 && $0 <= 0x39 }.prefix(3)
            let dot = i + needle.count + digits.count
            if !digits.isEmpty, dot < file.count, file[dot] == UInt8(ascii: ".") {
                return Int(String(decoding: digits, as: UTF8.self))
            }
        }
        return nil
    }
}
