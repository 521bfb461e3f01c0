import Glibc

// Whole-file reads and writes and directory listings: the one copy of each, for every layer above.

/// Reads a whole file. Wraps open(2), fstat(2) and read(2).
package func readFile(_ path: String) throws(SystemError) -> [UInt8] {
    let h = try FileHandle(path: path, flags: O_RDONLY)
    // fstat's size and one byte more, so that a regular file's end is seen in one round, into
    // memory left uninitialised (an offline install reads 300-odd files); /proc and /sys files
    // report size 0 and are read 64 KiB at a time.
    let size = Int(try fileStatus(fd: h.fd, path: path).st_size)
    var capacity = size > 0 ? size + 1 : 65536
    var data: [UInt8] = []
    while true {
        var failure: SystemError?
        let chunk = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, initialized in
            do throws(SystemError) {
                initialized = try readFully(h.fd, into: UnsafeMutableRawBufferPointer(buffer), path: path)
            } catch {
                failure = error
                initialized = 0
            }
        }
        if let failure { throw failure }
        if data.isEmpty { data = chunk } else { data += chunk }
        if chunk.count < capacity { return data }
        capacity = 65536
    }
}

/// Reads a whole (small) text file: /proc, /sys, configuration. Wraps open(2) and read(2).
package func readTextFile(_ path: String) throws(SystemError) -> String {
    String(decoding: try readFile(path), as: UTF8.self)
}

/// Writes `bytes` as the whole content of `path`, created or truncated, with exactly `mode`
/// whatever the umask. A symbolic link at `path` is refused (O_NOFOLLOW): a link planted in an
/// image must not steer a write onto the host. Wraps open(2), write(2) and fchmod(2).
package func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(SystemError) {
    let h = try FileHandle(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: mode)
    try writeFully(h.fd, bytes, path: path)
    try systemCall("fchmod", on: path) { fchmod(h.fd, mode) }
}

/// The names in a directory, without "." and "..", in the order the filesystem gives them.
/// Wraps opendir(3) and readdir(3).
package func listDirectory(_ path: String) throws(SystemError) -> [String] {
    let dir = try systemCall("opendir", on: path, failed: { $0 == nil }) { opendir(path) }!
    // Not through bestEffort: closedir frees the DIR whatever it returns, so it is never retried.
    defer { _ = closedir(dir) }
    var names: [String] = []
    while let e = readdir(dir) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// `listDirectory`, or empty if the directory cannot be read: for /proc, /sys and imgtool's own
/// directories, where a missing one means there is nothing to list.
package func directoryEntries(_ path: String) -> [String] {
    (try? listDirectory(path)) ?? []
}

/// The target of the symbolic link `path`. Wraps readlink(2).
package func readSymbolicLink(_ path: String) throws(SystemError) -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = try systemCall("readlink", on: path) { readlink(path, &buffer, buffer.count - 1) }
    return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Up to `limit` bytes of the file at `path` (its last ones with `fromEnd`); empty if it cannot be
/// read. For logs and dumps of our own that may be missing or still growing. Wraps open(2),
/// fstat(2), lseek(2) and read(2).
package func readFileBytes(_ path: String, limit: Int, fromEnd: Bool = false) -> [UInt8] {
    guard let file = try? FileHandle(path: path, flags: O_RDONLY),
          let size = try? Int(fileStatus(fd: file.fd, path: path).st_size) else { return [] }
    if fromEnd, size > limit {
        guard (try? systemCall("lseek", on: path, { lseek(file.fd, off_t(size - limit), SEEK_SET) })) != nil else { return [] }
    }
    // One byte more than the size, so a file that grew since fstat is noticed up to `limit`.
    var bytes = [UInt8](repeating: 0, count: min(size + 1, limit))
    let count = (try? bytes.withUnsafeMutableBytes { buffer throws(SystemError) in
        try readFully(file.fd, into: buffer, path: path)
    }) ?? 0
    return Array(bytes[..<count])
}

/// Writes a whole new file, created exclusively with mode 0600. Wraps open(2) and write(2).
package func writeNewFile(_ path: String, _ bytes: [UInt8]) throws(SystemError) {
    let file = try FileHandle(path: path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
    try writeFully(file.fd, bytes, path: path)
}

/// Reads into `buffer` until it is full or the file ends, through short reads and EINTR; at
/// `offset` when given, without moving the file position. Returns the count read, less than the
/// buffer's only at the end of the file. Wraps read(2) and pread(2).
package func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64? = nil,
                      path: String) throws(SystemError) -> Int {
    var done = 0
    while done < buffer.count {
        let start = buffer.baseAddress! + done, count = buffer.count - done
        let n = if let offset {
            try systemCall("pread", on: path) { pread(fd, start, count, off_t(offset) + off_t(done)) }
        } else {
            try systemCall("read", on: path) { read(fd, start, count) }
        }
        if n == 0 { break }
        done += n
    }
    return done
}

/// `readFully` into the first `count` bytes of `buffer`, at `offset`. Wraps pread(2).
package func readFully(_ fd: Int32, into buffer: inout [UInt8], count: Int, at offset: UInt64,
                      path: String) throws(SystemError) -> Int {
    // withUnsafeMutableBytes rethrows untyped: carry the SystemError out as a Result.
    try buffer.withUnsafeMutableBytes { b in
        Result { () throws(SystemError) in
            try readFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: b[..<count]), at: offset, path: path)
        }
    }.get()
}

/// Writes all of `bytes` to `fd`, through short writes and EINTR; `path` names it in errors.
/// Wraps write(2).
package func writeFully(_ fd: Int32, _ bytes: [UInt8], path: String) throws(SystemError) {
    // withUnsafeBytes rethrows untyped: carry the SystemError out as a Result.
    try bytes.withUnsafeBytes { buffer in
        Result { () throws(SystemError) in try writeFully(fd, buffer, path: path) }
    }.get()
}

/// Writes all of `buffer` to `fd`, through short writes and EINTR; `path` names it in errors.
/// Wraps write(2).
package func writeFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws(SystemError) {
    var done = 0
    while done < buffer.count {
        let n = try systemCall("write", on: path) { write(fd, buffer.baseAddress! + done, buffer.count - done) }
        if n == 0 { throw SystemError("write", on: path, errno: EIO) }
        done += n
    }
}

/// Writes all of `bytes` to `fd` at `offset`, through short writes and EINTR, without moving the
/// file position; `path` names it in errors. Wraps pwrite(2).
package func writeFully(_ fd: Int32, _ bytes: [UInt8], at offset: UInt64, path: String) throws(SystemError) {
    var done = 0
    while done < bytes.count {
        let n = try systemCall("pwrite", on: path) {
            bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(offset) + off_t(done)) }
        }
        if n == 0 { throw SystemError("pwrite", on: path, errno: EIO) }
        done += n
    }
}

/// `path` made absolute, with every symbolic link resolved. Wraps realpath(3).
package func realPath(_ path: String) throws(SystemError) -> String {
    let resolved = try systemCall("realpath", on: path, failed: { $0 == nil }) { realpath(path, nil) }!
    defer { free(resolved) }
    return String(cString: resolved)
}

/// The status of `path`; of a final symbolic link itself with `followingLinks: false`.
/// Wraps stat(2) and lstat(2).
package func fileStatus(_ path: String, followingLinks: Bool = true) throws(SystemError) -> stat {
    var st = stat()
    if followingLinks {
        try systemCall("stat", on: path) { stat(path, &st) }
    } else {
        try systemCall("lstat", on: path) { lstat(path, &st) }
    }
    return st
}

/// The status of the file open at `fd`; `path` names it in errors. Wraps fstat(2).
package func fileStatus(fd: Int32, path: String) throws(SystemError) -> stat {
    var st = stat()
    try systemCall("fstat", on: path) { fstat(fd, &st) }
    return st
}

/// Whether `path` is there (`F_OK`) or allows `mode` (`R_OK`, `X_OK`...) to the real user.
/// Wraps access(2).
package func accessible(_ path: String, _ mode: Int32 = F_OK) -> Bool {
    (try? systemCall("access", on: path) { access(path, mode) }) != nil
}

/// Creates the directory `path` with `mode` (less the umask) unless it exists. Wraps mkdir(2).
package func makeDirectory(_ path: String, mode: mode_t) throws(SystemError) {
    do {
        try systemCall("mkdir", on: path) { mkdir(path, mode) }
    } catch where error.errno == EEXIST {}
}

extension String {
    /// Without the newlines a sysfs or procfs value ends in.
    var trimmingTrailingNewlines: String {
        var s = Substring(self)
        while s.last == "\n" { s = s.dropLast() }
        return String(s)
    }
}
