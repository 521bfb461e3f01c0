import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// `imgtool ls` and `imgtool cat` on FAT12/16/32 and ISO 9660 (Rock Ridge, Joliet, plain), as an
/// ordinary user would run them: no root, no loop device. Differential: FAT volumes are made by
/// mkfs.vfat and filled with mtools, and what mtools extracts (`mcopy -s`) is the truth for names,
/// sizes, kinds and bytes; ISO volumes are made by xorriso from a tree, and `xorriso -find -exec
/// lsdl` (its reading of the same image) is the truth for names, kinds, modes, sizes and link
/// targets, the source tree for the bytes.
@Suite(.enabled(if: commandExists("mkfs.vfat") && commandExists("mcopy") && commandExists("xorriso"),
                "needs dosfstools, mtools and xorriso"))
struct FilesFATISOTests {
    typealias JSON = [String: Any]

    /// `ls --json` of `path`, by name.
    func listing(_ image: String, _ path: String, _ extra: [String] = []) throws -> [String: JSON] {
        let r = try imgtool(["ls", "--json", image, path] + extra)
        #expect(r.status == 0, "ls \(path): \(r.stderr)")
        let array = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? [JSON], "ls \(path): \(r.stderr)")
        // Every key of the ext listing is there.
        for entry in array {
            #expect(Set(entry.keys) == ["name", "kind", "size", "mode", "uid", "gid", "inode", "modified", "target"])
        }
        return Dictionary(array.map { ($0["name"] as? String ?? "?", $0) }, uniquingKeysWith: { a, _ in a })
    }

    func mtools(_ arguments: [String]) throws {
        try run(["env", "MTOOLS_SKIP_CHECK=1", "LC_ALL=C.UTF-8"] + arguments)
    }

    func expectFailure(_ arguments: [String], status: ImgKit.ExitStatus, message: String,
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try imgtool(arguments)
        #expect(r.status == status.rawValue, "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains(message), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.output.isEmpty, sourceLocation: sourceLocation)
    }

    /// Writes a partition table with sfdisk, on the image file itself.
    func sfdisk(_ scratch: Scratch, _ image: String, _ script: String) throws {
        let file = scratch.file("sfdisk.script")
        try script.write(toFile: file, atomically: true, encoding: .utf8)
        try run(["sh", "-c", "sfdisk --no-reread --no-tell-kernel -q \"$0\" < \"$1\"", image, file])
    }

    // MARK: FAT

    /// A FAT volume of `fat` bits made by mkfs.vfat, either filling `image` or in partition 1 of
    /// an MBR table at 1 MiB; filled with mtools. Returns the mtools drive spec and ls's extra arguments.
    func makeFAT(_ scratch: Scratch, fat: Int, partitioned: Bool) throws -> (image: String, drive: String, extra: [String]) {
        let mib = fat == 12 ? 4 : fat == 16 ? 32 : 64
        let volume = scratch.file("fat\(fat).vol")
        try run(["truncate", "-s", "\(mib)M", volume])
        try run(["mkfs.vfat", "-F", "\(fat)", "-i", "494D4754", "-n", "IMGTOOL", volume])
        var image = volume, drive = volume, extra: [String] = []
        if partitioned {
            image = scratch.file("fat\(fat)-disk.img")
            try run(["truncate", "-s", "\(mib + 2)M", image])
            try sfdisk(scratch, image, "label: dos\nstart=2048, size=\(mib * 2048), type=c\n")
            try run(["dd", "if=\(volume)", "of=\(image)", "bs=1M", "seek=1", "conv=notrunc", "status=none"])
            drive = image + "@@1M"
            extra = ["--partition", "1"]
        }
        let big = scratch.file("big.bin"), small = scratch.file("small.txt"), empty = scratch.file("empty")
        try Data(pseudoRandomBytes(count: (1 << 20) + 4321, seed: 42)).write(to: URL(fileURLWithPath: big))
        try Data("small\n".utf8).write(to: URL(fileURLWithPath: small))
        try Data().write(to: URL(fileURLWithPath: empty))
        try mtools(["mmd", "-i", drive, "::/A long directory name", "::/A long directory name/deeper", "::/EFI", "::/EFI/BOOT"])
        try mtools(["mcopy", "-i", drive, big, "::/A long directory name/deeper/Big File.bin"])
        try mtools(["mcopy", "-i", drive, small, "::/README.TXT"])
        try mtools(["mcopy", "-i", drive, small, "::/EFI/BOOT/grub.cfg"])
        try mtools(["mcopy", "-i", drive, small, "::/Mixed Case Ünïcode name.txt"])
        try mtools(["mcopy", "-i", drive, empty, "::/empty file"])
        try mtools(["mattrib", "-i", drive, "+r", "::/README.TXT"])
        return (image, drive, extra)
    }

    @Test("FAT12/16/32, whole and partitioned: ls names, kinds and sizes are what mcopy -s extracts; cat bytes are its bytes",
          arguments: [12, 16, 32], [false, true])
    func fatAgainstMtools(fat: Int, partitioned: Bool) throws {
        let scratch = try Scratch()
        let (image, drive, extra) = try makeFAT(scratch, fat: fat, partitioned: partitioned)
        let hash = try sha256(image)
        let out = scratch.file("extracted")
        try run(["mkdir", out])
        try mtools(["mcopy", "-s", "-n", "-m", "-i", drive, "::/", out])
        let files = FileManager.default
        var directories = [""]
        var compared = 0
        while let relative = directories.popLast() {
            let listed = try listing(image, relative.isEmpty ? "/" : relative, extra)
            let names = try files.contentsOfDirectory(atPath: out + relative)
            #expect(Set(listed.keys) == Set(names), "in \(relative)/")
            for name in names {
                let path = relative + "/" + name
                var isDirectory: ObjCBool = false
                _ = files.fileExists(atPath: out + path, isDirectory: &isDirectory)
                let entry = try #require(listed[name], "\(path) is not listed")
                #expect(entry["uid"] as? Int == 0 && entry["gid"] as? Int == 0)
                if isDirectory.boolValue {
                    directories.append(path)
                    #expect(entry["kind"] as? String == "directory" && entry["mode"] as? Int == 0o40755, "\(path)")
                    continue
                }
                let expected = try Data(contentsOf: URL(fileURLWithPath: out + path))
                #expect(entry["kind"] as? String == "file" && entry["size"] as? Int == expected.count, "\(path): \(entry)")
                #expect(entry["mode"] as? Int == (name == "README.TXT" ? 0o100555 : 0o100755), "\(path): read-only drops the write bits")
                let cat = try imgtool(["cat", image, path] + extra)
                #expect(cat.status == 0 && Data(cat.output) == expected, "cat \(path): \(cat.stderr)")
                // mcopy -m kept the modification time, which ls reads as UTC (both in the same zone here).
                let mtime = try files.attributesOfItem(atPath: out + path)[.modificationDate] as? Date
                if let mtime, let modified = entry["modified"] as? Int {
                    #expect(abs(Double(modified) - mtime.timeIntervalSince1970 - Double(TimeZone.current.secondsFromGMT())) <= 2, "\(path)")
                }
                compared += 1
            }
        }
        #expect(compared == 5)
        // mtype agrees too, and names are found case-insensitively, by long or 8.3 name.
        let mtype = try Subprocess.run(["env", "MTOOLS_SKIP_CHECK=1", "mtype", "-i", drive, "::/efi/boot/grub.cfg"])
        #expect(try imgtool(["cat", image, "/efi/boot/GRUB.CFG"] + extra).output == mtype.output)
        #expect(try imgtool(["cat", image, "/ALONGD~1/deeper/../deeper/BIGFIL~1.BIN"] + extra).output.count == (1 << 20) + 4321)
        // A single file by itself, and -l.
        let r = try imgtool(["ls", "-l", image, "/README.TXT"] + extra)
        #expect(r.status == 0 && r.stdout.hasPrefix("-r-xr-xr-x 0 0 6 ") && r.stdout.hasSuffix(" /README.TXT\n"), "\(r.stdout) \(r.stderr)")
        // The errors.
        try expectFailure(["ls", image, "/nope"] + extra, status: .badImage, message: "/nope does not exist in the filesystem.")
        try expectFailure(["cat", image, "/EFI"] + extra, status: .badImage, message: "/EFI is a directory, not a file.")
        try expectFailure(["ls", image, "/README.TXT/x"] + extra, status: .badImage, message: "/README.TXT/x cannot be reached: /README.TXT is not a directory.")
        #expect(try sha256(image) == hash, "reading changed the image")
    }

    @Test("a FAT32 file streams in chunks: a 64 MiB file is read with memory far below its size",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/time"), "needs GNU time (package time)"))
    func fatStreams() throws {
        let scratch = try Scratch()
        let volume = scratch.file("big.vol")
        try run(["truncate", "-s", "100M", volume])
        try run(["mkfs.vfat", "-F", "32", volume])
        let big = scratch.file("zeros.bin")
        try run(["truncate", "-s", "64M", big])
        try mtools(["mcopy", "-i", volume, big, "::/zeros.bin"])
        let r = try Subprocess.run(["/usr/bin/time", "-f", "%M", "sh", "-c", "\"$0\" cat \"$1\" /zeros.bin | wc -c", imgtoolPath, volume])
        let lines = r.stderr.split(separator: "\n")
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(64 << 20)", "\(r.stderr)")
        let kib = Int(lines.last ?? "") ?? .max
        #expect(kib < 48 * 1024, "imgtool cat used \(kib) KiB for a 64 MiB file")
    }

    // MARK: ISO 9660

    /// A tree with long names, a name only Joliet or Rock Ridge keep, symbolic links (relative,
    /// absolute, dangling), a deep directory, a file over 1 MiB and an empty file.
    func makeTree(_ scratch: Scratch) throws -> String {
        let tree = scratch.file("tree")
        let deep = tree + "/a/b/c/d/e/f/g/h/i/j"
        try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: true)
        func write(_ path: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: tree + "/" + path)) }
        try write("a/b/c/d/e/f/g/h/i/j/deep.txt", Array("deep\n".utf8))
        try write("big.bin", pseudoRandomBytes(count: (3 << 19) + 77, seed: 7))
        try write("A file with a long name that needs Joliet or RR.txt", Array("long\n".utf8))
        try write("Ünïcödé ﬁle.txt", Array("unicode\n".utf8))
        try write("MixedCase.Txt", Array("mixed".utf8))
        try write("empty", [])
        try FileManager.default.createSymbolicLink(atPath: tree + "/link", withDestinationPath: "a/b/c")
        try FileManager.default.createSymbolicLink(atPath: tree + "/abslink", withDestinationPath: "/big.bin")
        try FileManager.default.createSymbolicLink(atPath: tree + "/dangling", withDestinationPath: "nowhere")
        try FileManager.default.createSymbolicLink(atPath: tree + "/a/up", withDestinationPath: "../MixedCase.Txt")
        return tree
    }

    /// One line of `xorriso -find / -exec lsdl`.
    struct Lsdl {
        let mode: String, size: Int, path: String, target: String?
    }

    func lsdl(_ image: String, _ options: [String]) throws -> [Lsdl] {
        let text = try run(["xorriso"] + options + ["-indev", image, "-find", "/", "-exec", "lsdl"]).stdout
        let pattern = try NSRegularExpression(pattern: #"^(\S+)\s+\d+\s+\S+\s+\S+\s+(\d+)\s+\S+\s+\S+\s+\S+\s+'(.*?)'(?: -> '(.*)')?$"#)
        return text.split(separator: "\n").compactMap { line in
            let s = String(line)
            guard let m = pattern.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) else { return nil }
            func group(_ i: Int) -> String? { Range(m.range(at: i), in: s).map { String(s[$0]) } }
            return Lsdl(mode: group(1)!, size: Int(group(2)!)!, path: group(3)!, target: group(4))
        }
    }

    @Test("ISO 9660 with Rock Ridge and Joliet, Joliet only, plain: ls agrees with xorriso's reading; cat gives the source bytes",
          arguments: ["rr", "joliet", "plain"])
    func isoAgainstXorriso(variant: String) throws {
        let scratch = try Scratch()
        let tree = try makeTree(scratch)
        let image = scratch.file("\(variant).iso")
        let flags = variant == "rr" ? ["-R", "-J"] : variant == "joliet" ? ["--norock", "-J"] : ["--norock"]
        try run(["xorriso", "-as", "mkisofs"] + flags + ["-V", "IMGTOOL", "-o", image, tree])
        let oracle = try lsdl(image, variant == "rr" ? [] : variant == "joliet" ? ["-rockridge", "off", "-joliet", "on"] : ["-rockridge", "off"])
        #expect(oracle.count > 15, "\(oracle.count) lines from xorriso")
        // Plain ISO 9660 names: xorriso shows them upper-case, Linux (map=normal) lower-case.
        func key(_ s: String) -> String { variant == "plain" ? s.lowercased() : s }
        var listings: [String: [String: JSON]] = [:]
        for line in oracle where line.path != "/" {
            let parent = (line.path as NSString).deletingLastPathComponent, name = (line.path as NSString).lastPathComponent
            let dir = key(parent)
            if listings[dir] == nil { listings[dir] = try listing(image, dir) }
            let entry = try #require(listings[dir]?[key(name)], "\(line.path) is not listed in \(dir): \(listings[dir]?.keys.sorted() ?? [])")
            let kind = entry["kind"] as? String
            switch line.mode.first {
            case "d": #expect(kind == "directory", "\(line.path)")
            case "l":
                #expect(kind == "symlink" && entry["target"] as? String == line.target, "\(line.path): \(entry)")
            default:
                #expect(kind == "file" && entry["size"] as? Int == line.size, "\(line.path): \(entry)")
            }
            let mode = try #require(entry["mode"] as? Int)
            #expect(permissions(mode) == line.mode, "\(line.path): \(entry)")
        }
        // Every name listed is one xorriso sees.
        let seen = Set(oracle.map { key($0.path) })
        for (dir, entries) in listings {
            for name in entries.keys { #expect(seen.contains((dir as NSString).appendingPathComponent(name)), "\(dir)/\(name)") }
        }
        // cat: the source bytes, through links when there are links.
        // (Plain ISO 9660 keeps 8.3 names only: "MixedCase.Txt" is "mixedcas.txt" there.)
        var files = ["big.bin", "a/b/c/d/e/f/g/h/i/j/deep.txt", "empty"]
        if variant != "plain" { files += ["MixedCase.Txt", "A file with a long name that needs Joliet or RR.txt", "Ünïcödé ﬁle.txt"] }
        for file in files {
            let expected = try Data(contentsOf: URL(fileURLWithPath: tree + "/" + file))
            let r = try imgtool(["cat", image, "/" + key(file)])
            #expect(r.status == 0 && Data(r.output) == expected, "cat \(file): \(r.stderr)")
        }
        if variant == "rr" {
            #expect(try imgtool(["cat", image, "/abslink"]).output == (try Array(Data(contentsOf: URL(fileURLWithPath: tree + "/big.bin")))))
            #expect(try imgtool(["cat", image, "/link/d/../d/e/f/g/h/i/j/deep.txt"]).stdout == "deep\n")
            #expect(try imgtool(["cat", image, "/a/up"]).stdout == "mixed")
            #expect(try imgtool(["ls", image, "/link"]).stdout == "d/\n", "a link to a directory lists the directory")
            try expectFailure(["cat", image, "/dangling"], status: .badImage, message: "it leads to /nowhere, which is missing")
        } else {
            // Without Rock Ridge: Linux isofs's default modes (r-x for all, directories and files).
            let root = try listing(image, "/")
            #expect(root[key("big.bin")]?["mode"] as? Int == 0o100555 && root["a"]?["mode"] as? Int == 0o40555)
        }
        try expectFailure(["ls", image, "/nope"], status: .badImage, message: "/nope does not exist in the filesystem.")
        try expectFailure(["cat", image, "/a"], status: .badImage, message: "/a is a directory, not a file.")
    }

    /// "drwxr-xr-x" from st_mode, for the types ISO 9660 has.
    func permissions(_ mode: Int) -> String {
        let type: Character = mode & 0o170000 == 0o40000 ? "d" : mode & 0o170000 == 0o120000 ? "l" : "-"
        var s = String(type)
        for shift in [6, 3, 0] {
            let bits = (mode >> shift) & 7
            s += (bits & 4 != 0 ? "r" : "-") + (bits & 2 != 0 ? "w" : "-") + (bits & 1 != 0 ? "x" : "-")
        }
        return s
    }

    @Test("a grub-mkrescue hybrid ISO: without --partition the ISO 9660 volume spanning the image; --partition picks the ESP",
          .enabled(if: commandExists("grub-mkrescue")))
    func hybridISO() throws {
        let scratch = try Scratch()
        let tree = scratch.file("rescue")
        try FileManager.default.createDirectory(atPath: tree + "/boot/grub", withIntermediateDirectories: true)
        try "set timeout=5\n".write(toFile: tree + "/boot/grub/grub.cfg", atomically: true, encoding: .utf8)
        let image = scratch.file("rescue.iso")
        try run(["grub-mkrescue", "-o", image, tree])
        let r = try imgtool(["ls", image, "/boot/grub"])
        #expect(r.status == 0 && r.stdout.split(separator: "\n").contains("grub.cfg"), "\(r.stdout) \(r.stderr)")
        #expect(try imgtool(["cat", image, "/boot/grub/grub.cfg"]).stdout == "set timeout=5\n")
        // The ESP inside it is a FAT partition; grub-mkrescue puts the EFI loader there.
        let inspect = try #require(try JSONSerialization.jsonObject(with: Data(try imgtool(["inspect", "--json", image]).output)) as? JSON)
        let partitions = (inspect["partitionTable"] as? JSON)?["partitions"] as? [JSON] ?? []
        let esp = try #require(partitions.first { ($0["filesystem"] as? JSON)?["type"] as? String == "vfat" }?["number"] as? Int)
        let efi = try imgtool(["ls", image, "--partition", "\(esp)", "/efi/boot"])
        #expect(efi.status == 0 && efi.stdout.lowercased().contains("bootx64.efi"), "\(efi.stdout) \(efi.stderr)")
    }

    @Test("refusals name the filesystems ls reads: swap, nothing at all")
    func refusals() throws {
        let scratch = try Scratch()
        let image = scratch.file("disk.img")
        try run(["truncate", "-s", "8M", image])
        try sfdisk(scratch, image, "label: dos\nstart=2048, size=4096, type=82\nstart=6144, type=83\n")
        let swap = scratch.file("swap")
        try run(["truncate", "-s", "2M", swap])
        try run(["mkswap", "-U", "494d4754-0000-4000-8000-0000000000c1", swap])
        try run(["dd", "if=\(swap)", "of=\(image)", "bs=512", "seek=2048", "conv=notrunc", "status=none"])
        try expectFailure(["ls", image, "--partition", "1"], status: .badImage,
                          message: "partition 1 of \(image) holds no filesystem ls can read (it is swap); imgtool ls and cat read ext2/3/4, FAT12/16/32 and ISO 9660.")
        try expectFailure(["cat", image, "--partition", "2", "/x"], status: .badImage,
                          message: "partition 2 of \(image) holds no filesystem ls can read (libblkid finds no filesystem there)")
        try expectFailure(["ls", image], status: .badImage, message: "\(image) has no filesystem ls can read (only swap on partition 1)")
        // Two FAT partitions and no ext: ambiguous, named.
        let fat = scratch.file("fat.vol")
        try run(["truncate", "-s", "2M", fat])
        try run(["mkfs.vfat", fat])
        try run(["dd", "if=\(fat)", "of=\(image)", "bs=512", "seek=2048", "conv=notrunc", "status=none"])
        try run(["dd", "if=\(fat)", "of=\(image)", "bs=512", "seek=6144", "conv=notrunc", "status=none"])
        try expectFailure(["ls", image], status: .badImage,
                          message: "has 2 filesystems ls can read: partition 1 (vfat), partition 2 (vfat). Choose one with --partition N.")
        // Without its boot sector the second is no filesystem, and the only FAT one left is read.
        try run(["dd", "if=/dev/zero", "of=\(image)", "bs=512", "seek=6144", "count=1", "conv=notrunc", "status=none"])
        #expect(try imgtool(["ls", image]).status == 0, "one FAT left: chosen")
    }
}
