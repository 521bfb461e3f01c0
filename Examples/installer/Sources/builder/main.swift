// An appliance builder's image step, embedding ImgKit: a GPT layout written as Swift values (a BIOS
// boot partition, an EFI system partition, an ext4 root filled from a directory or tar archive),
// made into a bootable image for BIOS and UEFI without root, and checked. Usage: builder IMAGE TREE
import Glibc
import ImgKit

func printError(_ message: String) {
    var line = message + "\n"
    _ = line.withUTF8 { write(2, $0.baseAddress, $0.count) }
}

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    printError("usage: builder IMAGE TREE")
    exit(ExitStatus.usage.rawValue)
}
let (image, tree) = (arguments[1], arguments[2])
let interruption = Interruption()
let trap = SignalTrap(interruption)

let layout = DiskLayout(table: .gpt, size: .auto, partitions: [
    .init(type: PartitionKind("bios-boot")!, sizeMin: 1 << 20, sizeMax: 1 << 20, origin: "bios-boot"),
    .init(type: PartitionKind("esp")!, format: .vfat, origin: "esp"),
    .init(type: PartitionKind("root")!, label: "root", format: .ext4, copies: [.init(source: tree)], origin: "root"),
])
do {
    // The same checks the CLI makes, before anything is written.
    try layout.validate()
    let result = try Create.run(.init(image: image, layout: layout, bootloader: .hybrid, seed: "builder example"),
                                logger: Logger(label: "builder"), interruption: interruption)
    for partition in result.partitions {
        print("partition \(partition.number): \(partition.type), \(partition.sectors / 2048) MiB, \(partition.format?.rawValue ?? "no filesystem")")
    }
    print("\(image): \(result.sizeBytes >> 20) MiB, bootable: \(result.bootable == true)")
} catch {
    printError("builder: \(error.description)")
    exit(error.exitCode)
}
withExtendedLifetime(trap) {}
