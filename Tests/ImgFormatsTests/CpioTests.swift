import Glibc
import ImgSystem
import Testing
import TestSupport

@testable import ImgFormats

/// The newc writer, checked byte by byte on a tiny archive and by unpacking with a real cpio (GNU
/// cpio, or busybox's where GNU's is missing) into a scratch directory.
@Suite("cpio newc writer")
struct CpioTests {
    /// The header of one entry as the format defines it, for comparing with what the writer made.
    static func header(ino: UInt32, mode: UInt32, nlink: UInt32, size: Int, nameSize: Int) -> String {
        let fields = [ino, mode, 0, 0, nlink, 0, UInt32(size), 0, 0, 0, 0, UInt32(nameSize), 0]
        return "070701" + fields.map { v in
            let hex = String(v, radix: 16, uppercase: true)
            return String(repeating: "0", count: 8 - hex.count) + hex
        }.joined()
    }

    @Test func exactBytesOfATinyArchive() throws {
        var cpio = CpioWriter()
        try cpio.addFile("/a/b", data: [1, 2, 3], mode: 0o640)
        try cpio.addSymlink("l", target: "a/b")
        let bytes = cpio.finish()

        var expected: [UInt8] = []
        func entry(_ header: String, _ name: String, _ data: [UInt8]) {
            expected += Array(header.utf8) + Array(name.utf8) + [0]
            while expected.count % 4 != 0 { expected.append(0) }
            expected += data
            while expected.count % 4 != 0 { expected.append(0) }
        }
        // The parent "a" comes first, added implicitly; inode numbers follow the order.
        entry(Self.header(ino: 1, mode: 0o040755, nlink: 2, size: 0, nameSize: 2), "a", [])
        entry(Self.header(ino: 2, mode: 0o100640, nlink: 1, size: 3, nameSize: 4), "a/b", [1, 2, 3])
        entry(Self.header(ino: 3, mode: 0o120777, nlink: 1, size: 3, nameSize: 2), "l", Array("a/b".utf8))
        entry(Self.header(ino: 0, mode: 0, nlink: 1, size: 0, nameSize: 11), "TRAILER!!!", [])
        #expect(bytes == expected)
        #expect(bytes.count % 4 == 0)
        // Header + "a\0" = 112 bytes: no padding needed; "a/b\0" after a 110-byte header pads by 2.
        #expect(Array(bytes[110..<112]) == Array("a\0".utf8))
        #expect(cpio.paths == ["a", "a/b", "l"])
    }

    @Test func deterministic() throws {
        func build() throws -> [UInt8] {
            var cpio = CpioWriter()
            try cpio.addDirectory("etc", mode: 0o700)
            try cpio.addFile("etc/x", data: Array("hello".utf8))
            return cpio.finish()
        }
        #expect(try build() == build())
    }

    @Test func refusesBadPathsAndDuplicates() throws {
        var cpio = CpioWriter()
        #expect(throws: CpioWriter.Error.invalidPath("")) { try cpio.addFile("", data: []) }
        #expect(throws: CpioWriter.Error.invalidPath("/")) { try cpio.addFile("/", data: []) }
        #expect(throws: CpioWriter.Error.invalidPath("a/../b")) { try cpio.addFile("a/../b", data: []) }
        try cpio.addFile("f", data: [])
        #expect(throws: CpioWriter.Error.duplicate("/f")) { try cpio.addFile("/f", data: []) }
        #expect(throws: CpioWriter.Error.duplicate("f")) { try cpio.addDirectory("f") }
        #expect(throws: CpioWriter.Error.parentNotDirectory("f/g")) { try cpio.addFile("f/g", data: []) }
        // An existing directory may be named again; the first mode stays.
        try cpio.addDirectory("d", mode: 0o700)
        try cpio.addDirectory("/d/", mode: 0o755)
        #expect(cpio.paths == ["f", "d"])
        #expect(cpio.kind(of: "/d") == .directory)
        #expect(cpio.contains("./f"))
    }

    /// What a real cpio makes of the archive: every file's bytes and mode, every symlink's target,
    /// every directory's mode, and the listing in the order written.
    @Test func roundTripsThroughCpio() throws {
        let (program, prefix) = try Self.cpioProgram()
        let scratch = try Scratch()
        var cpio = CpioWriter()
        var files: [(String, [UInt8], UInt32)] = []
        // Sizes around the 4-byte padding, every byte value, and a large file.
        for size in 0...9 {
            files.append(("sizes/\(size)", (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }, 0o644))
        }
        files.append(("bin/all-bytes", (0..<512).map { UInt8($0 % 256) }, 0o755))
        var generator = SystemRandomNumberGenerator()
        files.append(("big/random", (0..<(1 << 20) + 3).map { _ in UInt8.random(in: 0...255, using: &generator) }, 0o600))
        files.append(("deep/er/still/file with spaces", Array("x\n".utf8), 0o4755))
        try cpio.addDirectory("private", mode: 0o700)
        for (path, data, mode) in files { try cpio.addFile(path, data: data, mode: mode) }
        try cpio.addSymlink("bin/sh", target: "busybox")
        try cpio.addSymlink("abs", target: "/bin/all-bytes")
        let archivePath = scratch.file("test.cpio")
        try writeFile(archivePath, cpio.finish())

        let out = scratch.file("out")
        #expect(mkdir(out, 0o755) == 0)
        let listing = try run(["sh", "-c", "cd \"$1\" && \"$2\" \(prefix) -idv -F \"$3\" 2>&1", "sh", out, program, archivePath])
        let listed = listing.stdout.split(separator: "\n").map(String.init).filter { !$0.hasSuffix("blocks") }
        #expect(listed == cpio.paths, "listing: \(listing.stdout)")

        for (path, data, mode) in files {
            #expect(try Self.read(out + "/" + path) == data, "contents of \(path)")
            #expect(Self.mode(out + "/" + path) == 0o100000 | mode, "mode of \(path)")
        }
        #expect(Self.mode(out + "/private") == 0o040700)
        #expect(Self.mode(out + "/deep/er") == 0o040755)
        #expect(Self.linkTarget(out + "/bin/sh") == "busybox")
        #expect(Self.linkTarget(out + "/abs") == "/bin/all-bytes")
    }

    // MARK: Helpers

    /// GNU cpio, else busybox's applet.
    static func cpioProgram() throws -> (String, String) {
        if let gnu = Subprocess.find("cpio") { return (gnu, "") }
        if let busybox = Subprocess.find("busybox") { return (busybox, "cpio") }
        throw TestFailure("neither cpio nor busybox is installed (Debian packages cpio, busybox-static)")
    }

    static func read(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw TestFailure("open \(path): \(errno)") }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = Glibc.read(fd, &chunk, chunk.count)
            guard n > 0 else { break }
            out += chunk[..<n]
        }
        return out
    }

    static func mode(_ path: String) -> UInt32 {
        var st = stat()
        return lstat(path, &st) == 0 ? UInt32(st.st_mode) : 0
    }

    static func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
