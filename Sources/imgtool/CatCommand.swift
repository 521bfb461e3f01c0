import Glibc
import ImgKit
import ImgSystem

let catCommand = CommandSpec(
    name: "cat",
    abstract: "Print a file of an ext2/3/4 filesystem in a disk image, without mounting it.",
    discussion: """
        Streams the file to standard output in 64 KiB chunks, so files of any size work. Reads \
        the image through libext2fs: no root, no mount, and the image is opened read-only. \
        Symbolic links are followed inside the image's filesystem, never on the host.
        """,
    positionals: [
        PositionalSpec(name: "image", optional: false, completion: .file, help: "The disk image (or a bare filesystem image, or a block device)."),
        PositionalSpec(name: "path", optional: false, help: "The file inside the filesystem."),
    ],
    options: [partitionOption],
    isolation: .readOnly,
    run: { arguments throws(UsageError) in
        let image = arguments.positional(0)!, path = arguments.positional(1)!, number = try partition(arguments)
        let opened: ImageFiles.Opened
        do throws(ImageFiles.Error) { opened = try ImageFiles.run(.init(image: image, partition: number)) } catch { return fail(error) }
        do {
            try opened.filesystem.read(path) { chunk in try writeChunk(chunk) }
        } catch let error as Ext2Filesystem.Error {
            return fail(ImageFiles.Error.file(error, image: image, partition: opened.location.partition))
        } catch let error as OutputError {
            printError("writing \(path) to standard output failed: \(String(cString: strerror(error.errno))).")
            return ExitStatus.failure.rawValue
        } catch {
            printError("reading \(path) failed: \(error)")
            return ExitStatus.failure.rawValue
        }
        return 0
    })

private struct OutputError: Error {
    let errno: Int32
}

/// write(2) until the chunk is out; unlike `writeAll`, a failure stops the copy.
private func writeChunk(_ chunk: UnsafeRawBufferPointer) throws(OutputError) {
    var done = 0
    while done < chunk.count {
        let n = write(1, chunk.baseAddress! + done, chunk.count - done)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { throw OutputError(errno: n < 0 ? errno : EIO) }
        done += n
    }
}
