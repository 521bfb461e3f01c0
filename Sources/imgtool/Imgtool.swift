import Glibc
import ImgKit

@main
enum Imgtool {
    static let tool = CommandLineTool(
        name: "imgtool",
        abstract: "Make disk image files behave like disks: install GRUB into them, safely.",
        discussion: "Exit codes: 0 success, 1 failure, 64 bad arguments, 65 unusable image, 66 image missing or unreadable, 69 missing tool or strategy, 75 image in use, 77 root needed, 128+N interrupted by signal N.",
        commands: [installGrubCommand, inspectCommand, verifyCommand, lsCommand, catCommand, statusCommand, cleanupCommand])

    static func main() {
        exit(tool.main(CommandLine.arguments))
    }
}
