import ArgumentParser
import FoundationEssentials
import Glibc
import ImgKit
import ImgSystem
import Logging

struct InstallGrubCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install-grub",
        abstract: "Install GRUB 2 for BIOS (i386-pc) into a partitioned disk image.",
        discussion: """
            Attaches the image as a loop device, presents its partitions to the kernel, mounts the \
            boot partition, runs grub-install and releases everything again, also on error or signal. \
            Strategies: partscan (the kernel parses the table), blkpg (imgtool adds the partitions), \
            offset (a loop device per partition; GRUB's modules are named explicitly).
            """)

    @Argument(help: "The raw disk image (or block device).")
    var image: String

    @Option(help: "partscan, blkpg or offset (default: the first this kernel supports).")
    var strategy: Strategy?

    @Option(name: .customLong("boot-partition"), help: "Partition number for /boot/grub (default: found).")
    var bootPartition: Int?

    @Option(name: .customLong("modules"), parsing: .singleValue,
            help: "Extra GRUB module to build into core.img (repeatable).")
    var modules: [String] = []

    @Flag(help: "Print a JSON result object on stdout.")
    var json = false

    @Flag(name: .shortAndLong, help: "Show grub-install's output and more detail.")
    var verbose = false

    @Flag(name: .shortAndLong, help: "Print only errors.")
    var quiet = false

    func run() throws {
        let interruption = Interruption()
        let trap = SignalTrap(interruption)
        defer { withExtendedLifetime(trap) {} }
        let logger = makeLogger(label: "imgtool.install-grub", verbose: verbose, quiet: quiet)
        let result: InstallGrub.Result
        do {
            result = try InstallGrub.run(
                .init(image: image, strategy: strategy, bootPartition: bootPartition, modules: modules,
                      showGrubOutput: verbose),
                logger: logger, interruption: interruption)
        } catch {
            printError(error.description)
            throw ExitCode(error.exitCode)
        }
        if json { try printJSON(result) }
    }
}

extension Strategy: ExpressibleByArgument {}

// FoundationEssentials rather than Foundation: it has JSONEncoder without loading ICU, which
// halves the tool's start-up time.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    writeAll(1, Array(try encoder.encode(value)) + [UInt8(ascii: "\n")])
}

func printError(_ message: String) {
    writeAll(2, Array("imgtool: error: \(message)\n".utf8))
}

/// write(2) until done; output is best effort once the pipe is gone.
func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    var done = 0
    while done < bytes.count {
        let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        done += n
    }
}
