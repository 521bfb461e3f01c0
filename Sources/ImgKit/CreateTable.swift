import Glibc
import ImgFormats
import ImgSystem
import Logging

/// The partition table of a new image: written by libparted (`PartedTable`), then given the
/// seed's identities and the types libparted 3.5 has no call for (`TableIdentity`).
enum CreateTable {
    static func write(layout: DiskLayout, placement: DiskPlacement, identity: CreateIdentity, to path: String,
                      logger: Logger, interruption: Interruption) throws(CreateError) {
        let entries = layout.partitions.enumerated().map { index, partition in
            let placed = placement.partitions[index]
            return PartedTable.Entry(kind: partition.logical ? .logical : .primary, startSector: placed.startSector,
                                     sectors: placed.sectors, filesystem: partedFilesystem(partition.format),
                                     flags: flags(partition, table: layout.table),
                                     name: layout.table == .gpt ? (partition.label ?? "") : nil)
        }
        let label = layout.table == .gpt ? "gpt" : "msdos"
        let alignment = DiskLayout.alignment / UInt64(layout.sectorSize)
        if layout.sectorSize == 512 {
            do {
                try PartedTable.write(image: path, label: label, entries: entries, extended: placement.extended, alignment: alignment)
            } catch {
                throw .failed(step: "libparted", detail: error.description)
            }
        } else {
            try throughLoopDevice(path, blockSize: layout.sectorSize, logger: logger, interruption: interruption) { device throws(CreateError) in
                do throws(PartedTable.Error) {
                    try PartedTable.write(image: device, label: label, entries: entries, extended: placement.extended, alignment: alignment)
                } catch {
                    throw .failed(step: "libparted", detail: error.description)
                }
            }
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
                writes = try TableIdentity.mbrWrites(in: source, sectorSize: layout.sectorSize, signature: identity.mbrSignature, types: types)
            }
            for write in writes { try writeFully(file.fd, write.bytes, at: write.offset, path: path) }
        } catch {
            throw .failed(step: "partition identities", detail: "\(error)")
        }
    }

    /// Runs `body` with `path` attached as a loop device of `blockSize`-byte blocks, which
    /// libparted reads as the disk's sector size; a session journals and releases it.
    static func throughLoopDevice(_ path: String, blockSize: Int, logger: Logger, interruption: Interruption,
                                  _ body: (String) throws(CreateError) -> Void) throws(CreateError) {
        let session: Session
        do {
            session = try Session(logger: logger, interruption: interruption, journalFor: (try? realPath(path)) ?? path)
        } catch {
            throw .failed(step: "session", detail: error.description)
        }
        var failure: CreateError?
        do {
            try session.acquiring(.loop, LoopDevice.fileName(for: ResourceMarks.loopTag(session: session.id)))
            let loop = try LoopDevice.attach(path, options: .init(tag: session.id, blockSize: UInt32(blockSize)), logger: logger)
            session.onClose(loop.path, journal: .init(.loop, loop.tag)) { try loop.detach() }
            try body(loop.path)
        } catch let error as CreateError {
            failure = error
        } catch {
            failure = .failed(step: "loop device", detail: "\(error)")
        }
        let leftovers = session.close()
        if let failure { throw failure }
        if !leftovers.isEmpty {
            throw .failed(step: "loop device", detail: leftovers.map(\.description).joined(separator: "; "))
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
