import Dispatch
import Glibc
import ImgFormats
import ImgSystem
import Logging
import Synchronization

/// Makes a disk image from a `DiskLayout`: the table through libparted, each filesystem by its
/// own mkfs at its partition's offset and filled through libext2fs or mtools, and, when asked, GRUB
/// installed offline and the result verified. No root and no loop device. The image is built under
/// a hidden name beside the target and renamed into place only when everything succeeded, so
/// no failure or signal leaves a file that looks finished.
///
/// ```swift
/// let layout = DiskLayout(table: .gpt, partitions: [
///     .init(type: PartitionKind("esp")!, format: .vfat, origin: "esp"),
///     .init(type: PartitionKind("root")!, format: .ext4, copies: [.init(source: "rootfs.tar")], origin: "root"),
/// ])
/// let result = try Create.run(.init(image: "disk.img", layout: layout, bootloader: .hybrid), logger: logger)
/// ```
public enum Create {
    /// What to make, where, and how.
    public struct Options: Sendable {
        /// The image file to make.
        public var image: String
        /// The table, size and partitions.
        public var layout: DiskLayout
        /// Replace an existing image (only once the new one is complete).
        public var overwrite: Bool
        /// Install GRUB for this firmware after the filesystems are made (`InstallGrub`, offline).
        public var bootloader: InstallGrub.Firmware?
        /// With `bootloader`: UEFI through Debian's signed shim and GRUB.
        public var secureBoot: Bool
        /// Every identifier (disk and partition GUIDs, filesystem UUIDs, hash seeds, FAT serials)
        /// comes from this; nil: from `sourceDateEpoch`, else random.
        public var seed: String?
        /// SOURCE_DATE_EPOCH: the time recorded everywhere, and the latest an input file's time may be.
        public var sourceDateEpoch: Int64?
        /// Files of a directory input owned by the caller are stored as root's (as an unprivileged
        /// build means them); false keeps every owner as it is.
        public var callerOwnsAsRoot: Bool

        /// Options for `image` from `layout`.
        public init(image: String, layout: DiskLayout, overwrite: Bool = false, bootloader: InstallGrub.Firmware? = nil,
                    secureBoot: Bool = false, seed: String? = nil, sourceDateEpoch: Int64? = nil, callerOwnsAsRoot: Bool = true) {
            self.image = image
            self.layout = layout
            self.overwrite = overwrite
            self.bootloader = bootloader
            self.secureBoot = secureBoot
            self.seed = seed
            self.sourceDateEpoch = sourceDateEpoch
            self.callerOwnsAsRoot = callerOwnsAsRoot
        }
    }

    /// What was made.
    public struct Result: Sendable {
        /// One partition as made.
        public struct Partition: Sendable, Equatable {
            /// Its number in the table.
            public let number: Int
            /// Its first sector (of the layout's sector size).
            public let startSector: UInt64
            /// Its length in sectors.
            public let sectors: UInt64
            /// The type as the layout named it.
            public let type: String
            /// GPT: the partition's unique GUID.
            public let uuid: String?
            /// The filesystem made in it, if any.
            public let format: DiskLayout.Filesystem?
            /// The filesystem's UUID (ext, swap) or serial (vfat, "ABCD-1234").
            public let filesystemUUID: String?
            /// The GPT name and filesystem label.
            public let label: String?
        }
        /// The image's path.
        public let image: String
        /// The partition table's kind.
        public let table: DiskLayout.TableKind
        /// The image's size.
        public let sizeBytes: UInt64
        /// GPT: the disk GUID.
        public let diskGUID: String?
        /// The partitions in table order.
        public let partitions: [Partition]
        /// install-grub's result, with `bootloader`.
        public let grub: InstallGrub.Result?
        /// verify's verdict on the made image, with `bootloader`.
        public let bootable: Bool?
    }

    /// Makes `options.image`. Wraps Create's steps: checks, placement, libparted, mkfs, fill, GRUB.
    public static func run(_ options: Options, logger: Logger, interruption: Interruption = Interruption()) throws(CreateError) -> Result {
        let layout = options.layout
        let image = options.image
        try preflight(options)
        try CreateTools.require(for: layout)
        let identity = CreateIdentity(seed: options.seed, sourceDateEpoch: options.sourceDateEpoch, sectorSize: layout.sectorSize)
        var sources: [[TreeSource]] = []
        for partition in layout.partitions {
            var opened: [TreeSource] = []
            for copy in partition.copies {
                do throws(TreeSource.Error) {
                    opened.append(try TreeSource(path: copy.source, ownership: options.callerOwnsAsRoot ? .callerAsRoot : .asRecorded,
                                                 implicitDirectoryTime: identity.time))
                } catch {
                    throw .inputMissing(path: copy.source, reason: error.message)
                }
            }
            sources.append(opened)
        }
        try check(interruption)
        // A partition of fixed size needs no guess (a walk of its whole tree): if its contents do
        // not fit, filling it says so.
        var contentBytes = try layout.partitions.indices.map { index throws(CreateError) in
            let partition = layout.partitions[index]
            if let low = partition.sizeMin, low == partition.sizeMax { return UInt64(0) }
            return try CreateFilesystems.estimate(partition, sources: sources[index])
        }
        let bootIndex = options.bootloader.flatMap { _ in Self.bootPartitionIndex(layout) }
        // Without an ext partition /boot/grub goes on the EFI system partition.
        let grubIndex = bootIndex ?? layout.partitions.firstIndex { $0.type.isESP && $0.format == .vfat }
        if let firmware = options.bootloader, let grubIndex {
            // GRUB's files (each platform's modules, fonts, translations) go into /boot/grub there.
            let grub = firmware.targets.reduce(UInt64(0)) { $0 + GrubTools.moduleFilesBytes($1) }
            contentBytes[grubIndex] += grub + grub / 2 + (2 << 20)
        }
        let directory = Self.directory(of: image)
        // Not-yet-fitting contents are met by growing the partitions that may grow, and again.
        for attempt in 0..<4 {
            let placement = try layout.place(contentBytes: contentBytes)
            logger.info("\(layout.table.rawValue) layout, \(placement.diskBytes >> 20) MiB, \(layout.partitions.count) partitions")
            let staging: StagingImage
            do {
                staging = try StagingImage(directory: directory, name: Self.baseName(of: image))
            } catch {
                throw .cannotCreate(path: image, reason: "\(error.description); check that its directory exists and is writable")
            }
            do throws(CreateError) {
                let made = try build(options, placement: placement, bootIndex: bootIndex, identity: identity, sources: sources, into: staging.path,
                                     logger: logger, interruption: interruption)
                do {
                    try staging.commit(to: image, overwrite: options.overwrite)
                } catch where error.errno == EEXIST {
                    throw CreateError.imageExists(path: image)
                } catch {
                    throw CreateError.cannotCreate(path: image, reason: "\(error.description); check that its directory is writable")
                }
                return Result(image: image, table: layout.table, sizeBytes: placement.diskBytes, diskGUID: made.diskGUID,
                              partitions: made.partitions, grub: made.grub, bootable: made.bootable)
            } catch .contentsDoNotFit(let origin, let needed, let size) where attempt < 3 {
                staging.discard()
                // A filesystem filled up: grow its partition, when it may grow, and build again.
                guard let index = layout.partitions.firstIndex(where: { $0.origin == origin }) else {
                    throw .contentsDoNotFit(origin: origin, needed: needed, size: size)
                }
                let partition = layout.partitions[index]
                let had = placement.partitions[index].sectors * UInt64(layout.sectorSize)
                let grown = had + had / 4
                if let most = partition.sizeMax, had >= most / DiskLayout.alignment * DiskLayout.alignment {
                    throw .contentsDoNotFit(origin: origin, needed: grown, size: most)
                }
                logger.info("\(origin): \(had >> 20) MiB was too small for the contents; trying \(grown >> 20) MiB")
                contentBytes[index] = grown
            } catch {
                staging.discard()
                throw error
            }
        }
        throw .failed(step: "create", detail: "the contents did not fit after four sizes")
    }

    /// What can be refused before anything is made: the layout, the sector size, BIOS without a
    /// place for core.img, and what is at the image's path.
    static func preflight(_ options: Options) throws(CreateError) {
        let layout = options.layout
        let image = options.image
        try layout.validate()
        if layout.sectorSize != 512 {
            // libparted takes a file's sectors as 512 bytes; a loop device with 4096-byte blocks
            // gives it the disk's (CreateTable).
            guard LoopDevice.usable() else {
                throw .sectorSize(layout.sectorSize, reason: "libparted reads an image file as 512-byte sectors, so a 4096-byte table is written through a loop device with 4096-byte blocks, which needs root and /dev/loop-control. Run as root, or make the image with 512-byte sectors.")
            }
            if options.bootloader == .bios || options.bootloader == .hybrid {
                throw .sectorSize(layout.sectorSize, reason: "BIOS boots only from 512-byte sectors (GRUB's boot.img is one sector of 512 bytes). Use --bootloader uefi.")
            }
        }
        if let firmware = options.bootloader, firmware != .uefi, layout.table == .gpt, !layout.partitions.contains(where: { $0.type.isBIOSBoot }) {
            throw .invalidLayout(origin: "--bootloader \(firmware.rawValue)", detail: "GRUB for BIOS on a GPT disk embeds its core.img in a BIOS boot partition, and the layout has none. Add one first (--partition type=bios-boot,size=1M; in a definition Type=21686148-6449-6E6F-744E-656564454649 with SizeMinBytes=1M), or use --bootloader uefi.")
        }
        var status = stat()
        if lstat(image, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFREG else {
                throw .cannotCreate(path: image, reason: "it exists and is not a regular file; create makes image files (write one to a device with dd or qemu-img afterwards)")
            }
            guard options.overwrite else { throw .imageExists(path: image) }
        }
    }

    struct Made {
        let diskGUID: String?
        let partitions: [Result.Partition]
        let grub: InstallGrub.Result?
        let bootable: Bool?
    }

    /// Everything after placement, into the staging file `path`.
    static func build(_ options: Options, placement: DiskPlacement, bootIndex: Int?, identity: CreateIdentity, sources: [[TreeSource]], into path: String,
                      logger: Logger, interruption: Interruption) throws(CreateError) -> Made {
        let layout = options.layout
        guard truncate(path, off_t(placement.diskBytes)) == 0 else {
            throw .cannotCreate(path: options.image, reason: "truncate to \(placement.diskBytes) bytes: \(String(cString: strerror(errno))); check the free space of its filesystem")
        }
        try CreateTable.write(layout: layout, placement: placement, identity: identity, to: path, logger: logger,
                              interruption: interruption)
        try check(interruption)
        // ext filesystems are made and filled in this process, the others by their tools: the two
        // kinds go side by side, in disjoint byte ranges of the image, each kind in order (one
        // libext2fs user at a time: its error tables are set up unguarded).
        let formatted = layout.partitions.indices.filter { layout.partitions[$0].format != nil }
        let groups = [formatted.filter { layout.partitions[$0].format!.isExt }, formatted.filter { !layout.partitions[$0].format!.isExt }]
        let outcomes = Mutex<[Int: Swift.Result<String, CreateError>]>([:])
        DispatchQueue.concurrentPerform(iterations: groups.count) { group in
            for index in groups[group] {
                let outcome = Swift.Result { () throws(CreateError) -> String in
                    try CreateFilesystems.make(layout.partitions[index].format!, partition: layout.partitions[index],
                                               at: placement.partitions[index], image: path, identity: identity, index: index,
                                               sources: sources[index], interruption: interruption, logger: logger)
                }
                outcomes.withLock { $0[index] = outcome }
                if case .failure = outcome { break }
                if interruption.signal != nil { break }
            }
        }
        try check(interruption)
        let made = outcomes.withLock { $0 }
        for index in formatted {
            if case .failure(let error) = made[index] { throw error }
        }
        var partitions: [Result.Partition] = []
        for (index, partition) in layout.partitions.enumerated() {
            let placed = placement.partitions[index]
            let fsUUID = try made[index]?.get()
            partitions.append(.init(number: placed.number, startSector: placed.startSector, sectors: placed.sectors,
                                    type: partition.type.name,
                                    uuid: layout.table == .gpt ? identity.partitionUUID(partition, index: index).description : nil,
                                    format: partition.format, filesystemUUID: fsUUID, label: partition.label))
        }
        var grub: InstallGrub.Result?
        var bootable: Bool?
        if let firmware = options.bootloader {
            do {
                var install = InstallGrub.Options(image: path, strategy: .offline, bootPartition: bootIndex.map { placement.partitions[$0].number },
                                                  firmware: firmware, secureBoot: options.secureBoot)
                install.recordedTime = identity.time
                // The unfinished image is ours alone and goes if this fails: no copy to rename.
                install.writesInPlace = true
                // Its messages and result name the image as the user named it, not the hidden file.
                var quiet = logger
                quiet.logLevel = max(logger.logLevel, .notice)
                let installed = try InstallGrub.run(install, logger: quiet, interruption: interruption)
                let boot = installed.bootPartition
                grub = InstallGrub.Result(
                    image: options.image, strategy: installed.strategy, diskDevice: options.image,
                    bootPartition: .init(number: boot.number, device: options.image, filesystem: boot.filesystem, uuid: boot.uuid),
                    target: installed.target, firmware: installed.firmware, loaders: installed.loaders,
                    secureBoot: installed.secureBoot, grubInstallVersion: installed.grubInstallVersion, seconds: installed.seconds)
                logger.info("installed GRUB for \(firmware.rawValue) offline, /boot/grub on partition \(boot.number)")
            } catch {
                if case .interrupted(let signal) = error { throw .interrupted(signal: signal) }
                throw .failed(step: "install-grub", detail: error.description)
            }
            do {
                bootable = try Verify.run(.init(image: path), logger: logger).bootable
            } catch {
                throw .failed(step: "verify", detail: error.description)
            }
            guard bootable == true else {
                throw .failed(step: "verify", detail: "imgtool verify does not call the new image bootable; run it with -v on an image made without --bootloader to see why")
            }
        }
        return Made(diskGUID: layout.table == .gpt ? identity.diskGUID.description : nil, partitions: partitions, grub: grub, bootable: bootable)
    }

    /// Where /boot/grub goes: an XBOOTLDR partition, else the root partition, else the first
    /// other ext one; nil leaves it to install-grub (an ESP alone holds it).
    static func bootPartitionIndex(_ layout: DiskLayout) -> Int? {
        let ext = layout.partitions.indices.filter { layout.partitions[$0].format?.isExt == true }
        return ext.first { layout.partitions[$0].type.name == "xbootldr" }
            ?? ext.first { layout.partitions[$0].type.name.hasPrefix("root") }
            ?? ext.first
    }

    static func check(_ interruption: Interruption) throws(CreateError) {
        if let signal = interruption.signal { throw .interrupted(signal: signal) }
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func baseName(of path: String) -> String {
        path.lastIndex(of: "/").map { String(path[path.index(after: $0)...]) } ?? path
    }
}

extension Create.Result: JSONRepresentable {
    /// The document `imgtool create --json` prints.
    public var json: JSONValue {
        .object([
            "image": .string(image), "table": .string(table.rawValue), "sizeBytes": .uint(sizeBytes), "diskGUID": JSONValue(diskGUID),
            "partitions": .array(partitions.map { p in
                .object([
                    "number": JSONValue(p.number), "startSector": .uint(p.startSector), "sectors": .uint(p.sectors),
                    "type": .string(p.type), "uuid": JSONValue(p.uuid), "format": JSONValue(p.format?.rawValue),
                    "filesystemUUID": JSONValue(p.filesystemUUID), "label": JSONValue(p.label),
                ])
            }),
            "grub": grub?.json ?? .null, "bootable": bootable.map(JSONValue.bool) ?? .null,
        ])
    }
}
