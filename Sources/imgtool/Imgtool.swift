import Glibc
import ImgKit

@main
enum Imgtool {
    /// The one place the version is written: `make install` and `make deb` ask the built
    /// executable (`imgtool --version`), so the package, the man page and the binary agree.
    static let version = "0.1.0"

    static let tool = CommandLineTool(
        name: "imgtool",
        version: version,
        abstract: "Make disk image files behave like disks: install GRUB into them, safely.",
        discussion: "Exit codes: 0 success, 1 failure, 64 bad arguments, 65 unusable image, 66 image or input missing or unreadable, 69 missing tool or strategy, 73 image exists (create), 75 image in use, 77 root needed, 78 invalid layout (create), 128+N interrupted by signal N.",
        commands: [installGrubCommand, createCommand, inspectCommand, verifyCommand, lsCommand, catCommand, statusCommand, cleanupCommand])

    static func main() {
        exit(tool.main(CommandLine.arguments))
    }
}
