import CParted
import Glibc
import Synchronization

/// Writes a fresh partition table into an image file through libparted, as parted and Debian's
/// partman write one: `ped_device_get` on the file, a new disk label, each partition added with a
/// constraint that holds it to its place and to the alignment, flags and names, one commit. No
/// root: libparted opens a regular file like any other, and nothing is told to a kernel.
public enum PartedTable {
    /// One partition, in sectors of the device (512 for a file: libparted's size for files).
    public struct Entry: Sendable {
        /// A primary partition, or a logical one inside the extended partition.
        public enum Kind: Sendable {
            /// One of the four MBR slots (or any GPT entry).
            case primary
            /// Inside the extended partition, behind an EBR.
            case logical
        }
        /// Primary or logical.
        public var kind: Kind
        /// The first sector.
        public var startSector: UInt64
        /// The length in sectors.
        public var sectors: UInt64
        /// The filesystem name libparted knows ("ext4", "fat32", "linux-swap"), which sets the MBR
        /// type byte or GPT type GUID it derives from one; nil: none.
        public var filesystem: String?
        /// libparted's flags to set (PED_PARTITION_*): boot, esp, bios_grub, legacy_boot, swap...
        public var flags: [Flag]
        /// GPT partition name.
        public var name: String?

        /// An entry; flags and name optional.
        public init(kind: Kind = .primary, startSector: UInt64, sectors: UInt64, filesystem: String? = nil,
                    flags: [Flag] = [], name: String? = nil) {
            self.kind = kind
            self.startSector = startSector
            self.sectors = sectors
            self.filesystem = filesystem
            self.flags = flags
            self.name = name
        }
    }

    /// The libparted partition flags imgtool sets.
    public enum Flag: Sendable {
        /// The flags.
        case boot, esp, biosGrub, legacyBoot, swap, lvm, raid
        var ped: PedPartitionFlag {
            switch self {
            case .boot: return PED_PARTITION_BOOT
            case .esp: return PED_PARTITION_ESP
            case .biosGrub: return PED_PARTITION_BIOS_GRUB
            case .legacyBoot: return PED_PARTITION_LEGACY_BOOT
            case .swap: return PED_PARTITION_SWAP
            case .lvm: return PED_PARTITION_LVM
            case .raid: return PED_PARTITION_RAID
            }
        }
    }

    /// What libparted said when it refused, with the call that failed.
    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// libparted keeps global state (its device list, the exception handler): one writer at a time.
    private static let lock = Mutex<Void>(())
    /// What libparted's exceptions said during the write that holds `lock`; the handler is a C
    /// function and can capture nothing.
    nonisolated(unsafe) private static var messages: [String] = []

    /// Writes `label` ("gpt" or "msdos") with `entries` into `image`, which has its final size;
    /// `extended` (msdos) is the extended partition that holds the logical ones. `alignment` is the
    /// grain in sectors every start and end keeps to. Wraps ped_device_get(3), ped_disk_new_fresh,
    /// ped_disk_add_partition, ped_partition_set_flag, ped_partition_set_name, ped_disk_commit_to_dev.
    public static func write(image: String, label: String, entries: [Entry], extended: (start: UInt64, sectors: UInt64)?,
                             alignment: UInt64) throws(Error) {
        try lock.withLock { _ throws(Error) in
            messages = []
            ped_exception_set_handler { exception in
                guard let exception else { return PED_EXCEPTION_UNHANDLED }
                let text = String(cString: exception.pointee.message)
                PartedTable.messages.append(text)
                // Any question (fix? ignore?) is a failure: a fresh table should raise none.
                let options = exception.pointee.options.rawValue
                return options & PED_EXCEPTION_CANCEL.rawValue != 0 ? PED_EXCEPTION_CANCEL : PED_EXCEPTION_UNHANDLED
            }
            defer { ped_exception_set_handler(nil) }
            func fail(_ call: String) -> Error {
                Error(description: "\(call) on \(image)" + (messages.isEmpty ? " failed" : ": " + messages.joined(separator: "; ")))
            }
            guard let device = ped_device_get(image) else { throw fail("ped_device_get") }
            // ped_device_get caches the device; destroying it drops the cache, so a later call sees a new size.
            defer { ped_device_destroy(device) }
            guard ped_device_open(device) != 0 else { throw fail("ped_device_open") }
            defer { ped_device_close(device) }
            guard let type = ped_disk_type_get(label), let disk = ped_disk_new_fresh(device, type) else {
                throw fail("ped_disk_new_fresh(\(label))")
            }
            defer { ped_disk_destroy(disk) }
            if label == "msdos" { ped_disk_set_flag(disk, PED_DISK_CYLINDER_ALIGNMENT, 0) }
            let grain = PedSector(alignment)
            func add(_ type: PedPartitionType, start: UInt64, sectors: UInt64, filesystem: String?, what: String) throws(Error) -> UnsafeMutablePointer<PedPartition> {
                let first = PedSector(start), last = PedSector(start + sectors - 1)
                let fsType = filesystem.flatMap { ped_file_system_type_get($0) }
                guard let part = ped_partition_new(disk, type, fsType, first, last) else { throw fail("ped_partition_new \(what)") }
                // Exactly here, and aligned: libparted refuses a start or end off the grain.
                let startAlign = ped_alignment_new(0, grain), endAlign = ped_alignment_new(grain - 1, grain)
                let startRange = ped_geometry_new(device, first, 1), endRange = ped_geometry_new(device, last, 1)
                defer {
                    ped_alignment_destroy(startAlign); ped_alignment_destroy(endAlign)
                    ped_geometry_destroy(startRange); ped_geometry_destroy(endRange)
                }
                let constraint = ped_constraint_new(startAlign, endAlign, startRange, endRange, 1, device.pointee.length)
                defer { ped_constraint_destroy(constraint) }
                guard ped_disk_add_partition(disk, part, constraint) != 0 else {
                    ped_partition_destroy(part)
                    throw fail("ped_disk_add_partition \(what) (sectors \(first)-\(last))")
                }
                return part
            }
            var extendedAdded = false
            for (index, entry) in entries.enumerated() {
                // The extended partition after the primaries, which libparted numbers in the order added.
                if entry.kind == .logical, !extendedAdded, let extended {
                    _ = try add(PED_PARTITION_EXTENDED, start: extended.start, sectors: extended.sectors, filesystem: nil, what: "extended")
                    extendedAdded = true
                }
                let what = "partition \(index + 1)"
                let part = try add(entry.kind == .logical ? PED_PARTITION_LOGICAL : PED_PARTITION_NORMAL,
                                   start: entry.startSector, sectors: entry.sectors, filesystem: entry.filesystem, what: what)
                for flag in entry.flags where ped_partition_set_flag(part, flag.ped, 1) == 0 {
                    throw fail("ped_partition_set_flag \(what) \(flag)")
                }
                if let name = entry.name, ped_partition_set_name(part, name) == 0 { throw fail("ped_partition_set_name \(what)") }
            }
            guard ped_disk_commit_to_dev(disk) != 0 else { throw fail("ped_disk_commit_to_dev") }
        }
    }
}
