import Glibc
import ImgSystem
import Logging

/// The distribution's GRUB tools, as install-grub uses them.
enum GrubTools {
    static let target = GrubTarget.i386PC
    static let moduleDirectory = "/usr/lib/grub/i386-pc"

    /// Fails with the Debian package to install when a tool or GRUB's i386-pc files are missing.
    static func requireInstalled(needsUdevadm: Bool) throws(InstallGrubError) {
        if Subprocess.find("grub-install") == nil { throw .toolMissing(tool: "grub-install", package: "grub2-common") }
        if access("\(moduleDirectory)/boot.img", R_OK) != 0 {
            throw .toolMissing(tool: "GRUB's i386-pc boot files (\(moduleDirectory))", package: "grub-pc-bin")
        }
        if needsUdevadm && Subprocess.find("udevadm") == nil {
            throw .toolMissing(tool: "udevadm (grub-probe asks it where a partition starts)", package: "udev")
        }
    }

    /// Bytes of the regular files in GRUB's i386-pc directory: what grub-install copies at least.
    static func moduleFilesBytes() -> UInt64 {
        var total: UInt64 = 0
        var st = stat()
        for name in directoryEntries(moduleDirectory) {
            guard lstat("\(moduleDirectory)/\(name)", &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            total += UInt64(st.st_size)
        }
        return total
    }

    /// The version of the GRUB that grub-install installs, e.g. "2.06-13+deb12u2": read from the
    /// modinfo.sh that ships with the i386-pc files (grub_package_version), which costs no process;
    /// else from `grub-install --version` ("grub-install (GRUB) 2.06-13+deb12u2").
    static func version() -> String? {
        if let text = try? readTextFile("\(moduleDirectory)/modinfo.sh"),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("grub_package_version=") }) {
            return String(line.dropFirst("grub_package_version=".count).filter { $0 != "\"" && $0 != "'" })
        }
        guard let r = try? Subprocess.run(["grub-install", "--version"]), r.succeeded else { return nil }
        return r.stdout.split(whereSeparator: \.isWhitespace).last.map(String.init)
    }

    /// Size in sectors of the core.img grub-install would embed with `modules`, measured by
    /// building it into an unlinked-at-once temp file (grub-mkimage fsyncs, so no pipe). The prefix
    /// string's length barely matters; use a typical one.
    static func coreImageSectors(modules: [String], logger: Logger) throws(InstallGrubError) -> UInt64 {
        guard Subprocess.find("grub-mkimage") != nil else { throw .toolMissing(tool: "grub-mkimage", package: "grub-common") }
        var template = Array("/tmp/imgtool-core-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else { throw .system(SystemError("mkostemp", on: "/tmp", errno: errno)) }
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { unlink(path); close(fd) }
        let r: Subprocess.Result
        do {
            r = try Subprocess.run(["grub-mkimage", "-O", target.rawValue, "-d", moduleDirectory, "-p", "(,msdos1)/boot/grub",
                                    "-o", path] + modules)
        } catch let error as Subprocess.Error {
            throw .subprocess(tool: "grub-mkimage", error)
        } catch {
            throw InstallGrubError(wrapping: error)
        }
        guard r.succeeded else { throw .grubToolFailed(tool: "grub-mkimage", status: r.status, stderr: r.stderr) }
        var st = stat()
        fstat(fd, &st)
        let sectors = (UInt64(st.st_size) + 511) / 512
        logger.debug("core.img would take \(sectors) sectors", metadata: ["modules": "\(modules)"])
        return sectors
    }
}
