/// Exit codes of the imgtool command, one per kind of failure, so scripts can tell them apart.
/// They follow sysexits(3) where a meaning fits. Documented in README.md.
public enum ExitStatus: Int32, Sendable, CaseIterable {
    /// The command did what it was asked.
    case success = 0
    /// An operation failed after pre-flight checks passed: a kernel call, grub-install, a mount.
    case failure = 1
    /// The command line does not fit the command: an unknown option, a missing argument.
    case usage = 64
    /// The image is not usable for the job: empty, truncated, no partition table, no room for GRUB,
    /// no filesystem GRUB can read.
    case badImage = 65
    /// The image path does not exist, cannot be read, or is not a regular file or block device.
    case noInput = 66
    /// A tool or kernel feature the job needs is missing (grub-install, udevadm, loop devices, a strategy).
    case unavailable = 69
    /// `create`: the image already exists (and `--overwrite` was not given), or cannot be made there.
    case cannotCreate = 73
    /// Another imgtool holds the image.
    case busy = 75
    /// The job needs root.
    case noPermission = 77
    /// `create`: the layout is invalid (an unknown key or type, overlapping or oversized
    /// partitions, an ESP too small for FAT32) or its contents do not fit.
    case layout = 78
}
