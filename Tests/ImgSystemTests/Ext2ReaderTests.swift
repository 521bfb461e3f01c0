import Glibc
import ImgSystem
import Testing
import TestSupport

/// Reading directories, files and symbolic links through libext2fs on image files: no root, no
/// mount. The reference is debugfs, which reads the same bytes with the same library.
@Suite struct Ext2ReaderTests {
    typealias FSError = Ext2Filesystem.Error

    /// The OS tree's root filesystem (partition 2) and its separate /boot (partition 1).
    struct Tree {
        let scratch: Scratch
        let image: String
        let root: Ext2Filesystem
        let boot: Ext2Filesystem

        init() throws {
            scratch = try Scratch()
            image = try makeOSTree(scratch.file("os.img"))
            root = try Ext2Filesystem(image: image, offset: OSTree.rootOffset)
            boot = try Ext2Filesystem(image: image, offset: OSTree.bootOffset)
        }
    }

    /// `debugfs -R "ls -l DIR"` as name -> (inode, mode, size), without "." and "..".
    func debugfsListing(_ image: String, offset: UInt64, _ dir: String) throws -> [String: (inode: UInt32, mode: UInt16, size: UInt64)] {
        var result: [String: (UInt32, UInt16, UInt64)] = [:]
        for line in try debugfsOutput(image, offset: offset, "ls -l \(dir)").split(separator: "\n") {
            // "     12   40755 (2)      0      0    1024 14-Nov-2023 22:13 etc"
            let f = line.split(separator: " ")
            guard f.count >= 9, let ino = UInt32(f[0]), let mode = UInt16(f[1], radix: 8), let size = UInt64(f[5]) else { continue }
            let name = f[8...].joined(separator: " ")
            if name != "." && name != ".." { result[name] = (ino, mode, size) }
        }
        return result
    }

    @Test("list / and nested directories: names sorted, kinds, sizes, modes, inodes and times as debugfs reports them")
    func listMatchesDebugfs() throws {
        let tree = try Tree()
        for (fs, offset, dirs) in [(tree.root, OSTree.rootOffset, ["/", "/etc", "/usr/lib", "/srv/links"]),
                                   (tree.boot, OSTree.bootOffset, ["/"])] {
            for dir in dirs {
                let entries = try fs.list(dir)
                let expected = try debugfsListing(tree.image, offset: offset, dir)
                #expect(entries.map(\.name) == expected.keys.sorted(), "\(dir)")
                for entry in entries {
                    let e = try #require(expected[entry.name])
                    #expect(entry.inode == e.inode && entry.mode == e.mode && entry.size == e.size, "\(dir)/\(entry.name)")
                    #expect(entry.modified == OSTree.time && entry.uid == 0 && entry.gid == 0)
                }
            }
        }
        let root = Dictionary(uniqueKeysWithValues: try tree.root.list("/").map { ($0.name, $0.kind) })
        #expect(root == ["bin": .symlink, "boot": .directory, "etc": .directory, "lost+found": .directory,
                         "root": .directory, "srv": .directory, "usr": .directory, "vmlinuz": .symlink])
        #expect(try tree.root.list("/etc").map(\.name) == ["hostname", "os-release", "passwd"])
        #expect(try tree.boot.list("/").filter { $0.kind == .file }.map(\.name)
                == ["config-6.1.0-test", "initrd.img-6.1.0-test", OSTree.kernel])
        #expect(try tree.root.list("/boot").isEmpty)
    }

    @Test("stat describes a file, a directory, and a link itself or its target")
    func stat() throws {
        let tree = try Tree()
        let hostname = try tree.root.stat("/etc/hostname")
        #expect(hostname.name == "hostname" && hostname.kind == .file && hostname.size == 9 && hostname.mode == 0o100644)
        #expect(try tree.root.stat("/").kind == .directory)
        #expect(try tree.root.stat("/").name == "/")
        #expect(try tree.root.stat("//usr/./lib/../lib/").kind == .directory)
        let link = try tree.root.stat("/etc/os-release", followSymlinks: false)
        #expect(link.kind == .symlink && link.size == UInt64("../usr/lib/os-release".utf8.count) && link.mode == 0o120777)
        let target = try tree.root.stat("/etc/os-release")
        #expect(target.kind == .file && target.size == UInt64(OSTree.osRelease.utf8.count))
        #expect(target.inode == (try tree.root.stat("/usr/lib/os-release").inode))
    }

    @Test("read small files, through relative and absolute links")
    func readSmall() throws {
        let tree = try Tree()
        #expect(try tree.root.read("/etc/hostname", maxBytes: 1 << 20) == Array("testhost\n".utf8))
        #expect(try tree.root.read("/etc/os-release", maxBytes: 1 << 20) == Array(OSTree.osRelease.utf8))
        #expect(try tree.root.read("/srv/links/etc/hostname", maxBytes: 100) == Array("testhost\n".utf8))
        #expect(try tree.boot.read("/" + OSTree.kernel, maxBytes: 100) == Array("fake kernel 6.1.0-test\n".utf8))
        #expect(try tree.root.readLink("/etc/os-release") == "../usr/lib/os-release")
        #expect(try tree.root.readLink("/bin") == "usr/bin")
        #expect(try tree.root.stat("/bin/").kind == .directory)
    }

    @Test("links to /etc/passwd, absolute or climbing above the root with .., resolve inside the image, never on the host")
    func linksStayInside() throws {
        let tree = try Tree()
        let host = try readFile("/etc/passwd")
        for link in ["/srv/links/passwd", "/srv/links/escape", "/srv/links/etc/passwd", "/../../etc/passwd"] {
            let bytes = try tree.root.read(link, maxBytes: 1 << 20)
            #expect(bytes == Array(OSTree.passwd.utf8), "\(link)")
            #expect(bytes != host)
        }
        #expect(try tree.root.readLink("/srv/links/escape") == "../../../../../etc/passwd")
        // The boot filesystem has no /etc at all: the host's must not show through.
        #expect(throws: FSError.notFound("/etc/passwd", missing: "/etc")) { try tree.boot.read("/etc/passwd", maxBytes: 100) }
    }

    @Test("a slow symlink (target in a data block) reads like a fast one")
    func slowSymlink() throws {
        let tree = try Tree()
        let target = "/usr/lib/imgtool-test/a-directory-name-long-enough-for-a-slow-symlink/file.txt"
        #expect(try tree.root.readLink("/srv/links/slow") == target)
        #expect(try tree.root.stat("/srv/links/slow", followSymlinks: false).size == UInt64(target.utf8.count))
        #expect(try tree.root.read("/srv/links/slow", maxBytes: 100) == Array("slow symlink target\n".utf8))
    }

    @Test("loops, dangling links and wrong kinds are errors that name the path")
    func resolutionErrors() throws {
        let tree = try Tree()
        let fs = tree.root
        #expect(throws: FSError.symlinkLoop("/srv/links/loop-a")) { try fs.read("/srv/links/loop-a", maxBytes: 10) }
        #expect(throws: FSError.symlinkLoop("/srv/links/self")) { try fs.stat("/srv/links/self") }
        #expect(throws: FSError.symlinkLoop("/srv/links/self/x")) { try fs.list("/srv/links/self/x") }
        #expect(try fs.stat("/srv/links/self", followSymlinks: false).kind == .symlink)
        #expect(throws: FSError.notFound("/vmlinuz", missing: "/boot/\(OSTree.kernel)")) { try fs.read("/vmlinuz", maxBytes: 10) }
        #expect(throws: FSError.notFound("/nope/x", missing: "/nope")) { try fs.list("/nope/x") }
        #expect(throws: FSError.notADirectory("/etc/hostname/x", component: "/etc/hostname")) { try fs.stat("/etc/hostname/x") }
        #expect(throws: FSError.notADirectory("/etc/hostname/", component: "/etc/hostname")) { try fs.stat("/etc/hostname/") }
        #expect(throws: FSError.notADirectory("/etc/hostname", component: "/etc/hostname")) { try fs.list("/etc/hostname") }
        #expect(throws: FSError.isADirectory("/etc")) { try fs.read("/etc", maxBytes: 10) }
        #expect(throws: FSError.isADirectory("/bin")) { try fs.read("/bin") { _ in } }
        #expect(throws: FSError.notASymlink("/etc/hostname")) { try fs.readLink("/etc/hostname") }
        let message = FSError.notFound("/vmlinuz", missing: "/boot/\(OSTree.kernel)").description
        #expect(message == "/vmlinuz does not exist in the filesystem: it leads to /boot/vmlinuz-6.1.0-test, which is missing.")
    }

    @Test("the hop limit is Linux's: 40 links in a chain resolve, 41 are a loop")
    func hopLimit() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("fs.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "8"])
        let source = scratch.file("target")
        try writeFile(source, Array("end of the chain\n".utf8))
        var commands = ["mkdir /h", "write \(source) /h/target"]
        for i in 0..<40 { commands.append("symlink /h/a\(i) \(i == 39 ? "target" : "a\(i + 1)")") }
        for i in 0..<41 { commands.append("symlink /h/b\(i) \(i == 40 ? "/h/target" : "/h/b\(i + 1)")") }
        try debugfs(image, commands)
        let fs = try Ext2Filesystem(image: image, offset: 0)
        #expect(Ext2Filesystem.maxSymlinkHops == 40)
        #expect(try fs.read("/h/a0", maxBytes: 100) == Array("end of the chain\n".utf8))
        #expect(throws: FSError.symlinkLoop("/h/b0")) { try fs.read("/h/b0", maxBytes: 100) }
        #expect(try fs.read("/h/b1", maxBytes: 100) == Array("end of the chain\n".utf8))
    }

    @Test("a file of more than 1 MiB reads whole and streams in chunks of at most 64 KiB, with the source's sha256; maxBytes caps",
          arguments: ["ext2", "ext3", "ext4"])
    func readLarge(fs type: String) throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("fs.img"), ["--label", "none", "--fs", type, "--size-mib", "16"])
        let source = scratch.file("big.bin")
        let content = pseudoRandomBytes(count: 3 << 20 | 12345, seed: 42)
        try writeFile(source, content)
        try debugfs(image, ["mkdir /data", "write \(source) /data/big.bin", "symlink /data/link ./big.bin"])
        let fs = try Ext2Filesystem(image: image, offset: 0)
        #expect(try fs.stat("/data/big.bin").size == UInt64(content.count))

        let whole = try fs.read("/data/link", maxBytes: .max)
        let copy = scratch.file("copy.bin")
        try writeFile(copy, whole)
        #expect(try sha256(copy) == (try sha256(source)))

        var streamed: [UInt8] = []
        var chunks = 0
        try fs.read("/data/big.bin") { chunk in
            #expect(chunk.count > 0 && chunk.count <= Ext2Filesystem.chunkBytes)
            streamed.append(contentsOf: chunk)
            chunks += 1
        }
        #expect(streamed == content)
        #expect(chunks >= content.count / Ext2Filesystem.chunkBytes)

        #expect(try fs.read("/data/big.bin", maxBytes: 1000) == Array(content[..<1000]))
        #expect(try fs.read("/data/big.bin", maxBytes: 70_000) == Array(content[..<70_000]))
        #expect(try fs.read("/data/big.bin", maxBytes: 0) == [])
        #expect(try fs.read("/data/big.bin", maxBytes: -1) == [])
    }

    @Test("an error thrown by the chunk handler stops the stream and comes back unchanged")
    func streamStops() throws {
        struct Enough: Error {}
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("fs.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "8"])
        let source = scratch.file("big.bin")
        try writeFile(source, pseudoRandomBytes(count: 1 << 20, seed: 7))
        try debugfs(image, ["write \(source) /big.bin"])
        let fs = try Ext2Filesystem(image: image, offset: 0)
        var calls = 0
        #expect(throws: Enough.self) {
            try fs.read("/big.bin") { _ in
                calls += 1
                if calls == 2 { throw Enough() }
            }
        }
        #expect(calls == 2)
        #expect(try fs.stat("/big.bin").kind == .file)  // the handle is usable afterwards
    }

    @Test("list stops beyond its entry limit with tooLarge")
    func entryLimit() throws {
        let tree = try Tree()
        #expect(try tree.root.list("/etc", limit: 3).count == 3)
        #expect(throws: FSError.tooLarge("/etc", limit: 2)) { try tree.root.list("/etc", limit: 2) }
        #expect(Ext2Filesystem.defaultEntryLimit == 1_000_000)
    }

    @Test("ext4 with inline_data: small files, directories and links stored in the inode read the same")
    func inlineData() throws {
        let scratch = try Scratch()
        let image = scratch.file("inline.img")
        try run(["truncate", "-s", "8M", image])
        try run(["env", "E2FSPROGS_FAKE_TIME=\(OSTree.time)", "mke2fs", "-q", "-F", "-t", "ext4", "-O", "inline_data",
                 "-E", "root_owner=0:0", image])
        let small = scratch.file("small")
        try writeFile(small, Array("inline file\n".utf8))
        let target = String(repeating: "t", count: 70)  // over 60 bytes: inline data, not a fast link
        try debugfs(image, ["mkdir /d", "write \(small) /d/small", "mkdir /d/sub", "symlink /d/long \(target)",
                            "symlink /d/short small"])
        #expect(try debugfsOutput(image, "stat /d").contains("Size of inline data"))
        let fs = try Ext2Filesystem(image: image, offset: 0)
        #expect(try fs.list("/d").map(\.name) == ["long", "short", "small", "sub"])
        #expect(try fs.list("/d/sub").isEmpty)
        // libext2fs alone would return the whole 60-byte inline area, zeros included.
        #expect(try fs.read("/d/short", maxBytes: 100) == Array("inline file\n".utf8))
        #expect(try fs.stat("/d/small").size == 12)
        #expect(try fs.readLink("/d/long") == target)
    }

    @Test("a damaged filesystem gives errors or partial answers, never a crash or a hang", arguments: ["ext2", "ext4"])
    func damaged(fs type: String) throws {
        let scratch = try Scratch()
        let pristine = try makeDisk(scratch.file("fs.img"), ["--label", "none", "--fs", type, "--size-mib", "4"])
        let source = scratch.file("f")
        try writeFile(source, pseudoRandomBytes(count: 20_000, seed: 3))
        var commands = ["mkdir /a", "mkdir /a/b", "write \(source) /a/f", "symlink /a/up ..", "symlink /a/abs /a/b"]
        for i in 0..<40 { commands.append("write \(source) /a/b/f\(i)") }
        try debugfs(pristine, commands)
        let bytes = try readFile(pristine)
        var rng = SystemRandomNumberGenerator()
        for round in 0..<40 {
            var damaged = bytes
            // Bytes after the superblock: group descriptors, bitmaps, inode table, directories.
            for _ in 0..<(round % 2 == 0 ? 50 : 2000) {
                damaged[Int.random(in: 2048..<min(damaged.count, 400 * 1024), using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            let image = scratch.file("damaged.img")
            try writeFile(image, damaged)
            guard let fs = try? Ext2Filesystem(image: image, offset: 0) else { continue }
            var budget = 500
            walk(fs, "/", depth: 0, budget: &budget)
        }
    }

    /// Visits everything below `path` (bounded: damage can make directories contain their
    /// ancestors), reading files and links and ignoring errors.
    private func walk(_ fs: Ext2Filesystem, _ path: String, depth: Int, budget: inout Int) {
        guard depth < 6, let entries = try? fs.list(path, limit: 1000) else { return }
        for entry in entries {
            budget -= 1
            guard budget > 0 else { return }
            let child = path == "/" ? "/" + entry.name : path + "/" + entry.name
            switch entry.kind {
            case .directory: walk(fs, child, depth: depth + 1, budget: &budget)
            case .file: _ = try? fs.read(child, maxBytes: 1 << 20)
            case .symlink: _ = try? fs.readLink(child); _ = try? fs.stat(child)
            case .other: _ = try? fs.stat(child)
            }
        }
    }
}
