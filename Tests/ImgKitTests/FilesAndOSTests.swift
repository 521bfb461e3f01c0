import Foundation
import Glibc
import ImgFormats
@testable import ImgKit
import ImgSystem
import Testing
import TestSupport

/// Files without mounting (`imgtool ls`, `imgtool cat`) and OS identification, on images built
/// without root by TestImages/make-os-tree.sh and make-disk.sh.
@Suite struct FilesAndOSTests {
    static let expectedReport = OSReport(
        rootPartition: 2, id: "debian", versionID: "12", prettyName: "Debian GNU/Linux 12 (bookworm)",
        hostname: "testhost", kernels: ["vmlinuz-6.1.0-test"])

    // MARK: os-release

    @Suite struct OSReleaseParsing {
        @Test("os-release: plain, double- and single-quoted values, escapes, comments; a later assignment wins")
        func quoting() {
            let text = #"""
                # Debian-like
                  PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
                ID=debian
                VERSION_ID='12'
                ESCAPED="a \"quoted\" \$word \\ and \n kept"
                MIXED="one "'two'
                UNQUOTED=plain\ word   # trailing comment
                EMPTY=
                EMPTY_QUOTES=""
                ID_LIKE=first
                ID_LIKE=second
                lower_case_ok=1
                SINGLE='no \escapes in "here"'

                """#
            let values = OSInspection.parseOSRelease(text)
            #expect(values == [
                "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "ID": "debian", "VERSION_ID": "12",
                #"ESCAPED"#: #"a "quoted" $word \ and \n kept"#, "MIXED": "one two", "UNQUOTED": "plain word",
                "EMPTY": "", "EMPTY_QUOTES": "", "ID_LIKE": "second", "lower_case_ok": "1",
                "SINGLE": #"no \escapes in "here""#,
            ])
        }

        @Test("os-release: lines that are not assignments, bad names and open quotes are skipped")
        func invalidLines() {
            let text = "ID=ok\nnot an assignment\n=novalue\n1BAD=x\nBAD-NAME=x\nOPEN=\"unterminated\nOPEN2='x\n KEY = spaced\r\nCRLF=yes\r\n"
            #expect(OSInspection.parseOSRelease(text) == ["ID": "ok", "CRLF": "yes"])
            #expect(OSInspection.parseOSRelease("") == [:])
        }
    }

    // MARK: OS inspection

    @Suite struct Inspection {
        @Test("the OS tree: root on partition 2 through /etc/os-release -> ../usr/lib/os-release, kernels from the separate /boot")
        func osTree() throws {
            let scratch = try Scratch()
            let image = try makeOSTree(scratch.file("os.img"))
            let filesystems = try ImageFiles.extFilesystems(image: image)
            #expect(filesystems.map(\.partition) == [1, 2])
            #expect(filesystems.map(\.offset) == [OSTree.bootOffset, OSTree.rootOffset])
            #expect(OSInspection.inspect(image: image, filesystems: filesystems) == FilesAndOSTests.expectedReport)
            // Order does not matter, and what cannot be opened is skipped.
            let shuffled: [OSInspection.Filesystem] = [.init(partition: 7, offset: 12345), .init(partition: 2, offset: OSTree.rootOffset),
                                                      .init(partition: 1, offset: OSTree.bootOffset)]
            #expect(OSInspection.inspect(image: image, filesystems: shuffled) == FilesAndOSTests.expectedReport)
            // Without the separate /boot there are no kernels, but the OS is the same.
            let rootOnly = try #require(OSInspection.inspect(image: image, filesystems: [.init(partition: 2, offset: OSTree.rootOffset)]))
            #expect(rootOnly.kernels == [] && rootOnly.id == "debian")
            // The JSON document keeps every key; what the image lacks is null.
            let json = try #require(try JSONSerialization.jsonObject(with: Data(rootOnly.json.rendered().utf8)) as? [String: Any])
            #expect(Set(json.keys) == ["rootPartition", "id", "versionID", "prettyName", "hostname", "kernels", "rootLogicalVolume"])
            #expect(json["rootLogicalVolume"] is NSNull, "a root in a partition names no logical volume")
            #expect(json["id"] as? String == "debian" && json["kernels"] as? [String] == [])
        }

        @Test("a bare root filesystem: /usr/lib/os-release alone, kernels in its own /boot, hostname after comments")
        func bareRoot() throws {
            let scratch = try Scratch()
            let image = try makeDisk(scratch.file("root.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "16"])
            let release = scratch.file("os-release")
            try writeFile(release, Array("NAME=Fedora\nID=fedora\nVERSION_ID=40\nPRETTY_NAME=\"Fedora Linux 40\"\n".utf8))
            let hostname = scratch.file("hostname")
            try writeFile(hostname, Array("# set by the installer\n\n  web-01  \nignored\n".utf8))
            let kernel = scratch.file("kernel")
            try writeFile(kernel, Array("k".utf8))
            try debugfs(image, ["mkdir /etc", "mkdir /usr", "mkdir /usr/lib", "write \(release) /usr/lib/os-release",
                                "write \(hostname) /etc/hostname", "write \(kernel) /boot/vmlinuz-6.8.5-301.fc40.x86_64",
                                "write \(kernel) /boot/vmlinuz-0-rescue-abc", "mkdir /boot/vmlinuz-dir",
                                "write \(kernel) /boot/initramfs-6.8.5.img"])
            let filesystems = try ImageFiles.extFilesystems(image: image)
            #expect(filesystems.count == 1 && filesystems[0].partition == nil && filesystems[0].offset == 0)
            #expect(OSInspection.inspect(image: image, filesystems: filesystems) == OSReport(
                rootPartition: nil, id: "fedora", versionID: "40", prettyName: "Fedora Linux 40", hostname: "web-01",
                kernels: ["vmlinuz-0-rescue-abc", "vmlinuz-6.8.5-301.fc40.x86_64"]))
        }

        @Test("no OS: a boot-only disk, os-release without /etc, an empty image; nothing is found and nothing crashes")
        func noOS() throws {
            let scratch = try Scratch()
            let boot = try makeDisk(scratch.file("boot.img"), ["--label", "dos", "--fs", "ext2", "--size-mib", "8"])
            #expect(OSInspection.inspect(image: boot, filesystems: try ImageFiles.extFilesystems(image: boot)) == nil)

            let noEtc = try makeDisk(scratch.file("noetc.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "8"])
            let release = scratch.file("os-release")
            try writeFile(release, Array("ID=debian\n".utf8))
            try debugfs(noEtc, ["mkdir /usr", "mkdir /usr/lib", "write \(release) /usr/lib/os-release"])
            #expect(OSInspection.inspect(image: noEtc, filesystems: [.init(partition: nil, offset: 0)]) == nil)

            let zeros = scratch.file("zeros.img")
            try run(["truncate", "-s", "4M", zeros])
            #expect(try ImageFiles.extFilesystems(image: zeros).isEmpty)
            #expect(OSInspection.inspect(image: zeros, filesystems: [.init(partition: nil, offset: 0), .init(partition: 1, offset: 1 << 20), .init(partition: 2, offset: .max)]) == nil)
            #expect(OSInspection.inspect(image: scratch.file("missing.img"), filesystems: [.init(partition: nil, offset: 0)]) == nil)
        }

        @Test("os-release is read up to 64 KiB: a huge file yields what its start says")
        func osReleaseBound() throws {
            let scratch = try Scratch()
            let image = try makeDisk(scratch.file("root.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "8"])
            let release = scratch.file("os-release")
            let filler = String(repeating: "# padding padding padding padding padding padding padding padding\n", count: 2000)
            try writeFile(release, Array(("ID=first\nVERSION_ID=1\n" + filler + "ID=late\n").utf8))
            try debugfs(image, ["mkdir /etc", "write \(release) /etc/os-release"])
            let report = try #require(OSInspection.inspect(image: image, filesystems: [.init(partition: nil, offset: 0)]))
            #expect(report.id == "first" && report.versionID == "1" && report.hostname == nil)
        }
    }

    // MARK: imgtool ls / cat

    @Suite struct CLI {
        func expectFailure(_ arguments: [String], status: ImgKit.ExitStatus, message: String, user: UInt32? = nil,
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
            let r = try imgtool(arguments, user: user)
            #expect(r.status == status.rawValue, "stderr: \(r.stderr)", sourceLocation: sourceLocation)
            #expect(r.stderr.hasPrefix("imgtool: error: "), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
            #expect(r.stderr.contains(message), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
            #expect(r.output.isEmpty, sourceLocation: sourceLocation)
        }

        @Test("ls prints names, directories with a slash; -l mode, owner, size, UTC time, name and link target")
        func ls() throws {
            let scratch = try Scratch()
            let image = try makeOSTree(scratch.file("os.img"))
            var r = try imgtool(["ls", image, "--partition", "2", "/"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout == "bin\nboot/\netc/\nlost+found/\nroot/\nsrv/\nusr/\nvmlinuz\n")
            r = try imgtool(["ls", image, "--partition", "2"])
            #expect(r.stdout == "bin\nboot/\netc/\nlost+found/\nroot/\nsrv/\nusr/\nvmlinuz\n")
            r = try imgtool(["ls", image, "--partition", "1", "/"])
            #expect(r.stdout == "config-6.1.0-test\ngrub/\ninitrd.img-6.1.0-test\nlost+found/\nvmlinuz-6.1.0-test\n")
            // Through a link to a directory, and a single file by itself.
            r = try imgtool(["ls", image, "--partition", "2", "/srv/links/etc"])
            #expect(r.stdout == "hostname\nos-release\npasswd\n")
            r = try imgtool(["ls", image, "--partition", "2", "/etc/hostname"])
            #expect(r.stdout == "/etc/hostname\n")

            r = try imgtool(["ls", "-l", image, "--partition", "2", "/etc"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout == """
                -rw-r--r-- 0 0  9 2023-11-14T22:13:20Z hostname
                lrwxrwxrwx 0 0 21 2023-11-14T22:13:20Z os-release -> ../usr/lib/os-release
                -rw-r--r-- 0 0 52 2023-11-14T22:13:20Z passwd

                """)
            r = try imgtool(["ls", image, "-l", "--partition", "2", "/"])
            #expect(r.stdout.contains("drwx------ 0 0 12288 2023-11-14T22:13:20Z lost+found\n"))
            #expect(r.stdout.contains("lrwxrwxrwx 0 0     7 2023-11-14T22:13:20Z bin -> usr/bin\n"))
            r = try imgtool(["ls", image, "-l", "--partition", "2", "/etc/os-release"])
            #expect(r.stdout == "lrwxrwxrwx 0 0 21 2023-11-14T22:13:20Z /etc/os-release -> ../usr/lib/os-release\n")
        }

        @Test("names with control characters print escaped, so an image cannot drive the terminal; --json keeps them exact")
        func hostileNames() throws {
            let scratch = try Scratch()
            let image = try makeDisk(scratch.file("bare.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "8"])
            try debugfs(image, ["mkdir /d", "mkdir /d/red\u{1B}[31mX", "mkdir /d/back\\slash", "mkdir /d/bell\u{07}"])
            let r = try imgtool(["ls", image, "/d"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout == "back\\\\slash/\nbell\\x07/\nred\\x1b[31mX/\n")
            let json = try imgtool(["ls", image, "/d", "--json"])
            let names = try #require(try JSONSerialization.jsonObject(with: Data(json.output)) as? [[String: Any]]).map { $0["name"] as? String }
            #expect(names == ["back\\slash", "bell\u{07}", "red\u{1B}[31mX"])
        }

        @Test("ls --json prints an array of entries with the inode's fields and link targets")
        func lsJSON() throws {
            let scratch = try Scratch()
            let image = try makeOSTree(scratch.file("os.img"))
            let r = try imgtool(["ls", image, "--partition", "2", "/etc", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let array = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? [[String: Any]])
            #expect(array.map { $0["name"] as? String } == ["hostname", "os-release", "passwd"])
            let hostname = array[0], link = array[1]
            #expect(hostname["kind"] as? String == "file" && hostname["size"] as? Int == 9)
            #expect(hostname["mode"] as? Int == 0o100644 && hostname["modified"] as? Int == Int(OSTree.time))
            #expect(hostname["uid"] as? Int == 0 && hostname["gid"] as? Int == 0 && hostname["inode"] is Int)
            #expect(hostname["target"] is NSNull)  // every key is present; null when not a link
            #expect(link["kind"] as? String == "symlink" && link["target"] as? String == "../usr/lib/os-release")
        }

        @Test("cat streams files through links inside the image; big files byte for byte")
        func cat() throws {
            let scratch = try Scratch()
            let image = try makeOSTree(scratch.file("os.img"))
            var r = try imgtool(["cat", image, "--partition", "2", "/etc/os-release"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout == OSTree.osRelease)
            r = try imgtool(["cat", image, "--partition", "2", "/srv/links/passwd"])
            #expect(r.stdout == OSTree.passwd)
            r = try imgtool(["cat", image, "--partition", "1", "/vmlinuz-6.1.0-test"])
            #expect(r.stdout == "fake kernel 6.1.0-test\n")

            // A bare filesystem needs no --partition.
            let bare = try makeDisk(scratch.file("bare.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "16"])
            let source = scratch.file("big.bin")
            try writeFile(source, pseudoRandomBytes(count: 5 << 20 | 777, seed: 9))
            try debugfs(bare, ["write \(source) /big.bin"])
            r = try imgtool(["cat", bare, "/big.bin"])
            #expect(r.status == 0, "\(r.stderr)")
            let copy = scratch.file("copy.bin")
            try writeFile(copy, r.output)
            #expect(try sha256(copy) == (try sha256(source)))
            #expect(try imgtool(["ls", bare, "/"]).stdout == "big.bin\nboot/\nlost+found/\n")
        }

        @Test("each refusal has its exit code and a message with the next step")
        func refusals() throws {
            let scratch = try Scratch()
            let image = try makeOSTree(scratch.file("os.img"))
            let before = try sha256(image)
            try expectFailure(["ls", scratch.file("nope.img")], status: .noInput, message: "nope.img does not exist")
            try expectFailure(["cat", scratch.path, "/x"], status: .noInput, message: "is a directory, not a disk image")
            try expectFailure(["ls", image], status: .badImage,
                              message: "has 2 ext2/3/4 filesystems: partition 1 (ext2), partition 2 (ext4). Choose one with --partition N.")
            try expectFailure(["ls", image, "--partition", "3"], status: .badImage,
                              message: "has no partition 3 (its partitions: 1, 2). Choose one of those with --partition.")
            try expectFailure(["ls", image, "--partition", "2", "/nope"], status: .badImage,
                              message: "in partition 2 of \(image): /nope does not exist in the filesystem. See what is there with `imgtool ls \(image) --partition 2 /`.")
            try expectFailure(["cat", image, "--partition", "2", "/vmlinuz"], status: .badImage,
                              message: "it leads to /boot/vmlinuz-6.1.0-test, which is missing")
            try expectFailure(["cat", image, "--partition", "2", "/etc"], status: .badImage,
                              message: "/etc is a directory, not a file. List it with `imgtool ls \(image) --partition 2 /etc`.")
            try expectFailure(["cat", image, "--partition", "2", "/srv/links/loop-a"], status: .badImage,
                              message: "more than 40 symbolic links in a row")
            try expectFailure(["ls", image, "--partition", "2", "/etc/hostname/x"], status: .badImage,
                              message: "/etc/hostname is not a directory")
            let usage = try imgtool(["cat", image, "--partition", "2"])
            #expect(usage.status == 64 && usage.stderr.contains("missing argument <path>"), "\(usage.stderr)")
            #expect(try sha256(image) == before)

            let bare = try makeDisk(scratch.file("bare.img"), ["--label", "none", "--fs", "ext4", "--size-mib", "8"])
            try expectFailure(["ls", bare, "--partition", "1"], status: .badImage,
                              message: "has no partition table (it is a bare ext4 filesystem), so there is no partition to choose; leave out --partition.")
        }

        @Test("partitions without an ext filesystem: swap, unformatted, none at all")
        func notExt() throws {
            let scratch = try Scratch()
            let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--fs", "none", "--extra-partition", "--size-mib", "16"])
            let table = try #require(try PartitionTable.read(from: FileByteSource(path: image)))
            let data = try #require(table.partition(number: 2))
            let swap = scratch.file("swap.img")
            try run(["truncate", "-s", "\(data.sectorCount * 512)", swap])
            try run(["mkswap", "-U", "494d4754-0000-4000-8000-0000000000c1", swap])
            try run(["dd", "if=\(swap)", "of=\(image)", "bs=512", "seek=\(data.startSector)", "conv=notrunc", "status=none"])
            try expectFailure(["ls", image, "--partition", "2"], status: .badImage,
                              message: "partition 2 of \(image) holds no filesystem ls can read (it is swap); imgtool ls and cat read ext2/3/4, FAT12/16/32 and ISO 9660.")
            try expectFailure(["cat", image, "--partition", "1", "/x"], status: .badImage,
                              message: "partition 1 of \(image) holds no filesystem ls can read (libblkid finds no filesystem there)")
            try expectFailure(["ls", image], status: .badImage,
                              message: "\(image) has no filesystem ls can read (only swap on partition 2)")
        }

        @Test("a damaged directory block is a libext2fs failure (exit 1) naming the directory")
        func damagedDirectory() throws {
            let scratch = try Scratch()
            let image = try makeOSTree(scratch.file("os.img"))
            let stats = try debugfsOutput(image, offset: OSTree.rootOffset, "stats")
            let blockSize = try #require(stats.split(separator: "\n").first { $0.hasPrefix("Block size:") }
                .flatMap { UInt64($0.split(separator: " ").last ?? "") })
            let blocks = try debugfsOutput(image, offset: OSTree.rootOffset, "blocks /etc")
            let block = try #require(UInt64(blocks.split(separator: " ").first?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""))
            let garbage = scratch.file("garbage")
            try writeFile(garbage, [UInt8](repeating: 0xA5, count: Int(blockSize)))
            try run(["dd", "if=\(garbage)", "of=\(image)", "bs=\(blockSize)", "seek=\((OSTree.rootOffset / blockSize) + block)",
                     "conv=notrunc", "status=none"])
            try expectFailure(["ls", image, "--partition", "2", "/etc"], status: .failure, message: "libext2fs could not read /etc")
            try expectFailure(["cat", image, "--partition", "2", "/etc/hostname"], status: .failure, message: "libext2fs could not read /etc")
            // The rest of the filesystem still reads.
            #expect(try imgtool(["cat", image, "--partition", "2", "/usr/lib/os-release"]).stdout == OSTree.osRelease)
        }

        @Test("as user nobody: ls and cat work, an unreadable image is refused, and the image keeps its sha256 and mtime",
              .enabled(if: isRoot, "setpriv needs root to become nobody"))
        func asNobody() throws {
            let scratch = try Scratch()
            let image = try makeOSTree(scratch.file("os.img"))
            let hash = try sha256(image)
            let mtime = try modificationTime(image)
            let nobody: UInt32 = 65534
            var r = try imgtool(["ls", "-l", image, "--partition", "2", "/etc"], user: nobody)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("os-release -> ../usr/lib/os-release"))
            r = try imgtool(["ls", "--json", image, "--partition", "1"], user: nobody)
            #expect(r.status == 0 && r.stdout.contains("vmlinuz-6.1.0-test"), "\(r.stderr)")
            r = try imgtool(["cat", image, "--partition", "2", "/etc/os-release"], user: nobody)
            #expect(r.status == 0 && r.stdout == OSTree.osRelease, "\(r.stderr)")
            try expectFailure(["cat", image, "--partition", "2", "/nope"], status: .badImage, message: "/nope does not exist", user: nobody)
            #expect(try sha256(image) == hash)
            let after = try modificationTime(image)
            #expect(after.tv_sec == mtime.tv_sec && after.tv_nsec == mtime.tv_nsec)

            chmod(image, 0o600)
            try expectFailure(["ls", image], status: .noInput, message: "cannot read \(image): ", user: nobody)
            try expectFailure(["cat", image, "--partition", "2", "/etc/hostname"], status: .noInput, message: "Permission denied", user: nobody)
            #expect(try sha256(image) == hash)
            #expect(leftovers() == [])
        }
    }
}

