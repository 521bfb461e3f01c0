import Glibc
import ImgFormats
import ImgSystem

/// Reading files from an image's filesystems without mounting it: ext2/3/4 (libext2fs), FAT12/16/32
/// and ISO 9660 with Rock Ridge or Joliet (ImgFormats' readers). Finds the filesystems (the
/// partitions, a bare filesystem filling the image, or an ISO 9660 volume spanning a hybrid image)
/// and opens one. What `imgtool ls` and `imgtool cat` are made of.
///
/// Which filesystem is read without `--partition`, in this order:
/// 1. an ISO 9660 volume that starts at the image's first byte (a primary volume descriptor at
///    block 16): what a CD drive reads, even where a partition table surrounds it (the hybrid ISOs
///    of grub-mkrescue and xorriso, whose partitions lie inside the ISO);
/// 2. the image itself when it has no partition table (a bare filesystem);
/// 3. its only ext2/3/4 partition (the system, where an ESP lies beside it);
/// 4. without ext2/3/4 partitions, its only FAT or ISO 9660 partition.
/// Several candidates at one step are an error naming them; `--partition N` picks any partition.
public enum ImageFiles {
    /// A partition (or the whole image, `partition` nil) and what libblkid finds there.
    public struct Location: Sendable, Equatable {
        /// The partition number; nil for a filesystem that fills the whole image.
        public let partition: Int?
        /// Where the filesystem starts in the image, in bytes.
        public let offset: UInt64
        /// The partition's (or the whole image's) length in bytes.
        public let length: UInt64
        /// libblkid's TYPE ("ext4", "vfat", "swap"), nil when it finds nothing.
        public let type: String?

        /// Whether libblkid found ext2, ext3 or ext4.
        public var isExt: Bool { type.map(ImageFiles.extTypes.contains) ?? false }
        /// Whether libblkid found a filesystem `run` reads: ext2/3/4, FAT ("vfat") or ISO 9660.
        public var isReadable: Bool { isExt || type == "vfat" || type == "iso9660" }
    }

    /// An opened filesystem and where it is.
    public struct Opened: Sendable {
        /// The filesystem: ext2/3/4 through libext2fs, FAT or ISO 9660 through ImgFormats.
        public let filesystem: Filesystem
        /// The partition (or whole image) it fills.
        public let location: Location
    }

    /// Which filesystem to open.
    public struct Options: Sendable {
        /// The image file or block device.
        public var image: String
        /// The partition; nil: the image's own filesystem or its only readable partition, as
        /// `ImageFiles` describes.
        public var partition: Int?
        /// An LVM logical volume ("vg/lv") holding the filesystem, found on the image's physical
        /// volumes (in `partition` when given); it must lie in one run of extents.
        public var logicalVolume: String?
        /// `list` and `read` the image inside a throwaway VM instead of on this kernel
        /// (`Isolation`). `run` refuses it: an opened filesystem cannot come back from a VM.
        public var isolation: Isolation?
        /// Read the backing file (or parent) a container names, as `ReportOptions.backingFiles`;
        /// without it such a container is refused (`Error.backingNotOpened`).
        public var backingFiles: Bool

        /// Options for `image`, and for `partition` or `logicalVolume` when given.
        public init(image: String, partition: Int? = nil, logicalVolume: String? = nil, isolation: Isolation? = nil,
                    backingFiles: Bool = false) {
            self.image = image
            self.partition = partition
            self.logicalVolume = logicalVolume
            self.isolation = isolation
            self.backingFiles = backingFiles
        }
    }

    /// Where an image's filesystems may be.
    struct Layout {
        /// The disk they are on (a container's virtual disk).
        let disk: any ByteSource
        /// False for a bare filesystem filling the image.
        let hasTable: Bool
        let locations: [Location]
        /// An ISO 9660 volume from the image's first byte, beside a partition table (hybrid ISO).
        var wholeImageISO = false
    }

    static let extTypes: Set<String> = ["ext2", "ext3", "ext4"]
    /// The filesystems ls and cat read, for messages.
    static let readableList = "ext2/3/4, FAT12/16/32 and ISO 9660"

    /// Every partition that may hold a filesystem (not an extended container), with its type; for
    /// an image without a partition table, the image itself (`hasTable` false).
    static func locate(image: String, backingFiles: Bool) throws(Error) -> Layout {
        let opened: OpenedImage
        do { opened = try OpenedImage.open(image, backing: backingFiles) } catch { throw .cannotOpen(error) }
        guard let source = opened.disk else {
            throw .container(path: image, format: opened.container?.format ?? .qcow2, reason: opened.problem ?? "unknown")
        }
        if let backing = (source as? any ContainerDisk)?.backingNotOpened { throw .backingNotOpened(path: image, backing: backing) }
        let table: PartitionTable?
        do {
            table = try PartitionTable.read(from: source)
        } catch {
            throw .unreadable(path: image, reason: "\(error)")
        }
        guard let table else {
            return Layout(disk: source, hasTable: false, locations: [Location(partition: nil, offset: 0, length: source.size,
                                                                type: probe(source, name: image, offset: 0, length: source.size))])
        }
        let sectorSize = UInt64(table.sectorSize)
        var locations: [Location] = []
        for p in table.partitions where p.kind != .extended {
            // Hostile tables: positions that overflow or lie past the end hold nothing to read.
            let (offset, overflow) = p.startSector.multipliedReportingOverflow(by: sectorSize)
            let (length, overflow2) = p.sectorCount.multipliedReportingOverflow(by: sectorSize)
            guard !overflow, !overflow2, offset < source.size else {
                locations.append(Location(partition: p.number, offset: overflow ? 0 : offset, length: 0, type: nil))
                continue
            }
            let available = min(length, source.size - offset)
            locations.append(Location(partition: p.number, offset: offset, length: available,
                                      type: probe(source, name: image, offset: offset, length: available)))
        }
        // A hybrid ISO: the table's partitions are windows into an ISO 9660 volume that spans the image.
        let iso = (try? ISO9660Filesystem.open(source, offset: 0, length: source.size)) != nil
        return Layout(disk: source, hasTable: true, locations: locations, wholeImageISO: iso)
    }

    /// The ext2/3/4 filesystems of `image`, in the form `OSInspection.inspect` takes.
    static func extFilesystems(image: String) throws(Error) -> [OSInspection.Filesystem] {
        try locate(image: image, backingFiles: false).locations.filter(\.isExt).map { .init(partition: $0.partition, offset: $0.offset) }
    }

    /// Opens the filesystem in `partition`; without one, the one `ImageFiles` describes (a
    /// whole-image ISO 9660 volume, a bare filesystem, the only ext2/3/4 partition, the only FAT or
    /// ISO 9660 partition); several candidates are an error listing them.
    public static func run(_ options: Options) throws(Error) -> Opened {
        guard options.isolation == nil else { throw .isolatedOpen(path: options.image) }
        if let name = options.logicalVolume { return try openLogicalVolume(name, options: options) }
        let image = options.image, partition = options.partition
        let layout = try locate(image: image, backingFiles: options.backingFiles)
        let hasTable = layout.hasTable, locations = layout.locations
        let location: Location
        if let partition {
            guard hasTable else { throw .noPartitionTable(path: image, filesystem: locations.first?.type) }
            guard let found = locations.first(where: { $0.partition == partition }) else {
                throw .noSuchPartition(path: image, number: partition, available: locations.compactMap(\.partition))
            }
            location = found
        } else if layout.wholeImageISO {
            location = Location(partition: nil, offset: 0, length: layout.disk.size, type: "iso9660")
        } else if !hasTable {
            location = locations[0]
        } else {
            let ext = locations.filter(\.isExt)
            let candidates = ext.isEmpty ? locations.filter(\.isReadable) : ext
            guard !candidates.isEmpty else {
                throw .noExtFilesystem(path: image, found: locations.compactMap { l in
                    l.type.map { "\($0) on partition \(l.partition!)" } })
            }
            guard candidates.count == 1 else {
                throw .ambiguous(path: image, candidates: candidates.map { "partition \($0.partition!) (\($0.type!))" })
            }
            location = candidates[0]
        }
        return Opened(filesystem: try open(location, on: layout.disk, image: image), location: location)
    }

    /// Opens the filesystem libblkid found at `location`: ext2/3/4 through libext2fs, "vfat" and
    /// "iso9660" through ImgFormats' readers; anything else is `.notExt`.
    static func open(_ location: Location, on disk: any ByteSource, image: String) throws(Error) -> Filesystem {
        switch location.type {
        case let type? where extTypes.contains(type):
            do {
                return .ext(try Ext2Filesystem(source: disk, offset: location.offset, name: image))
            } catch {
                throw .damaged(path: image, partition: location.partition, reason: error.operation)
            }
        case "vfat":
            do {
                return .fat(try FATFilesystem.open(disk, offset: location.offset, length: location.length))
            } catch {
                throw .unreadableFilesystem(path: image, partition: location.partition, filesystem: "FAT", reason: error.description)
            }
        case "iso9660":
            do {
                return .iso(try ISO9660Filesystem.open(disk, offset: location.offset, length: location.length))
            } catch {
                throw .unreadableFilesystem(path: image, partition: location.partition, filesystem: "ISO 9660", reason: error.description)
            }
        default:
            throw .notExt(path: image, partition: location.partition, found: location.type)
        }
    }

    private static func probe(_ source: any ByteSource, name: String, offset: UInt64, length: UInt64) -> String? {
        guard length > 0 else { return nil }
        return (try? FilesystemProbe.probe(source, offset: offset, length: length, name: name))?.type
    }

    /// Why a file could not be read from an image. `description` is the message a user reads:
    /// what is wrong and what to do next. `exitStatus` is the documented exit code.
    public enum Error: Swift.Error, CustomStringConvertible, Sendable {
        /// The image itself could not be opened.
        case cannotOpen(ImageOpenError)
        /// Reading the image failed; `reason` is the error's message.
        case unreadable(path: String, reason: String)
        /// The file is a virtual-disk container whose disk cannot be read; `reason` says why.
        case container(path: String, format: DiskContainer.Format, reason: String)
        /// The container names `backing` as its backing file, which was not allowed to be opened
        /// (`Options.backingFiles`): files read from it could be wrong where it holds their blocks.
        case backingNotOpened(path: String, backing: String)
        /// A partition was asked for, but the image has no partition table (`filesystem`: what fills it, if anything).
        case noPartitionTable(path: String, filesystem: String?)
        /// The table has no partition `number`; `available` lists those it has.
        case noSuchPartition(path: String, number: Int, available: [Int])
        /// The chosen partition (or whole image, `partition` nil) holds no filesystem ls reads
        /// (ext2/3/4, FAT, ISO 9660); `found` is what libblkid found there.
        case notExt(path: String, partition: Int?, found: String?)
        /// No partition holds a filesystem ls reads; `found` lists what the partitions hold.
        case noExtFilesystem(path: String, found: [String])
        /// No partition was given and several hold ext2/3/4 (or, without ext, several FAT or ISO
        /// 9660); `candidates` names them.
        case ambiguous(path: String, candidates: [String])
        /// libext2fs could not open the filesystem; `reason` is its message.
        case damaged(path: String, partition: Int?, reason: String)
        /// A FAT or ISO 9660 filesystem (`filesystem` names which) could not be opened, or is damaged
        /// where a path led; `reason` is the reader's message.
        case unreadableFilesystem(path: String, partition: Int?, filesystem: String, reason: String)
        /// A path inside the filesystem failed.
        case file(Ext2Filesystem.Error, image: String, partition: Int?)
        /// `read`'s output failed (the caller's, e.g. writing to standard output); reading stopped.
        case output(path: String, SystemError)
        /// No physical volume of the image holds logical volume `name`; `available` lists those there are.
        case noSuchLogicalVolume(path: String, name: String, available: [String])
        /// Logical volume `name` is not linear, or lies partly on a physical volume not in this image.
        case logicalVolumeNotContiguous(path: String, name: String)
        /// `run` was given an `isolation`: the filesystem it opens would live in the VM.
        case isolatedOpen(path: String)
        /// The isolated VM (`Options.isolation`) could not run the job.
        case isolation(IsolationFailure)

        public var exitStatus: ExitStatus {
            switch self {
            case .cannotOpen, .unreadable: return .noInput
            case .backingNotOpened: return .usage
            case .noPartitionTable, .noSuchPartition, .notExt, .noExtFilesystem, .ambiguous, .damaged, .container, .unreadableFilesystem,
                 .noSuchLogicalVolume, .logicalVolumeNotContiguous:
                return .badImage
            case .file(.library, _, _), .output, .isolatedOpen: return .failure
            case .file: return .badImage
            case .isolation(let e): return e.exitStatus
            }
        }

        /// `exitStatus`, or 128 + the signal that stopped an isolated VM.
        public var exitCode: Int32 {
            if case .isolation(let e) = self { return e.exitCode }
            return exitStatus.rawValue
        }

        public var description: String {
            switch self {
            case .cannotOpen(let e):
                return e.description
            case .unreadable(let p, let reason):
                return "cannot read \(p): \(reason). Check its permissions (reading needs no root, only read access)."
            case .container(let p, let format, let reason):
                let convert = format.rawCopyCommand(p)
                return "\(p) is a \(format.rawValue) container whose disk cannot be read: \(reason). Convert it to a raw image (\(convert)) and read that."
            case .backingNotOpened(let p, let backing):
                return "\(p) names \(backing) as its backing file, which holds the parts of the disk \(p) does not. imgtool opens it only when asked, since an image can name any file: pass --backing if you trust \(p)."
            case .noPartitionTable(let p, let fs):
                let what = fs.map { "it is a bare \($0) filesystem" } ?? "it has none"
                return "\(p) has no partition table (\(what)), so there is no partition to choose; leave out --partition."
            case .noSuchPartition(let p, let n, let available):
                let list = available.isEmpty ? "none" : available.map(String.init).joined(separator: ", ")
                return "\(p) has no partition \(n) (its partitions: \(list)). Choose one of those with --partition."
            case .notExt(let p, let n, let found):
                let place = n.map { "partition \($0) of \(p)" } ?? p
                let what = found.map { "it is \($0)" } ?? "libblkid finds no filesystem there"
                return "\(place) holds no filesystem ls can read (\(what)); imgtool ls and cat read \(ImageFiles.readableList)."
            case .noExtFilesystem(let p, let found):
                let seen = found.isEmpty ? "no filesystem at all" : "only " + found.joined(separator: ", ")
                return "\(p) has no filesystem ls can read (\(seen)); imgtool ls and cat read \(ImageFiles.readableList)."
            case .ambiguous(let p, let candidates):
                let what = candidates.allSatisfy { $0.contains("(ext") } ? "ext2/3/4 filesystems" : "filesystems ls can read"
                return "\(p) has \(candidates.count) \(what): \(candidates.joined(separator: ", ")). Choose one with --partition N."
            case .damaged(let p, let n, let reason):
                let place = n.map { "partition \($0) of \(p)" } ?? p
                return "libext2fs cannot open the filesystem in \(place): \(reason). It may be damaged; check a copy with e2fsck -n."
            case .unreadableFilesystem(let p, let n, let fs, let reason):
                let place = n.map { "partition \($0) of \(p)" } ?? p
                let check = fs == "FAT" || fs.hasPrefix("FAT") ? "check a copy with fsck.fat -n" : "check it with xorriso -indev IMAGE -check_media --"
                return "the \(fs) filesystem in \(place) cannot be read: \(reason). It may be damaged; \(check)."
            case .file(let error, let image, let partition):
                let place = partition.map { "partition \($0) of \(image)" } ?? image
                let ls = "imgtool ls \(image)" + (partition.map { " --partition \($0)" } ?? "")
                switch error {
                case .notFound(let path, _):
                    return "in \(place): \(error) See what is there with `\(ls) \(parent(path))`."
                case .notADirectory(let path, _), .symlinkLoop(let path), .notARegularFile(let path):
                    return "in \(place): \(error) Check the path with `\(ls) -l \(parent(path))`."
                case .isADirectory(let path):
                    return "in \(place): \(error) List it with `\(ls) \(path)`."
                case .notASymlink, .tooLarge, .library:
                    return "in \(place): \(error)"
                }
            case .output(let path, let e):
                return "writing \(path) out failed: \(e)."
            case .noSuchLogicalVolume(let p, let name, let available):
                let list = available.isEmpty ? "none: no LVM physical volume was found" : available.joined(separator: ", ")
                return "\(p) has no logical volume \(name) (its logical volumes: \(list)). Name one as VG/LV with --lv."
            case .logicalVolumeNotContiguous(let p, let name):
                return "\(p): logical volume \(name) is not linear (striped, mirrored, RAID or thin), or part of it lies on a physical volume that is not in this image; imgtool reads linear volumes whose extents are all here. Run imgtool inspect to see its segments."
            case .isolatedOpen(let p):
                return "\(p): an opened filesystem cannot come back from an isolated VM. Use ImageFiles.list or ImageFiles.read with the isolation, or open it without one."
            case .isolation(let e):
                return e.description
            }
        }

        private func parent(_ path: String) -> String {
            var parts = path.split(separator: "/")
            _ = parts.popLast()
            return "/" + parts.joined(separator: "/")
        }
    }
}

extension ImageFiles {
    /// The physical volumes of `image` (in `partition` when given, else in every partition or the
    /// whole image), with their byte offsets.
    static func physicalVolumes(_ layout: Layout, partition: Int?) -> [(pv: LVMPhysicalVolume, offset: UInt64)] {
        let source = layout.disk
        return layout.locations.filter { $0.type == "LVM2_member" && (partition == nil || $0.partition == partition) }.compactMap { l in
            (try? LVMPhysicalVolume.read(source, offset: l.offset, length: l.length)).flatMap { $0 }.map { ($0, l.offset) }
        }
    }

    /// `volume` of the group `group` describes, read through its segments on the physical volumes
    /// of that group found anywhere on the image; nil when it is not linear or one is missing.
    static func pieces(of volume: LVMPhysicalVolume.LogicalVolume, group: LVMPhysicalVolume, layout: Layout) -> LogicalVolumeSource? {
        guard let extentSize = group.extentSize else { return nil }
        var places: [String: (offset: UInt64, extentStart: UInt64)] = [:]
        for (pv, offset) in physicalVolumes(layout, partition: nil) where pv.volumeGroupUUID == group.volumeGroupUUID {
            if let member = group.members.first(where: { $0.uuid == pv.uuid }) { places[member.name] = (offset, member.extentStart) }
        }
        return LogicalVolumeSource(volume: volume, extentSize: extentSize, physicalVolumes: places, disk: layout.disk)
    }

    /// Opens the ext filesystem in logical volume "vg/lv".
    static func openLogicalVolume(_ name: String, options: Options) throws(Error) -> Opened {
        let image = options.image
        let layout = try locate(image: image, backingFiles: options.backingFiles)
        let pvs = physicalVolumes(layout, partition: options.partition)
        var available: [String] = []
        for (pv, offset) in pvs {
            for lv in pv.logicalVolumes {
                let full = "\(pv.volumeGroup ?? "?")/\(lv.name)"
                if !available.contains(full) { available.append(full) }
                guard full == name else { continue }
                // One run of extents is read in place; a linear volume in several runs (of any
                // physical volume of the group on this image) through its segments.
                let source: any ByteSource
                let location: Location
                if let extent = pv.extent(of: lv) {
                    source = layout.disk
                    location = Location(partition: options.partition, offset: offset + extent.offset, length: extent.length, type: nil)
                } else if let pieces = pieces(of: lv, group: pv, layout: layout) {
                    source = pieces
                    location = Location(partition: options.partition, offset: pieces.runs[0].diskOffset, length: pieces.size, type: nil)
                } else {
                    continue
                }
                do {
                    let inSource = source is LogicalVolumeSource ? 0 : location.offset
                    return Opened(filesystem: .ext(try Ext2Filesystem(source: source, offset: inSource, name: image)), location: location)
                } catch {
                    throw .damaged(path: image, partition: options.partition, reason: "logical volume \(name): \(error.operation)")
                }
            }
        }
        throw available.contains(name) ? .logicalVolumeNotContiguous(path: image, name: name)
                                       : .noSuchLogicalVolume(path: image, name: name, available: available)
    }
}
