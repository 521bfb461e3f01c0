/// What grub-bios-setup (GRUB 2.06's util/setup.c, which grub-install runs for i386-pc) writes to a
/// disk when it embeds core.img, computed from bytes alone: no device, no root, no GRUB tool.
///
/// grub-bios-setup, as reproduced here:
/// 1. Sector 0 becomes boot.img with the BPB area (0x03..<0x5A) and everything from the disk
///    signature to the end of the partition table (0x1B8..<0x1FE) taken from the old sector 0, the
///    drive check at 0x66 replaced by two NOPs (a hard disk), the boot drive (0x64) 0xFF and the
///    kernel sector (0x5C) the first sector of the embedding.
/// 2. The embedding gets min(2 × core.img's sectors, 888, the area's size) sectors: twice core.img
///    leaves room for as much Reed-Solomon redundancy as data, and 888 sectors from 0x8000 reach
///    0x78000, the end of the memory GRUB loads into. On msdos, sectors of the post-MBR gap that
///    carry another program's signature are stepped over.
/// 3. diskboot.img's blocklist (at 0x1F4, downward) is cleared and rewritten to load every embedded
///    sector after the first, in runs of consecutive sectors, to segments from 0x0820 on.
/// 4. core.img is padded with zeros to the embedding's size; the decompressor's header gets the
///    redundancy size (0x10 of sector 1), and the bytes after the no-Reed-Solomon length get GRUB's
///    Reed-Solomon redundancy, which fills the padding.
///
/// Refusals follow grub-bios-setup's, in its order. Only the embedding case is reproduced: GRUB's
/// blocklist fallback (core.img left in a filesystem, needs --force) is not, nor floppies.
public enum GrubBIOSSetup {
    /// i386-pc addresses 512-byte sectors, whatever the table's sector size.
    public static let sectorSize = 512
    /// GRUB loads at most this many sectors: (0x78000 - 0x9000) / 512.
    public static let maximumSectors = Int(EmbeddingArea.maximumCoreSectors)
    /// On msdos, a core.img above this many sectors that does not fit is "unusually large" (the
    /// traditional 63-sector track) rather than the gap "unusually small".
    static let traditionalGapSectors = 62

    // boot.img (include/grub/i386/pc/boot.h)
    static let bpb = 0x03..<0x5A
    static let kernelSectorOffset = 0x5C
    static let bootDriveOffset = 0x64
    static let driveCheckOffset = 0x66
    /// The disk signature, its two following bytes and the four partition entries; not the 55 AA.
    static let partitionArea = 0x1B8..<0x1FE

    // lzma_decompress.img's header in core.img's second sector (include/grub/offsets.h)
    static let redundancyOffset = sectorSize + 0x10
    static let noReedSolomonLengthOffset = sectorSize + 0x14
    /// diskboot.img loads core.img's second sector to 0x8200 (segment 0x0820), the rest after it.
    static let firstSegment: UInt16 = 0x0820

    /// Other programs that keep data in the post-MBR gap, as grub-bios-setup knows them: a sector
    /// starting with one of these bytes is left alone. (The owners are GRUB's guesses.)
    static let foreignSignatures: [(owner: String, prefix: [UInt8])] = [
        ("ZISD", Array("ZISD".utf8)),
        ("FlexNet", [0xD4, 0x41, 0xA0, 0xF5, 0x03, 0x00, 0x03, 0x00]),
        ("FlexNet", [0xD8, 0x41, 0xA0, 0xF5, 0x02, 0x00, 0x02, 0x00]),
        ("HP Backup and Recovery Manager (?)",
         [0x70, 0x8A, 0x5D, 0x46, 0x35, 0xC5, 0x1B, 0x93, 0xAE, 0x3D, 0x86, 0xFD, 0xB1, 0x55, 0x3E, 0xE0]),
        ("HighPoint RAID controller", Array("ycgl".utf8)),
        ("Acer registration utility (?)", Array("GREGRegDone.Tag".utf8) + [0]),
    ]

    /// A sector of the post-MBR gap that grub-bios-setup steps over, and whose it takes it to be.
    public struct ForeignSector: Sendable, Equatable {
        /// The sector (LBA, 512-byte sectors).
        public let sector: UInt64
        /// The program GRUB names for the signature found there.
        public let owner: String

        /// Makes a value as `place` reports it.
        public init(sector: UInt64, owner: String) {
            self.sector = sector
            self.owner = owner
        }
    }

    /// The bytes grub-bios-setup would write, and where.
    public struct Placement: Sendable, Equatable {
        /// The new sector 0.
        public let bootSector: [UInt8]
        /// The embedded sectors in core.img's order: `sectors[k]` receives bytes k × 512 ..< (k + 1)
        /// × 512 of `core`. The first is the kernel sector boot.img loads diskboot.img from.
        public let sectors: [UInt64]
        /// core.img with its blocklist and header patched, padded, and followed by the redundancy:
        /// `sectors.count` × 512 bytes.
        public let core: [UInt8]
        /// How many bytes of Reed-Solomon redundancy follow core.img's own bytes (0 without).
        public let redundancyBytes: Int
        /// Gap sectors stepped over because another program's signature was found there.
        public let foreignSectors: [ForeignSector]

        /// One write: `bytes` at byte `offset` of the disk.
        public struct Write: Sendable, Equatable {
            /// Where the bytes go, in bytes from the start of the disk.
            public let offset: UInt64
            /// What goes there.
            public let bytes: ArraySlice<UInt8>
        }

        /// Sector 0, then core.img in runs of consecutive sectors: everything grub-bios-setup writes.
        public var writes: [Write] {
            var writes = [Write(offset: 0, bytes: bootSector[...])]
            var runStart = 0
            for k in sectors.indices where k + 1 == sectors.count || sectors[k + 1] != sectors[k] &+ 1 {
                let bytes = core[runStart * GrubBIOSSetup.sectorSize..<(k + 1) * GrubBIOSSetup.sectorSize]
                writes.append(Write(offset: sectors[runStart] * UInt64(GrubBIOSSetup.sectorSize), bytes: bytes))
                runStart = k + 1
            }
            return writes
        }
    }

    /// Why grub-bios-setup would refuse. `description` is the message the user reads; GRUB's own
    /// message is quoted where it has one.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// boot.img is not one sector long.
        case bootImageSize(Int)
        /// core.img is too short to hold diskboot.img and the decompressor's header.
        case coreImageTooSmall(Int)
        /// core.img has more than 0xFFFF sectors, more than a blocklist entry can count.
        case coreImageTooLarge(Int)
        /// Reading sector 0 failed; holds the source's message.
        case readFailed(String)
        /// msdos: the first partition starts at sector 1 or before.
        case noPostMBRGap
        /// msdos: core.img has more than 62 sectors and the gap is smaller than it.
        case coreImageUnusuallyLarge(coreSectors: Int, gapSectors: UInt64)
        /// msdos: the gap is smaller than core.img.
        case embeddingAreaTooSmall(coreSectors: Int, gapSectors: UInt64)
        /// msdos: after stepping over other programs' sectors, core.img no longer fits.
        case otherSoftwareInGap(coreSectors: Int, foreign: [ForeignSector])
        /// GPT: the BIOS boot partition has no sectors.
        case noBIOSBootPartition
        /// GPT: the BIOS boot partition is smaller than core.img.
        case biosBootPartitionTooSmall(coreSectors: Int, partitionSectors: UInt64)
        /// The usable part of the area (at most 888 sectors) is smaller than core.img.
        case tooManySectors(coreSectors: Int, usableSectors: Int)
        /// diskboot.img's blocklist runs into the start of the sector without an empty entry.
        case noBlocklistTerminator
        /// The embedded sectors need more blocklist entries than diskboot.img has room for.
        case blocklistTooFragmented
        /// The decompressor's no-Reed-Solomon length is 0xFFFF: core.img and GRUB do not match.
        case versionMismatch
        /// The no-Reed-Solomon length reaches past the end of core.img.
        case noReedSolomonLengthOutsideCore(length: Int, coreSize: Int)

        public var description: String {
            switch self {
            case .bootImageSize(let size):
                return "boot.img has \(size) bytes, not 512; take it from GRUB's i386-pc directory (/usr/lib/grub/i386-pc/boot.img)"
            case .coreImageTooSmall(let size):
                return "core.img has only \(size) bytes, too few for diskboot.img and the decompressor's header (GRUB: \"the size of `core.img' is too small\"); rebuild it with grub-mkimage -O i386-pc"
            case .coreImageTooLarge(let size):
                return "core.img has \(size) bytes, more than 0xFFFF sectors (GRUB: \"the size of `core.img' is too large\"); build it with fewer modules"
            case .readFailed(let message):
                return "reading sector 0 failed: \(message)"
            case .noPostMBRGap:
                return "this msdos-style partition label has no post-MBR gap; embedding won't be possible. Move the first partition to sector 2048, or use GPT with a BIOS boot partition"
            case .coreImageUnusuallyLarge(let core, let gap):
                return "your core.img is unusually large. It won't fit in the embedding area: it has \(core) sectors, the post-MBR gap \(gap). Build it with fewer modules, or start the first partition at sector 2048"
            case .embeddingAreaTooSmall(let core, let gap):
                return "your embedding area is unusually small. core.img won't fit in it: core.img has \(core) sectors, the post-MBR gap \(gap). Start the first partition at sector 2048"
            case .otherSoftwareInGap(let core, let foreign):
                // A RAID controller's metadata can take the whole gap: name the first few.
                let shown = foreign.prefix(4).map { "sector \($0.sector) (\($0.owner))" }
                let list = (shown + (foreign.count > 4 ? ["and \(foreign.count - 4) more"] : [])).joined(separator: ", ")
                return "other software is using the embedding area, and there is not enough room for core.img (\(core) sectors) around it: \(list). Such software is often trying to store data in a way that avoids detection; investigate before you clear those sectors"
            case .noBIOSBootPartition:
                return "this GPT partition label contains no BIOS Boot Partition; embedding won't be possible. Add a partition of type 21686148-6449-6E6F-744E-656564454649 (1 MiB is plenty)"
            case .biosBootPartitionTooSmall(let core, let partition):
                return "your BIOS Boot Partition is too small; embedding won't be possible: core.img has \(core) sectors, the partition \(partition). Make it 1 MiB"
            case .tooManySectors(let core, let usable):
                return "core.img has \(core) sectors, but only \(usable) of the embedding area can be used (GRUB loads at most \(GrubBIOSSetup.maximumSectors)); GRUB: \"Your embedding area is unusually small. core.img won't fit in it.\" Build core.img with fewer modules"
            case .noBlocklistTerminator:
                return "core.img's diskboot.img has no terminated blocklist (GRUB: \"no terminator in the core image\"); rebuild core.img with grub-mkimage -O i386-pc"
            case .blocklistTooFragmented:
                return "the embedded sectors need more blocklist entries than diskboot.img holds (GRUB: \"the sectors of the core file are too fragmented\"); clear the foreign sectors in the post-MBR gap"
            case .versionMismatch:
                return "core.img version mismatch: its decompressor's no-Reed-Solomon length is 0xFFFF; build core.img with the grub-mkimage of the same GRUB as boot.img"
            case .noReedSolomonLengthOutsideCore(let length, let size):
                return "core.img's no-Reed-Solomon length (\(length) bytes after its first sector) reaches past its end (\(size) bytes); rebuild it with grub-mkimage -O i386-pc"
            }
        }
    }

    /// Computes what grub-bios-setup writes to `disk` for `bootImage` and `coreImage` (as
    /// grub-mkimage -O i386-pc wrote it) embedded in `area` (from `EmbeddingArea.find`, in 512-byte
    /// sectors). Reads sector 0 of `disk` and, for the post-MBR gap, the gap's sectors (for other
    /// programs' signatures); writes nothing. `reedSolomon: false` is grub-install's --no-rs-codes.
    public static func place(
        bootImage: [UInt8], coreImage: [UInt8], area: EmbeddingArea, disk: some ByteSource, reedSolomon: Bool = true
    ) throws(Problem) -> Placement {
        guard bootImage.count == sectorSize else { throw .bootImageSize(bootImage.count) }
        let coreSize = coreImage.count
        // GRUB asks for one sector; the header fields read below need a little more.
        guard coreSize >= noReedSolomonLengthOffset + 2 else { throw .coreImageTooSmall(coreSize) }
        guard coreSize <= 0xFFFF * sectorSize else { throw .coreImageTooLarge(coreSize) }
        let coreSectors = (coreSize + sectorSize - 1) / sectorSize

        let oldSector0: [UInt8]
        do {
            oldSector0 = try disk.read(at: 0, count: sectorSize)
        } catch {
            throw .readFailed("\(error)")
        }
        var boot = bootImage
        boot.replaceSubrange(bpb, with: oldSector0[bpb])
        boot[driveCheckOffset] = 0x90
        boot[driveCheckOffset + 1] = 0x90
        boot.replaceSubrange(partitionArea, with: oldSector0[partitionArea])

        let limit = min(reedSolomon ? 2 * coreSectors : coreSectors, maximumSectors)
        let (sectors, foreign) = try embeddingSectors(area: area, coreSectors: coreSectors, limit: limit, disk: disk)
        guard sectors.count >= coreSectors else { throw .tooManySectors(coreSectors: coreSectors, usableSectors: sectors.count) }

        var core = coreImage
        try writeBlocklist(&core, sectors: sectors)
        boot[bootDriveOffset] = 0xFF
        boot.storeLE(sectors[0], at: kernelSectorOffset)

        core += [UInt8](repeating: 0, count: sectors.count * sectorSize - coreSize)
        let noReedSolomon = Int(core.le16(noReedSolomonLengthOffset))
        guard noReedSolomon != 0xFFFF else { throw .versionMismatch }
        var redundancy = 0
        if reedSolomon {
            redundancy = core.count - coreSize
            // Written before encoding: the header lies in the part the redundancy does not cover.
            core.storeLE(UInt32(redundancy), at: redundancyOffset)
            let protectedStart = sectorSize + noReedSolomon
            guard protectedStart <= coreSize else {
                throw .noReedSolomonLengthOutsideCore(length: noReedSolomon, coreSize: coreSize)
            }
            // The encoder refuses only more than 199 redundancy bytes per data byte in a chunk over
            // 200 sectors. Here the redundancy is below core.img's size plus two sectors, and the
            // 16-bit no-Reed-Solomon length leaves at least core.img's size - 66046 bytes of data:
            // such a ratio needs a core.img too small to be cut into chunks at all.
            guard let bytes = ReedSolomon.grubRedundancy(for: core[protectedStart..<coreSize], count: redundancy) else {
                preconditionFailure("GRUB's Reed-Solomon chunking refused \(coreSize - protectedStart) data bytes and \(redundancy) redundancy bytes")
            }
            core.replaceSubrange(coreSize..., with: bytes)
        }
        return Placement(bootSector: boot, sectors: sectors, core: core, redundancyBytes: redundancy, foreignSectors: foreign)
    }

    // MARK: the embedding area

    /// The sectors the partition map's embed function hands grub-bios-setup: at most `limit`, and
    /// at least core.img's (or a refusal). GRUB counts them in a 32-bit `unsigned int`, so an area
    /// of 2^32 sectors or more is taken modulo 2^32, as GRUB does.
    static func embeddingSectors(
        area: EmbeddingArea, coreSectors: Int, limit: Int, disk: some ByteSource
    ) throws(Problem) -> (sectors: [UInt64], foreign: [ForeignSector]) {
        switch area.kind {
        case .biosBootPartition:
            guard area.sectorCount > 0 else { throw .noBIOSBootPartition }
            guard area.sectorCount >= UInt64(coreSectors) else {
                throw .biosBootPartitionTooSmall(coreSectors: coreSectors, partitionSectors: area.sectorCount)
            }
            let count = min(Int(UInt32(truncatingIfNeeded: area.sectorCount)), limit)
            return ((0..<count).map { area.startSector + UInt64($0) }, [])
        case .postMBRGap:
            // GRUB's gap runs from sector 1 to the first partition's start ("end").
            let end = area.startSector &+ area.sectorCount
            guard end >= UInt64(coreSectors) + 1 else {
                if end <= 1 { throw .noPostMBRGap }
                if coreSectors > traditionalGapSectors {
                    throw .coreImageUnusuallyLarge(coreSectors: coreSectors, gapSectors: area.sectorCount)
                }
                throw .embeddingAreaTooSmall(coreSectors: coreSectors, gapSectors: area.sectorCount)
            }
            var available = Int(UInt32(truncatingIfNeeded: area.sectorCount))
            var count = min(available, limit)
            var sectors = (0..<count).map { area.startSector + UInt64($0) }
            var foreign: [ForeignSector] = []
            var k = 0
            while k < count {
                guard let owner = foreignOwner(disk, sector: sectors[k]) else {
                    k += 1
                    continue
                }
                // Step over it: this and every later position move one sector on, and the same
                // position is examined again.
                foreign.append(ForeignSector(sector: sectors[k], owner: owner))
                available -= 1
                count = min(count, available)
                for j in k..<count { sectors[j] += 1 }
                if available < coreSectors { break }
            }
            guard count >= coreSectors else { throw .otherSoftwareInGap(coreSectors: coreSectors, foreign: foreign) }
            return (Array(sectors.prefix(count)), foreign)
        }
    }

    /// The program whose signature starts `sector`, or nil; a sector that cannot be read counts as
    /// free, as in GRUB.
    static func foreignOwner(_ disk: some ByteSource, sector: UInt64) -> String? {
        let (offset, overflow) = sector.multipliedReportingOverflow(by: UInt64(sectorSize))
        guard !overflow, let bytes = (try? disk.readIfInBounds(at: offset, count: sectorSize)) ?? nil else { return nil }
        return foreignSignatures.first { bytes.starts(with: $0.prefix) }?.owner
    }

    // MARK: diskboot.img's blocklist

    /// Clears the entries grub-mkimage left from 0x1F4 downward, then lists `sectors` after the
    /// first (diskboot.img's own), merging each sector into the previous entry when it follows it.
    /// Each entry is {u64 start, u16 length, u16 segment}; an entry with length 0 ends the list.
    static func writeBlocklist(_ core: inout [UInt8], sectors: [UInt64]) throws(Problem) {
        let first = GrubCoreDecoder.firstBlocklistEntry
        let size = GrubCoreDecoder.blocklistEntrySize
        var entry = first
        while core.le16(entry + 8) != 0 {
            core.replaceSubrange(entry..<entry + size, with: repeatElement(0, count: size))
            entry -= size
            guard entry > 0 else { throw .noBlocklistTerminator }
        }

        entry = first
        var segment = firstSegment
        for sector in sectors.dropFirst() {
            let previous = entry + size
            if entry != first, core.le64(previous) &+ UInt64(core.le16(previous + 8)) == sector {
                core.storeLE(core.le16(previous + 8) &+ 1, at: previous + 8)
            } else {
                core.storeLE(sector, at: entry)
                core.storeLE(UInt16(1), at: entry + 8)
                core.storeLE(segment, at: entry + 10)
                entry -= size
                // The next entry must be free: below the cleared ones lies diskboot.img's code.
                guard entry >= 0, core.le16(entry + 8) == 0 else { throw .blocklistTooFragmented }
            }
            segment &+= UInt16(sectorSize >> 4)
        }
        if entry == first { entry -= size }
        core.replaceSubrange(entry..<entry + size, with: repeatElement(0, count: size))
    }
}
