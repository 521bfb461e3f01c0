import Glibc
import Logging

/// A mount made by this process.
public final class Mount: @unchecked Sendable {
    public let source: String
    public let target: String
    public let filesystemType: String
    private var mounted = true
    private let logger: Logger

    public enum Error: Swift.Error, CustomStringConvertible, Sendable {
        case system(SystemError)
        case stillMounted(target: String)
        public var description: String {
            switch self {
            case .system(let e): return e.description
            case .stillMounted(let t): return "\(t) is still mounted after umount2; see `fuser -vm \(t)`."
            }
        }
    }

    /// Mounts `source` on `target` nosuid,nodev: the image is not trusted to carry setuid files or
    /// device nodes. Wraps mount(2).
    /// `data` is the filesystem's own option string (mount(8)'s -o without the generic flags).
    public init(source: String, target: String, filesystemType: String, readOnly: Bool = false,
                data: String? = nil, logger: Logger) throws(SystemError) {
        self.source = source
        self.target = target
        self.filesystemType = filesystemType
        self.logger = logger
        let flags = UInt(MS_NOSUID | MS_NODEV) | (readOnly ? UInt(MS_RDONLY) : 0)
        try systemCall("mount(\(filesystemType)\(data.map { ", " + $0 } ?? ""), \(source))", on: target) {
            mount(source, target, filesystemType, flags, data)
        }
        logger.debug("mounted \(source) on \(target)", metadata: data.map { ["options": "\($0)"] })
    }

    /// Unmounts, retrying EBUSY with backoff, and confirms in /proc/self/mountinfo. Idempotent.
    /// Wraps umount2(2).
    public func unmount() throws(Error) {
        guard mounted else { return }
        do {
            _ = try retrying([EBUSY], attempts: 25) { () throws(SystemError) in
                try systemCall("umount2", on: target) { umount2(target, Int32(UMOUNT_NOFOLLOW)) }
            }
        } catch where error.errno == EINVAL && !Self.isMountPoint(target) {
        } catch {
            throw .system(error)
        }
        guard !Self.isMountPoint(target) else { throw .stillMounted(target: target) }
        mounted = false
        logger.debug("unmounted \(target)")
    }

    /// Whether the kernel lists `path` as a mount point of this mount namespace.
    public static func isMountPoint(_ path: String) -> Bool {
        mountPoints().contains(path)
    }

    /// Mount points from /proc/self/mountinfo, octal escapes decoded.
    public static func mountPoints() -> [String] {
        guard let text = try? readTextFile("/proc/self/mountinfo") else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            return fields.count > 4 ? unescapeMountField(fields[4]) : nil
        }
    }

    static func unescapeMountField(_ s: Substring) -> String {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "\\"), bytes.count >= 3,
               let v = UInt8(String(decoding: bytes.prefix(3), as: UTF8.self), radix: 8) {
                out.append(v)
                bytes = bytes.dropFirst(3)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    deinit {
        if mounted { try? unmount() }
    }
}

/// Reads a whole (small) file; for /proc and /sys.
public func readTextFile(_ path: String) throws(SystemError) -> String {
    let h = try FileHandle(path: path, flags: O_RDONLY)
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = try systemCall("read", on: path) { Int32(truncatingIfNeeded: read(h.fd, &buf, buf.count)) }
        if n == 0 { break }
        data += buf[0..<Int(n)]
    }
    return String(decoding: data, as: UTF8.self)
}
