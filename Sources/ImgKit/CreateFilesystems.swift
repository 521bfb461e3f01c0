import Glibc
import ImgFormats
import ImgSystem
import Logging

/// The filesystems of a new image, each made by its distribution tool inside its partition's byte
/// range and filled without a mount: ext2/3/4 by mke2fs (`-E offset=`) and libext2fs
/// (`Ext2Populator`), vfat by mkfs.fat (`--offset`) and mtools, swap by mkswap.
enum CreateFilesystems {
    static let extBlockSize: UInt64 = 4096
    static let inodeSize: UInt64 = 256

    /// Debian 12's mke2fs.conf for ext2/3/4, without the size-dependent types ("small" would give
    /// 1 KiB blocks), so the same layout makes the same filesystem on any machine.
    static let mke2fsProfile = """
        [defaults]
        \tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
        \tdefault_mntopts = acl,user_xattr
        \tenable_periodic_fsck = 0
        \tblocksize = 4096
        \tinode_size = 256
        \tinode_ratio = 16384
        [fs_types]
        \text3 = {
        \t\tfeatures = has_journal
        \t}
        \text4 = {
        \t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
        \t}

        """

    /// What `partition`'s contents need of its partition, in bytes (0 without contents): a guess
    /// from the trees' sizes, which `Create` grows when the filesystem fills up.
    static func estimate(_ partition: DiskLayout.Partition, sources: [TreeSource]) throws(CreateError) -> UInt64 {
        guard let format = partition.format, format != .swap else { return 0 }
        var data: UInt64 = 0, inodes: UInt64 = 0
        for source in sources {
            let summary: TreeSummary
            do {
                summary = try source.measure(blockSize: Int(extBlockSize))
            } catch {
                throw .inputMissing(path: source.path, reason: error.description)
            }
            data += summary.dataBytes + summary.longSymlinkBytes + summary.xattrBytes
                + (summary.directoryEntryBytes + summary.directories * extBlockSize)
            inodes += summary.inodes
        }
        inodes += UInt64(partition.makeDirectories.count)
        // Under 8 MiB mke2fs leaves out ext3/ext4's journal: 16 MiB gets one of 4 MiB.
        let floor: UInt64 = format == .ext3 || format == .ext4 ? 16 << 20 : 0
        guard data > 0 || inodes > 0 else { return floor }
        if format == .vfat {
            return data + data / 16 + (1 << 20)
        }
        // Inodes come one per 16 KiB of the filesystem (inode_ratio), 256 bytes each.
        var size = max(data + data / 8, (inodes + 64) * 16384) + inodes * inodeSize
        size += journalBytes(forFilesystem: size) + (2 << 20)
        return max(size, floor)
    }

    /// mke2fs's default journal for a filesystem of `bytes` (ext2fs_default_journal_size, 4 KiB blocks).
    static func journalBytes(forFilesystem bytes: UInt64) -> UInt64 {
        let blocks = bytes / extBlockSize
        let journal: UInt64
        switch blocks {
        case ..<2048: journal = 0
        case ..<32768: journal = 1024
        case ..<(256 * 1024): journal = 4096
        case ..<(512 * 1024): journal = 8192
        case ..<(4096 * 1024): journal = 16384
        case ..<(8192 * 1024): journal = 32768
        case ..<(16384 * 1024): journal = 65536
        case ..<(32768 * 1024): journal = 131072
        default: journal = 262144
        }
        return journal * extBlockSize
    }

    /// Makes and fills `partition`'s filesystem at `placed` in `image`; returns its UUID as blkid
    /// prints it.
    static func make(_ format: DiskLayout.Filesystem, partition: DiskLayout.Partition, at placed: DiskPlacement.Placed,
                     image: String, identity: CreateIdentity, index: Int, sources: [TreeSource],
                     interruption: Interruption, logger: Logger) throws(CreateError) -> String {
        let sectorSize = UInt64(identity.sectorSize)
        let offset = placed.startSector * sectorSize
        let bytes = placed.sectors * sectorSize
        let uuid = identity.partitionUUID(partition, index: index)
        logger.debug("\(partition.origin): \(format.rawValue), \(bytes >> 20) MiB at byte \(offset)")
        switch format {
        case .ext2, .ext3, .ext4:
            try makeExt(format, partition: partition, offset: offset, bytes: bytes, image: image, uuid: uuid,
                        hashSeed: identity.hashSeed(index: index), time: identity.time, interruption: interruption)
            try fillExt(partition, sources: sources, image: image, offset: offset, identity: identity, interruption: interruption)
            return uuid.description.lowercased()
        case .vfat:
            let serial = identity.fatSerial(partition, index: index)
            try makeVFAT(partition, offset: offset, bytes: bytes, sectorSize: sectorSize, image: image, serial: serial,
                         interruption: interruption)
            try CreateFAT(image: image, offset: offset, time: identity.time, interruption: interruption)
                .fill(partition, sources: sources)
            let hex = String(serial, radix: 16, uppercase: true)
            let padded = String(repeating: "0", count: 8 - hex.count) + hex
            return "\(padded.prefix(4))-\(padded.suffix(4))"
        case .swap:
            try makeSwap(partition, offset: offset, bytes: bytes, image: image, uuid: uuid, interruption: interruption)
            return uuid.description.lowercased()
        }
    }

    /// mke2fs at `offset`, with the seed's UUID and hash seed, its time as now, root's root
    /// directory and a fixed profile. Wraps mke2fs(8).
    static func makeExt(_ format: DiskLayout.Filesystem, partition: DiskLayout.Partition, offset: UInt64, bytes: UInt64,
                        image: String, uuid: GUID, hashSeed: GUID, time: Int64, interruption: Interruption) throws(CreateError) {
        let profile: MemoryFile
        do {
            profile = try MemoryFile(name: "mke2fs.conf", contents: Array(mke2fsProfile.utf8))
        } catch {
            throw .failed(step: "mke2fs", detail: error.description)
        }
        var arguments = ["mke2fs", "-q", "-F", "-t", format.rawValue, "-b", "\(extBlockSize)", "-U", uuid.description.lowercased(),
                         "-E", "offset=\(offset),hash_seed=\(hashSeed.description.lowercased()),root_owner=0:0,nodiscard"]
        if let label = partition.label { arguments += ["-L", String(label.utf8.prefix(16)) ?? label] }
        arguments += [image, "\(bytes / extBlockSize)"]
        try withExtendedLifetime(profile) { () throws(CreateError) in
            try CreateTools.run(arguments, environment: ["MKE2FS_CONFIG=\(profile.path)", "E2FSPROGS_FAKE_TIME=\(time)"],
                                step: "mke2fs (\(partition.origin))", interruption: interruption)
        }
    }

    /// Copies the trees into the new ext filesystem, then makes MakeDirectories=' directories.
    static func fillExt(_ partition: DiskLayout.Partition, sources: [TreeSource], image: String, offset: UInt64,
                        identity: CreateIdentity, interruption: Interruption) throws(CreateError) {
        guard !sources.isEmpty || !partition.makeDirectories.isEmpty else { return }
        do {
            let writer = try Ext2Writer(image: image, offset: offset, time: UInt32(clamping: identity.time), verifyChecksums: false)
            for (copy, source) in zip(partition.copies, sources) {
                do {
                    try writer.populate(from: source, into: copy.target, clamp: identity.clamp, interruption: interruption)
                } catch .interrupted(let signal) {
                    throw CreateError.interrupted(signal: signal)
                } catch where error.isOutOfSpace {
                    throw CreateError.contentsDoNotFit(origin: partition.origin, needed: 0, size: partition.sizeMax ?? 0)
                } catch {
                    throw CreateError.failed(step: "filling \(partition.origin) from \(copy.source)", detail: error.description)
                }
            }
            for directory in partition.makeDirectories {
                _ = try writer.makeDirectories(directory)
            }
            try writer.close()
        } catch let error as CreateError {
            throw error
        } catch let error as Ext2Writer.Error where error.isOutOfSpace {
            throw .contentsDoNotFit(origin: partition.origin, needed: 0, size: partition.sizeMax ?? 0)
        } catch {
            throw .failed(step: "filling \(partition.origin)", detail: "\(error)")
        }
    }

    /// mkfs.fat at `offset` (its --offset counts sectors of -S's size): FAT32 for an EFI system
    /// partition, else the FAT size mkfs.fat picks for a device of the partition's size
    /// (`fatGeometry`); the seed's serial; --invariant for the rest of what it would draw at random
    /// or from the clock. Wraps mkfs.fat(8).
    static func makeVFAT(_ partition: DiskLayout.Partition, offset: UInt64, bytes: UInt64, sectorSize: UInt64, image: String, serial: UInt32,
                         interruption: Interruption) throws(CreateError) {
        var arguments = ["mkfs.fat", "--invariant", "--mbr=n", "-i", String(serial, radix: 16), "-S", "\(sectorSize)", "--offset=\(offset / sectorSize)"]
        let geometry = fatGeometry(bytes: bytes, esp: partition.type.isESP)
        arguments += ["-F", "\(geometry.fatBits)"]
        if let cluster = geometry.clusterBytes { arguments += ["-s", "\(max(1, cluster / sectorSize))"] }
        if let label = partition.label { arguments += ["-n", String(label.uppercased().prefix(11))] }
        arguments += [image, "\(bytes / 1024)"]
        try CreateTools.run(arguments, step: "mkfs.fat (\(partition.origin))", interruption: interruption)
    }

    /// Sectors per cluster for a FAT32 volume of `sectors` 512-byte sectors: Microsoft's table
    /// (512 bytes to 260 MiB, 4 KiB to 8 GiB, 8 KiB to 16 GiB, 16 KiB to 32 GiB, then 32 KiB),
    /// halved while the volume would have fewer than FAT32's 65525 clusters (with 32 reserved
    /// sectors and two FATs of 4 bytes a cluster).
    static func fat32SectorsPerCluster(sectors: UInt64) -> UInt64 {
        var perCluster: UInt64
        switch sectors {
        case ...(260 << 11): perCluster = 1
        case ...(8 << 21): perCluster = 8
        case ...(16 << 21): perCluster = 16
        case ...(32 << 21): perCluster = 32
        default: perCluster = 64
        }
        while perCluster > 1, (sectors - 32) * 512 / (512 * perCluster + 8) < 65525 + 16 { perCluster /= 2 }
        return perCluster
    }

    /// The FAT size and FAT32 cluster size mkfs.fat 4.2 picks on a device of `bytes`. Given a file
    /// and a block count (--offset), it picks both from the whole file's size instead: in an image
    /// of 512 MiB or more every vfat partition became FAT32, and past 260 MiB a FAT32 partition got
    /// 4 KiB clusters, too few for FAT32 in a 256 MiB ESP (mkfs.fat warns; mtools then reads it as
    /// FAT16 and its first mmd fails). FAT12 and FAT16 start at 4 sectors a cluster and mkfs.fat
    /// grows that itself.
    static func fatGeometry(bytes: UInt64, esp: Bool) -> (fatBits: Int, clusterBytes: UInt64?) {
        if esp || bytes >= 512 << 20 {
            return (32, fat32SectorsPerCluster(sectors: bytes / 512) * 512)
        }
        // FAT16 once 2 KiB clusters give it its minimum of 4085 clusters, as mkfs.fat's own choice.
        return (bytes > 8 << 20 ? 16 : 12, nil)
    }

    /// mkswap into a sparse memory file of the partition's size, whose first page (the whole
    /// signature) is then written at `offset`: util-linux 2.38's mkswap has no offset. Wraps mkswap(8).
    static func makeSwap(_ partition: DiskLayout.Partition, offset: UInt64, bytes: UInt64, image: String, uuid: GUID,
                         interruption: Interruption) throws(CreateError) {
        do {
            let scratch = try MemoryFile(name: "swap", size: bytes)
            var arguments = ["mkswap", "-q", "-U", uuid.description.lowercased()]
            if let label = partition.label { arguments += ["-L", label] }
            try CreateTools.run(arguments + [scratch.path], step: "mkswap (\(partition.origin))", interruption: interruption)
            var page = [UInt8](repeating: 0, count: 4096)
            _ = try systemCall("pread", on: scratch.path) { Int32(pread(scratch.file.fd, &page, page.count, 0)) }
            let target = try FileHandle(path: image, flags: O_WRONLY)
            try writeFully(target.fd, page, at: offset, path: image)
        } catch let error as CreateError {
            throw error
        } catch {
            throw .failed(step: "mkswap (\(partition.origin))", detail: "\(error)")
        }
    }
}
