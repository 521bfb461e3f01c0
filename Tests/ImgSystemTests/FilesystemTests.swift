import Foundation
import Glibc
import ImgSystem
import ImgFormats
import Testing
import TestSupport

/// libblkid and libext2fs on image files: no root, no loop device.
@Suite struct FilesystemProbeTests {
    static let fsUUID = "494d4754-0000-4000-8000-0000000000f5"  // fixed by make-disk.sh

    @Test("probe at the partition's offset finds the filesystem make-disk.sh made, with its UUID and label",
          arguments: ["ext2", "ext3", "ext4"])
    func probePartition(fs: String) throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--fs", fs, "--size-mib", "8"])
        let (start, size) = try sfdiskPartition(image, number: 1)
        let fd = open(image, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        let probe = try #require(try FilesystemProbe.probe(fd: fd, path: image, offset: start * 512, length: size * 512))
        #expect(probe.type == fs)
        #expect(probe.uuid == Self.fsUUID)
        #expect(probe.label == "boot")
        // The same bytes, seen by blkid(8) itself.
        let blkid = try run(["blkid", "-p", "-O", "\(start * 512)", "-S", "\(size * 512)", "-o", "export", image]).stdout
        #expect(blkid.contains("TYPE=\(fs)\n"))
        #expect(blkid.contains("UUID=\(Self.fsUUID)\n"))
    }

    @Test("probe finds nothing in zeros, nor at an offset where no filesystem starts")
    func probeNothing() throws {
        let scratch = try Scratch()
        let zeros = scratch.file("zeros.img")
        try run(["truncate", "-s", "8M", zeros])
        let fd = open(zeros, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(try FilesystemProbe.probe(fd: fd, path: zeros, offset: 0, length: 8 << 20) == nil)
        #expect(try FilesystemProbe.probe(fd: fd, path: zeros, offset: 1 << 20, length: 1 << 20) == nil)

        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--size-mib", "8"])
        let fd2 = open(image, O_RDONLY | O_CLOEXEC)
        try #require(fd2 >= 0)
        defer { close(fd2) }
        // One sector after the filesystem's start: no superblock where blkid looks.
        #expect(try FilesystemProbe.probe(fd: fd2, path: image, offset: 2049 * 512, length: 4 << 20) == nil)
    }
}

@Suite struct Ext2FilesystemTests {
    @Test("exists finds /boot/grub and grub.cfg, and not /nope", arguments: ["ext2", "ext4"])
    func lookups(fs: String) throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"),
                                 ["--label", "dos", "--fs", fs, "--size-mib", "8", "--marker", "IMGTOOL-EXT2"])
        let offset = try sfdiskPartition(image, number: 1).start * 512
        let ext = try Ext2Filesystem(image: image, offset: offset)
        #expect(ext.exists("/boot/grub"))
        #expect(ext.exists("/boot/grub/grub.cfg"))
        #expect(ext.exists("/"))
        #expect(!ext.exists("/nope"))
        #expect(!ext.exists("/boot/grub/nope.cfg"))
    }

    @Test("freeBytes is the superblock's free blocks times the block size, as dumpe2fs reports them")
    func freeBytes() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "8"])
        let header = try run(["dumpe2fs", "-h", image]).stdout
        func field(_ name: String) -> UInt64? {
            header.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { UInt64($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }
        }
        let expected = try #require(field("Free blocks")) * (try #require(field("Block size")))
        #expect(try Ext2Filesystem(image: image, offset: 0).freeBytes == expected)
        #expect(expected > 0)
    }

    @Test("an ext4 with the 64bit feature, filling the image (offset 0), opens too")
    func sixtyFourBit() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "8"])
        let features = try run(["dumpe2fs", "-h", image]).stdout
        #expect(features.contains("64bit"), "premise: mke2fs made an ext4 with the 64bit feature")
        #expect(try Ext2Filesystem(image: image, offset: 0).exists("/boot/grub"))
    }

    @Test("a place with no ext filesystem is a SystemError naming the image, not false")
    func notExt() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--size-mib", "8"])
        let error = #expect(throws: SystemError.self) {
            _ = try Ext2Filesystem(image: image, offset: 0).exists("/boot/grub")
        }
        #expect(error?.path == image)
        #expect(error?.operation.contains("ext2fs_open2") == true)
        let zeros = scratch.file("zeros.img")
        try run(["truncate", "-s", "4M", zeros])
        #expect(throws: SystemError.self) { _ = try Ext2Filesystem(image: zeros, offset: 1 << 20).exists("/") }
        #expect(throws: SystemError.self) { _ = try Ext2Filesystem(image: scratch.file("missing.img"), offset: 0).exists("/") }
    }
}

/// TemporaryDirectory under a parent the test owns; no root needed.
@Suite struct TemporaryDirectoryTests {
    @Test("created 0700 under the given parent, which it creates 0700 if missing")
    func createdPrivate() throws {
        let scratch = try Scratch()
        let parent = scratch.file("parent")
        let dir = try TemporaryDirectory(parent: parent, prefix: "mnt-")
        defer { try? dir.remove() }
        #expect(dir.path.hasPrefix(parent + "/mnt-"))
        #expect(dir.path.count == (parent + "/mnt-").count + 6)
        var st = stat()
        try #require(lstat(dir.path, &st) == 0)
        #expect(st.st_mode & S_IFMT == S_IFDIR)
        #expect(st.st_mode & 0o7777 == 0o700)
        try #require(lstat(parent, &st) == 0)
        #expect(st.st_mode & 0o7777 == 0o700)
        let other = try TemporaryDirectory(parent: parent, prefix: "mnt-")
        defer { try? other.remove() }
        #expect(other.path != dir.path)
        try dir.remove()
        try other.remove()
        #expect(access(dir.path, F_OK) != 0)
        #expect(access(other.path, F_OK) != 0)
    }

    @Test("remove is rmdir only: a non-empty directory stays, with its files, and remove throws")
    func removeIsRmdirOnly() throws {
        let scratch = try Scratch()
        let dir = try TemporaryDirectory(parent: scratch.path, prefix: "full-")
        defer { try? dir.remove() }
        let file = dir.path + "/keep.txt"
        try "keep me".write(toFile: file, atomically: false, encoding: .utf8)
        let error = #expect(throws: SystemError.self) { try dir.remove() }
        #expect(error?.errno == ENOTEMPTY)
        #expect(error?.path == dir.path)
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "keep me")
        #expect(unlink(file) == 0)
        try dir.remove()
        #expect(access(dir.path, F_OK) != 0)
        try dir.remove()  // idempotent
    }

    @Test("an empty directory goes away with its TemporaryDirectory")
    func deinitRemovesEmpty() throws {
        let scratch = try Scratch()
        var path = ""
        do {
            let dir = try TemporaryDirectory(parent: scratch.path, prefix: "gone-")
            path = dir.path
            #expect(access(path, F_OK) == 0)
        }
        #expect(access(path, F_OK) != 0)
    }

    @Test("a parent that cannot be made is a SystemError naming it")
    func badParent() throws {
        let scratch = try Scratch()
        try "x".write(toFile: scratch.file("file"), atomically: false, encoding: .utf8)
        let error = #expect(throws: SystemError.self) {
            _ = try TemporaryDirectory(parent: scratch.file("file") + "/sub", prefix: "x-")
        }
        #expect(error?.errno == ENOTDIR)
        #expect(error?.path == scratch.file("file") + "/sub")
    }
}

/// What libblkid reads through a sparse copy of `ProbeWindow`'s ranges (how a container's disk is
/// probed) is what blkid -p reads from the whole file: type, UUID, label and version, also for
/// the formats whose label lies past the window's head.
@Suite struct ProbeCopyTests {
    /// The file, read through the protocol only, so the probe takes the copying path.
    struct Indirect: ByteSource {
        let file: FileByteSource
        var size: UInt64 { file.size }
        func read(at offset: UInt64, count: Int) throws -> [UInt8] { try file.read(at: offset, count: count) }
    }

    @Test("FAT32 (root directory past 2 MiB), FAT16, exFAT, NTFS, UDF, ext4 and swap, labelled", arguments: [
        ("vfat", "2G", ["mkfs.vfat", "-F", "32", "-s", "1", "-n", "DEEPFAT", "-i", "494D4754"]),
        ("vfat", "256M", ["mkfs.vfat", "-F", "16", "-n", "FAT16", "-i", "494D4755"]),
        ("exfat", "1G", ["mkfs.exfat", "-L", "deepexfat", "-c", "4K"]),
        ("ntfs", "256M", ["mkntfs", "-q", "-F", "-f", "-L", "deepntfs"]),
        ("udf", "256M", ["mkudffs", "--label=deepudf", "--blocksize=2048"]),
        ("ext4", "64M", ["mkfs.ext4", "-q", "-L", "extlabel", "-U", "494d4754-0000-4000-8000-0000000000f5"]),
        ("swap", "64M", ["mkswap", "-L", "swaplabel", "-U", "494d4754-0000-4000-8000-0000000000f6"]),
    ])
    func sameAsBlkid(type: String, size: String, mkfs: [String]) throws {
        let scratch = try Scratch()
        let image = scratch.file("fs.img")
        try run(["truncate", "-s", size, image])
        try run(mkfs + [image])
        let file = try FileByteSource(path: image)
        let ours = try #require(try FilesystemProbe.probe(Indirect(file: file), offset: 0, length: file.size, name: image))
        var theirs: [String: String] = [:]
        for line in try run(["blkid", "-p", "-o", "export", image]).stdout.split(separator: "\n") {
            let kv = line.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { theirs[String(kv[0])] = String(kv[1]) }
        }
        #expect(ours.type == type && theirs["TYPE"] == type)
        #expect(ours.uuid == theirs["UUID"] && ours.label == theirs["LABEL"] && ours.version == theirs["VERSION"], "\(ours) vs \(theirs)")
        #expect(ours.label != nil)
        // The copy reads the window, not the filesystem: a fraction of the 2 GiB.
        let direct = try #require(try FilesystemProbe.probe(fd: file.fd, path: image, offset: 0, length: file.size))
        #expect(direct == ours)
    }
}
