/// What an isohybrid image's boot chain reads before the ISO 9660 filesystem: the sector of
/// isolinux.bin that isohdpfx.bin/isohdppx.bin load, isolinux.bin's hybrid signature, and the boot
/// info table that mkisofs and xorriso `-boot-info-table` write into isolinux.bin at byte 8
/// (SYSLINUX 6 core/isolinux.asm, mbr/isohdpfx.S; all little-endian).
public struct IsolinuxBootInfoTable: Sendable, Equatable {
    /// In the isohybrid MBR: the 64-bit 512-byte sector of isolinux.bin (xorriso and isohybrid write
    /// 4 x its 2048-byte block).
    public static let hybridMBRSectorOffset = 0x1B0
    /// isolinux.bin's hybrid signature, which isohdpfx.bin checks before jumping to it.
    public static let hybridSignatureOffset = 0x40
    public static let hybridSignature: UInt32 = 0x7078_C0FB
    /// isolinux.bin is 38 KiB in SYSLINUX 6.04; a larger length is not believed.
    public static let maximumBytes: UInt32 = 1 << 20
    /// The table's offset in isolinux.bin, and where the checksummed bytes start.
    static let tableOffset = 8
    static let checksumStart = 64

    /// bi_pvd: the block of the primary volume descriptor (0 in files not patched: block 16 is meant).
    public let primaryVolumeDescriptorBlock: UInt32
    /// bi_file: isolinux.bin's own 2048-byte block.
    public let fileBlock: UInt32
    /// bi_length: isolinux.bin's length in bytes.
    public let length: UInt32
    /// bi_csum: the sum that `checksum(_:)` must give over the whole file.
    public let checksum: UInt32

    /// The table in `head`, isolinux.bin's first bytes; nil when they are fewer than the table needs.
    public init?(_ head: [UInt8]) {
        let at = Self.tableOffset
        guard let pvd = head.le32(at: at), let file = head.le32(at: at + 4), let length = head.le32(at: at + 8),
            let checksum = head.le32(at: at + 12)
        else { return nil }
        primaryVolumeDescriptorBlock = pvd
        fileBlock = file
        self.length = length
        self.checksum = checksum
    }

    /// The block the primary volume descriptor is in: ISO 9660's usual one when the table says 0.
    public var descriptorBlock: UInt64 {
        primaryVolumeDescriptorBlock == 0 ? ISO9660Volume.primaryDescriptorBlock : UInt64(primaryVolumeDescriptorBlock)
    }

    /// The sector the isohybrid MBR `sector0` loads isolinux.bin from; nil when it is not a whole MBR.
    public static func isolinuxSector(hybridMBR sector0: [UInt8]) -> UInt64? {
        sector0.count >= 512 ? sector0.le64(at: hybridMBRSectorOffset) : nil
    }

    /// Whether `head` (isolinux.bin's first bytes) carries the hybrid signature isohdpfx.bin checks.
    public static func hasHybridSignature(_ head: [UInt8]) -> Bool {
        head.le32(at: hybridSignatureOffset) == hybridSignature
    }

    /// The 32-bit sum of the file's little-endian words from byte 64, a short last word padded with
    /// zeros, as mkisofs and xorriso compute bi_csum.
    public static func checksum(_ file: [UInt8]) -> UInt32 {
        var sum: UInt32 = 0
        var i = checksumStart
        while let word = file.le32(at: i) {
            sum &+= word
            i += 4
        }
        if i < file.count {
            sum &+= (Array(file[i...]) + [0, 0, 0]).le32(0)
        }
        return sum
    }
}
