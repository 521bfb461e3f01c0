import Glibc
import ImgSystem

/// Writes GRUB's UEFI files into the EFI system partition without mounting it: mtools, through
/// the partition's device node, merging into what is there (other loaders stay) and overwriting
/// GRUB's own files. This kernel has no vfat; mtools needs none.
enum ESPWriter {
    /// Copies `staging`'s EFI directory (and, when /boot/grub lives on the ESP, its boot
    /// directory, without the device.map meant for grub-install only) into the FAT filesystem on
    /// `device`. Wraps mcopy(1) and mdel(1).
    static func copy(staging: String, bootOnESP: Bool, to device: String, session: Session) throws {
        let sources = [staging + "/EFI"] + (bootOnESP ? [staging + "/boot"] : [])
        try session.step("mcopy")
        // MTOOLS_SKIP_CHECK: mtools would otherwise insist on a floppy-like geometry for the device.
        try run(["env", "MTOOLS_SKIP_CHECK=1", "mcopy", "-s", "-o", "-i", device] + sources + ["::/"], session: session)
        if bootOnESP, BootDirectory.exists(staging + "/boot/grub/device.map") {
            try run(["env", "MTOOLS_SKIP_CHECK=1", "mdel", "-i", device, "::/boot/grub/device.map"], session: session)
        }
        // mtools writes through the device's page cache; the device stays open (imgtool holds its
        // loop device), so closing it flushes nothing, and detaching a loop device drops what
        // was not flushed. Wraps open(2) and fsync(2).
        let handle = try FileHandle(path: device, flags: O_RDONLY)
        try systemCall("fsync", on: device) { fsync(handle.fd) }
        session.logger.info("copied \(sources.map { String($0.dropFirst(staging.count)) }.joined(separator: " and ")) into \(device)")
    }

    private static func run(_ arguments: [String], session: Session) throws {
        let r = try Subprocess.run(["setpriv", "--pdeathsig", "KILL", "--"] + arguments, interruption: session.interruption)
        try session.checkpoint()
        guard r.succeeded else { throw InstallGrubError.grubToolFailed(tool: arguments[2], status: r.status, stderr: r.stderr) }
    }
}
