import Glibc
import ImgFormats
import ImgSystem

/// The partition table of a new image: written by libparted (`PartedTable`), then given the
/// seed's identities and the types libparted 3.5 has no call for (`TableIdentity`).
enum CreateTable {
    static func write(layout: DiskLayout, placement: DiskPlacement, identity: CreateIdentity, to path: String) throws(CreateError) {
        let entries = layout.partitions.enumerated().map { index, partition in
            let placed = placement.partitions[index]
            return PartedTable.Entry(kind: partition.logical ? .logical : .primary, startSector: placed.startSector,
                                     sectors: placed.sectors, filesystem: partedFilesystem(partition.format),
                                     flags: flags(partition, table: layout.table),
                                     name: layout.table == .gpt ? (partition.label ?? "") : nil)
        }
        do {
            try PartedTable.write(image: path, label: layout.table == .gpt ? "gpt" : "msdos", entries: entries,
                                  extended: placement.extended, alignment: DiskLayout.alignment / UInt64(layout.sectorSize))
        } catch {
            throw .failed(step: "libparted", detail: error.description)
        }
        do {
            let file = try FileHandle(path: path, flags: O_RDWR)
            let source = try FileByteSource(path: path)
            let writes: [TableIdentity.Write]
            switch layout.table {
            case .gpt:
                let changes = layout.partitions.enumerated().map { index, partition in
                    TableIdentity.GPTEntry(slot: placement.partitions[index].number - 1, type: partition.type.gpt,
                                           unique: identity.partitionUUID(partition, index: index),
                                           attributes: partition.attributes | (partition.bootable ? 1 << 2 : 0))
                }
                writes = try TableIdentity.gptWrites(in: source, sectorSize: layout.sectorSize, diskGUID: identity.diskGUID, entries: changes)
            case .mbr:
                var types: [Int: UInt8] = [:]
                for (index, partition) in layout.partitions.enumerated() { types[placement.partitions[index].number] = partition.type.mbr }
                writes = try TableIdentity.mbrWrites(in: source, signature: identity.mbrSignature, types: types)
            }
            for write in writes { try writeFully(file.fd, write.bytes, at: write.offset, path: path) }
        } catch {
            throw .failed(step: "partition identities", detail: "\(error)")
        }
    }

    /// libparted's filesystem name for `format`: what it derives the MBR type byte from.
    static func partedFilesystem(_ format: DiskLayout.Filesystem?) -> String? {
        switch format {
        case .ext2, .ext3, .ext4: return format!.rawValue
        case .vfat: return "fat32"
        case .swap: return "linux-swap"
        case nil: return nil
        }
    }

    /// The flags libparted sets for what the layout asks; TableIdentity sets the exact type after.
    static func flags(_ partition: DiskLayout.Partition, table: DiskLayout.TableKind) -> [PartedTable.Flag] {
        var flags: [PartedTable.Flag] = []
        if partition.type.isESP { flags.append(.esp) }
        if partition.type.isBIOSBoot { flags.append(.biosGrub) }
        if partition.bootable { flags.append(table == .mbr ? .boot : .legacyBoot) }
        return flags
    }
}
