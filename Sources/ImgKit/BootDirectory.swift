import Glibc
import ImgFormats
import ImgSystem

/// The directory grub-install gets as --boot-directory, inside the mounted boot filesystem.
enum BootDirectory {
    /// `<mnt>/boot` on a root filesystem, `<mnt>` on a separate /boot filesystem (which holds
    /// `grub/` at its top and no `boot/`). Creates `boot/grub` where missing. A symbolic link on
    /// the way is refused: the image's links must not steer grub-install's writes onto the host.
    /// Wraps lstat(2) and mkdir(2).
    /// A device.map that a killed run left (its teardown never ran) is removed: it names a loop
    /// device that no longer exists, and grub-install in the booted system would believe it.
    static func prepare(mountPoint: String, plan: InstallPlan) throws(InstallGrubError) -> String {
        let boot = isDirectory("\(mountPoint)/grub") && !exists("\(mountPoint)/boot")
            ? mountPoint : "\(mountPoint)/boot"
        for dir in [boot, "\(boot)/grub"] where !isDirectory(dir) {
            if exists(dir) {
                let inside = dir.dropFirst(mountPoint.count)
                throw .bootPartitionInvalid(path: plan.image, number: plan.bootPartition.number, reason: "\(inside) in the boot filesystem is not a directory (a symbolic link or a file); imgtool will not follow or replace it")
            }
            do { try systemCall("mkdir", on: dir) { mkdir(dir, 0o755) } } catch { throw .system(error) }
        }
        let map = "\(boot)/grub/device.map"
        if let text = try? readTextFile(map), text.hasPrefix(temporaryMapMarker) {
            do { try systemCall("unlink", on: map) { unlink(map) } } catch { throw .system(error) }
        }
        return boot
    }

    /// The first line of the device.map imgtool writes for grub-install, which tells a leftover of
    /// a killed run from a map of the image's own. GRUB reads `#` lines as comments.
    static let temporaryMapMarker = "# imgtool session "

    /// Whether there is something at `path`, a symbolic link included. Wraps lstat(2).
    static func exists(_ path: String) -> Bool {
        (try? fileStatus(path, followingLinks: false)) != nil
    }

    /// Writes grub/device.map for grub-install and puts back what was there before (or nothing)
    /// when the session closes: a map naming /dev/loopN means nothing once the image is detached.
    /// Wraps open(2), write(2) and unlink(2).
    static func writeDeviceMap(_ map: DeviceMap, bootDirectory: String, session: Session) throws(SystemError) {
        let path = "\(bootDirectory)/grub/device.map"
        let previous = try? readTextFile(path)
        session.onClose(path) {
            if let previous { try writeFile(path, Array(previous.utf8)) } else { try systemCall("unlink", on: path) { unlink(path) } }
        }
        try writeFile(path, Array((temporaryMapMarker + "\(session.id): for grub-install only, removed when the session ends\n" + map.text).utf8))
    }

    /// Whether `path` is a directory and not a symbolic link to one. Wraps lstat(2).
    static func isDirectory(_ path: String) -> Bool {
        guard let st = try? fileStatus(path, followingLinks: false) else { return false }
        return (st.st_mode & S_IFMT) == S_IFDIR
    }
}
