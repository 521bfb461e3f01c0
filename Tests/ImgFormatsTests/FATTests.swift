import Foundation
import Testing

@testable import ImgFormats

/// FAT12/16/32 volumes made by mkfs.fat and filled with mtools (no root needed), read back and
/// compared with what mdir and mtype say; then hand-made damage to the BPB, the FAT and directories.
/// The tools are Debian's dosfstools and mtools; a missing one fails the test and names the package.
@Suite("FAT filesystems")
struct FATTests {
    /// A FAT image file in its own temp directory, built with mkfs.fat and changed with mtools.
    final class Image {
        let directory: URL
        let path: String

        init(fat: Int, kibibytes: Int, sectorsPerCluster: Int = 1, sectorSize: Int = 512, label: String? = "ESP") throws {
            let mkfs = try FATTests.tool("mkfs.fat", package: "dosfstools")
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("fat-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            path = directory.appendingPathComponent("fat.img").path
            // --invariant fixes the volume ID and timestamps mkfs.fat would take from the clock.
            try ExternalToolTests.run(mkfs, [
                "-C", "-F", "\(fat)", "-s", "\(sectorsPerCluster)", "-S", "\(sectorSize)", "--invariant",
            ] + (label.map { ["-n", $0] } ?? []) + [path, "\(kibibytes)"])
        }

        deinit { try? FileManager.default.removeItem(at: directory) }

        @discardableResult
        func mtools(_ name: String, _ arguments: [String]) throws -> Data {
            try ExternalToolTests.run(try FATTests.tool(name, package: "mtools"), ["-i", path] + arguments)
        }

        func mkdir(_ paths: String...) throws { try mtools("mmd", paths.map { "::" + $0 }) }
        func delete(_ path: String) throws { try mtools("mdel", ["::" + path]) }

        func copy(_ data: [UInt8], to target: String) throws {
            let file = directory.appendingPathComponent("source-\(UUID().uuidString)")
            try Data(data).write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }
            try mtools("mcopy", [file.path, "::" + target])
        }

        /// `mdir -/ -b`: every path below the root, directories with a trailing "/".
        func mdirPaths() throws -> [String] {
            String(decoding: try mtools("mdir", ["-/", "-b", "::/"]), as: UTF8.self).split(separator: "\n").map(String.init)
        }

        func mtype(_ path: String) throws -> [UInt8] { [UInt8](try mtools("mtype", ["::" + path])) }

        var bytes: [UInt8] { get throws { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) } }

        func open() throws -> FATFilesystem {
            let source = try FileByteSource(path: path)
            return try FATFilesystem.open(source, offset: 0, length: source.size)
        }
    }

    static func tool(_ name: String, package: String) throws -> String {
        try #require(ExternalToolTests.tool(name), "\(name) is not installed: apt-get install \(package)")
    }

    /// Deterministic filler, different for each seed.
    static func pattern(_ count: Int, seed: UInt32) -> [UInt8] {
        var state = seed &* 2_654_435_761 | 1
        return (0..<count).map { _ in
            state = state &* 1_103_515_245 &+ 12345
            return UInt8(truncatingIfNeeded: state >> 16)
        }
    }

    /// Every path below `path` in mdir's form ("::/EFI/", "::/EFI/BOOT/BOOTX64.EFI").
    static func walk(_ fs: FATFilesystem, _ path: String = "/") throws -> [String] {
        var paths: [String] = []
        for entry in try fs.list(path) {
            let child = (path == "/" ? "" : path) + "/" + entry.name
            paths.append("::" + child + (entry.isDirectory ? "/" : ""))
            if entry.isDirectory { paths += try walk(fs, child) }
        }
        return paths
    }

    static let longName = String(repeating: "Long name spanning many entries ", count: 6) + "end.txt"  // 199 characters

    /// Directories, long and short names, case flags, a 13-character name (no terminator), a
    /// non-ASCII name and a file of many clusters.
    static func fill(_ image: Image) throws -> [String: [UInt8]] {
        try image.mkdir("/EFI", "/EFI/BOOT", "/EFI/debian", "/deep", "/deep/a", "/deep/a/b")
        let files: [String: [UInt8]] = [
            "/EFI/BOOT/BOOTX64.EFI": pattern(300_000, seed: 1),
            "/EFI/debian/grub.cfg": Array("search.fs_uuid 1234-ABCD root\nset prefix=($root)/EFI/debian\n".utf8),
            "/A long file name.txt": pattern(1000, seed: 2),
            "/lower.txt": pattern(10, seed: 3),
            "/MixedCase.Txt": pattern(512, seed: 4),
            "/café au lait.txt": pattern(513, seed: 5),
            "/empty": [],
            "/deep/a/b/Thirteen.char": pattern(4096, seed: 6),
            "/deep/a/b/" + longName: pattern(77, seed: 7),
        ]
        for (path, data) in files.sorted(by: { $0.key < $1.key }) { try image.copy(data, to: path) }
        return files
    }

    // MARK: real volumes

    @Test(arguments: [
        (12, 2048, 512, FATFilesystem.Kind.fat12), (16, 16384, 512, .fat16), (32, 40960, 512, .fat32),
        (16, 65536, 4096, .fat16),
    ])
    func matchesMtools(fat: Int, kibibytes: Int, sectorSize: Int, kind: FATFilesystem.Kind) throws {
        let image = try Image(fat: fat, kibibytes: kibibytes, sectorSize: sectorSize)
        let files = try Self.fill(image)
        let fs = try image.open()
        #expect(fs.kind == kind)
        #expect(fs.bytesPerSector == sectorSize)
        #expect(fs.rootCluster == (kind == .fat32 ? 2 : 0))

        let ours = try Self.walk(fs)
        let reference = try image.mdirPaths()
        #expect(ours.sorted() == reference.sorted())
        for (path, data) in files {
            #expect(try fs.read(path, maxBytes: 1 << 20) == data, "\(path)")
            #expect(try image.mtype(path) == data, "mtype \(path)")
        }

        // Lookup is case-insensitive and takes the short alias of a long name.
        let boot = try #require(try fs.lookup("/efi/Boot/bootx64.efi"))
        #expect(boot.name == "BOOTX64.EFI" && boot.shortName == "BOOTX64.EFI" && boot.size == 300_000 && !boot.isDirectory)
        #expect(try fs.list("/EFI/BOOT") == [boot])
        #expect(try fs.lookup("/ALONGF~1.TXT")?.name == "A long file name.txt")
        #expect(try fs.lookup("/a LONG file NAME.TXT")?.shortName == "ALONGF~1.TXT")
        #expect(try fs.lookup("/lower.txt").map { [$0.name, $0.shortName] } == ["lower.txt", "lower.txt"])
        #expect(try fs.lookup("/CAFÉ AU LAIT.TXT")?.name == "café au lait.txt")
        #expect(try fs.lookup("/deep/A/b/" + Self.longName.uppercased())?.size == 77)
        #expect(try fs.lookup("/EFI")?.isDirectory == true)
        #expect(try fs.lookup("/")?.isDirectory == true)
        #expect(try fs.lookup("/EFI/BOOT/missing.efi") == nil)
        #expect(try fs.lookup("/EFI/BOOT/BOOTX64.EFI/x") == nil)
        #expect(try fs.list("/").map(\.name).contains("ESP") == false, "the volume label is not an entry")

        // The big file really spans many clusters.
        let chain = try fs.clusterChain(from: boot.firstCluster, limit: 10_000)
        #expect(chain.count == (300_000 + fs.clusterSize - 1) / fs.clusterSize)
    }

    @Test func partitionAtAnOffset() throws {
        let image = try Image(fat: 12, kibibytes: 2048)
        let files = try Self.fill(image)
        let volume = try image.bytes
        let disk = [UInt8](repeating: 0, count: 1 << 20) + volume + [UInt8](repeating: 0xAA, count: 4096)
        let fs = try FATFilesystem.open(MemoryByteSource(disk), offset: 1 << 20, length: UInt64(volume.count))
        let reference = try image.mdirPaths()
        #expect(try Self.walk(fs).sorted() == reference.sorted())
        #expect(try fs.read("/EFI/BOOT/BOOTX64.EFI", maxBytes: 1 << 20) == files["/EFI/BOOT/BOOTX64.EFI"])
    }

    @Test func fragmentedFile() throws {
        let image = try Image(fat: 12, kibibytes: 1024)
        let a = Self.pattern(10 * 1024, seed: 10)
        let c = Self.pattern(30 * 1024 + 100, seed: 12)
        try image.copy(a, to: "/a.bin")
        try image.copy(Self.pattern(10 * 1024, seed: 11), to: "/b.bin")
        try image.delete("/a.bin")
        try image.copy(c, to: "/c.bin")  // fills a's hole first, then continues after b

        let fs = try image.open()
        let entry = try #require(try fs.lookup("/c.bin"))
        let chain = try fs.clusterChain(from: entry.firstCluster, limit: 1000)
        #expect(chain.count == 61)
        try #require(zip(chain, chain.dropFirst()).contains { $1 != $0 + 1 }, "mtools did not fragment c.bin: \(chain)")
        #expect(try fs.read("/c.bin", maxBytes: 1 << 20) == c)
        #expect(try image.mtype("/c.bin") == c)
    }

    /// `bytes`, then zeros up to `size`, as the fuzzer reads its seeds.
    struct ZeroExtended: ByteSource {
        let bytes: [UInt8]
        let size: UInt64

        func read(at offset: UInt64, count: Int) throws -> [UInt8] {
            guard offset + UInt64(count) <= size else { throw ByteSourceError("read past \(size)") }
            return (0..<count).map { i in Int(offset) + i < bytes.count ? bytes[Int(offset) + i] : 0 }
        }
    }

    /// The fuzzer's FAT seeds (TestImages/corpus/formats) are the volumes they were made to be. The
    /// FAT16 and FAT32 ones end after their last non-zero byte; the fuzzer zero-extends them.
    @Test(arguments: [("fat12-esp.bin", FATFilesystem.Kind.fat12), ("fat16-esp.bin", .fat16), ("fat32-empty.bin", .fat32)])
    func fuzzSeeds(name: String, kind: FATFilesystem.Kind) throws {
        let bytes = try FuzzCorpusTests.read("\(FuzzCorpusTests.corpus)/\(name)")
        let fs = try FATFilesystem.open(ZeroExtended(bytes: bytes, size: 64 << 20), offset: 0, length: 64 << 20)
        #expect(fs.kind == kind)
        guard kind != .fat32 else {
            #expect(try fs.list("/").isEmpty)
            return
        }
        #expect(try fs.list("/").map(\.name) == ["EFI"], "the label and the deleted file are not entries")
        #expect(try fs.read("/EFI/BOOT/BOOTX64.EFI", maxBytes: 4096).count == 1538)
        #expect(try fs.lookup("/efi/boot/long FILE name.cfg")?.shortName == "LONGFI~1.CFG")
    }

    // MARK: damage

    /// The image's bytes with FAT entries changed in every FAT copy, written independently of the reader.
    struct Damaged {
        var bytes: [UInt8]
        let fs: FATFilesystem

        init(_ image: Image) throws {
            bytes = try image.bytes
            fs = try image.open()
        }

        mutating func setFAT(_ cluster: UInt32, _ value: UInt32) {
            for copy in 0..<fs.fatCount {
                let base = (fs.reservedSectors + copy * Int(fs.sectorsPerFAT)) * fs.bytesPerSector
                let n = Int(cluster)
                switch fs.kind {
                case .fat12:
                    let at = base + n + n / 2
                    if n % 2 == 1 {
                        bytes[at] = bytes[at] & 0x0F | UInt8(truncatingIfNeeded: value << 4)
                        bytes[at + 1] = UInt8(truncatingIfNeeded: value >> 4)
                    } else {
                        bytes[at] = UInt8(truncatingIfNeeded: value)
                        bytes[at + 1] = bytes[at + 1] & 0xF0 | UInt8(truncatingIfNeeded: value >> 8) & 0x0F
                    }
                case .fat16:
                    for i in 0..<2 { bytes[base + 2 * n + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
                case .fat32:
                    for i in 0..<4 { bytes[base + 4 * n + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
                }
            }
        }

        func clusterOffset(_ cluster: UInt32) -> Int {
            let rootSectors = (fs.rootEntryCount * 32 + fs.bytesPerSector - 1) / fs.bytesPerSector
            let data = fs.reservedSectors + fs.fatCount * Int(fs.sectorsPerFAT) + rootSectors
            return data * fs.bytesPerSector + Int(cluster - 2) * fs.clusterSize
        }

        /// The byte offset of the 32-byte short entry named `raw` (11 bytes, "ALONGF~1TXT") in the
        /// FAT12/16 root directory.
        func rootSlot(_ raw: String) throws -> Int {
            let start = (fs.reservedSectors + fs.fatCount * Int(fs.sectorsPerFAT)) * fs.bytesPerSector
            let slot = (0..<fs.rootEntryCount).first { bytes[start + 32 * $0..<start + 32 * $0 + 11].elementsEqual(Array(raw.utf8)) }
            return start + 32 * (try #require(slot, "no root entry \(raw)"))
        }

        func open() throws(FATFilesystem.Problem) -> FATFilesystem {
            try FATFilesystem.open(MemoryByteSource(bytes), offset: 0, length: UInt64(bytes.count))
        }
    }

    static let bootFile = "/EFI/BOOT/BOOTX64.EFI"

    static func smallImage() throws -> (Image, [UInt8]) {
        let image = try Image(fat: 12, kibibytes: 1024)
        try image.mkdir("/EFI", "/EFI/BOOT")
        let data = pattern(20 * 1024, seed: 20)  // 40 clusters
        try image.copy(data, to: bootFile)
        try image.copy(pattern(100, seed: 21), to: "/A long file name.txt")
        return (image, data)
    }

    @Test func brokenClusterChains() throws {
        let (image, data) = try Self.smallImage()
        let good = try Damaged(image)
        let first = try #require(try good.fs.lookup(Self.bootFile)).firstCluster
        #expect(try good.open().read(Self.bootFile, maxBytes: 1 << 20) == data)
        let last = good.fs.clusterCount + 1
        func problem(_ damage: (inout Damaged) -> Void) -> FATFilesystem.Problem? {
            var damaged = good
            damage(&damaged)
            do {
                _ = try damaged.open().read(Self.bootFile, maxBytes: 1 << 20)
                return nil
            } catch {
                return error
            }
        }

        #expect(problem { $0.setFAT(first + 5, first + 2) } == .cyclicClusterChain(path: Self.bootFile, cluster: first + 2))
        #expect(problem { $0.setFAT(first, first) } == .cyclicClusterChain(path: Self.bootFile, cluster: first))
        #expect(problem { $0.setFAT(first + 1, last + 1) } == .clusterOutOfRange(path: Self.bootFile, cluster: last + 1, lastCluster: last))
        #expect(problem { $0.setFAT(first + 1, 0xFF0) } == .clusterOutOfRange(path: Self.bootFile, cluster: 0xFF0, lastCluster: last))
        #expect(problem { $0.setFAT(first + 1, 1) } == .clusterOutOfRange(path: Self.bootFile, cluster: 1, lastCluster: last))
        #expect(problem { $0.setFAT(first + 3, 0) } == .freeClusterInChain(path: Self.bootFile, cluster: first + 3))
        #expect(problem { $0.setFAT(first + 3, 0xFF7) } == .badClusterInChain(path: Self.bootFile, cluster: first + 3))
        #expect(problem { $0.setFAT(first + 1, 0xFFF) } == .clusterChainTooShort(path: Self.bootFile, clusters: 2, needed: 40))
        // The file's entry itself points outside the data area.
        #expect(problem {
            let slot = try! $0.rootSlot("EFI        ")
            let efi = Int($0.bytes[slot + 26]) | Int($0.bytes[slot + 27]) << 8
            let boot = $0.clusterOffset(UInt32(efi)) + 64  // after "." and ".."
            $0.bytes[boot + 26] = 0xFF
            $0.bytes[boot + 27] = 0x0F
        } == .clusterOutOfRange(path: "/EFI/BOOT", cluster: 0xFFF, lastCluster: last))
        // Past its size the chain is not read, as the firmware does not read it.
        #expect(problem { $0.setFAT(first + 39, first) } == nil)

        let cyclic = try #require(problem { $0.setFAT(first + 5, first + 2) })
        #expect(cyclic.description.contains("loops back to cluster"))
        #expect(cyclic.description.contains("fsck.fat"))
    }

    /// `stream` gives what `read` gives, a cluster at a time; the same chain checks stop it; it
    /// can be stopped early. Directory sizes are their clusters, attributes and dates come along.
    @Test func streamsAndDescribes() throws {
        let (image, data) = try Self.smallImage()
        let good = try Damaged(image)
        let fs = try good.open()
        let entry = try #require(try fs.lookup(Self.bootFile))
        var pieces: [Int] = [], bytes: [UInt8] = []
        try fs.stream(entry, path: Self.bootFile) { pieces.append($0.count); bytes += $0; return true }
        #expect(bytes == data && pieces.allSatisfy { $0 <= fs.clusterSize } && pieces.count == 40)
        var first = 0
        try fs.stream(entry, path: Self.bootFile) { _ in first += 1; return false }
        #expect(first == 1)
        #expect(throws: FATFilesystem.Problem.isADirectory("/EFI")) { try fs.stream(try #require(try fs.lookup("/EFI")), path: "/EFI") { _ in true } }
        var damaged = good
        damaged.setFAT(entry.firstCluster + 5, entry.firstCluster + 2)
        #expect(throws: FATFilesystem.Problem.cyclicClusterChain(path: Self.bootFile, cluster: entry.firstCluster + 2)) {
            try damaged.open().stream(entry, path: Self.bootFile) { _ in true }
        }
        // FAT12's root is its fixed area; a subdirectory is its clusters (one here).
        #expect(try fs.directoryBytes(fs.root, path: "/") == UInt64(fs.rootEntryCount * 32))
        #expect(try fs.directoryBytes(try #require(try fs.lookup("/EFI")), path: "/EFI") == UInt64(fs.clusterSize))
        #expect(try fs.list(fs.root, path: "/").map(\.name) == (try fs.list("/")).map(\.name))
        let efi = try #require(try fs.lookup("/EFI"))
        #expect(efi.attributes & 0x10 != 0 && !efi.isReadOnly && efi.modified > 1_600_000_000, "mtools stamps the current time")
    }

    @Test func cyclicDirectory() throws {
        let image = try Image(fat: 12, kibibytes: 1024)
        try image.mkdir("/many")
        for index in 0..<40 { try image.copy([UInt8(index)], to: "/many/file number \(index) with a long name") }
        var damaged = try Damaged(image)
        let directory = try #require(try damaged.fs.lookup("/many")).firstCluster
        let chain = try damaged.fs.clusterChain(from: directory, limit: 100)
        #expect(chain.count > 2, "40 long names fill several 512-byte clusters")
        #expect(try damaged.fs.list("/many").count == 40)
        // The first cluster is full (no end marker), so the loop is reached.
        damaged.setFAT(chain[0], chain[0])
        let fs = try damaged.open()
        #expect(throws: FATFilesystem.Problem.cyclicClusterChain(path: "/many", cluster: chain[0])) { try fs.list("/many") }
        #expect(throws: FATFilesystem.Problem.cyclicClusterChain(path: "/many", cluster: chain[0])) {
            try fs.lookup("/many/file number 39 with a long name")
        }
    }

    @Test func directoryWithoutEndIsBounded() throws {
        let image = try Image(fat: 16, kibibytes: 8192)
        try image.mkdir("/big")
        var damaged = try Damaged(image)
        let first = try #require(try damaged.fs.lookup("/big")).firstCluster
        // 4100 clusters of deleted entries: 2 MiB and more with no end marker.
        for cluster in first..<first + 4100 {
            damaged.setFAT(cluster, cluster + 1)
            let at = damaged.clusterOffset(cluster)
            damaged.bytes.replaceSubrange(at..<at + 512, with: [UInt8](repeating: 0xE5, count: 512))
        }
        damaged.setFAT(first + 4100, 0xFFFF)
        #expect(throws: FATFilesystem.Problem.directoryTooLarge("/big")) { try damaged.open().list("/big") }
        // Exactly 2 MiB (4096 clusters of 512 bytes) is the most FAT allows, and still readable.
        damaged.setFAT(first + 4095, 0xFFFF)
        #expect(try damaged.open().list("/big").isEmpty)
    }

    @Test func brokenLongNamesFallBackToTheShortName() throws {
        let (image, _) = try Self.smallImage()
        let good = try Damaged(image)
        let slot = try good.rootSlot("ALONGF~1TXT")
        #expect(try good.open().lookup("/A long file name.txt")?.name == "A long file name.txt")

        var badChecksum = good
        badChecksum.bytes[slot - 32 + 13] ^= 0xFF
        var missingPiece = good
        missingPiece.bytes[slot - 64] = 0xE5  // the first (highest) of the two long-name entries
        var wrongOrdinal = good
        wrongOrdinal.bytes[slot - 32] = 3
        for damaged in [badChecksum, missingPiece, wrongOrdinal] {
            let fs = try damaged.open()
            #expect(try fs.list("/").map(\.name).contains("ALONGF~1.TXT"))
            #expect(try fs.lookup("/A long file name.txt") == nil)
            #expect(try fs.read("/alongf~1.txt", maxBytes: 1000).count == 100)
        }
    }

    @Test func badBootSectors() throws {
        let (image, _) = try Self.smallImage()
        let good = try Damaged(image)
        func problem(_ damage: (inout Damaged) -> Void) -> FATFilesystem.Problem? {
            var damaged = good
            damage(&damaged)
            do {
                _ = try damaged.open()
                return nil
            } catch {
                return error
            }
        }
        /// "field=value" of an invalid-BPB problem.
        func field(_ problem: FATFilesystem.Problem?) -> String? {
            guard case .invalidBPB(let field, let value, _)? = problem else { return nil }
            return "\(field)=\(value)"
        }
        #expect(field(problem { $0.bytes[13] = 0 }) == "sectors per cluster=0")
        #expect(field(problem { $0.bytes[13] = 3 }) == "sectors per cluster=3")
        #expect(field(problem { $0.bytes[11] = 3; $0.bytes[12] = 0 }) == "bytes per sector=3")
        #expect(field(problem { $0.bytes[16] = 0 }) == "number of FATs=0")
        #expect(field(problem { $0.bytes[14] = 0; $0.bytes[15] = 0 }) == "reserved sector count=0")
        #expect(field(problem { $0.bytes[17] = 0; $0.bytes[18] = 0 }) == "root entry count=0")
        // A zero 16-bit FAT size means FAT32's 32-bit one at 36 counts; on FAT12 that is the drive number and more.
        #expect(field(problem { $0.bytes[22] = 0; $0.bytes[23] = 0 })?.hasPrefix("total sector count=") == true)
        #expect(field(problem { $0.bytes[22..<24] = [0, 0]; $0.bytes[36..<40] = [0, 0, 0, 0] }) == "FAT size=0")
        #expect(field(problem { $0.bytes[22] = 1; $0.bytes[23] = 0 })?.hasPrefix("FAT size=") == true, "too small for the clusters")
        #expect(field(problem { $0.bytes[19] = 10; $0.bytes[20] = 0 })?.hasPrefix("total sector count=") == true)
        #expect(problem { $0.bytes[510] = 0 } == .noBootSignature)
        #expect(problem { $0.bytes[19] = 0xFF; $0.bytes[20] = 0xFF } == .filesystemLargerThanPartition(bytes: 0xFFFF * 512, partitionBytes: 1 << 20))
        #expect(problem { _ in } == nil)
        #expect(problem { $0.bytes[13] = 0 }?.description.contains("sectors per cluster is 0") == true)

        // A truncated image: the filesystem needs more than the partition, or the partition more than the image.
        let cut = Array(good.bytes.prefix(600 * 1024))
        #expect(throws: FATFilesystem.Problem.filesystemLargerThanPartition(bytes: 1 << 20, partitionBytes: 600 * 1024)) {
            try FATFilesystem.open(MemoryByteSource(cut), offset: 0, length: UInt64(cut.count))
        }
        #expect(throws: FATFilesystem.Problem.partitionOutsideSource(offset: 0, length: 1 << 20, sourceSize: 600 * 1024)) {
            try FATFilesystem.open(MemoryByteSource(cut), offset: 0, length: 1 << 20)
        }
        #expect(throws: FATFilesystem.Problem.partitionOutsideSource(offset: .max, length: 2, sourceSize: 600 * 1024)) {
            try FATFilesystem.open(MemoryByteSource(cut), offset: .max, length: 2)
        }
        #expect(throws: FATFilesystem.Problem.partitionTooSmall(length: 100)) {
            try FATFilesystem.open(MemoryByteSource(cut), offset: 0, length: 100)
        }
    }

    @Test func fat32BootSector() throws {
        let image = try Image(fat: 32, kibibytes: 40960)
        let good = try Damaged(image)
        #expect(good.fs.kind == .fat32)
        var badRoot = good
        badRoot.bytes[44..<48] = [0, 0, 0, 0]
        #expect(throws: FATFilesystem.Problem.invalidBPB(field: "root cluster", value: 0, allowed: "2...\(good.fs.clusterCount + 1)")) {
            try badRoot.open()
        }
        var rootEntries = good
        rootEntries.bytes[17] = 16
        #expect(throws: FATFilesystem.Problem.self) { try rootEntries.open() }
        // Mirroring off with an active FAT number past the FAT count.
        var activeFAT = good
        activeFAT.bytes[40] = 0x85
        #expect(throws: FATFilesystem.Problem.invalidBPB(field: "active FAT", value: 5, allowed: "0...1")) { try activeFAT.open() }
        activeFAT.bytes[40] = 0x81
        #expect(try activeFAT.open().list("/").isEmpty)
    }

    @Test func pathAndSizeLimits() throws {
        let (image, data) = try Self.smallImage()
        let fs = try image.open()
        #expect(throws: FATFilesystem.Problem.fileTooLarge(path: Self.bootFile, size: UInt32(data.count), maxBytes: 1000)) {
            try fs.read(Self.bootFile, maxBytes: 1000)
        }
        #expect(try fs.read(Self.bootFile, maxBytes: data.count) == data)
        #expect(throws: FATFilesystem.Problem.notFound("/EFI/none")) { try fs.read("/EFI/none", maxBytes: 1) }
        #expect(throws: FATFilesystem.Problem.isADirectory("/EFI")) { try fs.read("/EFI", maxBytes: 1) }
        #expect(throws: FATFilesystem.Problem.notADirectory(Self.bootFile)) { try fs.list(Self.bootFile) }
        #expect(throws: FATFilesystem.Problem.notFound("/nothing")) { try fs.list("/nothing") }
        let deep = String(repeating: "/EFI", count: 65)
        #expect(throws: FATFilesystem.Problem.pathTooDeep(deep)) { try fs.lookup(deep) }
    }

    @Test func shortNamesAndChecksums() {
        func entry(_ raw: String, case flags: UInt8 = 0) -> [UInt8] {
            Array(raw.utf8) + [0x20, flags] + [UInt8](repeating: 0, count: 19)
        }
        #expect(FATFilesystem.DirectoryParser.shortName(entry("BOOTX64 EFI")) == "BOOTX64.EFI")
        #expect(FATFilesystem.DirectoryParser.shortName(entry("README     ")) == "README")
        #expect(FATFilesystem.DirectoryParser.shortName(entry("LOWER   TXT", case: 0x18)) == "lower.txt")
        #expect(FATFilesystem.DirectoryParser.shortName(entry("MIXED   TXT", case: 0x10)) == "MIXED.txt")
        // A stored 05 stands for E5, a code-page byte shown as U+FFFD.
        #expect(FATFilesystem.DirectoryParser.shortName(entry("\u{05}ABC    TXT")) == "\u{FFFD}ABC.TXT")
        // The spec's example algorithm, computed by hand for "ALONGF~1TXT".
        var sum: UInt8 = 0
        for byte in Array("ALONGF~1TXT".utf8) { sum = ((sum & 1) << 7) &+ (sum >> 1) &+ byte }
        #expect(FATFilesystem.DirectoryParser.checksum(Array("ALONGF~1TXT".utf8)[...]) == sum)
    }
}
