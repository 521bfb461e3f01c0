import Glibc
import ImgFormats
import ImgSystem

/// Reading files from an image's ext2/3/4 filesystems without mounting it: finds the filesystems
/// (the partitions, or a bare filesystem filling the image) and opens one. What `imgtool ls` and
/// `imgtool cat` are made of, and how to get the list that `OSInspection.inspect` takes.
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

        /// Whether libblkid found ext2, ext3 or ext4, the filesystems `open` reads.
        public var isExt: Bool { type.map(ImageFiles.extTypes.contains) ?? false }
    }

    /// An opened filesystem and where it is.
    public struct Opened: Sendable {
        /// The filesystem, read through libext2fs.
        public let filesystem: Ext2Filesystem
        /// The partition (or whole image) it fills.
        public let location: Location
    }

    /// Which filesystem to open.
    public struct Options: Sendable {
        /// The image file or block device.
        public var image: String
        /// The partition; nil: the image itself when it has no partition table, else its only
        /// ext2/3/4 partition.
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
    }

    static let extTypes: Set<String> = ["ext2", "ext3", "ext4"]

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
        return Layout(disk: source, hasTable: true, locations: locations)
    }

    /// The ext2/3/4 filesystems of `image`, in the form `OSInspection.inspect` takes.
    static func extFilesystems(image: String) throws(Error) -> [OSInspection.Filesystem] {
        try locate(image: image, backingFiles: false).locations.filter(\.isExt).map { .init(partition: $0.partition, offset: $0.offset) }
    }

    /// Opens the ext2/3/4 filesystem in `partition`; without one, the image itself when it has no
    /// partition table, else its only ext2/3/4 partition (several are an error listing them).
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
        } else if !hasTable {
            location = locations[0]
        } else {
            let ext = locations.filter(\.isExt)
            guard !ext.isEmpty else {
                throw .noExtFilesystem(path: image, found: locations.compactMap { l in
                    l.type.map { "\($0) on partition \(l.partition!)" } })
            }
            guard ext.count == 1 else {
                throw .ambiguous(path: image, candidates: ext.map { "partition \($0.partition!) (\($0.type!))" })
            }
            location = ext[0]
        }
        guard location.isExt else { throw .notExt(path: image, partition: location.partition, found: location.type) }
        do {
            return Opened(filesystem: try Ext2Filesystem(source: layout.disk, offset: location.offset, name: image), location: location)
        } catch {
            throw .damaged(path: image, partition: location.partition, reason: error.operation)
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
        /// The chosen partition (or whole image, `partition` nil) holds no ext2/3/4; `found` is what libblkid found there.
        case notExt(path: String, partition: Int?, found: String?)
        /// No partition holds ext2/3/4; `found` lists what the partitions hold.
        case noExtFilesystem(path: String, found: [String])
        /// No partition was given and several hold ext2/3/4; `candidates` names them.
        case ambiguous(path: String, candidates: [String])
        /// libext2fs could not open the filesystem; `reason` is its message.
        case damaged(path: String, partition: Int?, reason: String)
        /// A path inside the filesystem failed.
        case file(Ext2Filesystem.Error, image: String, partition: Int?)
        /// `read`'s output failed (the caller's, e.g. writing to standard output); reading stopped.
        case output(path: String, SystemError)
        /// No physical volume of the image holds logical volume `name`; `available` lists those there are.
        case noSuchLogicalVolume(path: String, name: String, available: [String])
        /// Logical volume `name` does not lie in one run of extents of one physical volume here.
        case logicalVolumeNotContiguous(path: String, name: String)
        /// `run` was given an `isolation`: the filesystem it opens would live in the VM.
        case isolatedOpen(path: String)
        /// The isolated VM (`Options.isolation`) could not run the job.
        case isolation(IsolationFailure)

        public var exitStatus: ExitStatus {
            switch self {
            case .cannotOpen, .unreadable: return .noInput
            case .backingNotOpened: return .usage
            case .noPartitionTable, .noSuchPartition, .notExt, .noExtFilesystem, .ambiguous, .damaged, .container,
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
                return "\(place) holds no ext2/3/4 filesystem (\(what)); imgtool ls and cat read ext2, ext3 and ext4 only."
            case .noExtFilesystem(let p, let found):
                let seen = found.isEmpty ? "no filesystem at all" : "only " + found.joined(separator: ", ")
                return "\(p) has no ext2/3/4 filesystem (\(seen)); imgtool ls and cat read ext2, ext3 and ext4 only."
            case .ambiguous(let p, let candidates):
                return "\(p) has \(candidates.count) ext2/3/4 filesystems: \(candidates.joined(separator: ", ")). Choose one with --partition N."
            case .damaged(let p, let n, let reason):
                let place = n.map { "partition \($0) of \(p)" } ?? p
                return "libext2fs cannot open the filesystem in \(place): \(reason). It may be damaged; check a copy with e2fsck -n."
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
                return "\(p): logical volume \(name) is not one run of extents on one physical volume of this image (several segments with gaps, several disks, or a type other than linear); imgtool reads only such volumes. Run imgtool inspect to see its segments."
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
                guard full == name, let extent = pv.extent(of: lv) else { continue }
                let location = Location(partition: options.partition, offset: offset + extent.offset, length: extent.length, type: nil)
                do {
                    return Opened(filesystem: try Ext2Filesystem(source: layout.disk, offset: location.offset, name: image),
                                  location: location)
                } catch {
                    throw .damaged(path: image, partition: options.partition, reason: "logical volume \(name): \(error.operation)")
                }
            }
        }
        throw available.contains(name) ? .logicalVolumeNotContiguous(path: image, name: name)
                                       : .noSuchLogicalVolume(path: image, name: name, available: available)
    }
}
