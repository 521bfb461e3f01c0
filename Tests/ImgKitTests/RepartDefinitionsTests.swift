import Foundation
import Glibc
import ImgFormats
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// repart.d definitions read as systemd-repart 252 reads them (checked against the installed
/// systemd-repart where its reading shows: sizes, default labels, refusals).
@Suite(.serialized)
struct RepartDefinitionsTests {
    let scratch: Scratch
    init() throws { scratch = try Scratch() }

    func parse(_ text: String, name: String = "10-p.conf", root: String? = nil) throws -> DiskLayout.Partition {
        try RepartDefinitions.parse(text: text, name: name, root: root)
    }

    /// The error `parse` throws, or nil.
    func refusal(_ text: String, root: String? = nil) -> CreateError? {
        do { _ = try parse(text, root: root); return nil } catch { return error as? CreateError }
    }

    func writeDefinitions(_ files: [String: String]) throws -> String {
        let dir = scratch.file("defs-\(UInt32.random(in: 0 ... .max))")
        try run(["mkdir", "-p", dir])
        for (name, text) in files { try text.write(toFile: dir + "/" + name, atomically: false, encoding: .utf8) }
        return dir
    }

    @Test("every supported key, and repart's defaults")
    func keys() throws {
        let p = try parse("""
            [Partition]
            Type=esp
            Label=EFI System
            UUID=12345678-1234-1234-1234-123456789ABC
            SizeMinBytes=64M
            SizeMaxBytes=1G
            Weight=250
            Format=vfat
            CopyFiles=/efi:/
            CopyFiles=/boot/loader
            MakeDirectories=/EFI /loader/entries
            Minimize=guess
            Flags=0x4
            """)
        #expect(p.type.name == "esp")
        #expect(p.label == "EFI System")
        #expect(p.uuid == GUID(string: "12345678-1234-1234-1234-123456789abc"))
        #expect(p.sizeMin == 64 << 20)
        #expect(p.sizeMax == 1 << 30)
        #expect(p.weight == 250)
        #expect(p.format == .vfat)
        #expect(p.copies == [.init(source: "/efi", target: "/"), .init(source: "/boot/loader", target: "/boot/loader")])
        #expect(p.makeDirectories == ["/EFI", "/loader/entries"])
        #expect(p.minimize)
        #expect(p.attributes == 4)
        #expect(p.origin == "10-p.conf")

        let d = try parse("[Partition]\nType=linux-generic\n")
        #expect(d.label == nil && d.uuid == nil && d.format == nil && d.copies.isEmpty && !d.minimize)
        #expect(d.weight == 1000)
        #expect(d.sizeMin == 10 << 20)
        #expect(d.sizeMax == nil)  // repart's DEFAULT_MIN_SIZE
        #expect(d.attributes == 0)
        // A maximum below the implicit 10 MiB minimum is raised to it (repart 252 makes 10 MiB).
        #expect(try parse("[Partition]\nType=linux-generic\nSizeMaxBytes=4M").sizeMax == 10 << 20)
        // Sizes round to 4096: the minimum up, the maximum down.
        let r = try parse("[Partition]\nType=linux-generic\nSizeMinBytes=5000\nSizeMaxBytes=9000")
        #expect(r.sizeMin == 8192 && r.sizeMax == 8192)
    }

    @Test("types: repart's names and aliases, GUIDs, GrowFileSystem's default bit 59")
    func types() throws {
        let root = try parse("[Partition]\nType=root")
        #expect(root.type.gpt == GUID(string: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709") && root.type.mbr == 0x83)
        #expect(root.attributes == 1 << 59)
        #expect(try parse("[Partition]\nType=root\nGrowFileSystem=no").attributes == 0)
        #expect(try parse("[Partition]\nType=root\nFlags=0x1000000000000000").attributes == 0x1800_0000_0000_0000)
        #expect(try parse("[Partition]\nType=root-secondary").type.gpt == GUID(string: "44479540-F297-41B2-9AF7-D131D5F0458A"))
        #expect(try parse("[Partition]\nType=usr-secondary").type.gpt == GUID(string: "75250D76-8CC6-458E-BD66-BD47CC81A812"))
        #expect(try parse("[Partition]\nType=esp").attributes == 0)
        let swapFlags: UInt64 = 1 << 63 | 1 << 60
        #expect(try parse("[Partition]\nType=swap\nReadOnly=yes\nNoAuto=1").attributes == swapFlags)
        // A known GUID takes the name, and with it the MBR byte.
        let byGUID = try parse("[Partition]\nType=0fc63daf-8483-4772-8e79-3d69d8477de4")
        #expect(byGUID.type.mbr == 0x83)
        let other = try parse("[Partition]\nType=21686148-6449-6E6F-744E-656564454649")
        #expect(other.type.gpt == GUID(string: "21686148-6449-6E6F-744E-656564454649"))
    }

    @Test("conf-parser syntax: comments, blank lines, continuation, overrides, accumulation and reset")
    func syntax() throws {
        let p = try parse("""
            # a comment
            ; another

            [Partition]
              Type = linux-generic	
            Label=fir\\
            # skipped inside the continuation, as systemd does
            st
            Label=first
            Label=second
            CopyFiles=/a
            CopyFiles=/b:/srv
            MakeDirectories=/x
            MakeDirectories=
            MakeDirectories=/y  /z
            [Partition]
            Weight=7
            """)
        #expect(p.type.name == "linux-generic")
        #expect(try parse("[Partition]\nType=esp\nLabel=fir\\\n# skipped\nst").label == "fir st")
        #expect(p.label == "second")
        #expect(p.copies.map(\.target) == ["/a", "/srv"])
        #expect(p.makeDirectories == ["/y", "/z"])
        #expect(p.weight == 7)
        #expect(try parse("[Partition]\nType=esp\nCopyFiles=/a\nCopyFiles=\nFormat=vfat").copies.isEmpty)
        // The backslash becomes a space and the next line's indentation stays (repart: "a    b").
        #expect(try parse("[Partition]\nLabel=a \\\n  b\nType=esp").label == "a    b")
        // CopyFiles= without Format= implies ext4, as in repart.
        #expect(try parse("[Partition]\nType=root\nCopyFiles=/").format == .ext4)
        #expect(try parse("[Partition]\nType=esp\nLabel=100%%").label == "100%")
    }

    @Test("the continuation joins with a space, so a type split mid-word is refused as repart refuses it")
    func continuationSpace() {
        guard case .unknownType(_, let type) = refusal("[Partition]\nType=linux-\\\ngeneric") else {
            Issue.record("expected unknownType"); return
        }
        #expect(type == "linux- generic")
    }

    @Test("CopyFiles= sources resolve under --root; relative ones are refused")
    func copyRoot() throws {
        let p = try parse("[Partition]\nType=root\nFormat=ext4\nCopyFiles=/\nCopyFiles=/efi:/boot", root: "/work/tree/")
        #expect(p.copies == [.init(source: "/work/tree", target: "/"), .init(source: "/work/tree/efi", target: "/boot")])
        #expect(try parse("[Partition]\nType=root\nCopyFiles=//usr/./lib").copies[0].source == "/usr/lib")
        for text in ["CopyFiles=usr", "CopyFiles=/usr:lib", "MakeDirectories=usr", "CopyFiles=/a/../b"] {
            guard case .invalidLayout(let origin, _) = refusal("[Partition]\nType=root\n\(text)") else {
                Issue.record("\(text) was not refused"); continue
            }
            #expect(origin == "10-p.conf:3")
        }
    }

    @Test("every refusal names the file and the key or value")
    func refusals() {
        func unsupported(_ text: String) -> String? {
            if case .unsupportedKey(let origin, let key) = refusal(text) { #expect(origin == "10-p.conf"); return key }
            return nil
        }
        #expect(unsupported("[Partition]\nType=root\nFoo=1") == "Foo")
        #expect(unsupported("[Partition]\nType=root\ntype=esp") == "type")  // keys are case-sensitive
        for key in ["PaddingWeight", "PaddingMinBytes", "PaddingMaxBytes", "CopyBlocks", "Encrypt", "Verity",
                    "VerityMatchKey", "FactoryReset", "SplitName", "ExcludeFiles", "Subvolumes", "Compression"] {
            #expect(unsupported("[Partition]\nType=root\n\(key)=1") == key)
        }
        #expect(unsupported("[Partition]\nType=swap\nPriority=1") == "Priority")
        #expect(refusal("[Partition]\nType=swap\nPriority=0") == nil)
        #expect(refusal("[Partition]\nType=swap\nPriority=-5") == nil)

        if case .unknownType(let origin, let type) = refusal("[Partition]\nType=frobnicate") {
            #expect(origin == "10-p.conf:2" && type == "frobnicate")
        } else { Issue.record("unknown type") }
        if case .unknownType = refusal("[Partition]\nType=ROOT") {} else { Issue.record("names are case-sensitive") }
        func invalid(_ text: String) -> String? {
            if case .invalidLayout(_, let detail) = refusal(text) { return detail }
            return nil
        }
        #expect(invalid("[Partition]\nType=root-verity")?.contains("dm-verity") == true)
        #expect(invalid("[Partition]\nType=root-arm64")?.contains("GUID") == true)
        #expect(invalid("[Partition]\nType=bios-boot")?.contains("21686148-6449-6E6F-744E-656564454649") == true)
        #expect(invalid("[Partition]\nLabel=x")?.contains("no Type=") == true)
        #expect(invalid("[Partition]\nType=root\nSizeMinBytes=1.5G")?.contains("SizeMinBytes=1.5G") == true)
        #expect(invalid("[Partition]\nType=root\nSizeMaxBytes=lots")?.contains("SizeMaxBytes=lots") == true)
        #expect(invalid("[Partition]\nType=root\nWeight=1000001")?.contains("Weight=1000001") == true)
        #expect(invalid("[Partition]\nType=root\nWeight=-1") != nil)
        let format = invalid("[Partition]\nType=root\nFormat=btrfs")
        #expect(format?.contains("Format=btrfs") == true && format?.contains("ext4") == true)
        #expect(invalid("[Partition]\nType=root\nFormat=squashfs") != nil)
        #expect(invalid("[Partition]\nType=root\nLabel=" + String(repeating: "a", count: 37))?.contains("36") == true)
        #expect(refusal("[Partition]\nType=root\nLabel=" + String(repeating: "a", count: 36)) == nil)
        #expect(invalid("[Partition]\nType=root\nUUID=null")?.contains("null") == true)
        #expect(invalid("[Partition]\nType=root\nUUID=xyz") != nil)
        #expect(invalid("[Partition]\nType=root\nMinimize=sometimes") != nil)
        #expect(invalid("[Partition]\nType=root\nFlags=010") != nil)  // strtoull's octal: not guessed
        #expect(invalid("[Partition]\nType=root\nLabel=%a") != nil)
        #expect(invalid("[Other]\nType=root")?.contains("[Other]") == true)
        #expect(invalid("Type=root\n[Partition]") != nil)
        #expect(invalid("[Partition]\nType=root\njunk") != nil)
        #expect(invalid("[Partition\nType=root") != nil)
    }

    @Test("load: *.conf sorted by file name, hidden and empty files skipped, default labels made unique")
    func load() throws {
        let dir = try writeDefinitions([
            "20-b.conf": "[Partition]\nType=esp\n",
            "10-a.conf": "[Partition]\nType=esp\n",
            "3-c.conf": "[Partition]\nType=linux-generic\nLabel=esp-2\n",
            "50-e.conf": "[Partition]\nType=esp\n",
            "README": "not a definition",
            ".hidden.conf": "[Partition]\nType=home\n",
            "60-masked.conf": "",
        ])
        let partitions = try RepartDefinitions.load(directory: dir, root: nil)
        #expect(partitions.map(\.origin) == ["10-a.conf", "20-b.conf", "3-c.conf", "50-e.conf"])
        // Only earlier labels count, as in repart 252: the explicit esp-2 after 20-b.conf does not.
        #expect(partitions.map(\.label) == ["esp", "esp-2", "esp-2", "esp-3"])

        let empty = try writeDefinitions(["x.txt": "[Partition]\nType=esp"])
        #expect { try RepartDefinitions.load(directory: empty, root: nil) } throws: { error in
            guard case .inputMissing = error as? CreateError else { return false }
            return true
        }
        #expect { try RepartDefinitions.load(directory: scratch.file("nope"), root: nil) } throws: { error in
            guard case .inputMissing = error as? CreateError else { return false }
            return true
        }
    }

    @Test("a typical mkosi-like set validates and places; CopyFiles= sources must exist under --root")
    func mkosiLike() throws {
        let root = scratch.file("tree")
        try run(["mkdir", "-p", root + "/efi/EFI/BOOT", root + "/usr/lib"])
        let dir = try writeDefinitions([
            "10-esp.conf": "[Partition]\nType=esp\nFormat=vfat\nCopyFiles=/efi:/\nSizeMinBytes=64M\n",
            "20-root.conf": "[Partition]\nType=root\nFormat=ext4\nCopyFiles=/\nMinimize=guess\n",
        ])
        let partitions = try RepartDefinitions.load(directory: dir, root: root)
        #expect(partitions[0].copies == [.init(source: root + "/efi", target: "/")])
        #expect(partitions[1].copies == [.init(source: root, target: "/")])
        #expect(partitions.map(\.label) == ["esp", "root-x86-64"])
        let layout = DiskLayout(table: .gpt, partitions: partitions)
        try layout.validate()
        let placement = try layout.place(contentBytes: [0, 300 << 20])
        let starts: [UInt64] = [2048, 2048 + 131072]
        let sectors: [UInt64] = [131072, 614400]  // 64 MiB and 300 MiB
        #expect(placement.partitions.map(\.startSector) == starts)
        #expect(placement.partitions.map(\.sectors) == sectors)

        let missing = try writeDefinitions(["10.conf": "[Partition]\nType=root\nCopyFiles=/nothing-here\n"])
        #expect { try RepartDefinitions.load(directory: missing, root: root) } throws: { error in
            guard case .inputMissing(let path, _) = error as? CreateError else { return false }
            return path == root + "/nothing-here"
        }
    }

    /// The reference check: systemd-repart's own placement of the same files (dry run, no Format=).
    /// Both share the span by weight with minimums as floors and maximums as caps; repart in
    /// 4096-byte grains up to GPT's backup, imgtool on 1 MiB boundaries with the disk's last MiB
    /// left for the backup. So offsets agree up to the first partition sized by weight, fixed sizes
    /// agree exactly, and a weighted size within one MiB.
    @Test("placements against systemd-repart --dry-run")
    func differential() throws {
        guard geteuid() == 0 else {
            print("skipped: systemd-repart --empty=create needs root here")
            return
        }
        guard access("/usr/bin/systemd-repart", X_OK) == 0 || access("/bin/systemd-repart", X_OK) == 0 else {
            print("skipped: systemd-repart is not installed")
            return
        }
        let size: UInt64 = 256 << 20
        let sets: [[String: String]] = [
            // Fixed sizes in whole MiB, then one partition taking the rest by weight.
            ["10-esp.conf": "[Partition]\nType=esp\nLabel=ESP\nUUID=11111111-2222-3333-4444-555555555555\nSizeMinBytes=64M\nSizeMaxBytes=64M\n",
             "20-swap.conf": "[Partition]\nType=swap\nSizeMinBytes=32M\nSizeMaxBytes=32M\n",
             "30-root.conf": "[Partition]\nType=root\nSizeMinBytes=100M\n"],
            // Weights share the free space, one capped by its maximum.
            ["10-a.conf": "[Partition]\nType=linux-generic\nWeight=1000\n",
             "20-b.conf": "[Partition]\nType=home\nWeight=3000\nSizeMaxBytes=120M\n",
             "30-c.conf": "[Partition]\nType=srv\nWeight=500\nSizeMinBytes=20M\n"],
        ]
        for files in sets {
            let dir = try writeDefinitions(files)
            let image = scratch.file("repart-\(UInt32.random(in: 0 ... .max)).img")
            let r = try Subprocess.run(["systemd-repart", "--dry-run=yes", "--empty=create", "--size=\(size)",
                                        "--definitions=\(dir)", "--json=short", image])
            guard r.succeeded else {
                print("skipped: systemd-repart failed (\(r.status)): \(r.stderr)")
                return
            }
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? [[String: Any]])
            let repart = json.map { (file: $0["file"] as? String ?? "", offset: ($0["offset"] as? NSNumber)?.uint64Value ?? 0,
                                     size: ($0["raw_size"] as? NSNumber)?.uint64Value ?? 0) }
            let partitions = try RepartDefinitions.load(directory: dir, root: nil)
            #expect(repart.map(\.file) == partitions.map(\.origin))
            #expect(json.map { $0["label"] as? String } == partitions.map(\.label))
            let placed = try DiskLayout(table: .gpt, size: .bytes(size), partitions: partitions).place(contentBytes: [])
            let ours = placed.partitions.map { (offset: $0.startSector * 512, size: $0.sectors * 512) }
            var firstWeighted = true
            for (index, (theirs, mine)) in zip(repart, ours).enumerated() {
                let fixed = partitions[index].sizeMin == partitions[index].sizeMax
                print("\(theirs.file): repart \(theirs.offset)+\(theirs.size), imgtool \(mine.offset)+\(mine.size)")
                if firstWeighted { #expect(mine.offset == theirs.offset, "\(theirs.file)") }
                if fixed {
                    #expect(mine.size == theirs.size, "\(theirs.file)")
                } else {
                    firstWeighted = false
                    let difference = mine.size > theirs.size ? mine.size - theirs.size : theirs.size - mine.size
                    #expect(difference < DiskLayout.alignment, "\(theirs.file): repart \(theirs.size), imgtool \(mine.size)")
                }
            }
        }
    }
}
