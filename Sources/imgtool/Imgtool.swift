import ArgumentParser
import ImgKit

@main
struct Imgtool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imgtool",
        abstract: "Make disk image files behave like disks: install GRUB into them, safely.",
        discussion: "Exit codes: 0 success, 1 failure, 64 bad arguments, 65 unusable image, 66 image missing or unreadable, 69 missing tool or strategy, 75 image in use, 77 root needed, 128+N interrupted by signal N.",
        subcommands: [InstallGrubCommand.self, InspectCommand.self, VerifyCommand.self, LsCommand.self, CatCommand.self])
}
