import Foundation
import Glibc
import ImgSystem
import Testing
import TestSupport

/// `imgtool create` as uid 65534, in a directory whose path holds a space: the tables as sfdisk,
/// sgdisk and parted read them, the filesystems as blkid, e2fsck, fsck.fat, debugfs and mtools read
/// them, and the same bytes from the same inputs and seed.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct CreateTests {
    typealias JSON = [String: Any]
    static let types = [
        "bios-boot": "21686148-6449-6E6F-744E-656564454649", "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "root": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "root-x86-64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
        "home": "933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "linux-generic": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        "srv": "3B8F8425-20E0-4F3B-907F-1A25A76F98E8",
    ]
    static let espUUID = "1e5b0a2c-0000-4000-8000-000000000e5f"
    static let rootUUID = "494d4754-0000-4000-8000-00000000c0de"

    /// The table checks every GPT shares: each partition as `--json` says and as asked (`expected`:
    /// type name, name, attributes), as sfdisk, sgdisk and parted read it; 1 MiB alignment; the
    /// verifiers clean.
    func checkGPT(_ image: String, _ json: JSON, expected: [(type: String, name: String, attributes: UInt64)],
                  sourceLocation: SourceLocation = #_sourceLocation) throws {
        let made = try #require(json["partitions"] as? [JSON], sourceLocation: sourceLocation)
        try #require(made.count == expected.count, sourceLocation: sourceLocation)
        let (table, dumped) = try CreateRead.sfdisk(image)
        #expect(table["label"] as? String == "gpt" && table["id"] as? String == json["diskGUID"] as? String, "\(table)",
                sourceLocation: sourceLocation)
        #expect(dumped.count == expected.count, sourceLocation: sourceLocation)
        let parted = try CreateRead.parted(image)
        var previousEnd = 0
        for (index, want) in expected.enumerated() {
            let number = index + 1
            let p = made[index], start = try #require(p["startSector"] as? Int), sectors = try #require(p["sectors"] as? Int)
            #expect(p["number"] as? Int == number && p["type"] as? String == want.type, "\(p)", sourceLocation: sourceLocation)
            #expect(start % 2048 == 0 && sectors % 2048 == 0 && start > previousEnd, "partition \(number) on 1 MiB: \(p)", sourceLocation: sourceLocation)
            previousEnd = start + sectors - 1
            let uuid = try #require(p["uuid"] as? String, sourceLocation: sourceLocation)
            // sfdisk: start, size, type GUID, unique GUID, name; LegacyBIOSBootable for bit 2 (it
            // names only bits 0-2 and lists the others as GUID:N).
            let s = dumped[index]
            #expect(s["start"] as? Int == start && s["size"] as? Int == sectors, "sfdisk \(s)", sourceLocation: sourceLocation)
            #expect(s["type"] as? String == Self.types[want.type] && s["uuid"] as? String == uuid, "sfdisk \(s)", sourceLocation: sourceLocation)
            #expect((s["name"] as? String ?? "") == want.name, "sfdisk \(s)", sourceLocation: sourceLocation)
            #expect(((s["attrs"] as? String)?.contains("LegacyBIOSBootable") ?? false) == (want.attributes & 4 != 0), "sfdisk \(s)",
                    sourceLocation: sourceLocation)
            // sgdisk: every attribute bit, as hex.
            let g = try CreateRead.sgdisk(image, number)
            #expect(g.type == Self.types[want.type] && g.unique == uuid && g.attributes == want.attributes && g.name == want.name,
                    "sgdisk -i \(number): \(g)", sourceLocation: sourceLocation)
            // parted: start, end, name, and the flags libparted derives from the type and bit 2.
            let line = try #require(parted[number], "parted has no partition \(number): \(parted)", sourceLocation: sourceLocation)
            #expect(line[0] == "\(start)s" && line[1] == "\(start + sectors - 1)s" && line[4] == want.name, "parted \(line)",
                    sourceLocation: sourceLocation)
            let flags = line[5].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let wantFlag = ["bios-boot": "bios_grub", "esp": "esp", "swap": "swap"][want.type]
            if let wantFlag { #expect(flags.contains(wantFlag), "parted \(line)", sourceLocation: sourceLocation) }
            #expect(flags.contains("legacy_boot") == (want.attributes & 4 != 0), "parted \(line)", sourceLocation: sourceLocation)
        }
        // GPT's tail: the backup entries in the last MiB, which no partition reaches into.
        let size = try #require(json["sizeBytes"] as? Int)
        #expect(size == (previousEnd + 1) * 512 + (1 << 20) || (previousEnd + 1) * 512 <= size - (1 << 20), "\(size) \(previousEnd)",
                sourceLocation: sourceLocation)
        let verify = try Subprocess.run(["sgdisk", "-v", image])
        #expect(verify.status == 0 && verify.stdout.contains("No problems found"), "\(verify.stdout)", sourceLocation: sourceLocation)
        let sfdiskVerify = try Subprocess.run(["sfdisk", "--verify", image])
        #expect(sfdiskVerify.status == 0 && sfdiskVerify.stdout.contains("No errors detected"), "\(sfdiskVerify.stdout)\(sfdiskVerify.stderr)",
                sourceLocation: sourceLocation)
    }

    @Test("GPT from --partition specs: sfdisk, sgdisk and parted read the table as asked and as --json says; blkid, e2fsck, fsck.fat, debugfs and mtools read the filesystems; the image is sparse")
    func gptInline() throws {
        let w = try CreateWorkspace()
        let tree = try w.userTree(), esp = try w.espTree(), tar = try w.foreignTar()
        let image = w.path("gpt disk.img")
        let started = monotonicNow()
        let json = try w.createJSON([
            image, "--partition", "type=bios-boot,size=1M",
            "--partition", "type=esp,size=64M,format=vfat,copy=\(esp),label=ESP,uuid=\(Self.espUUID)",
            "--partition", "type=root,format=ext4,copy=\(tree),label=root,uuid=\(Self.rootUUID),bootable",
            "--partition", "type=swap,size=16M,format=swap,label=swap",
            "--partition", "type=home,format=ext3,copy=\(tar):/archive,label=home",
        ])
        print("create gpt (5 partitions): \(String(format: "%.2f", monotonicNow() - started)) s")
        try checkGPT(image, json, expected: [("bios-boot", "", 0), ("esp", "ESP", 0), ("root", "root", 4), ("swap", "swap", 0), ("home", "home", 0)])
        let made = try #require(json["partitions"] as? [JSON])
        #expect((made[1]["uuid"] as? String)?.lowercased() == Self.espUUID && (made[2]["uuid"] as? String)?.lowercased() == Self.rootUUID)
        #expect(w.stagingFiles() == [])
        #expect(try fileStatus(image).st_uid == CreateWorkspace.user)

        func offset(_ index: Int) -> Int { (made[index]["startSector"] as? Int ?? 0) * 512 }
        // The ESP: FAT32, its serial the first 8 hex digits of uuid=.
        let espTags = try CreateRead.blkid(image, offset: offset(1))
        #expect(espTags["TYPE"] == "vfat" && espTags["VERSION"] == "FAT32" && espTags["LABEL"] == "ESP", "\(espTags)")
        #expect(espTags["UUID"] == "1E5B-0A2C" && made[1]["filesystemUUID"] as? String == "1E5B-0A2C", "\(espTags)")
        let espCopy = w.scratch.file("esp.fs")
        try run(["dd", "status=none", "if=\(image)", "of=\(espCopy)", "bs=1M", "skip=\(offset(1) >> 20)", "count=64", "conv=sparse"])
        let fat = try Subprocess.run(["fsck.fat", "-n", espCopy])
        #expect(fat.status == 0, "fsck.fat: \(fat.stdout)\(fat.stderr)")
        let drive = "\(image)@@\(offset(1))"
        #expect(try run(["env", "MTOOLS_SKIP_CHECK=1", "mtype", "-i", drive, "::/EFI/test/readme.txt"]).stdout == "esp file\n")
        #expect(try run(["env", "MTOOLS_SKIP_CHECK=1", "mdir", "-b", "-i", drive, "::/EFI/test"]).stdout.contains("readme.txt"))

        // The root: ext4 with uuid= and the label; clean; the user's files are root's.
        let rootTags = try CreateRead.blkid(image, offset: offset(2))
        #expect(rootTags["TYPE"] == "ext4" && rootTags["UUID"] == Self.rootUUID && rootTags["LABEL"] == "root", "\(rootTags)")
        let root = "\(image)?offset=\(offset(2))"
        let fsck = try Subprocess.run(["e2fsck", "-fn", root])
        #expect(fsck.status == 0, "e2fsck: \(fsck.stdout)\(fsck.stderr)")
        let hello = try run(["debugfs", "-R", "stat /etc/hello", root]).stdout
        #expect(hello.contains("User:     0   Group:     0") && hello.contains("Mode:  0644"), "\(hello)")
        #expect(try run(["debugfs", "-R", "stat /usr/bin/hi", root]).stdout.contains("Mode:  0755"))
        #expect(try run(["debugfs", "-R", "stat /usr/bin/hello-link", root]).stdout.contains("Type: symlink"))
        #expect(try run(["debugfs", "-R", "cat /etc/hello", root]).stdout == "hello from the tree\n")
        #expect(try run(["debugfs", "-R", "cat /srv/data/blob", root]).stdout == String(repeating: "x", count: 300_000))

        // Swap: its UUID is the partition's.
        let swapTags = try CreateRead.blkid(image, offset: offset(3))
        #expect(swapTags["TYPE"] == "swap" && swapTags["LABEL"] == "swap", "\(swapTags)")
        #expect(swapTags["UUID"] == (made[3]["uuid"] as? String)?.lowercased() && swapTags["UUID"] == made[3]["filesystemUUID"] as? String)

        // The archive: ext3, its owners (1000:1000) and its device node kept, under /archive.
        let homeTags = try CreateRead.blkid(image, offset: offset(4))
        #expect(homeTags["TYPE"] == "ext3" && homeTags["LABEL"] == "home" && homeTags["UUID"] == made[4]["filesystemUUID"] as? String)
        let home = "\(image)?offset=\(offset(4))"
        #expect(try Subprocess.run(["e2fsck", "-fn", home]).status == 0)
        let file = try run(["debugfs", "-R", "stat /archive/home/user/file", home]).stdout
        #expect(file.contains("User:  1000   Group:  1000"), "\(file)")
        #expect(try run(["debugfs", "-R", "cat /archive/home/user/file", home]).stdout == "from the archive\n")
        let device = try run(["debugfs", "-R", "stat /archive/dev/null", home]).stdout
        #expect(device.contains("Type: character") && device.contains("major/minor number: 01:03") && device.contains("User:  1000"), "\(device)")

        // Sparse: the unwritten space of the partitions takes no blocks.
        let used = try #require(Int(try run(["du", "--block-size=1", image]).stdout.split(separator: "\t").first ?? ""))
        let size = try #require(json["sizeBytes"] as? Int)
        #expect(used < size / 4, "\(used) of \(size) bytes allocated")
        print("gpt image: \(size >> 20) MiB, \(used >> 10) KiB allocated")
    }

    @Test("a sparse file in the tree (1 GiB, two blocks of data, as /var/log/lastlog can be) stays sparse: --size auto gives a small image, and the file reads back the same")
    func sparseInput() throws {
        let w = try CreateWorkspace()
        let tree = w.path("sparse tree")
        try run(asUser(CreateWorkspace.user) + ["sh", "-c", """
            set -e; mkdir -p "$1/var/log"; f="$1/var/log/lastlog"; truncate -s 1G "$f"
            printf first | dd status=none conv=notrunc of="$f"
            printf last | dd status=none conv=notrunc bs=1 seek=1073741820 of="$f"
            """, "sh", tree])
        let image = w.path("sparse.img")
        let json = try w.createJSON([image, "--partition", "type=root,format=ext4,copy=\(tree)"])
        let made = try #require((json["partitions"] as? [JSON])?.first)
        let sectors = try #require(made["sectors"] as? Int)
        #expect(sectors * 512 < 64 << 20, "a \(sectors * 512 >> 20) MiB partition for two blocks of data")
        let fs = w.scratch.file("root.fs")
        try run(["dd", "status=none", "if=\(image)", "of=\(fs)", "bs=512", "skip=\(made["startSector"] as? Int ?? 0)", "count=\(sectors)", "conv=sparse"])
        let out = w.scratch.file("lastlog")
        try run(["debugfs", "-R", "dump /var/log/lastlog \(out)", fs])
        let same = try Subprocess.run(["cmp", out, "\(tree)/var/log/lastlog"])
        #expect(same.status == 0, "the file reads back differently: \(same.stdout)")
        let e2fsck = try Subprocess.run(["e2fsck", "-fn", fs])
        #expect(e2fsck.status == 0, "\(e2fsck.stdout)")
    }

    @Test("MBR from --partition specs: primaries, an extended partition, logicals 5-7 each 1 MiB after the previous end, the active flag, as sfdisk and parted read them")
    func mbrInline() throws {
        let w = try CreateWorkspace()
        let tree = try w.userTree()
        let image = w.path("mbr disk.img")
        let json = try w.createJSON([
            image, "--table", "mbr", "--size", "300M",
            "--partition", "type=esp,size=64M,format=vfat",
            "--partition", "type=linux,size=100M,format=ext4,copy=\(tree),bootable",
            "--partition", "type=swap,size=32M,format=swap,logical",
            "--partition", "type=8e,size=20M,logical",
            "--partition", "type=linux,format=ext2,logical,label=data",
        ])
        let made = try #require(json["partitions"] as? [JSON])
        #expect(json["table"] as? String == "mbr" && json["diskGUID"] is NSNull && json["sizeBytes"] as? Int == 300 << 20)
        #expect(made.map { $0["number"] as? Int } == [1, 2, 5, 6, 7])
        let (table, dumped) = try CreateRead.sfdisk(image)
        #expect(table["label"] as? String == "dos")
        // sfdisk lists the extended partition (3) too; it names partitions by node only.
        let byNumber = Dictionary(dumped.map { (Int(($0["node"] as? String ?? "").replacingOccurrences(of: image, with: "")) ?? 0, $0) },
                                  uniquingKeysWith: { a, _ in a })
        #expect(byNumber.keys.sorted() == [1, 2, 3, 5, 6, 7], "\(dumped)")
        let types = [1: "ef", 2: "83", 3: "5", 5: "82", 6: "8e", 7: "83"]
        for (number, type) in types { #expect(byNumber[number]?["type"] as? String == type, "\(number): \(byNumber[number] ?? [:])") }
        #expect(byNumber.filter { $0.value["bootable"] as? Bool == true }.map(\.key) == [2])
        let extended = try #require(byNumber[3])
        let extStart = try #require(extended["start"] as? Int), extSize = try #require(extended["size"] as? Int)
        #expect(extStart % 2048 == 0 && extStart + extSize == 300 << 11, "the extended partition runs to the end: \(extended)")
        let parted = try CreateRead.parted(image)
        var previousEnd = extStart - 1
        for p in made {
            let number = try #require(p["number"] as? Int), start = try #require(p["startSector"] as? Int), sectors = try #require(p["sectors"] as? Int)
            let s = try #require(byNumber[number])
            #expect(s["start"] as? Int == start && s["size"] as? Int == sectors, "sfdisk \(s) vs \(p)")
            #expect(start % 2048 == 0, "\(p)")
            if number >= 5 {
                // Each logical partition 1 MiB after the previous end (its EBR in that MiB).
                #expect(start == previousEnd + 1 + 2048, "logical \(number) at \(start), previous end \(previousEnd)")
                previousEnd = start + sectors - 1
            }
            let line = try #require(parted[number])
            #expect(line[0] == "\(start)s" && line[1] == "\(start + sectors - 1)s", "parted \(line)")
            #expect(line[5].contains("boot") == (number == 2), "parted flags \(line)")
        }
        #expect(previousEnd == (300 << 11) - 1, "the last logical takes the rest")
        #expect(parted[3] != nil, "parted lists the extended partition")
        let verify = try Subprocess.run(["sfdisk", "--verify", image])
        #expect(verify.status == 0 && verify.stdout.contains("No errors detected"), "\(verify.stdout)\(verify.stderr)")
        let data = try CreateRead.blkid(image, offset: (made[4]["startSector"] as? Int ?? 0) * 512)
        #expect(data["TYPE"] == "ext2" && data["LABEL"] == "data", "\(data)")
        let linux = "\(image)?offset=\((made[1]["startSector"] as? Int ?? 0) * 512)"
        #expect(try Subprocess.run(["e2fsck", "-fn", linux]).status == 0)
        #expect(try run(["debugfs", "-R", "stat /etc/hello", linux]).stdout.contains("User:     0   Group:     0"))
        let swap = try CreateRead.blkid(image, offset: (made[2]["startSector"] as? Int ?? 0) * 512)
        #expect(swap["TYPE"] == "swap")
        #expect(try CreateRead.blkid(image, offset: 1 << 20)["TYPE"] == "vfat")
    }

    @Test("GPT from repart.d definitions with --root: Type=, Label=, UUID=, SizeMin/MaxBytes=, Weight= on a fixed disk, Format=, CopyFiles=, MakeDirectories=, Minimize=guess, Flags=")
    func gptDefinitions() throws {
        let w = try CreateWorkspace()
        let rootDirectory = w.path("root dir")
        _ = try w.userTree("root dir/sys")
        _ = try w.espTree("root dir/esp")
        let definitions = w.path("repart d")
        try w.definition(definitions, "00-esp.conf", ["Type=esp", "Label=EFI", "UUID=\(Self.espUUID)", "SizeMinBytes=64M", "SizeMaxBytes=64M",
                                                       "Format=vfat", "CopyFiles=/esp:/"])
        try w.definition(definitions, "10-root.conf", ["Type=root", "Label=rootfs", "UUID=\(Self.rootUUID)", "Format=ext4", "CopyFiles=/sys:/",
                                                        "MakeDirectories=/var/lib/made /srv/empty", "Minimize=guess", "Flags=0x1000000000000001"])
        try w.definition(definitions, "20-data.conf", ["Type=linux-generic", "Weight=1000", "SizeMaxBytes=40M"])
        try w.definition(definitions, "30-srv.conf", ["Type=srv", "Weight=3000", "Format=ext2"])
        let image = w.path("repart.img")
        let json = try w.createJSON([image, "--definitions", definitions, "--root", rootDirectory, "--size", "300M"])
        // root and srv get GrowFileSystem (bit 59) by default, as repart 252 sets it; data and srv
        // their type's name as label, as repart does.
        // --json names a repart type by repart's canonical name (Type=root is root-x86-64).
        try checkGPT(image, json, expected: [("esp", "EFI", 0), ("root-x86-64", "rootfs", 0x1800_0000_0000_0001), ("linux-generic", "linux-generic", 0),
                                             ("srv", "srv", 1 << 59)])
        let made = try #require(json["partitions"] as? [JSON])
        let sectors = made.map { $0["sectors"] as? Int ?? 0 }
        let starts = made.map { $0["startSector"] as? Int ?? 0 }
        #expect(json["sizeBytes"] as? Int == 300 << 20)
        #expect(sectors[0] == 64 << 11, "SizeMin=SizeMax=64M: \(sectors)")
        // Minimize=guess: the root takes what its contents need, no share of the free space.
        #expect(sectors[1] <= 24 << 11, "Minimize=guess gave the root \(sectors[1] >> 11) MiB")
        // Weight 1000 against 3000: data is capped at its SizeMaxBytes=40M; srv takes the rest, up
        // to the MiB before GPT's backup entries.
        #expect(sectors[2] == 40 << 11, "SizeMaxBytes=40M: \(sectors)")
        #expect(starts[3] + sectors[3] == 299 << 11, "srv ends at 299 MiB: \(starts) \(sectors)")

        let root = "\(image)?offset=\(starts[1] * 512)"
        #expect(try Subprocess.run(["e2fsck", "-fn", root]).status == 0)
        let tags = try CreateRead.blkid(image, offset: starts[1] * 512)
        #expect(tags["UUID"] == Self.rootUUID && tags["LABEL"] == "rootfs" && tags["TYPE"] == "ext4", "\(tags)")
        for directory in ["/var/lib/made", "/srv/empty"] {
            let stat = try run(["debugfs", "-R", "stat \(directory)", root]).stdout
            #expect(stat.contains("Type: directory") && stat.contains("User:     0"), "MakeDirectories= \(directory): \(stat)")
        }
        #expect(try run(["debugfs", "-R", "cat /etc/hello", root]).stdout == "hello from the tree\n")
        #expect(try CreateRead.blkid(image, offset: starts[0] * 512)["UUID"] == "1E5B-0A2C")
        #expect(try run(["env", "MTOOLS_SKIP_CHECK=1", "mtype", "-i", "\(image)@@\(starts[0] * 512)", "::/EFI/test/readme.txt"]).stdout == "esp file\n")
        #expect(try CreateRead.blkid(image, offset: starts[3] * 512)["TYPE"] == "ext2")
        #expect(try Subprocess.run(["blkid", "-p", "-O", "\(starts[2] * 512)", image]).status == 2, "data has no filesystem")
    }

    @Test("MBR from repart.d definitions: repart's GPT type names take their MBR bytes; sizes and contents as asked")
    func mbrDefinitions() throws {
        let w = try CreateWorkspace()
        let rootDirectory = w.path("root dir")
        _ = try w.userTree("root dir/sys")
        let definitions = w.path("repart d")
        try w.definition(definitions, "00-esp.conf", ["Type=esp", "SizeMinBytes=64M", "Format=vfat"])
        try w.definition(definitions, "10-root.conf", ["Type=root", "Format=ext4", "CopyFiles=/sys:/", "MakeDirectories=/var/lib/made"])
        try w.definition(definitions, "20-swap.conf", ["Type=swap", "Format=swap", "SizeMinBytes=32M", "SizeMaxBytes=32M"])
        let image = w.path("repart mbr.img")
        let json = try w.createJSON([image, "--table", "mbr", "--definitions", definitions, "--root", rootDirectory])
        let made = try #require(json["partitions"] as? [JSON])
        let (table, dumped) = try CreateRead.sfdisk(image)
        #expect(table["label"] as? String == "dos" && dumped.map { $0["type"] as? String } == ["ef", "83", "82"], "\(dumped)")
        #expect(dumped.map { $0["start"] as? Int } == made.map { $0["startSector"] as? Int })
        #expect(dumped.map { $0["size"] as? Int } == made.map { $0["sectors"] as? Int })
        #expect(dumped.allSatisfy { ($0["start"] as? Int ?? 1) % 2048 == 0 })
        #expect(made[0]["sectors"] as? Int == 64 << 11 && made[2]["sectors"] as? Int == 32 << 11)
        #expect(try Subprocess.run(["sfdisk", "--verify", image]).status == 0)
        let root = "\(image)?offset=\((made[1]["startSector"] as? Int ?? 0) * 512)"
        #expect(try Subprocess.run(["e2fsck", "-fn", root]).status == 0)
        #expect(try run(["debugfs", "-R", "stat /var/lib/made", root]).stdout.contains("Type: directory"))
        let tags = try CreateRead.blkid(image, offset: (made[1]["startSector"] as? Int ?? 0) * 512)
        #expect(tags["LABEL"] == "root-x86-64", "repart's default label: \(tags)")
    }

    @Test("reproducible: the same command twice with SOURCE_DATE_EPOCH, and twice with --seed alone, gives the same bytes (--bootloader hybrid, a directory and a tar input); another seed another disk GUID")
    func reproducible() throws {
        let w = try CreateWorkspace()
        let tree = try w.userTree(), esp = try w.espTree(), tar = try w.foreignTar()
        func gpt(_ name: String) -> [String] {
            [w.path(name), "--partition", "type=bios-boot,size=1M", "--partition", "type=esp,size=64M,format=vfat,copy=\(esp)",
             "--partition", "type=root,format=ext4,copy=\(tree)", "--partition", "type=home,format=ext3,copy=\(tar)",
             "--bootloader", "hybrid"]
        }
        func mbr(_ name: String) -> [String] {
            [w.path(name), "--table", "mbr", "--partition", "type=linux,format=ext4,copy=\(tree),bootable",
             "--partition", "type=swap,size=8M,format=swap,logical", "--partition", "type=linux,format=ext2,copy=\(tar),logical"]
        }
        var started = monotonicNow()
        let a = try w.createJSON(gpt("a.img"), epoch: 1_700_000_000)
        print("create --bootloader hybrid: \(String(format: "%.2f", monotonicNow() - started)) s")
        started = monotonicNow()
        _ = try w.createJSON(gpt("b.img"), epoch: 1_700_000_000)
        #expect(try sha256(w.path("a.img")) == sha256(w.path("b.img")), "SOURCE_DATE_EPOCH twice")
        _ = try w.createJSON(mbr("m1.img"), epoch: 1_700_000_000)
        _ = try w.createJSON(mbr("m2.img"), epoch: 1_700_000_000)
        #expect(try sha256(w.path("m1.img")) == sha256(w.path("m2.img")), "MBR, SOURCE_DATE_EPOCH twice")
        // A second apart: nothing may take the clock (e2fsprogs did, with a fake time of 0).
        let x1 = try w.createJSON(gpt("x1.img") + ["--seed", "x"])
        usleep(1_100_000)
        _ = try w.createJSON(gpt("x2.img") + ["--seed", "x"])
        #expect(try sha256(w.path("x1.img")) == sha256(w.path("x2.img")), "--seed x twice")
        let y = try w.createJSON(gpt("y.img") + ["--seed", "y"])
        #expect(x1["diskGUID"] as? String != y["diskGUID"] as? String && x1["diskGUID"] as? String != a["diskGUID"] as? String)
        #expect(try sha256(w.path("x1.img")) != sha256(w.path("y.img")))
        // Without either, every identifier is random.
        let r1 = try w.createJSON(mbr("r1.img")), r2 = try w.createJSON(mbr("r2.img"))
        #expect((r1["partitions"] as? [JSON])?.first?["filesystemUUID"] as? String != (r2["partitions"] as? [JSON])?.first?["filesystemUUID"] as? String)
        print("reproducibility: 8 more creates in \(String(format: "%.2f", monotonicNow() - started)) s")
    }
}
