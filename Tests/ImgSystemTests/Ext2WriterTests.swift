import Glibc
@testable import ImgSystem
import Testing
import TestSupport

/// Writing into ext2/3/4 with libext2fs, checked by e2fsprogs' own tools: e2fsck finds the
/// filesystem clean, debugfs reads back names, contents, modes and owners.
struct Ext2WriterTests {
    /// A 64 MiB image with a fresh `type` filesystem 1 MiB in, as a partition would hold it.
    func makeImage(_ scratch: Scratch, type: String) throws -> String {
        let image = scratch.file("disk \(type).img")
        try run(["truncate", "-s", "65M", image])
        try run(["mke2fs", "-q", "-F", "-t", type, "-E", "offset=1048576", image, "64M"])
        return image
    }

    /// The filesystem extracted on its own, for e2fsck and debugfs, which take no offset.
    func filesystem(_ image: String, _ scratch: Scratch) throws -> String {
        let fs = scratch.file("fs.img")
        try run(["dd", "status=none", "if=\(image)", "of=\(fs)", "bs=1M", "skip=1"])
        return fs
    }

    @Test("directories and 400 files (the directory grows past a block), an existing file replaced; e2fsck -fn is clean",
          arguments: ["ext2", "ext3", "ext4"])
    func writeTree(type: String) throws {
        let scratch = try Scratch()
        let image = try makeImage(scratch, type: type)
        let writer = try Ext2Writer(image: image, offset: 1 << 20, time: 1_700_000_000)
        #expect(try writer.makeDirectories("/boot/grub/i386-pc") == (try writer.makeDirectories("boot/grub/i386-pc/")))
        for i in 0..<400 {
            try writer.writeFile("/boot/grub/i386-pc/module-with-a-long-name-\(i).mod", contents: Array(repeating: UInt8(i % 251), count: i * 97))
        }
        let big = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try writer.writeFile("/boot/grub/grub.cfg", contents: Array("old contents, longer than the new\n".utf8))
        try writer.writeFile("/boot/grub/grub.cfg", contents: Array("set timeout=0\n".utf8), mode: 0o600)
        try writer.writeFile("/boot/grub/big.bin", contents: big, owner: .init(uid: 70000, gid: 5))
        try writer.close()

        let fs = try filesystem(image, scratch)
        let fsck = try Subprocess.run(["e2fsck", "-fn", fs])
        #expect(fsck.status == 0, "\(fsck.stdout)\(fsck.stderr)")
        #expect(try run(["debugfs", "-R", "cat /boot/grub/grub.cfg", fs]).stdout == "set timeout=0\n")
        #expect(try run(["debugfs", "-R", "cat /boot/grub/big.bin", fs]).output == big)
        #expect(try run(["debugfs", "-R", "cat /boot/grub/i386-pc/module-with-a-long-name-399.mod", fs]).output
                == Array(repeating: UInt8(399 % 251), count: 399 * 97))
        let stat = try run(["debugfs", "-R", "stat /boot/grub/big.bin", fs]).stdout
        #expect(stat.contains("User: 70000") && stat.contains("Group:     5") && stat.contains("Mode:  0644"), "\(stat)")
        let cfg = try run(["debugfs", "-R", "stat /boot/grub/grub.cfg", fs]).stdout
        #expect(cfg.contains("User:     0") && cfg.contains("Mode:  0600") && cfg.contains("Links: 1"), "\(cfg)")
        #expect(try run(["debugfs", "-R", "ls -l /boot/grub/i386-pc", fs]).stdout.split(separator: "\n").count >= 402)
    }

    @Test("a filesystem whose journal needs replaying is refused, and nothing is written")
    func needsRecovery() throws {
        let scratch = try Scratch()
        let image = try makeImage(scratch, type: "ext4")
        let fs = try filesystem(image, scratch)
        try run(["debugfs", "-w", "-R", "feature needs_recovery", fs])
        try run(["dd", "status=none", "conv=notrunc", "if=\(fs)", "of=\(image)", "bs=1M", "seek=1"])
        let before = try sha256(image)
        #expect {
            try Ext2Writer(image: image, offset: 1 << 20)
        } throws: { error in
            "\(error)".contains("journal needs replaying")
        }
        #expect(try sha256(image) == before)
    }

    @Test("a writer dropped without close (an error stopped it) writes nothing of what it was given")
    func droppedWriter() throws {
        let scratch = try Scratch()
        let image = try makeImage(scratch, type: "ext4")
        let before = try sha256(image)
        do {
            let writer = try Ext2Writer(image: image, offset: 1 << 20)
            try writer.makeDirectories("/boot/grub")
            try writer.writeFile("/boot/grub/half.bin", contents: Array(repeating: 7, count: 100_000))
        }
        #expect(try sha256(image) == before)
    }
}
