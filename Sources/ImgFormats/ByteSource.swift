#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Random-access, read-only bytes: an image file, a block device or an in-memory buffer.
///
/// This is the only way the format layer touches the outside world. Implementations must treat a
/// read that would run past `size` as an error (never a short read), so parsers can rely on getting
/// exactly `count` bytes back or an error.
public protocol ByteSource: Sendable {
    /// Total size in bytes.
    var size: UInt64 { get }
    /// Reads exactly `count` bytes at `offset`, or throws.
    func read(at offset: UInt64, count: Int) throws -> [UInt8]
}

/// A byte source that knows where it holds nothing but zeros: a container's unallocated and zero
/// clusters, what SEEK_DATA tells of a file. Copies of it skip those parts without reading them.
public protocol SparseByteSource: ByteSource {
    /// The parts of `range` that may hold bytes other than zeros, sorted and apart; the rest of
    /// `range` reads as zeros. A part may hold zeros too (the answer may be generous, never short).
    func dataRanges(in range: Range<UInt64>) throws -> [Range<UInt64>]
}

/// Why a read from a `ByteSource` failed. `description` is the message the user reads.
public struct ByteSourceError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// Makes an error whose message is `description`.
    public init(_ description: String) { self.description = description }
}

extension ByteSource {
    /// Reads `count` bytes at `offset` if the whole range lies inside the source, else returns nil.
    ///
    /// Parsers use this for every offset they computed from image contents, so an out-of-range or
    /// overflowing value becomes a finding rather than an error or a trap.
    func readIfInBounds(at offset: UInt64, count: Int) throws -> [UInt8]? {
        guard count >= 0 else { return nil }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= size else { return nil }
        return try read(at: offset, count: count)
    }
}

/// Checks `offset..<offset+count` against `size`; shared by the concrete sources.
private func checkRange(offset: UInt64, count: Int, size: UInt64, what: @autoclosure () -> String) throws {
    guard count >= 0 else {
        throw ByteSourceError("read of \(count) bytes at \(offset) from \(what()): negative count")
    }
    let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
    guard !overflow, end <= size else {
        throw ByteSourceError(
            "read of \(count) bytes at \(offset) from \(what()) runs past its end (\(size) bytes)")
    }
}

/// An image in memory; used by tests and by callers that already hold the bytes.
public struct MemoryByteSource: ByteSource {
    /// The whole image, read from offset 0.
    public let bytes: [UInt8]
    public var size: UInt64 { UInt64(bytes.count) }

    /// Serves reads from `bytes`; the size is `bytes.count`.
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        try checkRange(offset: offset, count: count, size: size, what: "memory")
        let start = Int(offset)  // fits: offset + count <= bytes.count
        return Array(bytes[start..<start + count])
    }
}

/// A file or block device opened read-only.
///
/// The size of a regular file comes from fstat. A block device reports size 0 there, and finding its
/// real size needs an ioctl, which this layer does not make; the caller (ImgSystem) passes `size:`.
/// Sendable because every stored property is immutable and pread(2) does not use the file offset.
public final class FileByteSource: ByteSource {
    /// The path the source was opened from, as given; error messages name it.
    public let path: String
    public let size: UInt64
    /// For callers that hand the open image to a C library (libblkid) instead of reopening it.
    public let fd: Int32

    /// Opens `path` with O_RDONLY | O_CLOEXEC. `size` overrides the size fstat reports; it is
    /// required for anything that is not a regular file.
    public init(path: String, size: UInt64? = nil) throws {
        let fd = try Self.retryingEINTR("open", path: path) {
            open(path, O_RDONLY | O_CLOEXEC)
        }
        var st = stat()
        if fstat(fd, &st) != 0 {
            let message = "fstat on \(path): \(Self.errnoText(errno))"
            _ = close(fd)
            throw ByteSourceError(message)
        }
        if let size {
            self.size = size
        } else if (st.st_mode & S_IFMT) == S_IFREG {
            self.size = UInt64(st.st_size)
        } else {
            _ = close(fd)
            throw ByteSourceError(
                "\(path) is not a regular file, so its size is unknown; pass size: (for a block device, "
                    + "read it with ioctl(BLKGETSIZE64) in ImgSystem)")
        }
        self.path = path
        self.fd = fd
    }

    deinit { _ = close(fd) }

    /// Reads exactly `count` bytes at `offset`, looping over short reads. Wraps pread(2).
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        try checkRange(offset: offset, count: count, size: size, what: path)
        guard count > 0 else { return [] }
        guard offset <= UInt64(Int64.max - Int64(count)) else {
            throw ByteSourceError("pread on \(path) at \(offset): offset is too large")
        }
        return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var done = 0
            while done < count {
                let position = off_t(offset) + off_t(done)
                let n = pread(fd, buffer.baseAddress! + done, count - done, position)
                if n < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    initialized = done
                    throw ByteSourceError("pread on \(path) at \(position): \(Self.errnoText(code))")
                }
                if n == 0 {
                    // The file shrank below the size we were told; a short read is an error.
                    initialized = done
                    throw ByteSourceError(
                        "pread on \(path) at \(position): unexpected end of file (wanted \(count - done) more bytes)")
                }
                done += n
            }
            initialized = done
        }
    }

    /// Calls `body` until it does not fail with EINTR; captures errno right after the failing call.
    private static func retryingEINTR(_ what: String, path: String, _ body: () -> Int32) throws -> Int32 {
        while true {
            let result = body()
            if result >= 0 { return result }
            let code = errno
            if code == EINTR { continue }
            throw ByteSourceError("\(what) on \(path): \(errnoText(code))")
        }
    }

    private static func errnoText(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "error \(code)" }
        return String(cString: text)
    }
}
