import Glibc
import ImgFormats

/// A sparse in-memory copy (a memfd) of the parts of an area that libblkid reads
/// (`ProbeWindow`), for areas that are not in a file: libblkid reads only through a descriptor,
/// and a container's virtual disk has none. Everything else of the area is a hole and reads as
/// zeros; all-zero chunks are not written, so a mostly empty area costs little memory.
struct ProbeCopy {
    private let memory: MemoryFile
    var file: FileHandle { memory.file }
    let length: UInt64

    /// The copy unit: small, so a chunk of zeros is skipped without holding much.
    static let chunk = 64 * 1024

    /// Copies `ProbeWindow.ranges` of `length` bytes at `offset` of `source` into a new memfd of
    /// `length` bytes; `name` names the image in errors. Wraps memfd_create(2), ftruncate(2) and
    /// pwrite(2).
    init(_ source: any ByteSource, offset: UInt64, length: UInt64, name: String) throws(SystemError) {
        memory = try MemoryFile(name: name, size: length)
        let fd = memory.file.fd
        self.length = length
        for window in ProbeWindow.ranges(source, offset: offset, length: length) {
            // Only what may hold data: a container's unallocated clusters are holes already.
            let pieces: [Range<UInt64>]
            if let sparse = source as? any SparseByteSource {
                do {
                    pieces = try sparse.dataRanges(in: offset + window.lowerBound..<offset + window.upperBound).map {
                        ($0.lowerBound - offset)..<($0.upperBound - offset)
                    }
                } catch {
                    throw SystemError("finding the data in \(window) (\(error))", on: name, errno: EIO)
                }
            } else {
                pieces = [window]
            }
            for range in pieces { try copy(source, range: range, offset: offset, fd: fd, name: name) }
        }
    }

    /// Copies `range` (of the area at `offset`) into the copy at `fd`, leaving all-zero chunks as holes.
    private func copy(_ source: any ByteSource, range: Range<UInt64>, offset: UInt64, fd: Int32, name: String) throws(SystemError) {
        var position = range.lowerBound
        while position < range.upperBound {
            let count = Int(min(UInt64(Self.chunk), range.upperBound - position))
            let bytes: [UInt8]
            do {
                bytes = try source.read(at: offset + position, count: count)
            } catch {
                throw SystemError("reading \(count) bytes at \(offset + position) (\(error))", on: name, errno: EIO)
            }
            if !Self.isZero(bytes) { try writeFully(fd, bytes, at: position, path: name) }
            position += UInt64(count)
        }
    }

    /// Whether `bytes` are all zeros, eight at a time.
    static func isZero(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            let words = raw.count / 8
            var any: UInt64 = 0
            for i in 0..<words { any |= raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) }
            for i in words * 8..<raw.count { any |= UInt64(raw[i]) }
            return any == 0
        }
    }
}
