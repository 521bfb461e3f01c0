import Glibc
import ImgKit
import ImgSystem

let catCommand = CommandSpec(
    name: "cat",
    abstract: "Print a file of an ext2/3/4, FAT12/16/32 or ISO 9660 filesystem in a disk image, without mounting it.",
    discussion: """
        Streams the file to standard output in 64 KiB chunks, so files of any size work. Reads \
        ext2/3/4 through libext2fs, FAT and ISO 9660 itself: no root, no mount, and the image is \
        opened read-only. Symbolic links are followed inside the image's filesystem, never on \
        the host. The filesystem is chosen as for imgtool ls.
        """,
    positionals: [
        PositionalSpec(name: "image", optional: false, completion: .file, help: "The disk image (or a bare filesystem image, or a block device)."),
        PositionalSpec(name: "path", optional: false, help: "The file inside the filesystem."),
    ],
    options: [partitionOption, logicalVolumeOption, backingOption],
    isolation: .readOnly,
    run: { arguments throws(UsageError) in
        let image = arguments.positional(0)!, path = arguments.positional(1)!, number = try partition(arguments)
        do throws(ImageFiles.Error) {
            try withSignalsStopping(arguments.isolation) { isolation throws(ImageFiles.Error) in
                try ImageFiles.read(.init(image: image, partition: number, logicalVolume: arguments.value("lv"), isolation: isolation,
                                          backingFiles: arguments.flag("backing")),
                                    path: path,
                                    logger: makeLogger(label: "imgtool.cat", verbose: false, quiet: true)) { chunk throws(SystemError) in
                    try writeFully(1, chunk, path: "standard output")
                }
            }
        } catch {
            if case .output(_, let e) = error {
                printError("writing \(path) to standard output failed: \(String(cString: strerror(e.errno))).")
                return ExitStatus.failure.rawValue
            }
            return fail(error)
        }
        return 0
    })
