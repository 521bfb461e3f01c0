import CLinuxShim
import Glibc
@testable import ImgSystem
import Testing
import TestSupport

/// Filling ext4 from a directory or a tar archive (TreeSource, Ext2Writer.populate), checked by
/// e2fsprogs' own tools; no root needed. Paths have spaces in them on purpose.
struct TreePopulateTests {
    static let uuid = "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
    static let time: UInt32 = 1_700_000_000

    /// A fresh ext4 filesystem image of `size` (mke2fs's suffixes), reproducible: a fixed UUID,
    /// hash seed and mke2fs clock.
    func makeFilesystem(_ path: String, size: String = "64M", extra: [String] = []) throws {
        try run(["truncate", "-s", size, path])
        try run(["env", "E2FSPROGS_FAKE_TIME=\(Self.time)", "mke2fs", "-q", "-F", "-t", "ext4", "-U", Self.uuid,
                 "-E", "hash_seed=\(Self.uuid)"] + extra + [path])
    }

    func debugfs(_ command: String, _ fs: String) throws -> String {
        try run(["debugfs", "-R", command, fs]).stdout
    }

    func fsck(_ fs: String) throws {
        let r = try Subprocess.run(["e2fsck", "-fn", fs])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }

    /// A directory with nested directories, links, an empty and a 3 MB file, a setuid file, a fifo,
    /// a socket and (where the filesystem takes user.* attributes) an xattr.
    func makeTree(_ root: String) throws -> (big: [UInt8], xattrs: Bool) {
        try run(["mkdir", "-p", "\(root)/a dir/b/c", "\(root)/empty dir"])
        let big = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) }
        try writeFile("\(root)/a dir/b/big file.bin", big)
        try writeFile("\(root)/a dir/empty", [])
        try writeFile("\(root)/a dir/b/c/leaf.txt", Array("leaf\n".utf8), mode: 0o600)
        try writeFile("\(root)/suid", Array("#!/bin/sh\n".utf8), mode: 0o755)
        chmod("\(root)/suid", 0o4755)
        symlink("a dir/b/c/leaf.txt", "\(root)/short link")
        symlink(String(repeating: "long/", count: 20) + "target", "\(root)/long link")
        link("\(root)/a dir/empty", "\(root)/hard")
        mkfifo("\(root)/a fifo", 0o640)
        try run(["python3", "-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", "\(root)/a socket"])
        let xattrs = setxattr("\(root)/suid", "user.comment", "hello", 5, 0) == 0
        return (big, xattrs)
    }

    @Test("a directory: kinds (a fifo and a socket too), modes, owners, links, an xattr, contents and clamped times; e2fsck -fn is clean")
    func fromDirectory() throws {
        let scratch = try Scratch()
        let root = scratch.file("the tree")
        let (big, xattrs) = try makeTree(root)
        let image = scratch.file("disk image.img")
        try run(["truncate", "-s", "65M", image])
        try run(["mke2fs", "-q", "-F", "-t", "ext4", "-E", "offset=1048576", image, "64M"])

        let writer = try Ext2Writer(image: image, offset: 1 << 20, time: Self.time)
        let source = try TreeSource(path: root)
        #expect(source.format == .directory)
        try writer.populate(from: source, into: "/srv/the tree", clamp: Int64(Self.time))
        try writer.close()

        let fs = scratch.file("fs only.img")
        try run(["dd", "status=none", "if=\(image)", "of=\(fs)", "bs=1M", "skip=1"])
        try fsck(fs)
        let top = "/srv/the tree"
        #expect(try run(["debugfs", "-R", "cat \"\(top)/a dir/b/big file.bin\"", fs]).output == big)
        #expect(try debugfs("cat \"\(top)/a dir/b/c/leaf.txt\"", fs) == "leaf\n")
        let leaf = try debugfs("stat \"\(top)/a dir/b/c/leaf.txt\"", fs)
        #expect(leaf.contains("Mode:  0600") && leaf.contains("User:     0"), "\(leaf)")
        // mtimes are now, later than the clamp: clamped.
        #expect(leaf.contains("mtime: 0x\(String(Self.time, radix: 16))"), "\(leaf)")
        let suid = try debugfs("stat \"\(top)/suid\"", fs)
        #expect(suid.contains("Mode:  04755"), "\(suid)")
        #expect(try debugfs("stat \"\(top)/short link\"", fs).contains("Fast link dest: \"a dir/b/c/leaf.txt\""))
        let long = try debugfs("stat \"\(top)/long link\"", fs)
        #expect(long.contains("Type: symlink") && long.contains("Size: \(100 + 6)"), "\(long)")
        #expect(try debugfs("cat \"\(top)/long link\"", fs) == String(repeating: "long/", count: 20) + "target")
        let hard = try debugfs("stat \"\(top)/hard\"", fs)
        #expect(hard.contains("Links: 2") && hard.contains("Size: 0"), "\(hard)")
        #expect(try debugfs("stat \"\(top)/a fifo\"", fs).contains("Type: FIFO"))
        #expect(try debugfs("stat \"\(top)/a socket\"", fs).contains("Type: socket"))
        #expect(try debugfs("stat \"\(top)/a dir\"", fs).contains("Links: 3"))
        if xattrs {
            let list = try debugfs("ea_list \"\(top)/suid\"", fs)
            #expect(list.contains("user.comment") && list.contains("hello"), "\(list)")
        } else {
            print("skipped the xattr check: \(root)'s filesystem refuses user.* attributes")
        }
    }

    /// A gzipped pax archive made by python's tarfile: owners, setuid, devices (old and new
    /// encodings), a fifo, a hard link, an xattr, a file whose parents the archive leaves out.
    func makeArchive(_ path: String, extraEntry: String? = nil) throws {
        let script = """
        import io, sys, tarfile
        def add(t, name, type=tarfile.REGTYPE, data=b"", **kw):
            i = tarfile.TarInfo(name); i.type = type; i.mtime = kw.pop("mtime", 1600000000)
            for k, v in kw.items(): setattr(i, k, v)
            i.size = len(data) if type == tarfile.REGTYPE else 0
            t.addfile(i, io.BytesIO(data) if type == tarfile.REGTYPE else None)
        with tarfile.open(sys.argv[1], "w:gz", format=tarfile.PAX_FORMAT) as t:
            add(t, "./", tarfile.DIRTYPE, mode=0o755)
            add(t, "./etc", tarfile.DIRTYPE, mode=0o755)
            add(t, "./etc/passwd", data=b"root:x:0:0::/root:/bin/sh\\n", mode=0o644)
            add(t, "./home/user/notes.txt", data=b"mine\\n", mode=0o640, uid=1000, gid=1000, mtime=1900000000)
            add(t, "./usr/bin/su", data=b"ELF", mode=0o4755)
            add(t, "./dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
            add(t, "./dev/nvme0n1p9", tarfile.BLKTYPE, mode=0o660, devmajor=259, devminor=300000)
            add(t, "./run/initctl", tarfile.FIFOTYPE, mode=0o600)
            add(t, "./etc/passwd-link", tarfile.LNKTYPE, linkname="./etc/passwd")
            i = tarfile.TarInfo("./etc/tagged"); i.size = 3; i.mtime = 1600000000
            i.pax_headers = {"SCHILY.xattr.user.note": "tagged"}
            t.addfile(i, io.BytesIO(b"abc"))
            if len(sys.argv) > 2: add(t, sys.argv[2], data=b"x")
        """
        try run(["python3", "-c", script, path] + (extraEntry.map { [$0] } ?? []))
    }

    @Test("a tar.gz: owners as recorded, setuid, devices, a fifo, a hard link, an xattr, implicit parents; e2fsck -fn is clean")
    func fromArchive() throws {
        let scratch = try Scratch()
        let archive = scratch.file("root fs.tar.gz")
        try makeArchive(archive)
        let fs = scratch.file("fs image.img")
        try makeFilesystem(fs)
        let source = try TreeSource(path: archive, implicitDirectoryTime: 1_500_000_000)
        #expect(source.format == .archive)
        let summary = try source.measure(blockSize: 4096)
        // etc, passwd, home, home/user, notes, usr, usr/bin, su, dev, null, nvme, run, initctl, tagged
        #expect(summary.inodes == 14 && summary.directories == 7 && summary.regularFiles == 4, "\(summary)")
        #expect(summary.dataBytes == 4 * 4096 && summary.xattrBytes == UInt64("user.note".count + "tagged".count))
        #expect(summary.latestMtime == 1_900_000_000)

        let writer = try Ext2Writer(image: fs, offset: 0, time: Self.time)
        try writer.populate(from: source, clamp: 1_800_000_000)
        try writer.close()
        try fsck(fs)

        let notes = try debugfs("stat /home/user/notes.txt", fs)
        #expect(notes.contains("User:  1000") && notes.contains("Group:  1000") && notes.contains("Mode:  0640"), "\(notes)")
        #expect(notes.contains("mtime: 0x\(String(1_800_000_000, radix: 16))"), "clamped: \(notes)")
        let home = try debugfs("stat /home", fs)
        #expect(home.contains("Mode:  0755") && home.contains("User:     0") && home.contains("mtime: 0x\(String(1_500_000_000, radix: 16))"),
                "implicit: \(home)")
        #expect(try debugfs("stat /usr/bin/su", fs).contains("Mode:  04755"))
        let null = try debugfs("stat /dev/null", fs)
        #expect(null.contains("Type: character special") && null.contains("Device major/minor number: 01:03"), "\(null)")
        let nvme = try debugfs("stat /dev/nvme0n1p9", fs)
        #expect(nvme.contains("Type: block special") && nvme.contains("Device major/minor number: 259:300000"), "\(nvme)")
        #expect(try debugfs("stat /run/initctl", fs).contains("Type: FIFO"))
        let passwd = try debugfs("stat /etc/passwd-link", fs)
        #expect(passwd.contains("Links: 2"), "\(passwd)")
        #expect(try debugfs("cat /etc/passwd-link", fs) == "root:x:0:0::/root:/bin/sh\n")
        let tagged = try debugfs("ea_list /etc/tagged", fs)
        #expect(tagged.contains("user.note") && tagged.contains("tagged"), "\(tagged)")
        #expect(try debugfs("cat /etc/tagged", fs) == "abc")
    }

    @Test("the same inputs at the same time give byte-identical filesystems")
    func reproducible() throws {
        let scratch = try Scratch()
        let root = scratch.file("the tree")
        _ = try makeTree(root)
        let archive = scratch.file("root fs.tar.gz")
        try makeArchive(archive)
        var sums: [String] = []
        for run in 0..<2 {
            let fs = scratch.file("build \(run).img")
            try makeFilesystem(fs)
            let writer = try Ext2Writer(image: fs, offset: 0, time: Self.time)
            try writer.populate(from: try TreeSource(path: archive), clamp: Int64(Self.time))
            try writer.populate(from: try TreeSource(path: root), into: "/tree", clamp: Int64(Self.time))
            try writer.close()
            if run == 0 { sleep(1) }  // a wall clock that leaked in would differ
            sums.append(try sha256(fs))
            let crtime = try debugfs("stat /tree/suid", fs)
            #expect(crtime.contains("crtime: 0x\(String(Self.time, radix: 16)):00000000"), "\(crtime)")
        }
        #expect(sums[0] == sums[1])
    }

    @Test("contents bigger than the filesystem: isOutOfSpace")
    func outOfSpace() throws {
        let scratch = try Scratch()
        let root = scratch.file("too big")
        try run(["mkdir", "-p", root])
        try writeFile("\(root)/big", [UInt8](repeating: 1, count: 8 << 20))
        let fs = scratch.file("tiny fs.img")
        try makeFilesystem(fs, size: "4M", extra: ["-b", "1024", "-O", "^has_journal"])
        let writer = try Ext2Writer(image: fs, offset: 0, time: Self.time)
        #expect {
            try writer.populate(from: try TreeSource(path: root))
        } throws: { error in
            (error as? Ext2Writer.PopulateError)?.isOutOfSpace == true && "\(error)".contains("do not fit")
        }
    }

    @Test("more files than the filesystem has inodes: isOutOfSpace")
    func outOfInodes() throws {
        let scratch = try Scratch()
        let root = scratch.file("many files")
        try run(["mkdir", "-p", root])
        for i in 0..<64 { try writeFile("\(root)/file \(i)", []) }
        let fs = scratch.file("few inodes.img")
        try makeFilesystem(fs, size: "8M", extra: ["-N", "32", "-O", "^has_journal"])
        let writer = try Ext2Writer(image: fs, offset: 0, time: Self.time)
        #expect {
            try writer.populate(from: try TreeSource(path: root))
        } throws: { error in
            (error as? Ext2Writer.PopulateError)?.isOutOfSpace == true
        }
    }

    @Test("tar archives compressed by tar(1) with each filter are read alike", arguments: ["", "-z", "-J", "-j", "--zstd"])
    func compressed(filter: String) throws {
        let scratch = try Scratch()
        let root = scratch.file("tree")
        try run(["mkdir", "-p", "\(root)/d"])
        try writeFile("\(root)/d/f", Array(repeating: 9, count: 70_000))
        let archive = scratch.file("the archive.tar")
        try run(["tar", "-C", root, "--numeric-owner", "--owner=1000", "--group=1000", "--mtime=@1234567890"]
                + (filter.isEmpty ? [] : [filter]) + ["-cf", archive, "."])
        let reader = try TreeSource(path: archive).makeReader()
        var entries: [TreeEntry] = []
        var contents: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while let entry = try reader.next() {
            entries.append(entry)
            while case let n = try buffer.withUnsafeMutableBytes({ try reader.read(into: $0) }), n > 0 { contents += buffer[..<n] }
        }
        #expect(entries.map(\.path) == ["", "d", "d/f"])
        #expect(entries.allSatisfy { $0.uid == 1000 && $0.gid == 1000 && $0.mtime == 1_234_567_890 })
        #expect(contents == Array(repeating: 9, count: 70_000))
    }

    /// Sparse files of `size` MiB in `root`: data at the start, in the middle and in the last
    /// block ("sparse.bin"), and at the start only, with a hole to the end ("trailing hole.bin").
    func makeSparseFiles(_ root: String, size: Int) throws {
        try run(["mkdir", "-p", root])
        let both = "\(root)/sparse.bin", trailing = "\(root)/trailing hole.bin"
        try run(["truncate", "-s", "\(size)M", both, trailing])
        for (text, at) in [("head", 0), ("middle", size << 19), ("tail", (size << 20) - 4)] {
            try run(["sh", "-c", "printf '%s' \"$1\" | dd status=none conv=notrunc bs=1 seek=\"$2\" of=\"$3\"", "sh", text, "\(at)", both])
        }
        try run(["dd", "status=none", "conv=notrunc", "if=/dev/urandom", "of=\(trailing)", "bs=4096", "count=3"])
    }

    /// `makeSparseFiles` of 48 MiB in `scratch`, and the source to read them from: that directory,
    /// or a tar of it (`kind` "gnu" or "posix", tar's --sparse formats).
    func sparseSource(_ scratch: Scratch, _ kind: String) throws -> (root: String, path: String) {
        let root = scratch.file("sparse tree")
        try makeSparseFiles(root, size: 48)
        guard kind != "directory" else { return (root, root) }
        let path = scratch.file("sparse \(kind).tar")
        try run(["tar", "-C", root, "--sparse", "--format=\(kind)", "--numeric-owner", "-cf", path, "."])
        return (root, path)
    }

    /// Blocks of 512 bytes allocated to `path` in `fs`, holes left out.
    func blockCount(_ path: String, _ fs: String) throws -> Int? {
        let stat = try debugfs("stat \"\(path)\"", fs)
        guard let range = stat.range(of: "Blockcount: ") else { return nil }
        return Int(stat[range.upperBound...].prefix { $0.isNumber })
    }

    @Test("sparse files keep their holes, from a directory and from GNU and pax sparse tar members; their bytes read back the same",
          arguments: ["directory", "gnu", "posix"])
    func sparse(source kind: String) throws {
        let scratch = try Scratch()
        let (root, path) = try sparseSource(scratch, kind)
        let source = try TreeSource(path: path)
        let summary = try source.measure(blockSize: 4096)
        #expect(summary.dataBytes < 1 << 20, "a sparse file's holes are not data: \(summary.dataBytes) bytes")

        let fs = scratch.file("fs.img")
        try makeFilesystem(fs, size: "32M")  // smaller than the files' sizes: only their data fits
        let writer = try Ext2Writer(image: fs, offset: 0, time: Self.time)
        try writer.populate(from: source, clamp: Int64(Self.time))
        try writer.close()
        try fsck(fs)
        for name in ["sparse.bin", "trailing hole.bin"] {
            let blocks = try #require(try blockCount("/\(name)", fs), "no Blockcount for \(name)")
            #expect(blocks <= 64, "\(name): \(blocks) sectors allocated")
            #expect(try debugfs("stat \"/\(name)\"", fs).contains("Size: \(48 << 20)"))
            let out = scratch.file("dumped \(name)")
            try run(["debugfs", "-R", "dump \"/\(name)\" \"\(out)\"", fs])
            #expect(try sha256(out) == (try sha256("\(root)/\(name)")), "\(name) reads back differently")
        }
    }

    @Test("a directory of 3,000 names of 1 to 255 bytes and 30 hard links, appended block after block: e2fsck -fn is clean and every name is listed, in the order added",
          arguments: [["-t", "ext4"], ["-t", "ext4", "-b", "1024"], ["-t", "ext2", "-O", "^filetype"]])
    func largeDirectory(mke2fs options: [String]) throws {
        let scratch = try Scratch()
        let root = scratch.file("tree")
        try run(["mkdir", "-p", "\(root)/big"])
        var names: [String] = []
        for i in 0..<3000 {
            let prefix = "\(i)-"
            let name = prefix + String(repeating: "n", count: max(0, 1 + i * 37 % 255 - prefix.count))
            try writeFile("\(root)/big/\(name)", i % 7 == 0 ? Array(name.utf8) : [])
            names.append(name)
            if i % 100 == 0 {
                #expect(link("\(root)/big/\(name)", "\(root)/big/link \(i)") == 0)
                names.append("link \(i)")
            }
        }
        let fs = scratch.file("fs.img")
        try run(["truncate", "-s", "64M", fs])
        try run(["mke2fs", "-q", "-F"] + options + [fs])
        let writer = try Ext2Writer(image: fs, offset: 0, time: Self.time)
        try writer.populate(from: try TreeSource(path: root), clamp: Int64(Self.time))
        try writer.close()
        try fsck(fs)
        // ls -p: "/inode/mode/uid/gid/name/size/" per entry, "." and ".." included.
        let listed = try debugfs("ls -p /big", fs).split(separator: "\n").compactMap { line in
            line.split(separator: "/", omittingEmptySubsequences: false).dropFirst(5).first.map(String.init)
        }
        #expect(Set(listed) == Set(names + [".", ".."]) && listed.count == names.count + 2, "\(listed.count) names listed of \(names.count + 2)")
        // Appended, the names lie in the directory in the order they came (the reader's, sorted by
        // their bytes), though shorter names would fit the gaps earlier blocks leave.
        let byBytes = names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        #expect(Array(listed.dropFirst(2)) == byBytes, "the names are not in the directory's blocks in the order they were added")
        // Every seventh file holds its own name.
        let sample = try #require(names.first { $0.hasPrefix("2996-") })
        #expect(try debugfs("cat \"/big/\(sample)\"", fs) == sample)
        #expect(try debugfs("stat \"/big/link 2900\"", fs).contains("Links: 2"))
    }

    @Test("skipHole moves past a sparse file's hole unread, to where its data goes on, for a directory and GNU and pax tar members",
          arguments: ["directory", "gnu", "posix"])
    func skipsHoles(source kind: String) throws {
        let scratch = try Scratch()
        let (_, path) = try sparseSource(scratch, kind)
        let reader = try TreeSource(path: path).makeReader()
        while let entry = try reader.next(), entry.path != "sparse.bin" {}
        var buffer = [UInt8](repeating: 0xFF, count: 4096)
        var read = 0
        while read < buffer.count, case let n = try buffer.withUnsafeMutableBytes({ try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[read...])) }), n > 0 {
            read += n
        }
        #expect(Array(buffer[..<4]) == Array("head".utf8) && buffer[4..<4096].allSatisfy { $0 == 0 })
        // "middle" is at 24 MiB: the hole between is skipped, not read.
        #expect(try reader.skipHole(at: 4096) == 24 << 20)
        let n = try buffer.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<6])) }
        #expect(n == 6 && Array(buffer[..<6]) == Array("middle".utf8))
    }

    @Test("refused: a missing path, a socket, an archive entry with .., each named")
    func refusals() throws {
        let scratch = try Scratch()
        #expect {
            try TreeSource(path: scratch.file("no such tree"))
        } throws: { error in
            "\(error)".contains("no such tree") && "\(error)".contains("no such file or directory")
        }
        let socketPath = scratch.file("a socket")
        try run(["python3", "-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", socketPath])
        #expect {
            try TreeSource(path: socketPath)
        } throws: { error in
            "\(error)".contains("a socket") && "\(error)".contains("neither a directory nor a tar archive")
        }
        let archive = scratch.file("evil archive.tar.gz")
        try makeArchive(archive, extraEntry: "etc/../../escape")
        let fs = scratch.file("fs.img")
        try makeFilesystem(fs)
        let writer = try Ext2Writer(image: fs, offset: 0, time: Self.time)
        #expect {
            try writer.populate(from: try TreeSource(path: archive))
        } throws: { error in
            "\(error)".contains("etc/../../escape") && "\(error)".contains("..")
        }
    }

    @Test("a directory's entries come sorted by bytes, parents first; the caller's files are root's unless told otherwise")
    func directoryOrderAndOwners() throws {
        let scratch = try Scratch()
        let root = scratch.file("order")
        try run(["mkdir", "-p", "\(root)/b", "\(root)/B", "\(root)/a"])
        for name in ["b/z", "b/a", "Z", "é", "a/x"] { try writeFile("\(root)/\(name)", []) }
        let paths = { (ownership: TreeSource.Ownership) throws -> [TreeEntry] in
            let reader = try TreeSource(path: root, ownership: ownership).makeReader()
            var entries: [TreeEntry] = []
            while let entry = try reader.next() { entries.append(entry) }
            return entries
        }
        let entries = try paths(.callerAsRoot)
        #expect(entries.map(\.path) == ["", "B", "Z", "a", "a/x", "b", "b/a", "b/z", "é"])
        #expect(entries.allSatisfy { $0.uid == 0 && $0.gid == 0 })
        let recorded = try paths(.asRecorded)
        #expect(recorded.allSatisfy { $0.uid == getuid() && $0.gid == getgid() })
    }
}
