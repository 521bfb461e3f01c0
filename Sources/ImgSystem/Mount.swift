import Glibc
import Logging
import Synchronization

/// A mount made by this process, or adopted from a run that died (`adopt`): either way released
/// by the same `unmount`.
public final class Mount: @unchecked Sendable {
    public let source: String
    public let target: String
    public let filesystemType: String
    private var mounted = true
    /// Made by this process: only then does deinit unmount it. An adopted mount that stays busy
    /// is left as it is, for the caller to report.
    private let made: Bool
    private let logger: Logger

    public enum Error: Swift.Error, CustomStringConvertible, Sendable {
        case system(SystemError)
        case stillMounted(target: String)
        /// Still busy after the retries; `users` are the pids with something open inside.
        case busy(target: String, users: [Int32])
        public var description: String {
            switch self {
            case .system(let e): return e.description
            case .stillMounted(let t): return "\(t) is still mounted after umount2; see `fuser -vm \(t)`."
            case .busy(let t, let users):
                let who = users.isEmpty ? "something (see `fuser -vm \(t)`)"
                    : "pid " + users.map { "\($0)" + (processName($0).map { " (\($0))" } ?? "") }.joined(separator: ", ")
                return "\(t) is busy: \(who) has files open in it. It stays mounted; stop that process, then run `imgtool cleanup --all` (or add --force to detach it lazily)."
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
        made = true
        let flags = UInt(MS_NOSUID | MS_NODEV) | (readOnly ? UInt(MS_RDONLY) : 0)
        try systemCall("mount(\(filesystemType)\(data.map { ", " + $0 } ?? ""), \(source))", on: target) {
            mount(source, target, filesystemType, flags, data)
        }
        logger.debug("mounted \(source) on \(target)", metadata: data.map { ["options": "\($0)"] })
    }

    private init(adopting entry: MountInfo, logger: Logger) {
        source = entry.source
        target = entry.target
        filesystemType = entry.filesystemType
        self.logger = logger
        made = false
    }

    /// The mount on `target` that another process made (the top one, if several are stacked), so
    /// that `imgtool cleanup` releases it with the same code as the run that died; nil when
    /// nothing is mounted there.
    public static func adopt(_ target: String, logger: Logger) -> Mount? {
        mountTable().last { $0.target == target }.map { Mount(adopting: $0, logger: logger) }
    }

    /// How `unmount(detachingIfBusy:)` released the mount.
    public enum Release: Sendable, Equatable {
        case unmounted
        /// Detached lazily (MNT_DETACH): it goes away when its last user does.
        case detached
    }

    /// Unmounts, retrying EBUSY with backoff, and confirms in /proc/self/mountinfo. Idempotent.
    /// Wraps umount2(2).
    public func unmount() throws(Error) {
        _ = try unmount(detachingIfBusy: false)
    }

    /// `unmount()`, but a mount still busy after the retries is detached lazily when
    /// `detachingIfBusy` (cleanup's --force) instead of failing.
    public func unmount(detachingIfBusy: Bool) throws(Error) -> Release {
        try releasing.withLock { _ throws(Error) -> Release in
            do throws(Error) {
                try unmountOnce()
                return .unmounted
            } catch .busy where detachingIfBusy {
                do throws(SystemError) {
                    try systemCall("umount2(MNT_DETACH)", on: target) { umount2(target, Int32(UMOUNT_NOFOLLOW) | Int32(MNT_DETACH)) }
                } catch {
                    throw .system(error)
                }
                mounted = false
                logger.warning("\(target) was busy; detached lazily (--force): it goes away when its last user does")
                return .detached
            }
        }
    }

    /// Sendable: concurrent `unmount()` calls run one after the other.
    private let releasing = Mutex(())

    private func unmountOnce() throws(Error) {
        guard mounted else { return }
        do {
            _ = try retrying([EBUSY], attempts: 25) { () throws(SystemError) in
                try systemCall("umount2", on: target) { umount2(target, Int32(UMOUNT_NOFOLLOW)) }
            }
        } catch where error.errno == EINVAL && !Self.isMountPoint(target) {
        } catch where error.errno == EBUSY {
            throw .busy(target: target, users: Self.users(of: target))
        } catch {
            throw .system(error)
        }
        guard !Self.isMountPoint(target) else { throw .stillMounted(target: target) }
        mounted = false
        logger.debug("unmounted \(target)")
    }

    /// Processes with a descriptor, working directory or root inside `mountPoint` (what fuser -m
    /// finds), from /proc.
    public static func users(of mountPoint: String) -> [Int32] {
        func inside(_ target: String) -> Bool { target == mountPoint || target.hasPrefix(mountPoint + "/") }
        var pids: [Int32] = []
        for name in directoryEntries("/proc") {
            guard let pid = Int32(name) else { continue }
            let links = ["cwd", "root"].map { "/proc/\(pid)/\($0)" } + directoryEntries("/proc/\(pid)/fd").map { "/proc/\(pid)/fd/\($0)" }
            if links.contains(where: { (try? readSymbolicLink($0)).map(inside) ?? false }) { pids.append(pid) }
        }
        return pids.sorted()
    }

    /// Whether the kernel lists `path` as a mount point of this mount namespace.
    public static func isMountPoint(_ path: String) -> Bool {
        mountPoints().contains(path)
    }

    /// Mount points from /proc/self/mountinfo, octal escapes decoded.
    public static func mountPoints() -> [String] {
        mountTable().map(\.target)
    }

    struct MountInfo {
        let target: String
        let filesystemType: String
        let source: String
    }

    /// /proc/self/mountinfo's lines in order (a later mount on the same point is on top):
    /// "ID PARENT MAJ:MIN ROOT TARGET OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
    static func mountTable() -> [MountInfo] {
        guard let text = try? readTextFile("/proc/self/mountinfo") else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 4 else { return nil }
            let separator = fields.firstIndex(of: "-").map { $0 + 1 } ?? fields.count
            return MountInfo(target: unescapeMountField(fields[4]),
                             filesystemType: separator < fields.count ? String(fields[separator]) : "",
                             source: separator + 1 < fields.count ? unescapeMountField(fields[separator + 1]) : "")
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
        if mounted && made { try? unmount() }
    }
}
