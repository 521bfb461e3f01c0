import Glibc

/// What a session is about to hold, written down before it holds it, so that a run killed with
/// SIGKILL (or any crash) leaves a list of what to release. One append-only file per session under
/// /run/imgtool/sessions, fsynced after every line, and locked (flock) by its session for the
/// session's whole life: the lock is the liveness test, since the kernel drops it when the
/// process dies, however it dies. /run is cleared at boot, like the loop devices and mounts.
///
/// Lines: `session <id> <pid> <image>`, then `acquire <kind> <name>` and `release <kind> <name>`.
/// Names are percent-escaped, so any path fits on one line.
/// Not Sendable: its session owns it and writes from one thread at a time.
public final class SessionJournal {
    /// Where journals live: /run/imgtool/sessions.
    public static let directory = TemporaryDirectory.defaultParent + "/sessions"
    static let suffix = ".journal"

    /// What a journal line names. Each kind says how the kernel shows the resource, so cleanup can
    /// find it even when it was only intended.
    public enum Kind: String, Sendable, CaseIterable {
        /// A loop device carrying this lo_file_name tag (see `ResourceMarks`).
        case loop
        /// A BLKPG partition: "<disk> <number>".
        case partition
        /// A device-mapper device, by name; its UUID carries the session (see `ResourceMarks`).
        case deviceMapper = "dm"
        /// A mount point.
        case mount
        /// A directory (mount points are made under /run/imgtool).
        case directory
        /// An undo file (`UndoFile`): blocks to put back into the image when its write did not finish.
        case undo
    }

    /// One resource a journal line names.
    public struct Entry: Sendable, Equatable, Hashable {
        /// What kind of resource it is.
        public let kind: Kind
        /// How to find it: a loop tag, a "<disk> <number>" pair, a dm name or a path, as `kind` says.
        public let name: String
        /// Makes an entry; `name` may hold any characters (the journal escapes them).
        public init(_ kind: Kind, _ name: String) {
            self.kind = kind
            self.name = name
        }
    }

    /// The session's identifier; the journal's file is `<id>.journal`.
    public let id: String
    /// The journal file's absolute path.
    public let path: String
    private let handle: FileHandle
    private var finished = false

    /// Creates and locks the journal of session `id`. Wraps mkdir(2), open(2), flock(2) and fsync(2).
    public init(id: String, image: String) throws(SystemError) {
        for dir in [TemporaryDirectory.defaultParent, Self.directory] { try makeDirectory(dir, mode: 0o700) }
        self.id = id
        path = Self.directory + "/" + id + Self.suffix
        handle = try FileHandle(path: path, flags: O_WRONLY | O_CREAT | O_EXCL | O_APPEND, mode: 0o600)
        try systemCall("flock(LOCK_EX)", on: path) { flock(handle.fd, LOCK_EX | LOCK_NB) }
        try append("session \(Self.escape(id)) \(getpid()) \(Self.escape(image))")
        // The file's name must survive a crash too, not only its contents. Best effort: a name
        // lost in a crash leaves nothing to clean up but what the kernel shows, which cleanup finds.
        let dir = try FileHandle(path: Self.directory, flags: O_RDONLY | O_DIRECTORY)
        bestEffort { fsync(dir.fd) }
    }

    /// Records that `entry` is about to be acquired. Call before the kernel call, and do not make
    /// it if this throws: an acquisition the journal does not know of could outlive a crash.
    public func acquiring(_ entry: Entry) throws(SystemError) {
        try append("acquire \(entry.kind.rawValue) \(Self.escape(entry.name))")
    }

    /// Records that `entry` was released. Best effort: cleanup's releases are idempotent, so a
    /// missing line costs a needless check, nothing more.
    public func released(_ entry: Entry) {
        try? append("release \(entry.kind.rawValue) \(Self.escape(entry.name))")
    }

    /// Everything was released: removes the journal, then drops the lock. Wraps unlink(2).
    public func finish() {
        guard !finished else { return }
        finished = true
        // A journal left behind holds nothing: `imgtool cleanup` removes it.
        bestEffort { unlink(path) }
        handle.close()
    }

    private func append(_ line: String) throws(SystemError) {
        let bytes = Array((line + "\n").utf8)
        // O_APPEND and one write per line: a crash leaves whole lines, or a torn last one that
        // parsing ignores.
        let n = try systemCall("write", on: path) { bytes.withUnsafeBytes { write(handle.fd, $0.baseAddress, $0.count) } }
        if n != bytes.count { throw SystemError("write", on: path, errno: EIO) }
        try systemCall("fsync", on: path) { fsync(handle.fd) }
    }

    deinit {
        // Not finished: something could not be released. The journal stays for `imgtool cleanup`;
        // closing the descriptor drops the lock, which marks the session dead.
        if !finished { handle.close() }
    }

    // MARK: Reading

    /// A journal as found on disk.
    public struct Record: Sendable {
        /// The session's identifier, from the session line (or the file name when a crash left no session line).
        public let id: String
        /// The process that ran the session; nil when the header line is missing or unreadable.
        public let pid: Int32?
        /// The image the session worked on; nil when the header line is missing or unreadable.
        public let image: String?
        /// Acquired and not released, in acquisition order.
        public let held: [Entry]
        /// The journal file's absolute path.
        public let path: String
        /// Whether its session still holds the lock.
        public let live: Bool
    }

    /// Every journal in the directory.
    public static func all() -> [Record] {
        var records: [Record] = []
        for name in directoryEntries(directory) where name.hasSuffix(suffix) {
            if let record = read(directory + "/" + name) { records.append(record) }
        }
        return records.sorted { $0.id < $1.id }
    }

    /// Parses the journal at `path`; nil if it cannot be read.
    public static func read(_ path: String) -> Record? {
        guard let text = try? readTextFile(path) else { return nil }
        var id: String?, pid: Int32?, image: String?
        var held: [Entry] = []
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        if !text.hasSuffix("\n"), !lines.isEmpty { lines.removeLast() }  // a crash can tear the last line
        for line in lines {
            let words = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            switch words.first {
            case "session" where words.count == 4:
                id = unescape(words[1]); pid = Int32(words[2]); image = unescape(words[3])
            case "acquire" where words.count == 3:
                if let kind = Kind(rawValue: words[1]) { held.append(Entry(kind, unescape(words[2]))) }
            case "release" where words.count == 3:
                if let kind = Kind(rawValue: words[1]), let i = held.lastIndex(of: Entry(kind, unescape(words[2]))) {
                    held.remove(at: i)
                }
            default: continue
            }
        }
        // No session line: killed between creating the file and writing it. Nothing was acquired
        // yet, and the file's name still says whose it was.
        let name = path.split(separator: "/").last.map(String.init) ?? ""
        guard let id = id ?? (name.hasSuffix(suffix) && name.count > suffix.count ? String(name.dropLast(suffix.count)) : nil) else {
            return nil
        }
        return Record(id: id, pid: pid, image: image, held: held, path: path, live: isLocked(path))
    }

    /// True while some process holds the journal's lock. Opening it read-only and asking for a
    /// shared lock without waiting does not disturb a live session's exclusive one. Wraps flock(2).
    static func isLocked(_ path: String) -> Bool {
        guard let file = try? FileHandle(path: path, flags: O_RDONLY) else { return false }
        do {
            try systemCall("flock(LOCK_SH)", on: path) { flock(file.fd, LOCK_SH | LOCK_NB) }
            return false  // ours, dropped when `file` closes
        } catch {
            return error.errno == EWOULDBLOCK
        }
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            if byte <= 0x20 || byte == UInt8(ascii: "%") || byte >= 0x7F {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" : "") + hex
            } else {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        return out.isEmpty ? "%" : out  // "%" alone: the empty string, so no field is ever empty
    }

    static func unescape(_ s: String) -> String {
        guard s != "%" else { return "" }
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "%"), bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
