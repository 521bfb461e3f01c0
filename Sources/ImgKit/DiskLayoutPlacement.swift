import ImgFormats

/// Where each partition of a `DiskLayout` goes: computed before anything is written, so a layout
/// that cannot fit is refused with nothing made. libparted then writes exactly this (`PartedTable`).
public struct DiskPlacement: Sendable, Equatable {
    /// The image's size in bytes.
    public let diskBytes: UInt64
    /// The partitions in layout order.
    public let partitions: [Placed]
    /// MBR with logical partitions: the extended partition's first sector and length.
    public let extended: (start: UInt64, sectors: UInt64)?

    /// One placed partition, in sectors of the layout's size.
    public struct Placed: Sendable, Equatable {
        /// The number the table gives it: 1-4 for primaries, 5 on for logicals, 1-128 on GPT.
        public let number: Int
        /// The first sector.
        public let startSector: UInt64
        /// The length in sectors.
        public let sectors: UInt64
    }

    public static func == (a: DiskPlacement, b: DiskPlacement) -> Bool {
        a.diskBytes == b.diskBytes && a.partitions == b.partitions && a.extended?.start == b.extended?.start
            && a.extended?.sectors == b.extended?.sectors
    }
}

extension DiskLayout {
    /// The smallest EFI system partition FAT32 allows with one-sector clusters: 65525 clusters, two
    /// FATs of 4 bytes per cluster and 32 reserved sectors, rounded up to the alignment. 33 MiB
    /// with 512-byte sectors, 257 MiB with 4096-byte ones.
    public static func minimumESP(sectorSize: Int) -> UInt64 {
        let sector = UInt64(sectorSize)
        let fatSectors = (UInt64(65525 + 2) * 4 + sector - 1) / sector
        let bytes = (32 + 2 * fatSectors + 65525) * sector
        return (bytes + alignment - 1) / alignment * alignment
    }

    /// `minimumESP(sectorSize:)` for this layout's sectors.
    public var minimumESP: UInt64 { Self.minimumESP(sectorSize: sectorSize) }

    /// Checks what can be checked without the contents: types against the table, flags, sizes,
    /// MBR's primary and logical rules. Wraps nothing; `Create` and embedders call it first.
    public func validate() throws(CreateError) {
        guard sectorSize == 512 || sectorSize == 4096 else {
            throw .invalidLayout(origin: "--sector-size", detail: "\(sectorSize) is not a sector size; give 512 or 4096.")
        }
        guard !partitions.isEmpty else {
            throw .invalidLayout(origin: "layout", detail: "no partitions; give at least one --partition or definition.")
        }
        if case .bytes(let bytes) = size, bytes % UInt64(sectorSize) != 0 || bytes < 2 * Self.alignment {
            throw .invalidLayout(origin: "--size", detail: "\(bytes) bytes is not a whole number of \(sectorSize)-byte sectors of at least 2 MiB.")
        }
        var logicalSeen = false
        for partition in partitions {
            let origin = partition.origin
            switch table {
            case .gpt:
                guard partition.type.gpt != nil else {
                    throw .invalidLayout(origin: origin, detail: "type \(partition.type) is an MBR type; a GPT partition needs a type GUID or a name such as linux or esp.")
                }
                if partition.logical { throw .invalidLayout(origin: origin, detail: "logical partitions exist on MBR only; GPT has 128 primary entries.") }
            case .mbr:
                guard partition.type.mbr != nil else {
                    if partition.type.isBIOSBoot {
                        throw .invalidLayout(origin: origin, detail: "an MBR disk has no BIOS boot partition: GRUB's core.img goes in the gap after the MBR. Leave this partition out.")
                    }
                    throw .invalidLayout(origin: origin, detail: "type \(partition.type) has no MBR type byte; give one in hex (83 for Linux) or use --table gpt.")
                }
                // GrowFileSystem (bit 59), which repart.d sets by default on root, usr, home and
                // others, is a hint MBR cannot carry and is dropped; anything asked for is refused.
                if partition.attributes & ~(1 << 59) != 0 {
                    throw .invalidLayout(origin: origin, detail: "Flags= (or NoAuto=, ReadOnly=) sets GPT attribute bits, and MBR has none.")
                }
                if partition.logical { logicalSeen = true } else if logicalSeen {
                    throw .invalidLayout(origin: origin, detail: "a primary partition after a logical one; list the logical partitions last.")
                }
            }
            if let low = partition.sizeMin, let high = partition.sizeMax, low > high {
                throw .invalidLayout(origin: origin, detail: "SizeMinBytes= (\(low)) is larger than SizeMaxBytes= (\(high)).")
            }
            if partition.format == nil || partition.format == .swap, !partition.copies.isEmpty || !partition.makeDirectories.isEmpty {
                throw .invalidLayout(origin: origin, detail: "files can be copied into a partition only with format=ext2, ext3, ext4 or vfat.")
            }
            if partition.type.isBIOSBoot, partition.format != nil {
                throw .invalidLayout(origin: origin, detail: "a BIOS boot partition holds GRUB's core.img, not a filesystem; leave format= out.")
            }
            if partition.type.isESP, partition.format == .vfat, let high = partition.sizeMax, high < minimumESP {
                throw .espTooSmall(origin: origin, size: high, needed: minimumESP)
            }
        }
        if table == .mbr {
            let primaries = partitions.filter { !$0.logical }.count
            let limit = logicalSeen ? 3 : 4
            guard primaries <= limit else {
                throw .invalidLayout(origin: partitions[limit].origin, detail: "MBR holds \(limit) primary partitions\(logicalSeen ? " besides the extended one" : ""); mark the later ones logical, or use --table gpt.")
            }
        } else if partitions.count > 128 {
            throw .invalidLayout(origin: partitions[128].origin, detail: "GPT holds 128 partitions.")
        }
    }

    /// repart's sharing: the whole span is divided by weight; a partition whose share is below its
    /// minimum takes the minimum and leaves the pool, one whose share is above its maximum takes the
    /// maximum, and the others then take their shares. What whole grains are left over go one at
    /// a time to weighted partitions with room, in order. (repart's grain is 4 KiB, ours 1 MiB.)
    static func share(span: UInt64, weights: [UInt32], minimum: [UInt64], maximum: [UInt64], grain: UInt64) -> [UInt64] {
        var decided = [UInt64?](repeating: nil, count: weights.count)
        func shares() -> [Int: UInt64] {
            let open = decided.indices.filter { decided[$0] == nil }
            let total = open.reduce(UInt64(0)) { $0 + UInt64(weights[$1]) }
            let pool = (span - decided.reduce(0) { $0 + ($1 ?? 0) }) / grain
            var result: [Int: UInt64] = [:]
            for index in open { result[index] = total == 0 ? 0 : pool * UInt64(weights[index]) / total * grain }
            return result
        }
        while true {
            let current = shares()
            guard !current.isEmpty else { break }
            if let index = current.keys.sorted().first(where: { current[$0]! < minimum[$0] }) {
                decided[index] = minimum[index]
            } else if let index = current.keys.sorted().first(where: { current[$0]! > maximum[$0] }) {
                decided[index] = maximum[index]
            } else {
                for (index, size) in current { decided[index] = size }
                break
            }
        }
        var sizes = decided.map { $0! }
        var left = span - min(span, sizes.reduce(0, +))
        var growing = true
        while left >= grain, growing {
            growing = false
            for index in sizes.indices where weights[index] > 0 && sizes[index] + grain <= maximum[index] && left >= grain {
                sizes[index] += grain
                left -= grain
                growing = true
            }
        }
        return sizes
    }

    /// Places every partition: each gets at least `contentBytes[i]` (what its contents need,
    /// 0 for none) and its own minimum; a fixed-size disk's free space is shared by weight, as
    /// repart shares it (`share`); `--size auto` gives each its minimum and the disk their sum.
    public func place(contentBytes: [UInt64]) throws(CreateError) -> DiskPlacement {
        try validate()
        let grain = Self.alignment
        func roundUp(_ bytes: UInt64) -> UInt64 { (bytes + grain - 1) / grain * grain }
        var minimum: [UInt64] = []
        var maximum: [UInt64] = []
        for (index, partition) in partitions.enumerated() {
            var floor = max(partition.sizeMin ?? 0, index < contentBytes.count ? contentBytes[index] : 0, grain)
            if partition.type.isESP, partition.format == .vfat { floor = max(floor, minimumESP) }
            floor = roundUp(floor)
            let ceiling = partition.sizeMax.map { $0 / grain * grain } ?? .max
            if floor > ceiling {
                if partition.type.isESP, partition.format == .vfat, ceiling < minimumESP {
                    throw .espTooSmall(origin: partition.origin, size: partition.sizeMax ?? 0, needed: minimumESP)
                }
                throw .contentsDoNotFit(origin: partition.origin, needed: floor, size: partition.sizeMax ?? 0)
            }
            minimum.append(floor)
            maximum.append(ceiling)
        }
        // Space before each partition: 1 MiB before the first; a logical partition's EBR takes
        // the grain before it, as fdisk leaves it.
        let gaps = partitions.enumerated().map { index, partition in
            (index == 0 ? grain : 0) + (partition.logical ? grain : 0)
        }
        // GPT's backup header and entries at the end: one grain keeps the disk a whole number of MiB.
        let tail: UInt64 = table == .gpt ? grain : 0
        let needed = minimum.reduce(0, +) + gaps.reduce(0, +) + tail
        var sizes = minimum
        let diskBytes: UInt64
        switch size {
        case .auto:
            diskBytes = needed
        case .bytes(let bytes):
            guard needed <= bytes else { throw .exceedsDisk(needed: needed, size: bytes) }
            diskBytes = bytes
            let lastUsable = table == .gpt ? bytes - 34 * UInt64(sectorSize) : bytes
            // A minimized partition (Minimize=) keeps the size its contents need and takes no share.
            sizes = Self.share(span: (lastUsable / grain * grain) - gaps.reduce(0, +),
                               weights: partitions.map { $0.minimize ? 0 : $0.weight },
                               minimum: minimum, maximum: maximum, grain: grain)
        }
        let sector = UInt64(sectorSize)
        var placed: [DiskPlacement.Placed] = []
        var offset: UInt64 = 0
        var primaryNumber = 0
        var logicalNumber = 4
        var extendedStart: UInt64?
        for (index, partition) in partitions.enumerated() {
            if partition.logical && extendedStart == nil { extendedStart = index == 0 ? grain : offset }
            offset += gaps[index]
            let number: Int
            if table == .mbr && partition.logical {
                logicalNumber += 1
                number = logicalNumber
            } else {
                primaryNumber += 1
                number = primaryNumber
            }
            placed.append(.init(number: number, startSector: offset / sector, sectors: sizes[index] / sector))
            offset += sizes[index]
        }
        let extended = extendedStart.map { (start: $0 / sector, sectors: (offset - $0) / sector) }
        return DiskPlacement(diskBytes: diskBytes, partitions: placed, extended: extended)
    }
}
