import Glibc
import ImgSystem

/// The image TestImages/make-os-tree.sh builds: where its filesystems start and what is in them.
public enum OSTree {
    public static let bootPartition = 1
    public static let rootPartition = 2
    public static let bootOffset: UInt64 = 2048 * 512
    public static let rootOffset: UInt64 = 34816 * 512
    public static let kernel = "vmlinuz-6.1.0-test"
    public static let hostname = "testhost"
    public static let passwd = "root:x:0:0:imgtool-test-root-in-image:/root:/bin/sh\n"
    /// E2FSPROGS_FAKE_TIME: every timestamp in the images the scripts build.
    public static let time: Int64 = 1_700_000_000
    public static let osRelease = """
        PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
        NAME="Debian GNU/Linux"
        VERSION_ID="12"
        VERSION="12 (bookworm)"
        VERSION_CODENAME=bookworm
        ID=debian
        # a comment, then values quoted in other ways
        HOME_URL='https://www.debian.org/'
        VARIANT="Test \\"quoted\\" \\$HOME \\\\ edition"

        """
}

/// TestImages/make-os-tree.sh OUT, made world-readable for the tests that run as nobody; returns OUT.
@discardableResult
public func makeOSTree(_ out: String) throws -> String {
    try run(["\(repositoryRoot)/TestImages/make-os-tree.sh", out])
    chmod(out, 0o644)
    return out
}

/// Runs debugfs `commands` (write, mkdir, symlink, ...) on the ext filesystem at byte `offset`
/// of `image`, writable, with libext2fs's fixed test time. debugfs exits 0 even when a command
/// fails, so this fails when it reports one ("...: <error>" lines on stderr).
public func debugfs(_ image: String, offset: UInt64 = 0, _ commands: [String]) throws {
    let file = "\(image).debugfs-commands"
    try writeFile(file, Array((commands.joined(separator: "\n") + "\n").utf8))
    defer { unlink(file) }
    let r = try run(["env", "E2FSPROGS_FAKE_TIME=\(OSTree.time)", "debugfs", "-w", "-f", file, "\(image)?offset=\(offset)"])
    let complaints = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("debugfs ") && $0.contains(": ") }
    if !complaints.isEmpty { throw TestFailure("debugfs on \(image): \(complaints.joined(separator: "; "))") }
}

/// What `debugfs -R COMMAND` prints for the filesystem at `offset` of `image` (read-only).
public func debugfsOutput(_ image: String, offset: UInt64 = 0, _ command: String) throws -> String {
    try run(["debugfs", "-R", command, "\(image)?offset=\(offset)"]).stdout
}

/// Reproducible pseudo-random bytes (xorshift64*), for big test files whose hash is known.
public func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    return (0..<count).map { _ in
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return UInt8(truncatingIfNeeded: (state &* 0x2545_F491_4F6C_DD1D) >> 56)
    }
}

/// st_mtim of `path`, to prove a read-only operation did not touch it.
public func modificationTime(_ path: String) throws -> timespec {
    var st = stat()
    guard stat(path, &st) == 0 else { throw TestFailure("stat \(path): \(String(cString: strerror(errno)))") }
    return st.st_mtim
}
