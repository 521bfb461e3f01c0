import Glibc

/// An exclusive advisory lock (flock) on an image, so that two imgtool runs never work on the same
/// image at once. Released when this object goes away or the process dies.
public final class ImageLock: @unchecked Sendable {
    /// Why the lock could not be taken. `description` is the message the user reads.
    public enum Error: Swift.Error, CustomStringConvertible, Sendable {
        /// Another process holds the lock; `pid` is that process, from /proc/locks (nil when not found there).
        case held(path: String, pid: Int32?)
        /// Opening or locking the image failed.
        case system(SystemError)
        public var description: String {
            switch self {
            case .held(let path, let pid):
                let session = pid.flatMap { pid in SessionJournal.all().first { $0.pid == pid && $0.live }?.id }
                let who = (pid.map { "process \($0)" + (processName($0).map { " (\($0))" } ?? "") } ?? "another process")
                    + (session.map { ", imgtool session \($0)" } ?? "")
                return "\(path) is in use by \(who): another imgtool is working on it. Wait for it to finish, or stop it."
            case .system(let e): return e.description
            }
        }
    }

    private let handle: FileHandle

    /// Takes the lock without waiting. Wraps flock(2) with LOCK_EX | LOCK_NB.
    public init(path: String) throws(Error) {
        var attempt = 0
        while true {
            let handle: FileHandle
            do {
                handle = try FileHandle(path: path, flags: O_RDONLY)
            } catch {
                throw .system(error)
            }
            do {
                try systemCall("flock", on: path) { flock(handle.fd, LOCK_EX | LOCK_NB) }
            } catch {
                guard error.errno == EWOULDBLOCK else { throw .system(error) }
                let st = try? fileStatus(fd: handle.fd, path: path)
                throw .held(path: path, pid: st.flatMap { Self.holder(device: $0.st_dev, inode: $0.st_ino) })
            }
            // An offline install replaces the image by rename (WorkingCopy): a lock taken on the
            // file it replaced guards nothing. Take it again on what the path names now.
            let locked = try? fileStatus(fd: handle.fd, path: path), named = try? fileStatus(path)
            if let locked, let named, locked.st_dev == named.st_dev, locked.st_ino == named.st_ino {
                self.handle = handle
                return
            }
            attempt += 1
            guard attempt < 10 else { throw .system(SystemError("flock (the file keeps being replaced)", on: path, errno: EAGAIN)) }
        }
    }

    /// The pid holding a flock on this inode, from /proc/locks
    /// ("1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF", major:minor in hex).
    static func holder(device: dev_t, inode: ino_t) -> Int32? {
        guard let text = try? readTextFile("/proc/locks") else { return nil }
        func hex2(_ v: UInt32) -> String { let s = String(v, radix: 16); return s.count < 2 ? "0" + s : s }
        // glibc's major()/minor() are macros; this is their Linux encoding.
        let major = UInt32(truncatingIfNeeded: ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff))
        let minor = UInt32(truncatingIfNeeded: (device & 0xff) | ((device >> 12) & ~0xff))
        let wanted = "\(hex2(major)):\(hex2(minor)):\(inode)"
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 6, f[1] == "FLOCK", f.contains(where: { $0 == wanted }) else { continue }
            if let i = f.firstIndex(where: { $0 == wanted }), let pid = Int32(f[i - 1]) { return pid }
        }
        return nil
    }
}

func processName(_ pid: Int32) -> String? {
    (try? readTextFile("/proc/\(pid)/comm"))?.trimmingSuffix("\n")
}

extension String {
    func trimmingSuffix(_ s: String) -> String { hasSuffix(s) ? String(dropLast(s.count)) : self }
}
