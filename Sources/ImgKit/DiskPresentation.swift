import Glibc
import ImgFormats
import ImgSystem

extension InstallGrub {
    /// How an image becomes a disk that grub-install accepts. Running the whole job in a throwaway
    /// VM (`Isolation`) is orthogonal: there the VM's kernel presents the disk with one of these.
    public enum Strategy: String, Sendable, CaseIterable {
        /// The image is itself a whole-disk block device whose partitions the kernel already has (a
        /// real disk, or the isolated VM's virtio disk): nothing is attached, and grub-install runs on
        /// the device as on any disk.
        case blockDevice = "block-device"
        /// A loop device with LO_FLAGS_PARTSCAN: the kernel parses the table and creates loopNpM.
        case partscan
        /// imgtool parses the table and adds each partition with BLKPG_ADD_PARTITION.
        case blkpg
        /// The classic recipe: a device-mapper linear disk over the loop device, named like a disk
        /// (`imgtool-<session>` unless `--disk-name` chooses), with kpartx's partition maps over it.
        case deviceMapper = "device-mapper"
        /// A second loop device over the boot partition's byte range; GRUB's partition-map and
        /// filesystem modules must then be named explicitly.
        case offset
        /// No root, no loop device, no mount: the image file is changed as bytes (`OfflineInstall`).
        /// `auto` takes it when the caller is not root or loop devices cannot be had.
        case offline

        /// The order `auto` tries them in: the most faithful first. block-device applies only to an
        /// image that is a block device, and costs nothing to rule out for a file.
        public static let automaticOrder: [Strategy] = [.blockDevice, .partscan, .blkpg, .deviceMapper, .offset]

        /// How the strategy presents the image as a disk; nil for offline, which presents none.
        var presentation: (any DiskPresentation.Type)? {
            switch self {
            case .blockDevice: return BlockDevicePresentation.self
            case .partscan: return PartscanPresentation.self
            case .blkpg: return BlkpgPresentation.self
            case .deviceMapper: return DeviceMapperPresentation.self
            case .offset: return OffsetPresentation.self
            case .offline: return nil
            }
        }
    }
}

/// The image as a disk: the device grub-install writes boot.img to, and the device that holds
/// the boot filesystem.
struct PresentedDisk {
    let strategy: InstallGrub.Strategy
    let diskDevice: String
    let bootDevice: String
    /// Modules grub-install cannot find out by itself with this presentation.
    let extraModules: [String]
    /// The EFI system partition's node, for a UEFI or hybrid install.
    var espDevice: String? = nil
}

/// The kernel cannot present the disk this way; `auto` moves on to the next strategy.
struct PresentationUnavailable: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}

protocol DiskPresentation {
    /// Presents `plan`'s image, whose whole disk is `disk`. Everything acquired is registered with
    /// `session`. Throws `PresentationUnavailable` when this kernel cannot do it (having released
    /// what it took), any other error when something failed.
    static func present(disk: ImageDisk, plan: InstallPlan, options: InstallGrub.Options,
                        session: Session) throws -> PresentedDisk
}

/// The image as a whole disk, for the presentations: the image itself when it is a whole-disk
/// block device, and a loop device over it, attached (and registered with the session) when a
/// presentation first asks for one. A file never needs the first; a block device may never need
/// the second.
final class ImageDisk {
    let plan: InstallPlan
    let session: Session
    let partitionScan: Bool
    /// The image's own node if it is a whole-disk block device, else why not.
    let wholeDisk: Result<String, any Error>
    private var loop: LoopDevice?

    init(plan: InstallPlan, session: Session, partitionScan: Bool) {
        self.plan = plan
        self.session = session
        self.partitionScan = partitionScan
        wholeDisk = Result { try BlockDevicePresentation.wholeDisk(plan.image) }
    }

    /// The loop device over the image, attached on first use.
    func loopDevice() throws -> LoopDevice {
        if let loop { return loop }
        try session.acquiring(.loop, LoopDevice.fileName(for: ResourceMarks.loopTag(session: session.id)))
        // A disk laid out for 4 KiB sectors is presented with them, as the real disk would be.
        let disk = try LoopDevice.attach(plan.image, options: .init(partitionScan: partitionScan, tag: session.id,
                                                                    blockSize: plan.loopBlockSize),
                                         logger: session.logger)
        session.onClose(disk.path, journal: .init(.loop, disk.tag)) { try disk.detach() }
        session.logger.info("attached \(plan.image) as \(disk.path)")
        loop = disk
        return disk
    }
}

enum BlockDevicePresentation: DiskPresentation {
    /// `plan`'s image as the disk it already is. Unavailable for a file, a partition, or a disk
    /// whose kernel partition differs from the table; an error if the boot partition is in use.
    /// grub-probe asks udevadm where a partition starts, or without it the driver (HDIO_GETGEO),
    /// which loop devices do not answer.
    static func present(disk image: ImageDisk, plan: InstallPlan, options: InstallGrub.Options,
                        session: Session) throws -> PresentedDisk {
        let disk = try image.wholeDisk.get()
        let udevadm = Subprocess.find("udevadm") != nil
        let p = plan.bootPartition
        let scale = UInt64(plan.table.sectorSize) / 512
        guard let range = BlockDevice.kernelPartitionRange(disk: disk, number: p.number) else {
            throw PresentationUnavailable(reason: "the kernel has no partition \(p.number) on \(disk)")
        }
        guard range.start == p.startSector * scale, range.count == p.sectorCount * scale else {
            throw PresentationUnavailable(reason: "the kernel's partition \(p.number) of \(disk) (sectors \(range.start)+\(range.count)) is not the table's (\(p.startSector * scale)+\(p.sectorCount * scale)); re-read the table with blockdev --rereadpt")
        }
        let boot = BlockPartitions.nodePath(disk: disk, number: p.number)
        if let bootDevice = DeviceMapper.DeviceNumber(blockDevice: boot) {
            let holders = DeviceMapper.holders(of: bootDevice)
            guard holders.isEmpty else {
                throw InstallGrubError.bootPartitionInUse(device: boot, holders: holders)
            }
        }
        guard udevadm || BlockDevice.geometryStart(boot) == range.start else {
            throw PresentationUnavailable(reason: "grub-probe cannot learn where \(boot) starts: no udevadm, and the driver reports no geometry")
        }
        var esp: String?
        if let e = plan.esp {
            guard let espRange = BlockDevice.kernelPartitionRange(disk: disk, number: e.number),
                  espRange.start == e.startSector * scale, espRange.count == e.sectorCount * scale else {
                throw PresentationUnavailable(reason: "the kernel's partition \(e.number) of \(disk) is not the table's EFI system partition")
            }
            esp = BlockPartitions.nodePath(disk: disk, number: e.number)
        }
        return PresentedDisk(strategy: .blockDevice, diskDevice: disk, bootDevice: boot, extraModules: [], espDevice: esp)
    }

    /// The device node `path` names, if it is a whole-disk block device.
    static func wholeDisk(_ path: String) throws -> String {
        guard let device = DeviceMapper.DeviceNumber(blockDevice: path) else {
            throw PresentationUnavailable(reason: "\(path) is not a block device")
        }
        guard !BlockDevice.isPartition(device) else {
            throw PresentationUnavailable(reason: "\(path) is a partition, not a whole disk")
        }
        return try realPath(path)
    }
}

enum PartscanPresentation: DiskPresentation {
    static func present(disk image: ImageDisk, plan: InstallPlan, options: InstallGrub.Options,
                        session: Session) throws -> PresentedDisk {
        let disk = try image.loopDevice()
        guard disk.partitionScanEnabled else {
            throw PresentationUnavailable(reason: "the kernel dropped LO_FLAGS_PARTSCAN on \(disk.path)")
        }
        // LOOP_CONFIGURE scans synchronously: if the nodes are not there now, this kernel has no
        // parser for the table.
        let number = plan.bootPartition.number
        let kernel = BlockPartitions.kernelPartitions(disk: disk.path)
        guard kernel.contains(number), plan.esp.map({ kernel.contains($0.number) }) ?? true else {
            throw PresentationUnavailable(reason: "the kernel did not create partition nodes for \(disk.path) (no partition-table parsing); use --strategy blkpg")
        }
        return PresentedDisk(strategy: .partscan, diskDevice: disk.path,
                             bootDevice: BlockPartitions.nodePath(disk: disk.path, number: number), extraModules: [],
                             espDevice: plan.esp.map { BlockPartitions.nodePath(disk: disk.path, number: $0.number) })
    }
}

enum BlkpgPresentation: DiskPresentation {
    static func present(disk image: ImageDisk, plan: InstallPlan, options: InstallGrub.Options,
                        session: Session) throws -> PresentedDisk {
        let disk = try image.loopDevice()
        let sectorSize = UInt64(plan.table.sectorSize)
        // Every partition, not just /boot: grub-probe and grub-install see the disk as it really is.
        // The extended container is skipped as the kernel would map only its first sectors.
        var added = 0
        for p in plan.table.partitions where p.kind != .extended && p.sectorCount > 0 {
            let node: String
            let entry = "\(disk.path) \(p.number)"
            try session.acquiring(.partition, entry)
            do {
                node = try BlockPartitions.add(disk: disk, number: p.number, start: p.startSector * sectorSize,
                                               length: p.sectorCount * sectorSize, logger: session.logger)
            } catch {
                // The first refusal means this kernel does not take BLKPG on loop devices at all.
                if added == 0 && [EINVAL, ENOTTY, EOPNOTSUPP].contains(error.errno) {
                    throw PresentationUnavailable(reason: "the kernel refuses BLKPG_ADD_PARTITION: \(error)")
                }
                throw error
            }
            added += 1
            session.onClose(node, journal: .init(.partition, entry)) {
                try BlockPartitions.remove(disk: disk, number: p.number, logger: session.logger)
            }
        }
        return PresentedDisk(strategy: .blkpg, diskDevice: disk.path,
                             bootDevice: BlockPartitions.nodePath(disk: disk.path, number: plan.bootPartition.number),
                             extraModules: [], espDevice: plan.esp.map { BlockPartitions.nodePath(disk: disk.path, number: $0.number) })
    }
}

enum OffsetPresentation: DiskPresentation {
    static func present(disk image: ImageDisk, plan: InstallPlan, options: InstallGrub.Options,
                        session: Session) throws -> PresentedDisk {
        let disk = try image.loopDevice()
        let sectorSize = UInt64(plan.table.sectorSize)
        func attach(_ p: Partition) throws -> String {
            let tag = ResourceMarks.loopTag(session: session.id, suffix: "p\(p.number)")
            try session.acquiring(.loop, LoopDevice.fileName(for: tag))
            let loop = try LoopDevice.attach(plan.image, options: .init(
                offset: p.startSector * sectorSize, sizeLimit: p.sectorCount * sectorSize,
                tag: tag, blockSize: plan.loopBlockSize), logger: session.logger)
            session.onClose(loop.path, journal: .init(.loop, loop.tag)) { try loop.detach() }
            return loop.path
        }
        let boot = try attach(plan.bootPartition)
        let esp = try plan.esp.map { $0.number == plan.bootPartition.number ? boot : try attach($0) }
        // grub-probe sees this loop device as a disk of its own, so it cannot tell grub-install
        // which partition map and filesystem the real disk needs.
        return PresentedDisk(strategy: .offset, diskDevice: disk.path, bootDevice: boot,
                             extraModules: [plan.table.kind.grubModule, plan.grubFilesystemModule], espDevice: esp)
    }
}

enum DeviceMapperPresentation: DiskPresentation {
    /// The disk map's name when `--disk-name` does not choose one: unique per session, so
    /// concurrent runs never collide.
    /// The maps go straight onto the image when it is a whole-disk block device (the isolated
    /// VM's virtio disk), else onto its loop device.
    static func present(disk image: ImageDisk, plan: InstallPlan, options: InstallGrub.Options,
                        session: Session) throws -> PresentedDisk {
        let logger = session.logger
        do { try DeviceMapper.checkAvailable(logger: logger) } catch {
            throw PresentationUnavailable(reason: error.description)
        }
        let diskPath = try (try? image.wholeDisk.get()) ?? image.loopDevice().path
        let name = try DeviceMapper.Name(options.diskName ?? ResourceMarks.deviceMapperDiskName(session: session.id))
        // The UUID marks the maps as ours even if the journal is lost; kpartx-style partition
        // UUIDs ("part<N>-" + this) keep the mark.
        let uuid = try DeviceMapper.UUID(ResourceMarks.deviceMapperDiskUUID(session: session.id))
        guard let device = DeviceMapper.DeviceNumber(blockDevice: diskPath) else {
            throw SystemError("stat", on: diskPath, errno: ENODEV)
        }
        // Device-mapper tables count 512-byte sectors; a tail shorter than that is left out, as the
        // kernel's own partition code leaves it out of a disk.
        let diskMap = try create(name: name, uuid: uuid,
                                 target: .linear(length: plan.imageSize / 512, device: device, offset: 0), session: session)
        var bootMap: String?, espMap: String?
        for map in try DeviceMapperLayout.partitionMaps(table: plan.table, diskName: name, diskUUID: uuid, disk: diskMap.device) {
            let info = try create(name: map.name, uuid: map.uuid, target: map.target, session: session)
            if map.number == plan.bootPartition.number { bootMap = info.path }
            if map.number == plan.esp?.number { espMap = info.path }
        }
        guard let bootMap else {
            throw PresentationUnavailable(reason: "partition \(plan.bootPartition.number) has no device-mapper map")
        }
        return PresentedDisk(strategy: .deviceMapper, diskDevice: diskMap.path, bootDevice: bootMap, extraModules: [], espDevice: espMap)
    }

    private static func create(name: DeviceMapper.Name, uuid: DeviceMapper.UUID, target: DeviceMapper.Target,
                               session: Session) throws -> DeviceMapper.Info {
        try session.acquiring(.deviceMapper, name.value)
        let info = try DeviceMapper.create(name: name, uuid: uuid, targets: [target], logger: session.logger)
        session.onClose(info.path, journal: .init(.deviceMapper, name.value)) {
            try DeviceMapper.remove(name: name, logger: session.logger)
        }
        return info
    }
}
