import CLinuxShim
import Glibc

/// A copy of one region of an image (a partition) to change with tools that write a whole
/// filesystem, such as mtools, before anything of the image changes: a memfd holding the region's
/// data (a `MemoryFile`), with holes where the image has holes or zeros. `changes(against:)` then tells which
/// blocks differ, to be saved (`UndoFile`) and written into the image.
package final class StagedRegion {
    /// What is compared and written at a time: a page, and a multiple of every sector size.
    package static let blockSize = 4096
    /// The image, and the region's place in it.
    package let image: String, offset: UInt64, length: UInt64
    private let memory: MemoryFile
    private var copy: FileHandle { memory.file }

    /// The copy as a path a child process can open: this process's descriptor through /proc.
    package var path: String { memory.path }

    /// Copies `length` bytes at `offset` of `image`: only its data extents (SEEK_DATA), and of
    /// those only blocks that are not all zeros. Wraps memfd_create(2), lseek(2), pread(2) and pwrite(2).
    package init(image: String, offset: UInt64, length: UInt64) throws(SystemError) {
        self.image = image
        self.offset = offset
        self.length = length
        memory = try MemoryFile(name: "a staged copy of \(image)", size: length)
        let fd = copy.fd
        let source = try FileHandle(path: image, flags: O_RDONLY)
        try Self.forEachBlock(of: source.fd, path: image, in: offset..<offset + length) { (at, bytes) throws(SystemError) in
            if !ProbeCopy.isZero(bytes) { try writeFully(fd, bytes, at: at - offset, path: copy.path) }
        }
    }

    /// A block that differs: where it is in the region, what the image holds there, what the copy does.
    package struct Change: Sendable {
        /// Bytes from the region's start.
        package let offset: UInt64
        /// The image's bytes there now.
        package let old: [UInt8]
        /// The copy's bytes there.
        package let new: [UInt8]
    }

    /// The blocks where the copy differs from the region as `target` shows it (the image, or a
    /// device over the region when `base` is 0). Only the copy's data extents are compared: where
    /// the copy has a hole it was not written, and the region held zeros.
    package func changes(against target: FileHandle, base: UInt64) throws(SystemError) -> [Change] {
        var changes: [Change] = []
        var old = [UInt8](repeating: 0, count: Self.blockSize)
        try Self.forEachBlock(of: copy.fd, path: copy.path, in: 0..<length) { (at, new) throws(SystemError) in
            let n = try readFully(target.fd, into: &old, count: new.count, at: base + at, path: target.path)
            guard n == new.count else { throw SystemError("pread (short read)", on: target.path, errno: EIO) }
            if !old.prefix(n).elementsEqual(new) { changes.append(Change(offset: at, old: Array(old.prefix(n)), new: new)) }
        }
        return changes
    }

    /// Calls `body` with each block of `fd`'s data extents in `range` (block boundaries counted
    /// from `range`'s start; the last block may be short). Wraps lseek(2) and pread(2).
    static func forEachBlock(of fd: Int32, path: String, in range: Range<UInt64>,
                             _ body: (UInt64, [UInt8]) throws(SystemError) -> Void) throws(SystemError) {
        let block = UInt64(blockSize)
        var position = range.lowerBound
        var buffer = [UInt8](repeating: 0, count: 256 * blockSize)
        while position < range.upperBound {
            let data: Int
            do {
                data = try systemCall("lseek(SEEK_DATA)", on: path) { lseek(fd, off_t(position), IMGTOOL_SEEK_DATA) }
            } catch where error.errno == ENXIO {
                return  // no data past `position`
            } catch where error.errno == EINVAL {
                data = Int(position)  // no hole support (a block device): everything is data
            }
            guard UInt64(data) < range.upperBound else { return }
            let hole = (try? systemCall("lseek(SEEK_HOLE)", on: path, { lseek(fd, off_t(data), IMGTOOL_SEEK_HOLE) })) ?? Int(range.upperBound)
            let extentEnd = min(UInt64(max(hole, data)), range.upperBound)
            position = range.lowerBound + (UInt64(data) - range.lowerBound) / block * block
            while position < extentEnd {
                let count = Int(min(UInt64(buffer.count), (extentEnd - position + block - 1) / block * block, range.upperBound - position))
                let n = try readFully(fd, into: &buffer, count: count, at: position, path: path)
                guard n > 0 else { return }
                var start = 0
                while start < n {
                    let end = min(start + blockSize, n)
                    try body(position + UInt64(start), Array(buffer[start..<end]))
                    start = end
                }
                position += UInt64(n)
            }
        }
    }
}
