import ImgSystem

/// Why install-grub refused or failed. `description` is the message a user reads: what is wrong
/// and what to do next. `exitStatus` is the documented exit code.
public enum InstallGrubError: Error, CustomStringConvertible, Sendable {
    /// Nothing exists at the path.
    case imageMissing(path: String)
    /// The path is not a regular file or block device; `kind` names what it is.
    case notAnImage(path: String, kind: String)
    /// The image could not be opened or read; `reason` is the system's message.
    case unreadable(path: String, reason: String)
    /// The image is 0 bytes long.
    case empty(path: String)
    /// The file is a virtual-disk container (`format`: "qcow2", "vmdk", ...), not a raw image.
    case container(path: String, format: String)
    /// The image is shorter than a sector, or a partition ends past its end; `detail` says which.
    case truncated(path: String, detail: String)
    /// The image has no partition table (`filesystem`: what fills it instead, if anything).
    case noPartitionTable(path: String, filesystem: String?)
    /// The partition table is unusable; `detail` is the parser's finding.
    case damagedPartitionTable(path: String, detail: String)
    /// msdos: the first partition starts at or before sector 1, leaving no room for core.img.
    case noPostMBRGap(path: String, firstPartitionStart: UInt64)
    /// msdos: the post-MBR gap has fewer sectors than core.img needs.
    case gapTooSmall(path: String, sectors: UInt64, needed: UInt64)
    /// GPT: no BIOS boot partition to embed core.img in.
    case noBIOSBootPartition(path: String)
    /// The partition table is one GRUB's BIOS install does not embed into (`table`: "mac").
    case unsupportedPartitionTable(path: String, table: String)
    /// GPT: BIOS boot partition `number` has fewer sectors than core.img needs.
    case biosBootTooSmall(path: String, number: Int, sectors: UInt64, needed: UInt64)
    /// No partition holds a filesystem for /boot/grub; `found` lists the filesystems there are.
    case noBootFilesystem(path: String, found: [String])
    /// The partition asked for cannot hold /boot/grub; `reason` says why.
    case bootPartitionInvalid(path: String, number: Int, reason: String)
    /// Several partitions could hold /boot/grub and none was chosen; `candidates` are their numbers.
    case ambiguousBootPartition(path: String, candidates: [Int])
    /// The boot filesystem has less free space (bytes) than GRUB's files need.
    case bootFilesystemFull(path: String, number: Int, free: UInt64, needed: UInt64)
    /// A UEFI install was asked for, and the image has no EFI system partition.
    case noESP(path: String)
    /// Secure Boot was asked for a BIOS-only install.
    case secureBootNeedsUEFI(path: String)
    /// A BIOS (or hybrid) install was asked for a disk laid out for `sectorSize`-byte sectors.
    case biosNeeds512ByteSectors(path: String, sectorSize: Int)
    /// EFI system partition `number` cannot take GRUB's files; `reason` says why (not FAT,
    /// damaged, too small).
    case espInvalid(path: String, number: Int, reason: String)
    /// Another imgtool run holds the image's lock.
    case busy(ImageLock.Error)
    /// The install runs on this kernel (no `Isolation`) and the process is not root.
    case notRoot(path: String)
    /// The offline strategy replaces the image with a changed copy made in its directory; the
    /// caller may not write one of the two (`what`).
    case notWritable(path: String, what: String)
    /// A program the install needs is not in PATH; `package` is the Debian package that has it.
    case toolMissing(tool: String, package: String)
    /// The strategy asked for cannot work on this kernel; `reason` says why.
    case strategyUnavailable(InstallGrub.Strategy, reason: String)
    /// No strategy could present the image as a disk; the reason each one gave.
    case noStrategyWorked(path: String, reasons: [String])
    /// The block device's boot partition is held by mounts, stacked devices or openers.
    case bootPartitionInUse(device: String, holders: [String])
    /// The session journal under /run/imgtool could not be started.
    case sessionJournal(SystemError)
    /// A system call failed.
    case system(SystemError)
    /// Attaching or detaching a loop device failed.
    case loopDevice(LoopDevice.Error)
    /// Mounting or unmounting the boot filesystem failed.
    case mount(Mount.Error)
    /// A device-mapper step failed.
    case deviceMapper(DeviceMapper.Error)
    /// A program imgtool runs could not be started.
    case subprocess(tool: String, Subprocess.Error)
    /// A step failed with an error of a kind not listed above.
    case other(any Error)
    /// A GRUB program (grub-install, grub-probe, ...) exited with `status`; `stderr` is what it printed.
    case grubToolFailed(tool: String, status: Int32, stderr: String)
    /// A signal (SIGINT, SIGTERM or SIGHUP) stopped the install; everything acquired was released.
    case interrupted(signal: Int32)
    /// Releasing resources failed; `after` is the error that ended the install first, nil when it had succeeded.
    case cleanupFailed([Session.CleanupFailure], after: String?)
    /// A killed run on the same image (stale session `session`) left something that could not be
    /// released before this run: a mount, a loop device, or an ESP write to undo.
    case leftovers(path: String, session: String, failures: [Session.CleanupFailure])
    /// The isolated VM (`Options.isolation`) could not run the job, or it failed there in a way
    /// that has no case above.
    case isolation(IsolationFailure)

    public var exitStatus: ExitStatus {
        switch self {
        case .imageMissing, .notAnImage, .unreadable: return .noInput
        case .empty, .container, .truncated, .noPartitionTable, .damagedPartitionTable, .noPostMBRGap, .gapTooSmall,
             .noBIOSBootPartition, .unsupportedPartitionTable, .biosBootTooSmall, .noBootFilesystem, .bootPartitionInvalid,
             .ambiguousBootPartition, .bootFilesystemFull, .noESP, .espInvalid, .secureBootNeedsUEFI, .biosNeeds512ByteSectors:
            return .badImage
        case .busy: return .busy
        case .notRoot, .notWritable: return .noPermission
        case .toolMissing, .strategyUnavailable: return .unavailable
        case .noStrategyWorked, .bootPartitionInUse, .sessionJournal, .system, .loopDevice, .mount, .deviceMapper,
             .subprocess, .other, .grubToolFailed, .cleanupFailed, .leftovers:
            return .failure
        case .interrupted: return .failure
        case .isolation(let e): return e.exitStatus
        }
    }

    /// The process exit code: `exitStatus`, or 128 + signal after an interruption.
    public var exitCode: Int32 {
        switch self {
        case .interrupted(let signal): return 128 + signal
        case .isolation(let e): return e.exitCode
        default: return exitStatus.rawValue
        }
    }

    public var description: String {
        switch self {
        case .imageMissing(let p):
            return "\(p) does not exist. Check the path, or create an image first (see TestImages/make-disk.sh)."
        case .notAnImage(let p, let kind):
            return "\(p) is \(kind), not a disk image. Give a raw image file or a block device."
        case .unreadable(let p, let reason):
            return "cannot read \(p): \(reason). Check its permissions."
        case .empty(let p):
            return "\(p) is empty (0 bytes). Partition it and make a filesystem for /boot first."
        case .container(let p, let format):
            let convert = DiskContainer.Format(rawValue: format)?.rawCopyCommand(p) ?? "convert it to a raw image"
            return "\(p) is a \(format) container, not a raw disk image, and this machine's kernel cannot present it as a disk. Run install-grub with --isolate (qemu opens the container itself), or convert it (\(convert)) and install into the raw copy. Nothing was changed."
        case .truncated(let p, let detail):
            return "\(p) is truncated: \(detail). Recreate or restore the image; nothing was changed."
        case .noPartitionTable(let p, let fs):
            let what = fs.map { "a bare \($0) filesystem and no partition table" } ?? "no partition table"
            return "\(p) has \(what). GRUB needs a partitioned disk (msdos, or GPT with a BIOS boot partition) to embed core.img; partition the image, e.g. with sfdisk or sgdisk."
        case .damagedPartitionTable(let p, let detail):
            return "the partition table of \(p) is damaged: \(detail). Repair it (sgdisk --verify, sfdisk) first."
        case .noPostMBRGap(let p, let start):
            return "\(p): the msdos partition label has no post-MBR gap (the first partition starts at sector \(start)), so GRUB cannot embed core.img. Move the first partition to sector 2048, or use GPT with a BIOS boot partition."
        case .gapTooSmall(let p, let sectors, let needed):
            return "\(p): the post-MBR gap has \(sectors) sectors but GRUB's core.img needs \(needed). Start the first partition at sector 2048 (1 MiB) to leave room."
        case .noBIOSBootPartition(let p):
            return "\(p) has a GPT label without a BIOS boot partition, so GRUB (i386-pc) cannot embed core.img. Add one (1 MiB, type EF02, e.g. `sgdisk -n 0:0:+1M -t 0:ef02`)."
        case .unsupportedPartitionTable(let p, let table):
            return "\(p) has a \(table) partition table (an Apple partition map), which GRUB's BIOS install cannot embed core.img into. Give the image an msdos label, or GPT with a BIOS boot partition."
        case .biosBootTooSmall(let p, let n, let sectors, let needed):
            return "\(p): BIOS boot partition \(n) has \(sectors) sectors but GRUB's core.img needs \(needed). Make it at least 1 MiB."
        case .noBootFilesystem(let p, let found):
            let seen = found.isEmpty ? "no filesystem at all" : "only " + found.joined(separator: ", ")
            return "\(p) has no partition with a filesystem GRUB can read and the kernel can write (\(seen)). Make one for /boot, e.g. mkfs.ext4 on a Linux partition."
        case .bootPartitionInvalid(let p, let n, let reason):
            return "\(p): partition \(n) cannot hold /boot/grub: \(reason). Pick another with --boot-partition."
        case .ambiguousBootPartition(let p, let candidates):
            return "\(p) has several partitions that could hold /boot/grub (\(candidates.map(String.init).joined(separator: ", "))) and none is marked. Choose one with --boot-partition N."
        case .bootFilesystemFull(let p, let n, let free, let needed):
            return "\(p): the filesystem on partition \(n) has \(free / 1024) KiB free, but GRUB's platform files alone take \(needed / 1024) KiB. Grow it or free space first (nothing was changed)."
        case .noESP(let p):
            return "\(p) has no EFI system partition, so there is nowhere to put a UEFI loader. Add one (GPT type EF00, or MBR type 0xEF, with a FAT filesystem: e.g. `sgdisk -n 0:0:+256M -t 0:ef00` and mkfs.vfat), or install for BIOS with --firmware bios. Nothing was changed."
        case .biosNeeds512ByteSectors(let p, let size):
            let next = "install for UEFI (--firmware uefi, with an EFI system partition)"
            return "\(p) is laid out for \(size)-byte sectors, and BIOS firmware reads a disk in 512-byte sectors, so GRUB for BIOS cannot boot it; \(next). Nothing was changed."
        case .secureBootNeedsUEFI(let p):
            return "\(p): Secure Boot is a UEFI feature, and this install is for BIOS only. Install for UEFI (--firmware uefi or hybrid, with an EFI system partition) or leave out --secure-boot. Nothing was changed."
        case .espInvalid(let p, let n, let reason):
            return "\(p): EFI system partition \(n) cannot take GRUB's UEFI files: \(reason). Nothing was changed."
        case .busy(let e):
            return e.description
        case .notWritable(let p, let what):
            return "\(p): the offline strategy (no root, no loop device) writes a changed copy next to the image and renames it over the image, and this user may not write \(what). Give this user write access to both, or use a strategy that writes in place: run as root for a loop strategy (with --isolate: --strategy block-device). Nothing was changed."
        case .notRoot(let p):
            return "install-grub needs root to attach loop devices and mount \(p)'s boot partition. Run it as root (e.g. `sudo imgtool install-grub \(p)`), or use `--strategy offline`, which needs no root; `imgtool inspect` and `verify` need no root."
        case .toolMissing(let tool, let package):
            return "\(tool) is not installed. Install the Debian package \(package) (apt-get install \(package))."
        case .strategyUnavailable(let s, let reason):
            return "strategy \(s.rawValue) is not available on this machine: \(reason)"
        case .noStrategyWorked(let p, let reasons):
            return "no strategy can present \(p) as a disk: \(reasons.joined(separator: "; "))"
        case .bootPartitionInUse(let device, let holders):
            return "\(device) is in use (\(holders.joined(separator: ", "))); unmount it or stop its users, then run again"
        case .sessionJournal(let e):
            return "cannot start the session journal (\(e)); check that /run/imgtool is writable"
        case .system(let e):
            return e.description
        case .loopDevice(let e):
            return e.description
        case .mount(let e):
            return e.description
        case .deviceMapper(let e):
            return e.description
        case .other(let e):
            return "\(e)"
        case .subprocess(let tool, let e):
            return tool == "grub-mkimage" ? "could not run grub-mkimage to size core.img: \(e)" : "could not run \(tool): \(e)"
        case .grubToolFailed(let tool, let status, let stderr):
            let trimmed = stderr.split(separator: "\n").suffix(20).joined(separator: "\n")
            return "\(tool) failed (exit \(status)):\n\(trimmed)"
        case .interrupted(let signal):
            return Session.Interrupted(signal: signal).description
        case .isolation(let e):
            return e.description
        case .leftovers(let path, let session, let failures):
            return "\(path) still has what a killed imgtool run (session \(session)) left behind, and it could not be released:\n"
                + failures.map { "  - \($0)" }.joined(separator: "\n")
                + "\nSee imgtool status; release it with imgtool cleanup --session \(session), then run again. Nothing was changed by this run."
        case .cleanupFailed(let failures, let after):
            let list = failures.map { "  - \($0)" }.joined(separator: "\n")
            let first = after.map { "\($0)\nThen cleanup failed too:\n" } ?? "cleanup failed:\n"
            return first + list + "\nThese are still held; release them by hand (umount, losetup -d)."
        }
    }
}

extension InstallGrubError {
    /// A failed step's error as the case for its kind, so callers can tell a loop device's failure
    /// from a mount's without parsing text.
    init(wrapping error: any Error) {
        switch error {
        case let e as InstallGrubError: self = e
        case let e as SystemError: self = .system(e)
        case let e as LoopDevice.Error: self = .loopDevice(e)
        case let e as Mount.Error: self = .mount(e)
        case let e as DeviceMapper.Error: self = .deviceMapper(e)
        case let e as Subprocess.Error: self = .subprocess(tool: "grub-install", e)
        case let e as Session.Interrupted: self = .interrupted(signal: e.signal)
        default: self = .other(error)
        }
    }
}
