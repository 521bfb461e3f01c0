/// Where GRUB (i386-pc) puts core.img on a partitioned disk: the post-MBR gap of an msdos label,
/// or the BIOS boot partition of a GPT disk.
public struct EmbeddingArea: Sendable, Equatable {
    /// Which kind of area holds core.img.
    public enum Kind: Sendable, Equatable {
        /// msdos: the sectors between the MBR and the first partition.
        case postMBRGap
        /// GPT: the BIOS boot partition (type 21686148-...) with this partition number.
        case biosBootPartition(number: Int)
    }

    /// The gap after the MBR or the BIOS boot partition.
    public let kind: Kind
    /// The area's first sector (an LBA in the table's sector size); 1 for the post-MBR gap.
    public let startSector: UInt64
    /// The area's length in sectors of the table's sector size.
    public let sectorCount: UInt64

    /// Makes an area; nothing is checked.
    public init(kind: Kind, startSector: UInt64, sectorCount: UInt64) {
        self.kind = kind
        self.startSector = startSector
        self.sectorCount = sectorCount
    }

    /// GRUB loads at most this many sectors of core.img (grub-setup refuses more).
    public static let maximumCoreSectors: UInt64 = 888

    /// Why a table has no place for core.img.
    public enum Problem: Error, Sendable, Equatable {
        /// The first partition starts at or before sector 1: no sector is free after the MBR.
        case noPostMBRGap(firstPartitionStart: UInt64)
        /// A GPT disk without a BIOS boot partition.
        case noBIOSBootPartition
        /// A partition map GRUB's i386-pc install does not embed into (APM).
        case unsupportedTable(PartitionTable.Kind)
    }

    /// Finds the embedding area of `table`. On msdos the gap ends where the first partition (or EBR)
    /// begins; on GPT the first BIOS boot partition is used, as grub-install does.
    public static func find(in table: PartitionTable) -> Result<EmbeddingArea, Problem> {
        switch table.kind {
        case .dos:
            // With no partition at all, everything GRUB can load would fit.
            let firstStart = table.partitions.map(\.startSector).min() ?? maximumCoreSectors + 1
            guard firstStart > 1 else { return .failure(.noPostMBRGap(firstPartitionStart: firstStart)) }
            return .success(EmbeddingArea(kind: .postMBRGap, startSector: 1, sectorCount: firstStart - 1))
        case .gpt:
            guard let p = table.partitions.first(where: { $0.typeGUID == .biosBoot }) else {
                return .failure(.noBIOSBootPartition)
            }
            return .success(EmbeddingArea(kind: .biosBootPartition(number: p.number),
                                          startSector: p.startSector, sectorCount: p.sectorCount))
        case .mac:
            return .failure(.unsupportedTable(.mac))
        }
    }
}
