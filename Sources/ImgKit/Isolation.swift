import Glibc
import ImgSystem
import Logging

/// A throwaway VM (`IsolatedVM`) for a workflow to run in instead of on the host kernel, so that
/// the host never parses or mounts the image: set it as the `isolation` of `Inspect`, `Verify`,
/// `ImageFiles` or `InstallGrub` options. The same imgtool executable runs in the guest and is
/// sent the workflow and its options as a structured request; what comes back is the same result
/// value, or the same typed error, as a local run gives. The image is the guest's virtio disk,
/// reachable there at the path it has on the host (a symbolic link to /dev/vda in the same
/// directory, and the guest starts in the host's working directory), so reports and messages name
/// the host's path.
///
/// ```swift
/// let report = try Inspect.run(.init(image: "disk.img", isolation: Isolation()), logger: logger)
/// ```
public struct Isolation: Sendable {
    /// What the guest needs.
    package enum Purpose: Sendable {
        /// inspect, verify, ls, cat: imgtool alone, the disk read-only.
        case readOnly
        /// install-grub: GRUB's tools and files, loop and device-mapper modules, filesystems; the
        /// disk writable.
        case installGrub
    }

    /// The imgtool executable to run in the guest; nil: this process's own if it is imgtool, else
    /// `imgtool` in PATH.
    public var executable: String?
    /// The guest kernel; nil: the newest /boot/vmlinuz-*-cloud-amd64.
    public var kernel: String?
    /// Bound on the whole run: boot, command, power-off.
    public var timeout: Double
    /// The VM's own options (accelerator, memory, cache, interruption), before the purpose adds
    /// what the command needs.
    public var vm: IsolatedVM.Options
    /// The strategy install-grub is asked for in the guest, if any: udevadm goes into the VM only
    /// for those that need it (partscan, blkpg). The guest's image is its virtio disk, whose
    /// partition starts grub-probe learns from the driver (HDIO_GETGEO) without udevadm; with it,
    /// grub-install ran udevadm six times, 0.5 s under TCG.
    public var installStrategy: InstallGrub.Strategy?
    /// The file qemu opens as the guest's disk instead of the image (a working copy of it); the
    /// guest still sees it at the image's path.
    package var disk: String?

    /// An isolation with the default VM; `interruption` stops it (an install passes its own).
    public init(kernel: String? = nil, timeout: Double = IsolatedVM.defaultTimeout, executable: String? = nil,
                interruption: Interruption? = nil) {
        self.kernel = kernel
        self.timeout = timeout
        self.executable = executable
        vm = IsolatedVM.Options()
        vm.interruption = interruption
    }

    /// Kernel modules install-grub loads in the guest: loop devices, device mapper, and the
    /// filesystems the kernel mounts /boot with. xfs and btrfs are left out: loading them (btrfs
    /// pulls in raid6's boot-time benchmarks) took 2 s of a 9 s run under TCG; a /boot on them
    /// fails to mount in the VM with "unknown filesystem type".
    public static let installGrubModules = ["loop", "dm_mod", "ext4", "vfat"]
    /// Host programs install-grub runs in the guest (those installed): grub-install and the tools
    /// imgtool itself calls.
    static let installGrubPrograms = ["grub-install", "grub-probe", "grub-mkimage", "grub-bios-setup", "grub-editenv",
                                      "setpriv", "mcopy", "mdel", "mmd"]
    /// What the offline strategy runs in the guest (`OfflineInstall`).
    static let offlinePrograms = ["grub-mkimage", "setpriv", "mcopy", "mmd"]

    /// Runs `imgtool arguments...` in a fresh VM with `image` as its disk: what `IsolatedRequest`
    /// sends its request through.
    package func run(_ arguments: [String], image: String, purpose: Purpose,
                    logger: Logger = Logger(label: "imgtool.isolation")) throws(IsolatedVM.Error) -> IsolatedVM.Result {
        guard let imgtool = executable ?? Self.currentExecutable() else {
            throw .executableMissing("imgtool (not found in PATH)")
        }
        let options = vmOptions(for: purpose, imgtool: imgtool)
        let cwd = Self.workingDirectory() ?? "/"
        let absolute = image.hasPrefix("/") ? image : (cwd == "/" ? "" : cwd) + "/" + image
        return try IsolatedVM.run(command: ["sh", "-c", Self.guestScript, "imgtool-isolated", absolute, cwd, imgtool] + arguments,
                                  image: disk ?? image, readOnly: purpose == .readOnly, timeout: timeout, kernel: kernel,
                                  options: options, logger: logger)
    }

    /// `vm` plus what `purpose` needs in the guest.
    func vmOptions(for purpose: Purpose, imgtool: String) -> IsolatedVM.Options {
        var options = vm
        options.executables.append(imgtool)
        if purpose == .installGrub {
            let offline = installStrategy == .offline
            let udevadm = installStrategy == .partscan || installStrategy == .blkpg ? ["udevadm"] : []
            let programs = offline ? Self.offlinePrograms : Self.installGrubPrograms + udevadm
            options.executables += programs.compactMap { Subprocess.find($0) }
            options.dataDirectories += [GrubTools.moduleDirectory, GrubTarget.x86_64EFI.moduleDirectory, "/usr/share/grub",
                                        "/usr/lib/grub/x86_64-efi-signed", "/usr/lib/shim"]
                .filter { access($0, R_OK) == 0 }
            options.dataFiles += Self.grubMessageCatalogues()
            // mtools converts FAT's short names through iconv to code page 850: glibc's gconv
            // module for it and the tables that find it.
            options.dataFiles += Self.mtoolsCodePage.filter { access($0, R_OK) == 0 }
            // Offline, the guest's kernel only reads and writes its disk: no module to load, and
            // two fsyncs to speed up.
            if !offline {
                if access(Self.eatMyData, R_OK) == 0 { options.dataFiles.append(Self.eatMyData) }
                options.optionalModules += Self.installGrubModules
            }
            // grub-install and a loop device's page cache want more than a bare command.
            options.memoryMiB = max(options.memoryMiB, 512)
        }
        return options
    }

    /// libeatmydata (Debian package eatmydata), preloaded into what imgtool runs in the guest when
    /// the host has it: grub-install fsyncs each of the 300-odd files it copies, each fsync waits
    /// for an ext4 journal commit through the loop device, and under TCG that was 1.3 s of a 3.3 s
    /// grub-install. Nothing is lost: imgtool unmounts, detaches and flushes the disk afterwards,
    /// and that flush reaches the host's image file (qemu passes flushes on).
    static let eatMyData = "/usr/lib/x86_64-linux-gnu/libeatmydata.so.1"

    /// Puts the disk at the image's host path and runs the command from the host's working
    /// directory. A path the guest already has is refused rather than shadowed.
    static let guestScript = """
        img=$1 cwd=$2; shift 2
        if ! [ "$img" -ef /dev/vda ]; then
            if [ -e "$img" ] || [ -L "$img" ]; then
                echo "imgtool: error: $img exists inside the isolated VM itself; copy or link the image to another path and run again." >&2
                exit 70
            fi
            mkdir -p "${img%/*}/" && ln -s /dev/vda "$img" || exit 71
        fi
        mkdir -p "$cwd" && cd "$cwd" || exit 71
        [ -r \(eatMyData) ] && export LD_PRELOAD=\(eatMyData)
        exec "$@"
        """

    /// This process's executable when it is imgtool, else imgtool in PATH.
    public static func currentExecutable() -> String? {
        if let path = processExecutable(), path.split(separator: "/").last == "imgtool" { return path }
        return Subprocess.find("imgtool")
    }

    /// This process's executable (/proc/self/exe), whatever its name: what the imgtool command
    /// runs in the guest.
    public static func processExecutable() -> String? { try? readSymbolicLink("/proc/self/exe") }

    static func workingDirectory() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil, let end = buffer.firstIndex(of: 0) else { return nil }
        return String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// /usr/share/locale/*/LC_MESSAGES/grub.mo: grub-install copies them into boot/grub/locale.
    static let mtoolsCodePage = ["gconv-modules", "gconv-modules.cache", "gconv-modules.d/gconv-modules-extra.conf", "IBM850.so"]
        .map { "/usr/lib/x86_64-linux-gnu/gconv/" + $0 }

    static func grubMessageCatalogues() -> [String] {
        directoryEntries("/usr/share/locale").sorted().map { "/usr/share/locale/\($0)/LC_MESSAGES/grub.mo" }
            .filter { access($0, R_OK) == 0 }
    }
}

extension IsolatedVM.Error: ImgKitError {
    /// The kind of failure of a command that could not run isolated, as for a local run's failures.
    public var exitStatus: ExitStatus {
        switch self {
        case .kernelMissing, .modulesMissing, .moduleMissing, .busyboxMissing, .executableMissing, .libraryMissing,
             .toolMissing, .qemuMissing:
            return .unavailable
        case .image: return .noInput
        case .initramfs, .emptyCommand, .qemuFailed, .noStatus, .timedOut, .system, .interrupted: return .failure
        }
    }

    /// `exitStatus`, or 128 + the signal after an interruption.
    public var exitCode: Int32 {
        if case .interrupted(let signal) = self { return 128 + signal }
        return exitStatus.rawValue
    }
}
