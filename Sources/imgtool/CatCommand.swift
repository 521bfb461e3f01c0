import ArgumentParser
import Glibc
import ImgKit
import ImgSystem

struct CatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cat",
        abstract: "Print a file of an ext2/3/4 filesystem in a disk image, without mounting it.",
        discussion: """
            Streams the file to standard output in 64 KiB chunks, so files of any size work. Reads \
            the image through libext2fs: no root, no mount, and the image is opened read-only. \
            Symbolic links are followed inside the image's filesystem, never on the host.
            """)

    @Argument(help: "The disk image (or a bare filesystem image, or a block device).")
    var image: String

    @Argument(help: "The file inside the filesystem.")
    var path: String

    @Option(help: "The partition holding the filesystem (default: the only ext2/3/4 one, or the whole image if it has no partition table).")
    var partition: Int?

    func run() throws {
        let opened = try openFilesystem(image: image, partition: partition)
        do {
            try opened.filesystem.read(path) { chunk in try writeChunk(chunk) }
        } catch let error as Ext2Filesystem.Error {
            throw fail(ImageFiles.Error.file(error, image: image, partition: opened.location.partition))
        } catch let error as OutputError {
            printError("writing \(path) to standard output failed: \(String(cString: strerror(error.errno))).")
            throw ExitCode(ExitStatus.failure.rawValue)
        }
    }
}

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
