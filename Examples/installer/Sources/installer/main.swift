// An appliance builder's installer step, embedding ImgKit: look at the image, install GRUB into it,
// check that it will boot, and stop cleanly on Ctrl-C. Usage: installer IMAGE
import Glibc
import ImgKit

/// One line on stderr.
func printError(_ message: String) {
    var line = message + "\n"
    _ = line.withUTF8 { write(2, $0.baseAddress, $0.count) }
}

let arguments = CommandLine.arguments
guard arguments.count == 2, !arguments[1].hasPrefix("-") else {
    printError("usage: installer IMAGE")
    exit(ExitStatus.usage.rawValue)
}
let image = arguments[1]
let logger = Logger(label: "installer")

// SIGINT, SIGTERM and SIGHUP become a request to stop: the install unwinds and releases every loop
// device and mount before it returns, and the process exits 128+N as a shell expects.
let interruption = Interruption()
let trap = SignalTrap(interruption)

func fail(_ message: String, exitCode: Int32) -> Never {
    printError("installer: \(message)")
    exit(exitCode)
}

do {
    let report = try Inspect.run(.init(image: image), logger: logger)
    let table = report.partitionTable.type.map(String.init(describing:)) ?? "no"
    print("\(image): \(report.size) bytes, \(table) partition table, \(report.partitionTable.partitions.count) partitions, boot code: \(report.bootCode.description)")

    // As root this attaches a loop device and runs grub-install; as an ordinary user (an
    // unprivileged build step, a container without /dev/loop-control) it takes the offline
    // strategy, which writes the image file itself and needs no privilege at all.
    let result = try InstallGrub.run(.init(image: image), logger: logger, interruption: interruption)
    print("installed GRUB (\(result.target)) with strategy \(result.strategy), /boot on partition \(result.bootPartition.number) (\(result.bootPartition.filesystem))")

    let verdict = try Verify.run(.init(image: image), logger: logger)
    for problem in verdict.problems { print("\(problem.severity): \(problem.message)") }
    guard verdict.bootable == true else {
        fail("\(image) does not look bootable after the install", exitCode: verdict.exitCode)
    }
    print("\(image): bootable, core.img at sector \(verdict.grub.map { String($0.coreImage.sector) } ?? "?")")
} catch let error as any ImgKitError {
    // Every workflow's error: a message that ends with what to do next, and the exit code the
    // imgtool command would give for it, so a script can tell an unusable image (65) from
    // missing root (77) or Ctrl-C (130).
    fail(error.description, exitCode: error.exitCode)
} catch {
    fail("\(error)", exitCode: ExitStatus.failure.rawValue)
}
withExtendedLifetime(trap) {}
