import Glibc
import ImgFormats
import ImgSystem

/// How an image becomes a disk that grub-install accepts. The device-mapper and isolated (VM)
/// strategies of DESIGN.md plug in here as further conformances and cases.
public enum Strategy: String, Sendable, CaseIterable {
    /// A loop device with LO_FLAGS_PARTSCAN: the kernel parses the table and creates loopNpM.
    case partscan
    /// imgtool parses the table and adds each partition with BLKPG_ADD_PARTITION.
    case blkpg
    /// A second loop device over the boot partition's byte range; GRUB's partition-map and
    /// filesystem modules must then be named explicitly.
    case offset

    /// The order `auto` tries them in: the most faithful first.
    public static let automaticOrder: [Strategy] = [.partscan, .blkpg, .offset]

    var presentation: any DiskPresentation.Type {
        switch self {
        case .partscan: return PartscanPresentation.self
        case .blkpg: return BlkpgPresentation.self
        case .offset: return OffsetPresentation.self
        }
    }
}

/// The image as a disk: the device grub-install writes boot.img to, and the device that holds
/// the boot filesystem.
struct PresentedDisk {
    let strategy: Strategy
    let diskDevice: String
    let bootDevice: String
    /// Modules grub-install cannot find out by itself with this presentation.
    let extraModules: [String]
}

/// The kernel cannot present the disk this way; `auto` moves on to the next strategy.
struct PresentationUnavailable: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}

protocol DiskPresentation {
    /// Presents `plan`'s image, whose whole-disk loop device is `disk`. Everything acquired is
    /// registered with `session`. Throws `PresentationUnavailable` when this kernel cannot do it
    /// (having released what it took), any other error when something failed.
    static func present(disk: LoopDevice, plan: InstallPlan, session: Session) throws -> PresentedDisk
}

enum PartscanPresentation: DiskPresentation {
    static func present(disk: LoopDevice, plan: InstallPlan, session: Session) throws -> PresentedDisk {
        guard disk.partitionScanEnabled else {
            throw PresentationUnavailable(reason: "the kernel dropped LO_FLAGS_PARTSCAN on \(disk.path)")
        }
        // LOOP_CONFIGURE scans synchronously: if the nodes are not there now, this kernel has no
        // parser for the table.
        let number = plan.bootPartition.number
        guard BlockPartitions.kernelPartitions(disk: disk.path).contains(number) else {
            throw PresentationUnavailable(reason: "the kernel did not create partition nodes for \(disk.path) (no partition-table parsing); use --strategy blkpg")
        }
        return PresentedDisk(strategy: .partscan, diskDevice: disk.path,
                             bootDevice: BlockPartitions.nodePath(disk: disk.path, number: number), extraModules: [])
    }
}

enum BlkpgPresentation: DiskPresentation {
    static func present(disk: LoopDevice, plan: InstallPlan, session: Session) throws -> PresentedDisk {
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
            session.onClose(node, journal: (.partition, entry)) {
                try BlockPartitions.remove(disk: disk, number: p.number, logger: session.logger)
            }
        }
        return PresentedDisk(strategy: .blkpg, diskDevice: disk.path,
                             bootDevice: BlockPartitions.nodePath(disk: disk.path, number: plan.bootPartition.number),
                             extraModules: [])
    }
}

enum OffsetPresentation: DiskPresentation {
    static func present(disk: LoopDevice, plan: InstallPlan, session: Session) throws -> PresentedDisk {
        let p = plan.bootPartition
        let sectorSize = UInt64(plan.table.sectorSize)
        let tag = "\(session.id):p\(p.number)"
        try session.acquiring(.loop, LoopDevice.fileName(for: tag))
        let loop = try LoopDevice.attach(plan.imagePath, options: .init(
            offset: p.startSector * sectorSize, sizeLimit: p.sectorCount * sectorSize,
            tag: tag), logger: session.logger)
        session.onClose(loop.path, journal: (.loop, loop.tag)) { try loop.detach() }
        // grub-probe sees this loop device as a disk of its own, so it cannot tell grub-install
        // which partition map and filesystem the real disk needs.
        return PresentedDisk(strategy: .offset, diskDevice: disk.path, bootDevice: loop.path,
                             extraModules: [plan.table.kind == .gpt ? "part_gpt" : "part_msdos", plan.grubFilesystemModule])
    }
}
