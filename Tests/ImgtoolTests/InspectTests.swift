import Foundation
import Glibc
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// `imgtool inspect` against the tools people trust: on every image sfdisk and blkid understand,
/// the partition and filesystem values must equal theirs. Runs as an unprivileged user where it
/// matters, and checks the image is untouched.
@Suite(.serialized)
struct InspectTests {
    typealias JSON = [String: Any]

    /// Runs `imgtool inspect --json` (as `user` if given) and returns the report.
    func inspect(_ image: String, user: UInt32? = nil) throws -> JSON {
        let r = try imgtool(["inspect", "--json", image], user: user)
        guard r.status == 0 else { throw TestFailure("inspect failed (\(r.status)): \(r.stderr)") }
        return try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON)
    }

    func sfdisk(_ image: String) throws -> JSON {
        let r = try run(["sfdisk", "--json", image])
        return try #require((try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON)?["partitiontable"] as? JSON)
    }

    /// `blkid -p` at a byte offset as KEY=value pairs (empty when blkid finds nothing), limited to
    /// `size` bytes as on a partition's own device (probers have minimum sizes and look at the end).
    func blkid(_ image: String, offset: UInt64, size: UInt64? = nil) throws -> [String: String] {
        let r = try Subprocess.run(["blkid", "-p", "-o", "export", "-O", "\(offset)"] + (size.map { ["-S", "\($0)"] } ?? []) + [image])
        var values: [String: String] = [:]
        for line in r.stdout.split(separator: "\n") {
            let kv = line.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { values[String(kv[0])] = String(kv[1]) }
        }
        return values
    }

    /// Compares every partition field with sfdisk and every filesystem field with blkid.
    func expectSameAsSfdiskAndBlkid(_ image: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let ours = try inspect(image)
        let table = try #require(ours["partitionTable"] as? JSON)
        let theirs = try sfdisk(image)
        #expect(table["type"] as? String == theirs["label"] as? String, sourceLocation: sourceLocation)
        #expect((table["id"] as? String)?.lowercased() == (theirs["id"] as? String)?.lowercased(), sourceLocation: sourceLocation)
        let sectorSize = ours["sectorSize"] as? Int ?? 512
        let ourParts = table["partitions"] as? [JSON] ?? []
        let theirParts = theirs["partitions"] as? [JSON] ?? []
        #expect(ourParts.count == theirParts.count, "partitions: ours \(ourParts.count), sfdisk \(theirParts.count)", sourceLocation: sourceLocation)
        for their in theirParts {
            let node = their["node"] as? String ?? ""
            let number = Int(node.reversed().prefix { $0.isNumber }.reversed().map(String.init).joined()) ?? -1
            guard let mine = ourParts.first(where: { $0["number"] as? Int == number }) else {
                Issue.record("partition \(number) missing from inspect", sourceLocation: sourceLocation)
                continue
            }
            #expect(mine["start"] as? Int == their["start"] as? Int, "start of \(number)", sourceLocation: sourceLocation)
            #expect(mine["size"] as? Int == their["size"] as? Int, "size of \(number)", sourceLocation: sourceLocation)
            let theirType = (their["type"] as? String ?? "").uppercased()
            let myType = (mine["type"] as? String ?? "").uppercased()
            #expect(myType == theirType || myType == "0X" + (theirType.count == 1 ? "0" : "") + theirType,
                    "type of \(number): \(myType) vs \(theirType)", sourceLocation: sourceLocation)
            #expect(mine["bootable"] as? Bool == (their["bootable"] as? Bool ?? false), "bootable \(number)", sourceLocation: sourceLocation)
            #expect((mine["uuid"] as? String)?.uppercased() == (their["uuid"] as? String)?.uppercased(), "uuid \(number)", sourceLocation: sourceLocation)
            #expect(mine["name"] as? String == their["name"] as? String, "name \(number)", sourceLocation: sourceLocation)
            // Filesystems: what blkid -p says at the partition's offset. Extended containers are
            // not probed by inspect (their first sector is an EBR).
            let isExtended = ["5", "F", "85"].contains(theirType)
            guard !isExtended, let start = their["start"] as? Int, let size = their["size"] as? Int else { continue }
            let probed = try blkid(image, offset: UInt64(start * sectorSize), size: UInt64(size * sectorSize))
            let fs = mine["filesystem"] as? JSON
            #expect(fs?["type"] as? String == probed["TYPE"], "filesystem type of \(number)", sourceLocation: sourceLocation)
            #expect(fs?["uuid"] as? String == probed["UUID"], "filesystem uuid of \(number)", sourceLocation: sourceLocation)
            #expect(fs?["label"] as? String == probed["LABEL"], "filesystem label of \(number)", sourceLocation: sourceLocation)
        }
    }

    @Test("msdos with a chain of logical partitions (sfdisk)")
    func logicalChain() throws {
        let scratch = try Scratch()
        let image = scratch.file("dos.img")
        try run(["truncate", "-s", "64M", image])
        try run(["sh", "-c", """
            printf 'label: dos\\nlabel-id: 0x12345678\\nstart=2048, size=8192, type=83, bootable\\nstart=10240, type=5\\nsize=8192, type=83\\nsize=8192, type=82\\nsize=8192, type=83\\n' | sfdisk -q \(image)
            """])
        try run(["mkfs.ext4", "-q", "-F", "-L", "first", "-E", "offset=\(2048 * 512)", image, "4096"])
        try expectSameAsSfdiskAndBlkid(image)
        let parts = try #require((try inspect(image)["partitionTable"] as? JSON)?["partitions"] as? [JSON])
        #expect(parts.compactMap { $0["number"] as? Int } == [1, 2, 5, 6, 7])
    }

    @Test("images from TestImages/make-disk.sh, tables by sfdisk, sgdisk and parted", arguments: [
        ["--label", "dos", "--tool", "sfdisk"], ["--label", "dos", "--tool", "parted", "--fs", "ext2"],
        ["--label", "gpt", "--tool", "sgdisk"], ["--label", "gpt", "--tool", "parted", "--fs", "ext3"],
        ["--label", "gpt", "--tool", "sfdisk", "--extra-partition"], ["--label", "dos", "--logical", "--extra-partition"],
    ])
    func madeByTools(_ arguments: [String]) throws {
        let scratch = try Scratch()
        try expectSameAsSfdiskAndBlkid(try makeDisk(scratch.file("disk.img"), arguments))
    }

    @Test("GPT with an unusual entry count (sfdisk table-length 8 and 200)", arguments: [8, 200])
    func gptEntryCount(entries: Int) throws {
        let scratch = try Scratch()
        let image = scratch.file("gpt.img")
        try run(["truncate", "-s", "32M", image])
        try run(["sh", "-c", "printf 'label: gpt\\ntable-length: \(entries)\\nstart=2048, size=4096, name=\"alpha\"\\nstart=8192, type=21686148-6449-6E6F-744E-656564454649\\n' | sfdisk -q \(image)"])
        try expectSameAsSfdiskAndBlkid(image)
    }

    @Test("a hybrid MBR (sgdisk -h) is read as GPT, with a finding")
    func hybridMBR() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("gpt.img"), ["--label", "gpt", "--extra-partition"])
        try run(["sgdisk", "-h", "2", image])
        try expectSameAsSfdiskAndBlkid(image)
        let findings = try inspect(image)["findings"] as? [JSON] ?? []
        #expect(findings.contains { ($0["message"] as? String)?.contains("hybrid MBR") == true })
    }

    @Test("an isohybrid ISO made by xorriso")
    func isohybrid() throws {
        let scratch = try Scratch()
        let tree = scratch.file("tree")
        try FileManager.default.createDirectory(atPath: tree + "/isolinux", withIntermediateDirectories: true)
        try run(["cp", "/usr/lib/ISOLINUX/isolinux.bin", tree + "/isolinux/"])
        let iso = scratch.file("hybrid.iso")
        try run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "IMGTOOL_ISO", "-isohybrid-mbr", "/usr/lib/ISOLINUX/isohdpfx.bin",
                 "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                 "-boot-info-table", "-o", iso, tree])
        try expectSameAsSfdiskAndBlkid(iso)
        let report = try inspect(iso)
        #expect((report["bootCode"] as? JSON)?["kind"] as? String == "syslinux")
    }

    /// inspect skips libblkid's two costly probers where their magic occurs nowhere in what they
    /// read (holes included); signatures placed at each end of a partition must still be found.
    @Test("ZFS labels at either end and an XFS external log are found as blkid -p finds them")
    func signaturesOfSkippedProbers() throws {
        let scratch = try Scratch()
        let image = scratch.file("signatures.img")
        try run(["truncate", "-s", "260M", image])
        // 80 MiB each: zfs_member needs 64 MiB, xfs_external_log 10 MiB.
        try run(["sh", "-c", "printf 'label: gpt\\nstart=2048, size=163840\\nstart=165888, size=163840\\nstart=329728, size=163840\\n' | sfdisk -q \(image)"])
        try run(["python3", "-c", """
            import struct, sys
            f = open(sys.argv[1], 'r+b')
            size = 163840 * 512
            def uberblocks(label, fmt):
                for i in range(4):
                    f.seek(label + 128 * 1024 + i * 1024); f.write(struct.pack(fmt, 0x00bab10c, 5000, 7 + i))
            uberblocks(2048 * 512, '<QQQ')                           # label 0, little-endian
            uberblocks(165888 * 512 + size - 256 * 1024, '>QQQ')    # label 3, big-endian
            f.seek(329728 * 512 + 3 * 512)                           # an XFS log record header
            f.write(struct.pack('>IIIIqqIiI', 0xFEEDBABE, 1, 2, 512, 1 << 32, 1 << 32, 0, -1, 1) + bytes(256)
                    + struct.pack('>I', 1) + bytes(range(16)) + struct.pack('>I', 32768))
            """, image])
        try expectSameAsSfdiskAndBlkid(image)
        let parts = try #require((try inspect(image)["partitionTable"] as? JSON)?["partitions"] as? [JSON])
        #expect(parts.map { ($0["filesystem"] as? JSON)?["type"] as? String } == ["zfs_member", "zfs_member", "xfs_external_log"])
    }

    @Test("a bare filesystem without a partition table")
    func bareFilesystem() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("bare.img"), ["--label", "none", "--fs", "ext4"])
        let report = try inspect(image)
        let table = try #require(report["partitionTable"] as? JSON)
        #expect(table["type"] is NSNull)
        #expect((table["partitions"] as? [Any])?.isEmpty == true)
        let fs = try #require(report["filesystem"] as? JSON)
        let probed = try blkid(image, offset: 0)
        #expect(fs["type"] as? String == probed["TYPE"])
        #expect(fs["uuid"] as? String == probed["UUID"])
        #expect(fs["label"] as? String == probed["LABEL"])
        #expect(fs["blockSize"] as? Int == probed["BLOCK_SIZE"].flatMap { Int($0) })
    }

    /// sfdisk reads an empty dos label into any of these boot sectors (they end in 55AA); blkid and
    /// mmls find none for FAT, and mmls none for exFAT, which Debian 12's blkid calls both exfat and
    /// dos. imgtool follows mmls and libblkid's FAT rule, as newer libblkid does for exFAT too.
    @Test("a FAT or exFAT volume filling the image is that filesystem, not an empty dos table", arguments: [
        ["mkfs.vfat", "-F", "12"], ["mkfs.vfat", "-F", "16"], ["mkfs.vfat", "-F", "32"], ["mkfs.exfat"],
    ])
    func bareFATAndExFAT(mkfs: [String]) throws {
        let scratch = try Scratch()
        let image = scratch.file("volume.img")
        try run(["truncate", "-s", mkfs.last == "32" ? "64M" : "16M", image])
        try run(mkfs + [image])
        let report = try inspect(image)
        let table = try #require(report["partitionTable"] as? JSON)
        #expect(table["type"] is NSNull, "\(table)")
        #expect((table["partitions"] as? [Any])?.isEmpty == true)
        let fs = try #require(report["filesystem"] as? JSON)
        let probed = try blkid(image, offset: 0)
        #expect(fs["type"] as? String == probed["TYPE"] && probed["TYPE"] != nil)
        #expect(fs["uuid"] as? String == probed["UUID"])
        if probed["TYPE"] == "vfat" { #expect(probed["PTTYPE"] == nil, "blkid reads no table into a FAT volume") }
        let mmls = try Subprocess.run(["mmls", image])
        #expect(mmls.status != 0 && mmls.stdout.isEmpty, "mmls found a table: \(mmls.stdout)")
        // install-grub refuses it as what it is.
        let install = try imgtool(["install-grub", image])
        #expect(install.status == ExitStatus.badImage.rawValue && install.stderr.contains("a bare \(probed["TYPE"] ?? "?") filesystem"),
                "\(install.stderr)")
    }

    /// parted's Apple partition map, read as mmls reads it: every entry in map order, the map
    /// itself and the free space included, in 512-byte sectors; blkid names it mac.
    @Test("an Apple partition map (parted mklabel mac) is read as mmls reads it")
    func appleMap() throws {
        let scratch = try Scratch()
        let image = scratch.file("mac.img")
        try run(["truncate", "-s", "16M", image])
        try run(["parted", "-s", image, "mklabel", "mac", "mkpart", "primary", "hfs+", "1MiB", "8MiB",
                 "mkpart", "primary", "ext2", "8MiB", "15MiB"])
        try run(["mkfs.ext2", "-q", "-E", "offset=\(16384 * 512)", image, "7M"])
        let table = try #require(try inspect(image)["partitionTable"] as? JSON)
        #expect(table["type"] as? String == "mac" && table["parsed"] as? Bool == true)
        #expect(try blkid(image, offset: 0)["PTTYPE"] == "mac")
        let partitions = try #require(table["partitions"] as? [JSON])
        // mmls: "004:  001  0000002048  0000016383  0000014336  Apple_HFS".
        let mmls = try run(["mmls", image]).stdout.split(separator: "\n").compactMap { line -> [String]? in
            let f = line.split(separator: " ").map(String.init)
            return f.count >= 6 && f[0].hasSuffix(":") && Int(f[1]) != nil ? f : nil
        }.sorted { Int($0[1])! < Int($1[1])! }  // mmls sorts by start; its slot (f[1]) is the map index
        #expect(partitions.map { $0["start"] as? Int } == mmls.map { Int($0[2]) })
        #expect(partitions.map { $0["size"] as? Int } == mmls.map { Int($0[4]) })
        #expect(partitions.map { $0["type"] as? String } == mmls.map { $0[5] })
        // The filesystem in entry 3 is probed as in any partition.
        #expect(((partitions.first { $0["start"] as? Int == 16384 })?["filesystem"] as? JSON)?["type"] as? String == "ext2")
        let install = try imgtool(["install-grub", image])
        #expect(install.status == ExitStatus.badImage.rawValue && install.stderr.contains("Apple partition map"), "\(install.stderr)")
    }

    /// A BSD disklabel in an OpenBSD slice (absolute offsets) and a FreeBSD slice whose raw
    /// partition starts at 0 (offsets from the slice, the kernel's rule), built by hand following
    /// <sys/disklabel.h>. libblkid reads them as the kernel does; mmls -t bsd reads the same
    /// partitions, but always from the disk's start.
    @Test("BSD disklabels in MBR slices are read as the kernel and libblkid read them; mmls agrees on OpenBSD", arguments: [0xA6, 0xA5])
    func bsdLabels(slice: Int) throws {
        let scratch = try Scratch()
        let image = scratch.file("bsd.img")
        let relative = slice == 0xA5
        try run(["python3", "-c", """
            import struct, sys
            img = bytearray(16 << 20)
            struct.pack_into("<B3sB3sII", img, 446, 0x80, b"\\xfe\\xff\\xff", int(sys.argv[2]), b"\\xfe\\xff\\xff", 2048, 16384)
            img[510:512] = b"\\x55\\xaa"
            base = 0 if sys.argv[3] == "1" else 2048
            parts = [(4000, base + 16, 7), (2000, base + 4016, 1), (16384, base, 0), (8000, base + 6016, 7)]
            label = bytearray(512)
            struct.pack_into("<I", label, 0, 0x82564557); struct.pack_into("<I", label, 132, 0x82564557)
            struct.pack_into("<H", label, 138, len(parts))
            for i, (size, off, fs) in enumerate(parts): struct.pack_into("<IIIB", label, 148 + 16 * i, size, off, 0, fs)
            x = 0
            for i in range(0, 148 + 16 * len(parts), 2): x ^= struct.unpack_from("<H", label, i)[0]
            struct.pack_into("<H", label, 136, x)
            img[2049 * 512:2050 * 512] = label
            open(sys.argv[1], "wb").write(img)
            """, image, String(slice), relative ? "1" : "0"])
        let partitions = try #require((try inspect(image)["partitionTable"] as? JSON)?["partitions"] as? [JSON])
        let bsd = partitions.dropFirst()
        #expect(bsd.map { $0["type"] as? String } == ["4.2BSD", "swap", "4.2BSD"])
        // libblkid (partx) reads them as the kernel does: numbers from 5, and the same sectors.
        let partx = try run(["partx", "--show", "--noheadings", "-o", "NR,START,SECTORS", image]).stdout
            .split(separator: "\n").map { $0.split(separator: " ").compactMap { Int($0) } }
        #expect(partitions.map { [$0["number"] as? Int ?? -1, $0["start"] as? Int ?? -1, $0["size"] as? Int ?? -1] } == partx)
        // mmls: "003:  000  0000002064  0000006063  0000004000  4.2BSD (0x07)"; slot 002 is the raw partition.
        let rows = try run(["mmls", "-t", "bsd", "-o", "2048", image]).stdout.split(separator: "\n").compactMap { line -> [String]? in
            let f = line.split(separator: " ").map(String.init)
            return f.count >= 6 && Int(f[1]) != nil && !line.contains("Unused") ? f : nil
        }.sorted { Int($0[1])! < Int($1[1])! }
        let shift = relative ? 2048 : 0
        #expect(bsd.map { $0["start"] as? Int } == rows.map { Int($0[2]).map { $0 + shift } })
        #expect(bsd.map { $0["size"] as? Int } == rows.map { Int($0[4]) })
    }

    /// An installer's layout: the root filesystem in a logical volume of a volume group on an MBR
    /// partition. lvm2's own tools write the PV, VG and LVs (through a loop device at the partition's
    /// offset, never activated: this kernel has no device mapper) and are the reference for where
    /// the extents lie.
    @Test("root on an LVM logical volume: inspected down to its OS, as lvs and blkid read it; cat reads from the volume")
    func lvmRoot() throws {
        let scratch = try Scratch()
        let image = scratch.file("lvm.img")
        let lvmImage = try LVMImage(image)
        let loop = lvmImage.loop, partitionOffset = LVMImage.partitionOffset
        func lvm(_ arguments: [String]) throws -> String { try lvmImage.lvm(arguments) }
        _ = try lvm(["lvcreate", "-q", "-an", "-Zn", "-L", "8M", "-n", "swap", "vgimg"])
        _ = try lvm(["lvcreate", "-q", "-an", "-Zn", "-L", "40M", "-n", "root", "vgimg"])
        func number(_ text: String) -> Int? { Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) }
        let peStart = try #require(number(try lvm(["pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", loop])))
        let extent = try #require(number(try lvm(["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", "vgimg"])))
        // "/dev/loop0:2-11": the root's extents on the PV.
        let ranges = try lvm(["lvs", "--noheadings", "-o", "seg_pe_ranges", "vgimg/root"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let firstPE = try #require(Int(ranges.split(separator: ":").last?.split(separator: "-").first ?? ""))
        let rootOffset = partitionOffset + peStart + firstPE * extent
        try run(["mkfs.ext4", "-q", "-L", "lvroot", "-E", "offset=\(rootOffset)", image, "40M"])
        let release = scratch.file("os-release")
        try "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n".write(toFile: release, atomically: true, encoding: .utf8)
        try run(["debugfs", "-w", "-R", "mkdir /etc", "\(image)?offset=\(rootOffset)"])
        try run(["debugfs", "-w", "-R", "write \(release) /etc/os-release", "\(image)?offset=\(rootOffset)"])

        let report = try inspect(image)
        let group = try #require((report["lvm"] as? [JSON])?.first)
        #expect(group["name"] as? String == "vgimg" && group["extentSize"] as? Int == extent)
        let volumes = try #require(group["logicalVolumes"] as? [JSON])
        #expect(volumes.map { $0["name"] as? String } == ["swap", "root"])
        let root = try #require(volumes.last)
        #expect(root["offset"] as? Int == rootOffset && root["size"] as? Int == 40 << 20)
        let probed = try blkid(image, offset: UInt64(rootOffset), size: 40 << 20)
        #expect((root["filesystem"] as? JSON)?["type"] as? String == probed["TYPE"] && probed["TYPE"] == "ext4")
        let os = try #require(report["os"] as? JSON)
        #expect(os["prettyName"] as? String == "Debian GNU/Linux 12 (bookworm)")
        #expect(os["rootLogicalVolume"] as? String == "vgimg/root" && os["rootPartition"] as? Int == 1)

        let cat = try imgtool(["cat", "--lv", "vgimg/root", image, "/etc/os-release"])
        #expect(cat.status == 0 && cat.stdout.contains("ID=debian"), "\(cat.stderr)")
        let missing = try imgtool(["ls", "--lv", "vgimg/home", image])
        #expect(missing.status == ExitStatus.badImage.rawValue && missing.stderr.contains("vgimg/root"), "\(missing.stderr)")
    }

    /// A root volume grown after another volume took the extents behind it: two segments with a
    /// gap, as lvs lists them. The filesystem is written piece by piece where lvs says each
    /// segment lies (what device mapper would do), and imgtool reads it back through the segments.
    @Test("a logical volume in two runs of extents: its filesystem and OS found, cat reads through its segments")
    func lvmFragmented() throws {
        let scratch = try Scratch()
        let image = scratch.file("lvm.img")
        let lvmImage = try LVMImage(image)
        let loop = lvmImage.loop, partitionOffset = LVMImage.partitionOffset
        func lvm(_ arguments: [String]) throws -> String { try lvmImage.lvm(arguments) }
        _ = try lvm(["lvcreate", "-q", "-an", "-Zn", "-L", "8M", "-n", "root", "vgimg"])
        _ = try lvm(["lvcreate", "-q", "-an", "-Zn", "-L", "8M", "-n", "other", "vgimg"])
        _ = try lvm(["lvextend", "-q", "-L", "40M", "vgimg/root"])
        let peStart = try #require(Int(try lvm(["pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", loop])
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        let extent = try #require(Int(try lvm(["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", "vgimg"])
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        // Each segment: its first byte in the volume, its size, and "/dev/loop0:FIRST-LAST".
        let segments = try lvm(["lvs", "--noheadings", "--segments", "--units", "b", "--nosuffix", "-o", "seg_start,seg_size,seg_pe_ranges",
                                "vgimg/root"]).split(separator: "\n").map { $0.split(separator: " ") }.filter { $0.count == 3 }
        #expect(segments.count == 2, "lvs: \(segments)")

        let volume = scratch.file("root.fs")
        try run(["truncate", "-s", "40M", volume])
        try run(["mkfs.ext4", "-q", "-L", "lvroot", volume])
        let release = scratch.file("os-release")
        try "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n".write(toFile: release, atomically: true, encoding: .utf8)
        try run(["debugfs", "-w", "-R", "mkdir /etc", volume])
        try run(["debugfs", "-w", "-R", "write \(release) /etc/os-release", volume])
        for segment in segments {
            let start = try #require(Int(segment[0])), size = try #require(Int(segment[1]))
            let firstPE = try #require(Int(segment[2].split(separator: ":").last?.split(separator: "-").first ?? ""))
            let at = partitionOffset + peStart + firstPE * extent
            try run(["dd", "status=none", "conv=notrunc", "bs=1M", "iflag=skip_bytes,count_bytes", "oflag=seek_bytes",
                     "if=\(volume)", "of=\(image)", "skip=\(start)", "count=\(size)", "seek=\(at)"])
        }

        let report = try inspect(image)
        let root = try #require(((report["lvm"] as? [JSON])?.first?["logicalVolumes"] as? [JSON])?.first { $0["name"] as? String == "root" })
        #expect(root["offset"] is NSNull && (root["segments"] as? [JSON])?.count == 2)
        #expect((root["filesystem"] as? JSON)?["label"] as? String == "lvroot")
        #expect((report["os"] as? JSON)?["rootLogicalVolume"] as? String == "vgimg/root")
        let cat = try imgtool(["cat", "--lv", "vgimg/root", image, "/etc/os-release"])
        #expect(cat.status == 0 && cat.stdout.contains("ID=debian"), "\(cat.stderr)")
    }

    /// A 96 MiB image whose one MBR partition (type 8e, from sector 2048) is the physical volume of
    /// volume group vgimg, written by lvm2's own tools through a loop device at the partition's
    /// offset, never activated (this kernel has no device mapper). The loop device goes with it.
    final class LVMImage {
        static let partitionOffset = 2048 * 512
        let loop: String
        private let config: String

        init(_ image: String) throws {
            try run(["truncate", "-s", "96M", image])
            try run(["sh", "-c", "printf 'label: dos\\nstart=2048, type=8e\\n' | sfdisk -q \"$1\"", "sh", image])
            loop = try run(["losetup", "-f", "--show", "-o", "\(Self.partitionOffset)", image]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            config = "devices { obtain_device_list_from_udev=0 filter=[\"a|^\(loop)$|\", \"r|.*|\"] } activation { udev_sync=0 udev_rules=0 }"
            do {
                _ = try lvm(["pvcreate", "-q", "-y", loop])
                _ = try lvm(["vgcreate", "-q", "vgimg", loop])
            } catch {
                _ = try? Subprocess.run(["losetup", "-d", loop])
                throw error
            }
        }

        deinit { _ = try? Subprocess.run(["losetup", "-d", loop]) }

        /// An lvm2 command on this image's PV only; its standard output.
        func lvm(_ arguments: [String]) throws -> String {
            try run(["env", "LVM_SUPPRESS_FD_WARNINGS=1", arguments[0], "--driverloaded", "n", "--config", config] + arguments.dropFirst()).stdout
        }
    }

    /// cryptsetup's LUKS1 and LUKS2 in a partition: identified as cryptsetup luksDump reads
    /// them (version, UUID, cipher, enabled key slots, payload offset), never opened.
    @Test("LUKS1 and LUKS2 volumes are described as luksDump describes them, never opened", arguments: ["luks1", "luks2"])
    func luks(type: String) throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt"])
        // The root partition's contents become a LUKS volume.
        let volume = scratch.file("volume")
        try run(["truncate", "-s", "20M", volume])
        try run(["sh", "-c", "printf secret | cryptsetup luksFormat -q --type \"$1\" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - \"$2\"",
                 "sh", type, volume])
        let partitions = try #require((try inspect(image)["partitionTable"] as? JSON)?["partitions"] as? [JSON])
        let last = try #require(partitions.last)
        let start = try #require(last["start"] as? Int)
        try run(["dd", "if=\(volume)", "of=\(image)", "bs=512", "seek=\(start)", "conv=notrunc,sparse", "status=none"])
        let report = try inspect(image)
        let luks = try #require((report["luks"] as? [JSON])?.first)
        let dump = try run(["cryptsetup", "luksDump", volume]).stdout
        #expect(luks["partition"] as? Int == last["number"] as? Int)
        #expect(luks["version"] as? Int == (type == "luks1" ? 1 : 2))
        #expect(dump.contains(luks["uuid"] as? String ?? "?"), "\(luks)")
        #expect(luks["keySlots"] as? [Int] == [0])
        let cipher = try #require(luks["cipher"] as? String)
        #expect(type == "luks1" ? dump.contains("Cipher name:   \taes") && cipher == "aes-xts-plain64" : dump.contains("cipher: \(cipher)"), "\(dump)")
        if type == "luks2" { #expect(dump.contains("offset: \(luks["payloadOffset"] as? Int ?? -1) [bytes]")) }
    }

    @Test("labels imgtool does not parse are named as libblkid names them, never read as dos", arguments: ["sun", "dvh"])
    func otherLabels(parted label: String) throws {
        let scratch = try Scratch()
        let image = scratch.file("label.img")
        try run(["truncate", "-s", "16M", image])
        try run(["parted", "-s", image, "mklabel", label])
        let expected = try run(["blkid", "-p", "-o", "value", "-s", "PTTYPE", image]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!expected.isEmpty && expected != "dos")
        let table = try #require(try inspect(image)["partitionTable"] as? JSON)
        #expect(table["type"] as? String == expected)
        #expect(table["parsed"] as? Bool == false)
        #expect((table["partitions"] as? [Any])?.isEmpty == true)
    }

    @Test("as an unprivileged user: works, and the image's bytes and mtime are unchanged")
    func unprivilegedAndReadOnly() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt", "--marker", "X"])
        chmod(image, 0o644)
        var before = stat()
        stat(image, &before)
        let hash = try sha256(image)
        let report = try inspect(image, user: isRoot ? 65534 : nil)
        #expect((report["partitionTable"] as? JSON)?["type"] as? String == "gpt")
        var after = stat()
        stat(image, &after)
        #expect(after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
        #expect(after.st_ctim.tv_sec == before.st_ctim.tv_sec && after.st_ctim.tv_nsec == before.st_ctim.tv_nsec)
        #expect(try sha256(image) == hash)
        #expect(leftovers() == [])
    }

    @Test("the human report names the table, each partition and the boot code")
    func humanReport() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let r = try imgtool(["inspect", image])
        #expect(r.status == 0)
        #expect(r.stdout.contains("partition table: dos, id 0x494d4754"))
        #expect(r.stdout.contains("boot code: zeroed"))
        #expect(r.stdout.contains("Linux (0x83)"))
        #expect(r.stdout.contains("ext4 \"boot\" 494d4754-0000-4000-8000-0000000000f5"))
    }

    /// sgdisk warns that the CRC does not check out and still lists the entries; the kernel and
    /// sfdisk list none. imgtool lists them, marked untrusted, as sgdisk does, and install-grub
    /// refuses the table.
    @Test func entriesCRCWrongInBothCopies() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("gpt.img"), ["--label", "gpt"])
        let clean = try #require(try inspect(image)["partitionTable"] as? JSON)
        // A byte of the first entry's name, in the primary array (LBA 2) and the backup (33 sectors from the end).
        try run(["python3", "-c", """
            import os, sys
            f = open(sys.argv[1], 'r+b'); size = os.path.getsize(sys.argv[1])
            for at in (2 * 512 + 56, size - 33 * 512 + 56):
                f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 1]))
            """, image])
        let table = try #require(try inspect(image)["partitionTable"] as? JSON)
        #expect(table["untrusted"] as? Bool == true && clean["untrusted"] as? Bool == false)
        let starts = { (t: JSON) in (t["partitions"] as? [JSON])?.compactMap { $0["start"] as? Int } ?? [] }
        #expect(!starts(table).isEmpty && starts(table) == starts(clean))
        let sgdisk = try Subprocess.run(["sgdisk", "-p", image])
        #expect(sgdisk.stdout.contains("CRC") || sgdisk.stderr.contains("CRC"), "\(sgdisk.stdout)\(sgdisk.stderr)")
        let listed = sgdisk.stdout.split(separator: "\n").compactMap { line -> Int? in
            let fields = line.split(separator: " ")
            return fields.count > 2 && Int(fields[0]) != nil ? Int(fields[1]) : nil
        }
        #expect(listed == starts(table), "sgdisk lists the same entries")
        let before = try sha256(image)
        let install = try imgtool(["install-grub", image])
        #expect(install.status == ExitStatus.badImage.rawValue && install.stderr.contains("partition entries CRC32"), "\(install.stderr)")
        #expect(try sha256(image) == before)
    }
}

/// Bad input: a finding or a clear error, never a crash or a hang.
@Suite struct InspectBadInputTests {
    func inspectRaw(_ image: String) throws -> Subprocess.Result {
        let started = Date()
        let r = try imgtool(["inspect", "--json", image])
        #expect(Date().timeIntervalSince(started) < 10, "inspect took too long")
        #expect(r.status < 128, "inspect crashed with status \(r.status): \(r.stderr)")
        return r
    }

    func findings(_ r: Subprocess.Result) throws -> [String] {
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? [String: Any])
        return (json["findings"] as? [[String: Any]] ?? []).compactMap { $0["message"] as? String }
    }

    /// Writes `bytes` at `offset` of `image` (conv=notrunc), by python for exact control.
    func patch(_ image: String, offset: Int, hex: String) throws {
        try run(["python3", "-c", "import sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); f.write(bytes.fromhex(sys.argv[3]))",
                 image, "\(offset)", hex])
    }

    @Test func emptyFile() throws {
        let scratch = try Scratch()
        let image = scratch.file("empty.img")
        try run(["touch", image])
        let r = try inspectRaw(image)
        #expect(r.status == 0)
        #expect(try findings(r).contains { $0.contains("empty") })
    }

    @Test func missingUnreadableAndDirectory() throws {
        let scratch = try Scratch()
        let missing = try inspectRaw(scratch.file("nope.img"))
        #expect(missing.status == ImgKit.ExitStatus.noInput.rawValue)
        #expect(missing.stderr.contains("does not exist"))
        let dir = try inspectRaw(scratch.path)
        #expect(dir.status == ImgKit.ExitStatus.noInput.rawValue)
        #expect(dir.stderr.contains("is a directory"))
        let secret = try makeDisk(scratch.file("secret.img"), ["--label", "dos"])
        chmod(secret, 0o600)
        let r = try imgtool(["inspect", secret], user: isRoot ? 65534 : nil)
        if isRoot {
            #expect(r.status == ImgKit.ExitStatus.noInput.rawValue)
            #expect(r.stderr.contains("cannot read"))
            #expect(r.stderr.contains("Permission denied"))
        }
    }

    @Test func truncatedGPT() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("gpt.img"), ["--label", "gpt"])
        try run(["truncate", "-s", "16K", image])
        let r = try inspectRaw(image)
        #expect(r.status == 0)
        #expect(!(try findings(r)).isEmpty)
    }

    @Test func partitionPastTheEnd() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("dos.img"), ["--label", "dos"])
        try run(["truncate", "-s", "8M", image])
        let r = try inspectRaw(image)
        #expect(try findings(r).contains { $0.contains("past the end") })
    }

    @Test func ebrLoop() throws {
        let scratch = try Scratch()
        let image = scratch.file("loop.img")
        try run(["truncate", "-s", "16M", image])
        try run(["sh", "-c", "printf 'label: dos\\nstart=2048, type=5\\nsize=4096, type=83\\nsize=4096, type=83\\n' | sfdisk -q \(image)"])
        // The second EBR's link entry (at 0x1CE: status, CHS, type 0x05, CHS, relative LBA 0, size)
        // is pointed back at the first EBR.
        let second = try sfdisk2ndEBR(image)
        try patch(image, offset: second * 512 + 0x1CE, hex: "00000000" + "05000000" + "00000000" + "01000000")
        let r = try inspectRaw(image)
        #expect(r.status == 0)
        #expect(!(try findings(r)).isEmpty)
    }

    /// LBA of the second EBR: the start of the second logical partition minus its offset (2048).
    func sfdisk2ndEBR(_ image: String) throws -> Int {
        let json = try JSONSerialization.jsonObject(with: Data(try run(["sfdisk", "--json", image]).output)) as? [String: Any]
        let parts = ((json?["partitiontable"] as? [String: Any])?["partitions"] as? [[String: Any]]) ?? []
        let sixth = try #require(parts.first { ($0["node"] as? String)?.hasSuffix("6") == true })
        return (sixth["start"] as? Int ?? 0) - 2048
    }

    @Test func gptEntryCountOfTwoToThe32() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("gpt.img"), ["--label", "gpt"])
        // Header at LBA 1: entry count at 0x50 = 0xFFFFFFFF, header CRC recomputed so the count is believed.
        try run(["python3", "-c", """
            import struct, sys, zlib
            f = open(sys.argv[1], 'r+b'); f.seek(512); h = bytearray(f.read(92))
            h[0x50:0x54] = struct.pack('<I', 0xFFFFFFFF); h[0x10:0x14] = b'\\0\\0\\0\\0'
            h[0x10:0x14] = struct.pack('<I', zlib.crc32(bytes(h)) & 0xFFFFFFFF); f.seek(512); f.write(h)
            """, image])
        let r = try inspectRaw(image)
        #expect(r.status == 0)
        #expect(!(try findings(r)).isEmpty)
    }
}
