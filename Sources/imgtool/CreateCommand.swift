import Glibc
import ImgKit
import ImgSystem

let createCommand = CommandSpec(
    name: "create",
    abstract: "Make a partitioned disk image from a layout and root filesystem contents, optionally bootable.",
    discussion: """
        The layout comes from systemd-repart definitions (--definitions) or from --partition specs. \
        The partition table is written by libparted; ext2/3/4 by mke2fs and filled through \
        libext2fs, vfat by mkfs.fat and mtools, swap by mkswap, each inside its partition of the \
        image file: no root, no loop device. Contents are directories or tar archives (owners, \
        modes, links, device nodes and extended attributes kept). With SOURCE_DATE_EPOCH or \
        --seed the image is the same bytes on every run. The image appears only when complete.
        """,
    positionals: [PositionalSpec(name: "image", optional: false, completion: .file, help: "The image file to make.")],
    options: [
        .option("definitions", "<dir>", completion: .file, help: "systemd-repart definitions (*.conf with [Partition]) for the layout."),
        .option("root", "<dir>", completion: .file, help: "With --definitions: where CopyFiles= sources resolve, as repart's --root."),
        .option("partition", "<spec>", repeatable: true, help: "A partition, in table order, as comma-separated keys: type= (a name, GUID or MBR hex type), size=, format= (ext4, ext3, ext2, vfat or swap), copy= (a directory or tar archive, optionally :TARGET), label=, uuid=, and the flags bootable and logical. A partition without size= shares the free space (the last takes the rest)."),
        .option("table", "<gpt|mbr>", completion: .choices(DiskLayout.TableKind.allCases.map(\.rawValue)), help: "The partition table (default gpt)."),
        .option("size", "<bytes|auto>", help: "The image's size, with K, M, G or T (powers of 1024), or auto: the smallest that holds every partition (default)."),
        .option("sector-size", "<512|4096>", help: "The logical sector size (default 512)."),
        .option("bootloader", "<bios|uefi|hybrid>", completion: .choices(InstallGrub.Firmware.allCases.map(\.rawValue)), help: "Install GRUB for this firmware (install-grub, offline) and verify the image."),
        .flag("secure-boot", help: "With --bootloader uefi or hybrid: through Debian's signed shim and GRUB."),
        .option("seed", "<text>", help: "Derive every GUID, UUID, hash seed and serial from this (default: from SOURCE_DATE_EPOCH, else random)."),
        .flag("keep-owners", help: "Store a directory's files with their owners as they are; by default the caller's own files become root's."),
        .flag("overwrite", help: "Replace an existing image (once the new one is complete)."),
        .flag("json", help: "Print a JSON result object on stdout."),
        .flag("verbose", short: "v", help: "Show each step."),
        .flag("quiet", short: "q", help: "Print only errors."),
    ],
    run: { arguments throws(UsageError) in try CreateCommand(arguments).run() })

struct CreateCommand {
    let options: Create.Options
    let json: Bool
    let verbose: Bool
    let quiet: Bool

    init(_ arguments: ParsedArguments) throws(UsageError) {
        let image = arguments.positional(0)!
        let specs = arguments.values("partition")
        let definitions = arguments.value("definitions")
        if definitions != nil, !specs.isEmpty {
            throw UsageError(message: "Give the layout either by --definitions or by --partition, not both.")
        }
        if definitions == nil, specs.isEmpty {
            throw UsageError(message: "No layout: give --definitions DIR (systemd-repart's format) or --partition specs.")
        }
        if arguments.value("root") != nil, definitions == nil {
            throw UsageError(message: "--root says where --definitions' CopyFiles= sources are; with --partition give copy= paths directly.")
        }
        let table = try arguments.value("table", as: DiskLayout.TableKind.self, expected: "gpt or mbr") ?? .gpt
        var size = DiskLayout.DiskSize.auto
        if let text = arguments.value("size"), text != "auto" {
            guard let bytes = DiskLayout.parseSize(text) else {
                throw UsageError(message: "'--size \(text)': give a size in bytes, with K, M, G or T, or auto.")
            }
            size = .bytes(bytes)
        }
        let sectorSize = try arguments.value("sector-size", as: Int.self, expected: "512 or 4096") ?? 512
        let firmware = try arguments.value("bootloader", as: InstallGrub.Firmware.self, expected: "bios, uefi or hybrid")
        if arguments.flag("secure-boot"), firmware == nil || firmware == .bios {
            throw UsageError(message: "--secure-boot goes with --bootloader uefi or hybrid.")
        }
        var epoch: Int64?
        if let text = getenv("SOURCE_DATE_EPOCH").map({ String(cString: $0) }), !text.isEmpty {
            guard let value = Int64(text), value >= 0 else {
                throw UsageError(message: "SOURCE_DATE_EPOCH=\(text) is not a number of seconds since 1970.")
            }
            epoch = value
        }
        // The layout's own errors (exit 78) come from run(), with the image untouched.
        let layout = DiskLayout(table: table, size: size, sectorSize: sectorSize, partitions: [])
        options = Create.Options(image: image, layout: layout, overwrite: arguments.flag("overwrite"), bootloader: firmware,
                                 secureBoot: arguments.flag("secure-boot"), seed: arguments.value("seed"), sourceDateEpoch: epoch,
                                 callerOwnsAsRoot: !arguments.flag("keep-owners"))
        self.specs = specs
        self.definitions = definitions
        self.root = arguments.value("root")
        json = arguments.flag("json")
        verbose = arguments.flag("verbose")
        quiet = arguments.flag("quiet")
    }

    private let specs: [String]
    private let definitions: String?
    private let root: String?

    func run() -> Int32 {
        let interruption = Interruption()
        let trap = SignalTrap(interruption)
        defer { withExtendedLifetime(trap) {} }
        let logger = makeLogger(label: "imgtool.create", verbose: verbose, quiet: quiet)
        let result: Create.Result
        do throws(CreateError) {
            var options = options
            if let definitions {
                options.layout.partitions = try RepartDefinitions.load(directory: definitions, root: root)
            } else {
                options.layout.partitions = try specs.enumerated().map { index, spec throws(CreateError) in
                    try DiskLayout.Partition(spec: spec, origin: "--partition \(index + 1)")
                }
            }
            result = try Create.run(options, logger: logger, interruption: interruption)
        } catch {
            printError(error.description)
            return error.exitCode
        }
        if json { printJSON(result.json) }
        return 0
    }
}

extension DiskLayout.TableKind: LosslessStringConvertible {
    public init?(_ description: String) {
        self.init(rawValue: description == "dos" || description == "msdos" ? "mbr" : description)
    }
    public var description: String { rawValue }
}
