import Foundation
import Synchronization
import Testing

@testable import ImgFormats

/// QCOW2Disk against qemu-img: a raw disk with random, compressible and zero stretches converted
/// to every qcow2 flavour qemu-img writes reads back as the same bytes; backing chains read as
/// `qemu-img convert -O raw` flattens them; damaged images are errors, not crashes.
@Suite("qcow2 reader against qemu-img")
struct QCOW2DiskTests {
    static let diskSize = 64 << 20

    /// The raw disk: random data at the start, across 64 KiB and 2 MiB cluster boundaries, at odd
    /// offsets and in the last sector; text-like compressible data; zeros everywhere else.
    static func rawDisk() -> [UInt8] {
        var disk = [UInt8](repeating: 0, count: diskSize)
        var random = SeededGenerator(seed: 0x5143_4F57)
        func put(_ bytes: [UInt8], at offset: Int) { disk.replaceSubrange(offset..<(offset + bytes.count), with: bytes) }
        put(random.bytes(256 << 10), at: 0)
        put(random.bytes(10_000), at: (5 << 20) + 65_536 - 3_000)
        put(random.bytes(3_000), at: (4 << 20) - 1_000)
        put(random.bytes(300_000), at: (20 << 20) + 777)
        put(random.bytes(512), at: diskSize - 512)
        var text: [UInt8] = []
        var line = 0
        while text.count < 2 << 20 {
            text += Array("line \(line): the quick brown fox jumps over the lazy dog, \(line % 97) times\n".utf8)
            line += 1
        }
        put(Array(text.prefix(2 << 20)), at: 10 << 20)
        return disk
    }

    /// `reference` equals what `disk` reads, in `chunk`-byte reads.
    static func expectSame(_ disk: some ByteSource, _ reference: [UInt8], chunk: Int, upTo end: Int? = nil, _ label: String) throws {
        #expect(disk.size == UInt64(reference.count), "\(label)")
        var offset = 0
        let end = end ?? reference.count
        while offset < end {
            let count = min(chunk, end - offset)
            let got = try disk.read(at: UInt64(offset), count: count)
            let same = got.count == count && got.withUnsafeBytes { a in
                reference.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress! + offset, count) == 0 }
            }
            if !same {
                let first = (0..<min(count, got.count)).first { got[$0] != reference[offset + $0] } ?? 0
                Issue.record("\(label): bytes differ at \(offset + first)")
                return
            }
            offset += count
        }
    }

    /// Reads at odd offsets across cluster boundaries, from a fixed seed.
    static func expectOddReads(_ disk: some ByteSource, _ reference: [UInt8], _ label: String) throws {
        var random = SeededGenerator(seed: 42)
        var ranges = [(65_536 - 7, 100), ((5 << 20) + 65_536 - 3_001, 9_000), ((2 << 20) - 1, 3), (diskSize - 1, 1),
                      ((4 << 20) - 1_000, 3_000), (511, 2), ((10 << 20) + 1, 200_003), (diskSize - 70_001, 70_001)]
        for _ in 0..<40 {
            let offset = Int(random.next() % UInt64(diskSize))
            ranges.append((offset, Int(random.next() % 140_000) % (diskSize - offset) + 1))
        }
        for (offset, count) in ranges {
            let got = try disk.read(at: UInt64(offset), count: count)
            #expect(got[...] == reference[offset..<(offset + count)], "\(label): \(count) bytes at \(offset)")
        }
        #expect(throws: (any Error).self, "\(label): a read past the end") { try disk.read(at: UInt64(diskSize) - 1, count: 2) }
    }

    static func openAt(_ path: String, _ files: ContainerFiles = .none) throws -> QCOW2Disk {
        try QCOW2Disk(file: FileByteSource(path: path), files: files)
    }

    @Test("v2, v3, zlib, zstd, 512 B and 2 MiB clusters, extended L2 entries read as the raw disk")
    func everyFlavourReadsAsTheRawDisk() throws {
        let reference = Self.rawDisk()
        try DiskContainerTests.make { made, qemuImg in
            try Data(reference).write(to: URL(fileURLWithPath: made.path("raw.img")))
            let cases: [(name: String, options: [String], version: Int)] = [
                ("v2.qcow2", ["-o", "compat=0.10"], 2),
                ("v3.qcow2", [], 3),
                ("zlib.qcow2", ["-c"], 3),
                ("zstd.qcow2", ["-c", "-o", "compression_type=zstd"], 3),
                ("c512.qcow2", ["-o", "cluster_size=512"], 3),
                ("c2m.qcow2", ["-o", "cluster_size=2M"], 3),
                ("zlib512.qcow2", ["-c", "-o", "cluster_size=512"], 3),
                ("zstd2m.qcow2", ["-c", "-o", "cluster_size=2M,compression_type=zstd"], 3),
                ("extl2.qcow2", ["-o", "extended_l2=on"], 3),
            ]
            for c in cases {
                try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "qcow2"] + c.options + [made.path("raw.img"), made.path(c.name)])
                let disk = try Self.openAt(made.path(c.name))
                let info = try DiskContainerTests.info(qemuImg, made.path(c.name), format: "qcow2")
                #expect(Int(disk.size) == info["virtual-size"] as? Int, "\(c.name)")
                #expect(disk.clusterSize == info["cluster-size"] as? Int, "\(c.name)")
                #expect(disk.version == c.version && disk.backingFile == nil && disk.backingNotOpened == nil, "\(c.name)")
                try Self.expectSame(disk, reference, chunk: 1 << 20, c.name)
                try Self.expectOddReads(disk, reference, c.name)
            }
            // Small sequential reads, as a partition or filesystem probe makes them.
            let zlib = try Self.openAt(made.path("zlib.qcow2"))
            try Self.expectSame(zlib, reference, chunk: 512, upTo: 12 << 20, "zlib.qcow2 by sectors (first 12 MiB)")
        }
    }

    @Test("backing chains (qcow2 and a shorter raw file, extended L2 overlays) read as qemu-img convert flattens them")
    func backingChains() throws {
        let reference = Self.rawDisk()
        try DiskContainerTests.make { made, qemuImg in
            let qemuIO = try #require(ExternalToolTests.tool("qemu-io"), "qemu-io is not installed: apt-get install qemu-utils")
            try Data(reference).write(to: URL(fileURLWithPath: made.path("raw.img")))
            try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "qcow2", made.path("raw.img"), made.path("base.qcow2")])
            // A raw backing file shorter than the overlay, ending mid-sector.
            try Data(reference.prefix((1 << 20) + 1_000)).write(to: URL(fileURLWithPath: made.path("short.raw")))
            let overlays: [(name: String, backing: String, format: String, options: [String])] = [
                ("overlay.qcow2", "base.qcow2", "qcow2", []),
                ("overlay-ext.qcow2", "base.qcow2", "qcow2", ["-o", "extended_l2=on"]),
                ("overlay-v2.qcow2", "base.qcow2", "qcow2", ["-o", "compat=0.10"]),
                ("overlay-raw.qcow2", "short.raw", "raw", []),
            ]
            let opener: @Sendable (String) throws -> any ByteSource = { name in
                let path = made.directory + "/" + name
                return name.hasSuffix(".qcow2") ? try Self.openAt(path) : try FileByteSource(path: path)
            }
            for o in overlays {
                try ExternalToolTests.run(qemuImg, ["create", "-q", "-f", "qcow2", "-b", o.backing, "-F", o.format] + o.options
                                          + [made.path(o.name), "64M"])
                try ExternalToolTests.run(qemuIO, ["-f", "qcow2", "-c", "write -P 0x5a 1M 64k", "-c", "write -z 3M 64k",
                                                   "-c", "write -P 0x33 5246976 6144", "-c", "write -z 7342080 2048",
                                                   "-c", "write -P 0x44 67104768 1024", made.path(o.name)])
                try ExternalToolTests.run(qemuImg, ["convert", "-f", "qcow2", "-O", "raw", made.path(o.name), made.path("flat.raw")])
                let flat = [UInt8](try Data(contentsOf: URL(fileURLWithPath: made.path("flat.raw"))))

                let disk = try Self.openAt(made.path(o.name), ContainerFiles(openExtent: { _ in throw ContainerError("no extents") },
                                                                            openBacking: opener))
                #expect(disk.backingFile == o.backing && disk.backingNotOpened == nil && disk.backingFormat == o.format, "\(o.name)")
                try Self.expectSame(disk, flat, chunk: 1 << 20, o.name)
                try Self.expectSame(disk, flat, chunk: 12_800, o.name + " in smaller reads")
                try Self.expectOddReads(disk, flat, o.name)

                // Without the backing file, what it supplies reads as zeros and the name is reported.
                let alone = try Self.openAt(made.path(o.name))
                #expect(alone.backingNotOpened == o.backing && alone.backingFile == o.backing, "\(o.name)")
                #expect(try alone.read(at: 0, count: 65_536) == [UInt8](repeating: 0, count: 65_536), "\(o.name)")
                #expect(try alone.read(at: 1 << 20, count: 65_536) == [UInt8](repeating: 0x5A, count: 65_536), "\(o.name)")
                #expect(try alone.read(at: 3 << 20, count: 65_536) == [UInt8](repeating: 0, count: 65_536), "\(o.name)")
                #expect(try alone.read(at: 5_246_976 - 2_048, count: 2_048) == [UInt8](repeating: 0, count: 2_048), "\(o.name)")
                #expect(try alone.read(at: 5_246_976, count: 6_144) == [UInt8](repeating: 0x33, count: 6_144), "\(o.name)")
            }
        }
    }

    @Test("an external data file is opened as an extent of the image")
    func externalDataFile() throws {
        let reference = Self.rawDisk()
        try DiskContainerTests.make { made, qemuImg in
            try Data(reference).write(to: URL(fileURLWithPath: made.path("raw.img")))
            for (name, raw) in [("ext.qcow2", "off"), ("extraw.qcow2", "on")] {
                let dataPath = made.path(name + ".data")
                try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "qcow2", "-o", "data_file=\(dataPath),data_file_raw=\(raw)",
                                                    made.path("raw.img"), made.path(name)])
                let disk = try Self.openAt(made.path(name), ContainerFiles(openExtent: { try FileByteSource(path: $0) }))
                #expect(disk.dataFile == dataPath)
                try Self.expectSame(disk, reference, chunk: 1 << 20, name)
                // Without the extent it cannot be read: the error says which file it needs.
                #expect(throws: ContainerError.self) { try Self.openAt(made.path(name)) }
            }
        }
    }

    /// Counts the bytes read through it.
    final class CountingSource: ByteSource {
        let base: any ByteSource
        let bytesRead = Atomic<Int>(0)
        init(_ base: any ByteSource) { self.base = base }
        var size: UInt64 { base.size }
        func read(at offset: UInt64, count: Int) throws -> [UInt8] {
            bytesRead.add(count, ordering: .relaxed)
            return try base.read(at: offset, count: count)
        }
    }

    @Test("a 1 TiB image with a 4 MiB L1 table opens and reads both ends through a few KiB of tables")
    func oneTebibyte() throws {
        try DiskContainerTests.make { made, qemuImg in
            let qemuIO = try #require(ExternalToolTests.tool("qemu-io"), "qemu-io is not installed: apt-get install qemu-utils")
            let path = made.path("huge.qcow2")
            let tib: UInt64 = 1 << 40
            // 4 KiB clusters: each L2 table maps 2 MiB, so the L1 table has 512 Ki entries (4 MiB).
            try ExternalToolTests.run(qemuImg, ["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, "1T"])
            try ExternalToolTests.run(qemuIO, ["-f", "qcow2", "-c", "write -P 0x11 0 64k", "-c", "write -P 0x22 \(tib - 65_536) 65536", path])
            let counting = CountingSource(try FileByteSource(path: path))
            let disk = try QCOW2Disk(file: counting, files: .none)
            #expect(disk.size == tib)
            #expect(try disk.read(at: 0, count: 65_536) == [UInt8](repeating: 0x11, count: 65_536))
            #expect(try disk.read(at: tib - 65_536, count: 65_536) == [UInt8](repeating: 0x22, count: 65_536))
            #expect(try disk.read(at: tib / 2 + 12_345, count: 70_000) == [UInt8](repeating: 0, count: 70_000))
            #expect(try disk.read(at: tib - 65_537, count: 2) == [0, 0x22])
            // The header cluster, three L1 pages, a few L2 slices and the data: not the 4 MiB L1 table.
            let read = counting.bytesRead.load(ordering: .relaxed)
            #expect(read < 256 << 10, "read \(read) bytes")
        }
    }

    // MARK: hostile images

    /// `body` throws a ContainerError; records which error or that none came (never the bytes read).
    static func expectContainerError(_ what: String, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("\(what): no error")
        } catch is ContainerError {
        } catch {
            Issue.record("\(what): \(error), not a ContainerError")
        }
    }

    static func put64(_ value: UInt64, at offset: Int, in bytes: inout [UInt8]) {
        for k in 0..<8 { bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64(k))) }
    }

    static func put32(_ value: UInt32, at offset: Int, in bytes: inout [UInt8]) {
        for k in 0..<4 { bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(k))) }
    }

    @Test("damaged images are ContainerErrors at open or at read, never a crash")
    func hostileImages() throws {
        let reference = Self.rawDisk()
        try DiskContainerTests.make { made, qemuImg in
            try Data(reference).write(to: URL(fileURLWithPath: made.path("raw.img")))
            try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "qcow2", made.path("raw.img"), made.path("v3.qcow2")])
            try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "qcow2", "-c", made.path("raw.img"), made.path("zlib.qcow2")])
            try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd",
                                                made.path("raw.img"), made.path("zstd.qcow2")])
            let v3 = [UInt8](try Data(contentsOf: URL(fileURLWithPath: made.path("v3.qcow2"))))
            let open: ([UInt8]) throws -> QCOW2Disk = { try QCOW2Disk(file: MemoryByteSource($0), files: .none) }
            #expect(try open(v3).size == UInt64(Self.diskSize))
            let l1Offset = Int(v3.be64(40))
            let l2Offset = Int(v3.be64(l1Offset) & QCOW2Disk.offsetMask)
            let beyond = (UInt64(v3.count) + (1 << 30)) & ~0xFFFF

            func expectOpenFails(_ what: String, _ change: (inout [UInt8]) -> Void) {
                var bytes = v3
                change(&bytes)
                Self.expectContainerError(what) { _ = try open(bytes) }
            }
            expectOpenFails("L1 table past the end") { Self.put64(beyond, at: 40, in: &$0) }
            expectOpenFails("L1 table not cluster-aligned") { Self.put64(UInt64(l1Offset + 8), at: 40, in: &$0) }
            expectOpenFails("L1 table offset overflowing") { Self.put64(.max - 7, at: 40, in: &$0) }
            expectOpenFails("encrypted") { Self.put32(2, at: 32, in: &$0) }
            expectOpenFails("unknown incompatible feature") { $0[79] |= 1 << 5 }
            expectOpenFails("cluster_bits 30") { Self.put32(30, at: 20, in: &$0) }
            expectOpenFails("cluster_bits 8") { Self.put32(8, at: 20, in: &$0) }
            expectOpenFails("l1_size 0 for a 64 MiB disk") { Self.put32(0, at: 36, in: &$0) }
            expectOpenFails("virtual size of 2^60") { Self.put64(1 << 60, at: 24, in: &$0) }
            expectOpenFails("version 1") { Self.put32(1, at: 4, in: &$0) }
            expectOpenFails("header_length beyond the cluster") { Self.put32(1 << 20, at: 100, in: &$0) }
            expectOpenFails("zstd type without its feature bit") { $0[104] = 1 }
            expectOpenFails("backing name of 4000 bytes") { Self.put64(512, at: 8, in: &$0); Self.put32(4000, at: 16, in: &$0) }
            let extensions = Int(v3.be32(100))
            expectOpenFails("header extension longer than the cluster") { Self.put32(0x1234, at: extensions, in: &$0); Self.put32(1 << 20, at: extensions + 4, in: &$0) }
            expectOpenFails("not qcow2") { $0[0] = 0 }
            #expect(throws: ContainerError.self) { try open(Array(v3.prefix(100))) }

            func expectReadFails(_ what: String, at offset: UInt64 = 0, _ source: [UInt8], _ change: (inout [UInt8]) -> Void) throws {
                var bytes = source
                change(&bytes)
                let disk = try open(bytes)
                Self.expectContainerError(what) { _ = try disk.read(at: offset, count: 4096) }
            }
            try expectReadFails("L2 entry past the end", v3) { Self.put64(1 << 63 | beyond, at: l2Offset, in: &$0) }
            try expectReadFails("L2 entry not cluster-aligned", v3) { Self.put64(1 << 63 | UInt64(l2Offset + 512), at: l2Offset, in: &$0) }
            try expectReadFails("L2 table past the end", v3) { Self.put64(1 << 63 | beyond, at: l1Offset, in: &$0) }
            try expectReadFails("L2 table not cluster-aligned", v3) { Self.put64(1 << 63 | UInt64(l2Offset + 4096), at: l1Offset, in: &$0) }

            for name in ["zlib.qcow2", "zstd.qcow2"] {
                let image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: made.path(name))))
                let l1 = Int(image.be64(40))
                let l2 = Int(image.be64(l1) & QCOW2Disk.offsetMask)
                // The text at 10 MiB compresses (random clusters are stored as they are).
                let textCluster: UInt64 = 10 << 20
                let at = l2 + Int(textCluster >> 16) * 8
                let entry = image.be64(at)
                #expect(entry & QCOW2Disk.compressedBit != 0, "\(name): the text's cluster is compressed")
                let clusterBits = Int(image.be32(20))
                let dataOffset = Int(entry & ((1 << UInt64(62 - (clusterBits - 8))) - 1))
                try expectReadFails("\(name): garbage compressed data", at: textCluster, image) { bytes in
                    for i in dataOffset..<min(dataOffset + 4096, bytes.count) { bytes[i] = UInt8(truncatingIfNeeded: i &* 131) }
                }
                try expectReadFails("\(name): compressed data cut to one byte", at: textCluster, image) { bytes in
                    Self.put64(1 << 62 | UInt64(bytes.count - 1), at: at, in: &bytes)
                }
                try expectReadFails("\(name): compressed data past the end", at: textCluster, image) { bytes in
                    Self.put64(1 << 62 | beyond, at: at, in: &bytes)
                }
            }

            // Extended L2 entries: a subcluster both allocated and zero, or allocated without a host cluster.
            try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "qcow2", "-o", "extended_l2=on", made.path("raw.img"), made.path("ext.qcow2")])
            let ext = [UInt8](try Data(contentsOf: URL(fileURLWithPath: made.path("ext.qcow2"))))
            let extL2 = Int(ext.be64(Int(ext.be64(40))) & QCOW2Disk.offsetMask)
            #expect(try open(ext).read(at: 0, count: 16) == Array(reference.prefix(16)))
            try expectReadFails("subcluster allocated and zero", ext) { Self.put64(1 << 32 | 1, at: extL2 + 8, in: &$0) }
            try expectReadFails("subclusters allocated without a cluster", ext) { Self.put64(0, at: extL2, in: &$0) }
        }
    }

    @Test("random damage to a small image never traps")
    func randomDamage() throws {
        let reference = Array(Self.rawDisk().prefix(1 << 20))
        try DiskContainerTests.make { made, qemuImg in
            try Data(reference).write(to: URL(fileURLWithPath: made.path("small.raw")))
            for (name, options) in [("s512.qcow2", ["-c", "-o", "cluster_size=512"]), ("ext.qcow2", ["-o", "extended_l2=on,cluster_size=16k"])] {
                try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "qcow2"] + options + [made.path("small.raw"), made.path(name)])
                let image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: made.path(name))))
                var random = SeededGenerator(seed: 7)
                for _ in 0..<300 {
                    var bytes = image
                    for _ in 0..<(1 + random.next() % 8) {
                        // Mostly the header and the tables, which sit at the start.
                        let span = random.next() % 4 == 0 ? bytes.count : min(bytes.count, 8192)
                        bytes[Int(random.next() % UInt64(span))] = UInt8(truncatingIfNeeded: random.next())
                    }
                    guard let disk = try? QCOW2Disk(file: MemoryByteSource(bytes), files: .none) else { continue }
                    var offset: UInt64 = 0
                    while offset < min(disk.size, 1 << 20) {
                        _ = try? disk.read(at: offset, count: Int(min(65_536, disk.size - offset)))
                        offset += 65_536
                    }
                }
            }
        }
    }
}
