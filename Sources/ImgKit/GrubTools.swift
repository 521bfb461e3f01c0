import Glibc
import ImgSystem
import Logging

/// The distribution's GRUB tools, as install-grub uses them.
enum GrubTools {
    static let moduleDirectory = GrubTarget.i386PC.moduleDirectory

    /// Fails with the Debian package to install when a tool or GRUB's files for `targets` are
    /// missing, or, for UEFI, mtools, which writes the EFI system partition. The offline strategy
    /// runs grub-mkimage instead of grub-install, and mtools for any FAT it writes (`writesFAT`).
    /// Wraps access(2).
    static func requireInstalled(needsUdevadm: Bool, targets: [GrubTarget] = [.i386PC], offline: Bool = false,
                                 writesFAT: Bool = false) throws(InstallGrubError) {
        let (installer, package) = offline ? ("grub-mkimage", "grub-common") : ("grub-install", "grub2-common")
        if Subprocess.find(installer) == nil { throw .toolMissing(tool: installer, package: package) }
        for target in targets where !accessible("\(target.moduleDirectory)/moddep.lst", R_OK) {
            throw .toolMissing(tool: "GRUB's \(target.rawValue) files (\(target.moduleDirectory))", package: target.package)
        }
        for tool in offline ? ["mcopy", "mmd"] : ["mcopy"] where (targets.contains(.x86_64EFI) || writesFAT) && Subprocess.find(tool) == nil {
            throw .toolMissing(tool: "\(tool) (it writes FAT: the EFI system partition, or a FAT /boot offline)", package: "mtools")
        }
        if needsUdevadm && Subprocess.find("udevadm") == nil {
            throw .toolMissing(tool: "udevadm (grub-probe asks it where a partition starts)", package: "udev")
        }
    }

    /// Bytes of the regular files in GRUB's directory for `target`: what grub-install copies at
    /// least. Wraps lstat(2).
    static func moduleFilesBytes(_ target: GrubTarget = .i386PC) -> UInt64 {
        var total: UInt64 = 0
        let directory = target.moduleDirectory
        for name in directoryEntries(directory) {
            guard let st = try? fileStatus("\(directory)/\(name)", followingLinks: false),
                  (st.st_mode & S_IFMT) == S_IFREG else { continue }
            total += UInt64(st.st_size)
        }
        return total
    }

    /// Debian's signed loaders, which `grub-install --uefi-secure-boot` copies: shim (shim-signed)
    /// becomes BOOTX64.EFI, with MokManager beside it, and the signed GRUB (grub-efi-amd64-signed)
    /// grubx64.efi.
    static let signedLoaders = [GrubFiles.shim: "shim-signed", GrubFiles.mokManager: "shim-signed",
                                GrubFiles.signedGrub: "grub-efi-amd64-signed"]

    /// Fails with the Debian package to install when a signed loader is missing. Wraps access(2).
    static func requireSigned() throws(InstallGrubError) {
        for (path, package) in signedLoaders.sorted(by: { $0.key < $1.key }) where !accessible(path, R_OK) {
            throw .toolMissing(tool: "\(path) (for --secure-boot)", package: package)
        }
    }

    /// Bytes of the signed loaders, plus a few KiB for grub.cfg and BOOTX64.CSV. Wraps stat(2).
    static func signedLoaderBytes() -> UInt64 {
        signedLoaders.keys.reduce(16 * 1024) { total, path in
            total + ((try? fileStatus(path)).map { UInt64($0.st_size) } ?? 0)
        }
    }

    /// An upper bound on the EFI image grub-install builds for BOOTX64.EFI: about 140 KiB with the
    /// modules a /boot needs (partition map, filesystem, search), far less with any of them.
    static let efiImageBytes: UInt64 = 1 << 20

    /// Bytes of what grub-install copies besides a platform's modules: the unicode font and
    /// GRUB's translations. Wraps lstat(2).
    static func sharedFilesBytes() -> UInt64 {
        func size(_ path: String) -> UInt64 {
            guard let st = try? fileStatus(path), (st.st_mode & S_IFMT) == S_IFREG else { return 0 }
            return UInt64(st.st_size)
        }
        return size("/usr/share/grub/unicode.pf2")
            + directoryEntries("/usr/share/locale").reduce(0) { $0 + size("/usr/share/locale/\($1)/LC_MESSAGES/grub.mo") }
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

    /// Size in sectors of the core.img grub-install would embed with `modules`. The prefix
    /// string's length barely matters; use a typical one.
    static func coreImageSectors(modules: [String], logger: Logger) throws(InstallGrubError) -> UInt64 {
        let core = try makeImage(.i386PC, prefix: "(,msdos1)/boot/grub", modules: modules)
        let sectors = (UInt64(core.count) + 511) / 512
        logger.debug("core.img would take \(sectors) sectors", metadata: ["modules": "\(modules)"])
        return sectors
    }

    /// GRUB's image for `target` (core.img, or the EFI application) with `modules` and `prefix`,
    /// built by grub-mkimage (see `PendingImage`). Wraps grub-mkimage(1).
    static func makeImage(_ target: GrubTarget, prefix: String, modules: [String]) throws(InstallGrubError) -> [UInt8] {
        try PendingImage(target, prefix: prefix, modules: modules).result()
    }
}

/// grub-mkimage building GRUB's image in the background, so that the caller can do other work
/// meanwhile (the offline install writes GRUB's files). It writes into a memory file: nothing on
/// disk to leave behind (grub-mkimage fsyncs its output, so it cannot be a pipe); its messages go
/// to another, so no pipe can fill up. Killed if dropped unfinished.
final class PendingImage {
    private let pid: pid_t
    private let output: MemoryFile, messages: MemoryFile
    /// The embedded configuration, kept open until grub-mkimage has read it.
    private let configFile: MemoryFile?
    private var finished = false

    /// Starts grub-mkimage; `config` is embedded in the image as its early configuration (what
    /// grub-install writes to load.cfg). Wraps posix_spawn(3).
    init(_ target: GrubTarget, prefix: String, modules: [String], config: [UInt8]? = nil) throws(InstallGrubError) {
        guard let tool = Subprocess.find("grub-mkimage") else { throw .toolMissing(tool: "grub-mkimage", package: "grub-common") }
        do {
            output = try MemoryFile(name: "grub-mkimage \(target.rawValue)")
            messages = try MemoryFile(name: "grub-mkimage messages")
            configFile = if let config { try MemoryFile(name: "load.cfg", contents: config) } else { nil }
            let stderr = messages.file.fd
            pid = try Subprocess.spawnInOwnGroup(tool, ["grub-mkimage", "-O", target.rawValue, "-d", target.moduleDirectory, "-p", prefix,
                                                        "-o", output.path] + (configFile.map { ["-c", $0.path] } ?? []) + modules) { actions in
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
                posix_spawn_file_actions_adddup2(&actions, stderr, 2)
            }
        } catch {
            throw .system(error)
        }
    }

    /// Waits for grub-mkimage and returns the image. Wraps waitpid(2).
    func result() throws(InstallGrubError) -> [UInt8] {
        var status: Int32 = 0
        do {
            try systemCall("waitpid", on: "grub-mkimage") { waitpid(pid, &status, 0) }
        } catch {
            throw .system(error)
        }
        finished = true
        let code = exitCode(waitStatus: status)
        guard code == 0 else {
            let text = (try? messages.contents()).map { String(decoding: $0, as: UTF8.self) } ?? ""
            throw .grubToolFailed(tool: "grub-mkimage", status: code, stderr: text)
        }
        do { return try output.contents() } catch { throw .system(error) }
    }

    deinit {
        guard !finished else { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
    }
}
