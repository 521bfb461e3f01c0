import CEwf
import Glibc
import ImgFormats
import Synchronization

/// The disk inside an Expert Witness Format acquisition (E01 and its segments E02, ...), read
/// through libewf: the format of forensic images, whose chunk tables, compression and checksums
/// libewf knows. libewf opens the segment files itself, so this reader lives with the other
/// system libraries, not in the formats layer. Read-only.
public final class EWFDisk: ByteSource, @unchecked Sendable {
    public let size: UInt64
    /// Bytes per chunk, the unit EWF compresses and checksums.
    public let chunkSize: UInt64
    /// The segment files, in order, as libewf's glob found them next to the first one.
    public let segments: [String]
    private let path: String
    private let handle: UnsafeMutablePointer<libewf_handle_t>
    /// libewf's handle is not safe to share between threads; the lock serialises reads.
    private let lock = Mutex(())

    /// Opens the acquisition whose first segment is `path` (its other segments are found next to
    /// it, by EWF's naming scheme). Wraps libewf_glob(3) and libewf_handle_open(3).
    public init(path: String) throws(SystemError) {
        self.path = path
        var error: UnsafeMutablePointer<libewf_error_t>?
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        var count: Int32 = 0
        guard libewf_glob(path, strlen(path), UInt8(LIBEWF_FORMAT_UNKNOWN.rawValue), &names, &count, &error) == 1,
              let names, count > 0 else {
            throw Self.failure("libewf_glob", path, &error)
        }
        defer { _ = libewf_glob_free(names, count, nil) }
        segments = (0..<Int(count)).compactMap { names[$0].map { String(cString: $0) } }
        var h: UnsafeMutablePointer<libewf_handle_t>?
        guard libewf_handle_initialize(&h, &error) == 1, let h else { throw Self.failure("libewf_handle_initialize", path, &error) }
        guard libewf_handle_open(h, names, count, libewf_get_access_flags_read(), &error) == 1 else {
            var handle: UnsafeMutablePointer<libewf_handle_t>? = h
            _ = libewf_handle_free(&handle, nil)
            throw Self.failure("libewf_handle_open", path, &error)
        }
        var media: UInt64 = 0, chunk: UInt32 = 0
        guard libewf_handle_get_media_size(h, &media, &error) == 1 else {
            var handle: UnsafeMutablePointer<libewf_handle_t>? = h
            _ = libewf_handle_close(h, nil)
            _ = libewf_handle_free(&handle, nil)
            throw Self.failure("libewf_handle_get_media_size", path, &error)
        }
        _ = libewf_handle_get_chunk_size(h, &chunk, nil)
        size = media
        chunkSize = UInt64(chunk)
        handle = h
    }

    deinit {
        var h: UnsafeMutablePointer<libewf_handle_t>? = handle
        _ = libewf_handle_close(handle, nil)
        _ = libewf_handle_free(&h, nil)
    }

    /// Reads exactly `count` bytes at `offset` of the acquired disk. Wraps libewf_handle_read_random(3).
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(max(count, 0)))
        guard count >= 0, !overflow, end <= size else {
            throw ByteSourceError("read of \(count) bytes at \(offset) from \(path) runs past its end (\(size) bytes)")
        }
        guard count > 0 else { return [] }
        let h = handle
        return try lock.withLock { _ throws(ByteSourceError) -> [UInt8] in
            var error: UnsafeMutablePointer<libewf_error_t>?
            var done = 0
            let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
                while done < count {
                    let n = libewf_handle_read_random(h, buffer.baseAddress! + done, count - done, off64_t(offset) + off64_t(done), &error)
                    if n <= 0 { break }
                    done += n
                }
                initialized = done
            }
            guard done == count else {
                throw ByteSourceError(Self.failure("libewf_handle_read_random at \(offset + UInt64(done))", path, &error).description)
            }
            return bytes
        }
    }

    /// libewf's message for `error` (freed here), as a SystemError naming `operation` on `path`.
    private static func failure(_ operation: String, _ path: String, _ error: inout UnsafeMutablePointer<libewf_error_t>?) -> SystemError {
        var text = [CChar](repeating: 0, count: 1024)
        var message = "failed"
        if let e = error {
            if libewf_error_sprint(e, &text, text.count) > 0 {
                // libewf's messages run over several lines, the last the most specific.
                message = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(whereSeparator: \.isNewline).last.map(String.init) ?? message
            }
            libewf_error_free(&error)
        }
        return SystemError("\(operation) (\(message))", on: path, errno: EIO)
    }
}
