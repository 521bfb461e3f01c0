import Glibc
import ImgFormats
import ImgSystem

/// The directory where isolated VMs keep what outlives a run: extracted kernels (`CloudKernel`),
/// KVM verdicts (`KVMTrial`) and saved VMs (`VMSnapshot`). Entries are keyed by `fileKey`s of the
/// files they come from, written whole or not at all (`store`), and dropped when stale (`remove`).
package struct VMCache: Sendable {
    package let directory: String

    /// $XDG_CACHE_HOME/imgtool, else /var/cache/imgtool for root, else ~/.cache/imgtool.
    package static var defaultDirectory: String? {
        if let x = getenv("XDG_CACHE_HOME").map({ String(cString: $0) }), x.hasPrefix("/") { return "\(x)/imgtool" }
        if geteuid() == 0 { return "/var/cache/imgtool" }
        if let home = getenv("HOME").map({ String(cString: $0) }), home.hasPrefix("/") { return "\(home)/.cache/imgtool" }
        return nil
    }

    /// The cache at `directory`, made with its parents if need be; nil if it cannot be written.
    package init?(preparing directory: String) {
        var prefix = ""
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            do { try makeDirectory(prefix, mode: 0o755) } catch { return nil }
        }
        guard accessible(directory, W_OK) else { return nil }
        self.directory = directory
    }

    /// The path of the entry `name`.
    package func path(_ name: String) -> String { "\(directory)/\(name)" }

    /// The names of the entries that start with `prefix`.
    package func names(prefix: String) -> [String] {
        directoryEntries(directory).filter { $0.hasPrefix(prefix) }
    }

    /// Removes the entries that start with `prefix` and that `isStale` picks, by name. Wraps unlink(2).
    package func remove(prefix: String, where isStale: (String) -> Bool) {
        for name in names(prefix: prefix) where isStale(name) { bestEffort { unlink(path(name)) } }
    }

    /// A key that changes when the file does: device, inode, size, mtime and ctime.
    package static func fileKey(_ path: String) -> String? {
        guard let st = try? fileStatus(path) else { return nil }
        return hexHash("\(path) \(st.st_dev) \(st.st_ino) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_ctim.tv_sec)")
    }

    /// 16 hex digits of `text`'s SHA-256: a name, not a security boundary.
    package static func hexHash(_ text: String) -> String {
        String(SHA256.hexDigest(Array(text.utf8)).prefix(16))
    }

    /// Writes to a temp file beside `path` and renames it into place, so that a concurrent reader
    /// sees all or nothing. The temp file's name ends in ".tmp-PID", so that `VMSnapshot` can tell
    /// a dead writer's leftovers. Wraps rename(2) and unlink(2).
    package func store(_ bytes: [UInt8], at path: String) -> Bool {
        let temporary = "\(path).tmp-\(getpid())"
        do {
            try writeNewFile(temporary, bytes)
            try systemCall("rename", on: temporary) { rename(temporary, path) }
        } catch {
            bestEffort { unlink(temporary) }
            return false
        }
        return true
    }
}
