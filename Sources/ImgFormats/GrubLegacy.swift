/// GRUB legacy's (0.9x) BIOS boot chain as its code reads it: stage1 in sector 0 loads one sector,
/// the start sector of stage2 or stage1.5, which loads the rest from the blocklist at its end; the
/// sector after it begins with stage2's (or stage1.5's) header. Layouts are GRUB 0.97's
/// (stage1/stage1.h, stage2/start.S, stage2/asm.S), all little-endian.
public enum GrubLegacy {
    static let sectorSize = 512
    /// Every GRUB 0.9x writes compatibility version 3.2 into stage1 and stage2: this major...
    public static let compatibilityMajor: UInt8 = 3
    /// ...and this minor.
    public static let compatibilityMinor: UInt8 = 2

    /// Why a sector is not the part of GRUB legacy it should be. `description` is the message the user reads.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// Fewer than 512 bytes were given.
        case tooShort(bytes: Int)
        /// Not a start sector (the code start.S begins with, and its "Loading stage" message).
        case notStartSector(zeroed: Bool)
        /// No compatibility version 3.2 at byte 6 of stage2's or stage1.5's first sector.
        case notStage2(major: UInt8, minor: UInt8)

        public var description: String {
            switch self {
            case .tooShort(let bytes): return "\(bytes) bytes, less than a 512-byte sector"
            case .notStartSector(let zeroed): return zeroed ? "it is zeroed" : "it is not a GRUB legacy start sector"
            case .notStage2(let major, let minor): return "compatibility version \(major).\(minor) at byte 6, not 3.2"
            }
        }
    }

    /// stage1's fields after its BPB (stage1.h): 0x3E version, 0x40 boot drive, 0x42 stage2 address,
    /// 0x44 stage2 sector, 0x48 stage2 segment.
    public struct Stage1: Sendable, Equatable {
        /// The compatibility version's major byte (0x3E); 3 in every GRUB 0.9x.
        public let versionMajor: UInt8
        /// The compatibility version's minor byte (0x3F); 2 in every GRUB 0.9x.
        public let versionMinor: UInt8
        /// 0xFF: the drive the BIOS booted from.
        public let bootDrive: UInt8
        /// Where stage1 loads the start sector and jumps to.
        public let stage2Address: UInt16
        /// The start sector of stage2 or stage1.5 (an LBA).
        public let stage2Sector: UInt32
        /// The segment stage1 loads the start sector's data to (0x48).
        public let stage2Segment: UInt16

        /// Reads the fields from sector 0; throws only when `sector` is shorter than 512 bytes (the values are not checked).
        public init(_ sector: [UInt8]) throws(Problem) {
            guard sector.count >= sectorSize else { throw .tooShort(bytes: sector.count) }
            versionMajor = sector[0x3E]
            versionMinor = sector[0x3F]
            bootDrive = sector[0x40]
            stage2Address = sector.le16(0x42)
            stage2Sector = sector.le32(0x44)
            stage2Segment = sector.le16(0x48)
        }
    }

    /// The start sector of stage2 or stage1.5 (start.S).
    public struct StartSector: Sendable, Equatable {
        /// Which stage the start sector loads, from its "Loading stage" message.
        public enum Kind: String, Sendable { /** The raw value is the name the "Loading" message uses. */ case stage2 = "stage2", stage1_5 = "stage1.5" }

        /// One blocklist entry: sectors loaded in order after the start sector.
        public struct Block: Sendable, Equatable {
            /// The first sector (an LBA in 512-byte sectors).
            public let sector: UInt64
            /// The number of sectors.
            public let count: UInt64

            /// Makes an entry.
            public init(sector: UInt64, count: UInt64) {
                self.sector = sector
                self.count = count
            }
        }

        /// Entries {u32 sector, u16 count, u16 segment} run down from 0x1F8; start.S's code ends before 0x1A0.
        static let firstBlocklistEntry = 0x1F8
        static let lastBlocklistEntry = 0x1A0
        static let blocklistEntryBytes = 8

        /// Its "Loading stage" message says which: "Loading stage1.5" or "Loading stage2".
        public let kind: Kind
        /// The address start.S was linked to run at, from its `mov di, base + 0x1F8` at byte 9; nil
        /// when that instruction is not there.
        public let linkAddress: UInt16?
        /// Up to the first entry with count 0; empty when the first is.
        public let blocklist: [Block]

        /// Reads a start sector; throws when `sector` is short or is not a GRUB legacy start sector.
        public init(_ sector: [UInt8]) throws(Problem) {
            guard sector.count >= sectorSize else { throw .tooShort(bytes: sector.count) }
            // push dx; push si; mov si, ...
            let loading = Array("Loading stage".utf8)
            guard sector[0..<3].elementsEqual([0x52, 0x56, 0xBE]), let at = Self.find(loading, in: sector) else {
                throw .notStartSector(zeroed: sector.allSatisfy { $0 == 0 })
            }
            kind = sector.count > at + loading.count && sector[at + loading.count] == UInt8(ascii: "1") ? .stage1_5 : .stage2
            linkAddress = sector[9] == 0xBF ? sector.le16(10) &- UInt16(Self.firstBlocklistEntry) : nil
            var blocklist: [Block] = []
            var entry = Self.firstBlocklistEntry
            while entry >= Self.lastBlocklistEntry, sector.le16(entry + 4) != 0 {
                blocklist.append(Block(sector: UInt64(sector.le32(entry)), count: UInt64(sector.le16(entry + 4))))
                entry -= Self.blocklistEntryBytes
            }
            self.blocklist = blocklist
        }

        private static func find(_ needle: [UInt8], in bytes: [UInt8]) -> Int? {
            guard bytes.count >= needle.count else { return nil }
            return (0...(bytes.count - needle.count)).first { bytes[$0..<$0 + needle.count].elementsEqual(needle) }
        }
    }

    /// The header in the first sector stage2's (or stage1.5's) blocklist loads (asm.S): version 3.2
    /// at byte 6, the stage2 id at 0x10, then the GRUB version string and the config file's name
    /// (stage1.5 keeps 4 more bytes between them).
    public struct Stage2Header: Sendable, Equatable {
        /// stage1.5's filesystem by id (stage2/shared.h's STAGE2_ID_*_STAGE1_5, from 1).
        static let stage1_5Filesystems = ["ffs", "e2fs", "fat", "minix", "reiserfs", "vstafs", "jfs", "xfs", "iso9660", "ufs2"]
        static let idOffset = 0x10
        static let versionOffset = 0x12
        static let versionMaximumBytes = 16
        static let configMaximumBytes = 128

        /// 0 for stage2; a filesystem's number for stage1.5.
        public let id: UInt8
        /// The GRUB version string ("0.97"), non-printable bytes as "?".
        public let version: String
        /// The file stage2 reads its menu from, or the stage2 stage1.5 loads; empty when unset.
        public let configFile: String

        /// Whether this is stage1.5 (a nonzero id) rather than stage2.
        public var isStage1_5: Bool { id != 0 }

        /// stage1.5's file name as GRUB installs it ("e2fs_stage1_5"); nil for stage2 and unknown ids.
        public var stage1_5FileName: String? {
            (1...Self.stage1_5Filesystems.count).contains(Int(id)) ? Self.stage1_5Filesystems[Int(id) - 1] + "_stage1_5" : nil
        }

        /// Reads the header; throws when `sector` is short or has no compatibility version 3.2 at byte 6.
        public init(_ sector: [UInt8]) throws(Problem) {
            guard sector.count >= sectorSize else { throw .tooShort(bytes: sector.count) }
            guard sector[6] == compatibilityMajor, sector[7] == compatibilityMinor else {
                throw .notStage2(major: sector[6], minor: sector[7])
            }
            id = sector[Self.idOffset]
            version = Self.text(sector, from: Self.versionOffset, maxLength: Self.versionMaximumBytes)
            let config = Self.versionOffset + version.utf8.count + 1 + (id == 0 ? 0 : 4)
            configFile = Self.text(sector, from: config, maxLength: Self.configMaximumBytes)
        }

        /// NUL-terminated text, each byte outside printable ASCII as "?" (so one byte per character).
        private static func text(_ bytes: [UInt8], from start: Int, maxLength: Int) -> String {
            guard start < bytes.count else { return "" }
            let slice = bytes[start..<min(bytes.count, start + maxLength)].prefix { $0 != 0 }
            return String(decoding: slice.map { $0 >= 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
        }
    }
}
