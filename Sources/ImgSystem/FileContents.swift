import Glibc

// Whole-file reads and writes and directory listings: the one copy of each, for every layer above.

/// Reads a whole file. Wraps open(2) and read(2).
public func readFile(_ path: String) throws(SystemError) -> [UInt8] {
    let h = try FileHandle(path: path, flags: O_RDONLY)
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = try systemCall("read", on: path) { Int32(truncatingIfNeeded: read(h.fd, &buf, buf.count)) }
        if n == 0 { return data }
        data += buf[0..<Int(n)]
    }
}

/// Reads a whole (small) text file: /proc, /sys, configuration.
public func readTextFile(_ path: String) throws(SystemError) -> String {
    String(decoding: try readFile(path), as: UTF8.self)
}

/// Writes `bytes` as the whole content of `path`, created or truncated, with exactly `mode`
/// whatever the umask. A symbolic link at `path` is refused (O_NOFOLLOW): a link planted in an
/// image must not steer a write onto the host. Wraps open(2), write(2) and fchmod(2).
public func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(SystemError) {
    let h = try FileHandle(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: mode)
    try writeFully(h.fd, bytes, path: path)
    try systemCall("fchmod", on: path) { fchmod(h.fd, mode) }
}

/// The names in a directory, without "." and "..", in the order the filesystem gives them.
/// Wraps opendir(3) and readdir(3).
public func listDirectory(_ path: String) throws(SystemError) -> [String] {
    guard let dir = opendir(path) else { throw SystemError("opendir", on: path, errno: errno) }
    defer { closedir(dir) }
    var names: [String] = []
    while let e = readdir(dir) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// `listDirectory`, or empty if the directory cannot be read: for /proc, /sys and imgtool's own
/// directories, where a missing one means there is nothing to list.
public func directoryEntries(_ path: String) -> [String] {
    (try? listDirectory(path)) ?? []
}

/// The target of the symbolic link `path`. Wraps readlink(2).
public func readSymbolicLink(_ path: String) throws(SystemError) -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink(path, &buffer, buffer.count - 1)
    guard n >= 0 else { throw SystemError("readlink", on: path, errno: errno) }
    return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Up to `limit` bytes of the file at `path` (its last ones with `fromEnd`); empty if it cannot be
/// read. For logs and dumps of our own that may be missing or still growing.
package func readFileBytes(_ path: String, limit: Int, fromEnd: Bool = false) -> [UInt8] {
    guard let file = try? FileHandle(path: path, flags: O_RDONLY) else { return [] }
    var st = stat()
    guard fstat(file.fd, &st) == 0 else { return [] }
    let size = Int(st.st_size)
    if fromEnd, size > limit { lseek(file.fd, off_t(size - limit), SEEK_SET) }
    // One byte more than the size, so a file that grew since fstat is noticed up to `limit`.
    var bytes = [UInt8](repeating: 0, count: min(size + 1, limit))
    var count = 0
    while count < bytes.count {
        let n = bytes.withUnsafeMutableBytes { read(file.fd, $0.baseAddress! + count, $0.count - count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        count += n
    }
    return Array(bytes[..<count])
}

/// Writes a whole new file, created exclusively with mode 0600. Wraps open(2) and write(2).
package func writeNewFile(_ path: String, _ bytes: [UInt8]) throws(SystemError) {
    let file = try FileHandle(path: path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
    try writeFully(file.fd, bytes, path: path)
}

/// Writes all of `bytes` to `fd`, through short writes and EINTR; `path` names it in errors.
public func writeFully(_ fd: Int32, _ bytes: [UInt8], path: String) throws(SystemError) {
    var done = 0
    while done < bytes.count {
        let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { throw SystemError("write", on: path, errno: n < 0 ? errno : EIO) }
        done += n
    }
}

extension String {
    /// Without the newlines a sysfs or procfs value ends in.
    var trimmingTrailingNewlines: String {
        var s = Substring(self)
        while s.last == "\n" { s = s.dropLast() }
        return String(s)
    }
}
