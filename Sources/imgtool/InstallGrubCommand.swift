import Glibc
import ImgKit
import ImgSystem
import Logging

let installGrubCommand = CommandSpec(
    name: "install-grub",
    abstract: "Install GRUB 2 for BIOS, UEFI or both into a partitioned disk image.",
    discussion: """
        Attaches the image as a loop device, presents its partitions to the kernel, mounts the \
        boot partition, runs grub-install and releases everything again, also on error or signal. \
        Strategies: partscan (the kernel parses the table), blkpg (imgtool adds the partitions), \
        device-mapper (the classic recipe: a device-mapper disk with kpartx-style partition maps, \
        device.map naming it (hd0)), offset (a loop device per partition; GRUB's modules are named \
        explicitly). UEFI puts GRUB's x86_64-efi image at \\EFI\\BOOT\\BOOTX64.EFI of the EFI \
        system partition, written with mtools, and never touches the host's NVRAM.
        """,
    positionals: [PositionalSpec(name: "image", optional: false, completion: .file, help: "The raw disk image (or block device).")],
    options: [
        .option("strategy", "<name>", completion: .choices(InstallGrub.Strategy.allCases.map(\.rawValue)), help: "partscan, blkpg, device-mapper, offset (root) or offline (no root, no loop device). Default: the first this kernel supports, in that order, as root; offline without root or loop devices, and in the --isolate VM."),
        .option("disk-name", "<name>", help: "Name of the device-mapper disk (implies --strategy device-mapper; default imgtool-<session>, unique per run)."),
        .option("boot-partition", "<n>", help: "Partition number for /boot/grub (default: found)."),
        .option("firmware", "<bios|uefi|hybrid>", completion: .choices(InstallGrub.Firmware.allCases.map(\.rawValue)), help: "What to install for (default: uefi with an EFI system partition, bios with a post-MBR gap or BIOS boot partition, hybrid with both)."),
        .option("modules", "<module>", repeatable: true, help: "Extra GRUB module to build into core.img (repeatable)."),
        .flag("secure-boot", help: "UEFI through Debian's Microsoft-signed shim and signed GRUB (shim-signed, grub-efi-amd64-signed), for firmware that enforces Secure Boot."),
        .flag("json", help: "Print a JSON result object on stdout."),
        .flag("verbose", short: "v", help: "Show grub-install's output and more detail."),
        .flag("quiet", short: "q", help: "Print only errors."),
    ],
    isolation: .installGrub,
    run: { arguments throws(UsageError) in try InstallGrubCommand(arguments).run() })

struct InstallGrubCommand {
    let image: String
    let strategy: InstallGrub.Strategy?
    let diskName: String?
    let bootPartition: Int?
    let modules: [String]
    let firmware: InstallGrub.Firmware?
    let secureBoot: Bool
    let json: Bool
    let verbose: Bool
    let quiet: Bool
    /// --isolate: the library runs the job in a throwaway VM (a structured request and result).
    let isolation: Isolation?

    init(_ arguments: ParsedArguments) throws(UsageError) {
        let strategy = try arguments.value("strategy", as: InstallGrub.Strategy.self,
                                           expected: InstallGrub.Strategy.allCases.map(\.rawValue).joined(separator: ", "))
        let diskName = arguments.values("disk-name").last
        if diskName != nil, let strategy, strategy != .deviceMapper {
            throw UsageError(message: "'--disk-name' names a device-mapper disk; it does not go with '--strategy \(strategy)'.")
        }
        image = arguments.positional(0)!
        self.strategy = strategy
        self.diskName = diskName
        bootPartition = try arguments.value("boot-partition", as: Int.self, expected: "a partition number")
        modules = arguments.values("modules")
        firmware = try arguments.value("firmware", as: InstallGrub.Firmware.self, expected: "bios, uefi or hybrid")
        secureBoot = arguments.flag("secure-boot")
        json = arguments.flag("json")
        verbose = arguments.flag("verbose")
        quiet = arguments.flag("quiet")
        isolation = arguments.isolation
    }

    func run() -> Int32 {
        let interruption = Interruption()
        let trap = SignalTrap(interruption)
        defer { withExtendedLifetime(trap) {} }
        let logger = makeLogger(label: "imgtool.install-grub", verbose: verbose, quiet: quiet)
        let result: InstallGrub.Result
        do {
            result = try InstallGrub.run(
                .init(image: image, strategy: strategy, diskName: diskName, bootPartition: bootPartition, modules: modules,
                      showGrubOutput: verbose, isolation: isolation, firmware: firmware, secureBoot: secureBoot),
                logger: logger, interruption: interruption)
        } catch {
            printError(error.description)
            return error.exitCode
        }
        if json { printJSON(result.json) }
        return 0
    }
}

extension InstallGrub.Firmware: LosslessStringConvertible {
    public init?(_ description: String) { self.init(rawValue: description) }
    public var description: String { rawValue }
}

extension InstallGrub.Strategy: LosslessStringConvertible {
    public init?(_ description: String) { self.init(rawValue: description) }
    public var description: String { rawValue }
}

func printError(_ message: String) {
    writeAll(2, Array("imgtool: error: \(message)\n".utf8))
}

/// Writes all of `bytes` to `fd`, best effort: once the reader is gone there is nobody left to
/// tell. Wraps write(2).
func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    try? writeFully(fd, bytes, path: "descriptor \(fd)")
}
