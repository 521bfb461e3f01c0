import Foundation
import Testing

@testable import ImgFormats

/// VHDDisk, VHDXDisk and VMDKDisk read every variant qemu-img writes exactly as qemu-img does
/// (`qemu-img convert -O raw` and `qemu-img info` are the reference), reach parents through
/// `ContainerFiles.openBacking`, and turn hostile bytes into a ContainerError.
@Suite("VHD, VHDX and VMDK readers against qemu-img")
struct VirtualDiskReaderTests {
    typealias Made = DiskContainerTests.Made

    /// A raw disk of `bytes` with deterministic pseudo-random data in a few places (a block's
    /// start, runs across 1 MiB and 2 MiB boundaries, the last sector) and long zero runs between.
    static func writeRaw(_ path: String, bytes: UInt64) throws {
        FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: path))
        defer { try? handle.close() }
        try handle.truncate(atOffset: bytes)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let places: [(UInt64, Int)] = [(0, 70_000), ((1 << 20) - 100, 300), ((5 << 20) + 12_345, 200_000),
                                       ((32 << 20) - 3000, 9000), (bytes - 512, 512)]
        for (offset, count) in places where offset + UInt64(count) <= bytes {
            var data = [UInt8](repeating: 0, count: count)
            for i in 0..<count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                data[i] = UInt8(truncatingIfNeeded: state) | 1
            }
            try handle.seek(toOffset: offset)
            handle.write(Data(data))
        }
    }

    static func files(_ made: Made, parents: Bool = true) -> ContainerFiles {
        let directory = made.directory
        let openExtent: @Sendable (String) throws -> any ByteSource = { name in try FileByteSource(path: directory + "/" + name) }
        guard parents else { return ContainerFiles(openExtent: openExtent) }
        return ContainerFiles(openExtent: openExtent, openBacking: { name in
            let path = directory + "/" + name
            let file = try FileByteSource(path: path)
            switch try DiskContainer.identify(file)?.format {
            case .vmdk: return try VMDKDisk(file: file, files: ContainerFiles(openExtent: openExtent))
            case .vhd: return try VHDDisk(file: file, files: .none)
            case .vhdx: return try VHDXDisk(file: file, files: .none)
            default: return file
            }
        })
    }

    /// Reads all of `disk` in 4 MiB pieces and compares it with `reference`, zeros past its end.
    static func expectSameBytes(_ disk: any ByteSource, _ reference: any ByteSource, _ label: String) throws {
        var offset: UInt64 = 0
        let piece: UInt64 = 4 << 20
        while offset < disk.size {
            let count = Int(min(piece, disk.size - offset))
            let got = try disk.read(at: offset, count: count)
            var want = offset < reference.size ? try reference.read(at: offset, count: Int(min(UInt64(count), reference.size - offset))) : []
            want += [UInt8](repeating: 0, count: count - want.count)
            guard Self.same(got, want) else {
                let first = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? 0
                Issue.record("\(label): differs from the reference at byte \(offset + UInt64(first))")
                return
            }
            offset += UInt64(count)
        }
        // Small reads at odd offsets across sector, grain and block boundaries.
        let odd: [(UInt64, Int)] = [(1, 511), ((1 << 20) - 100, 300), ((64 << 10) - 7, 70_000), ((2 << 20) - 513, 1027),
                                    ((32 << 20) - 3001, 9003), (disk.size - 513, 513), (disk.size - 1, 1)]
        for (start, count) in odd where start + UInt64(count) <= disk.size {
            var want = start < reference.size ? try reference.read(at: start, count: Int(min(UInt64(count), reference.size - start))) : []
            want += [UInt8](repeating: 0, count: count - want.count)
            #expect(try disk.read(at: start, count: count) == want, "\(label): \(count) bytes at \(start)")
        }
        #expect(throws: (any Error).self, "\(label): a read past the end") { try disk.read(at: disk.size - 1, count: 2) }
    }

    /// Byte equality through memcmp: Array's == is element by element in a debug build.
    static func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in a.isEmpty || memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } }
    }

    static func open(_ path: String, format: DiskContainer.Format, files: ContainerFiles) throws -> any ByteSource {
        let file = try FileByteSource(path: path)
        switch format {
        case .vhd: return try VHDDisk(file: file, files: files)
        case .vhdx: return try VHDXDisk(file: file, files: files)
        case .vmdk: return try VMDKDisk(file: file, files: files)
        default: throw ContainerError("no reader for \(format)")
        }
    }

    @Test("every VHD, VHDX and VMDK variant qemu-img writes reads as the raw image it came from")
    func everyVariantReadsAsRaw() throws {
        try DiskContainerTests.make { made, qemuImg in
            try Self.writeRaw(made.path("raw.img"), bytes: 64 << 20)
            let raw = try FileByteSource(path: made.path("raw.img"))
            let cases: [(name: String, args: [String], format: DiskContainer.Format)] = [
                ("dynamic.vhd", ["-O", "vpc"], .vhd),
                ("fixed.vhd", ["-O", "vpc", "-o", "subformat=fixed"], .vhd),
                ("forced.vhd", ["-O", "vpc", "-o", "force_size=on"], .vhd),
                ("dynamic.vhdx", ["-O", "vhdx"], .vhdx),
                ("small-blocks.vhdx", ["-O", "vhdx", "-o", "block_size=1M"], .vhdx),
                ("fixed.vhdx", ["-O", "vhdx", "-o", "subformat=fixed"], .vhdx),
                ("sparse.vmdk", ["-O", "vmdk"], .vmdk),
                ("zeroed.vmdk", ["-O", "vmdk", "-o", "zeroed_grain=on"], .vmdk),
                ("stream.vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"], .vmdk),
                ("flat.vmdk", ["-O", "vmdk", "-o", "subformat=monolithicFlat"], .vmdk),
                ("split-sparse.vmdk", ["-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"], .vmdk),
                ("split-flat.vmdk", ["-O", "vmdk", "-o", "subformat=twoGbMaxExtentFlat"], .vmdk),
            ]
            for c in cases {
                try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw"] + c.args + [made.path("raw.img"), made.path(c.name)])
                let disk = try Self.open(made.path(c.name), format: c.format, files: Self.files(made))
                let info = try DiskContainerTests.info(qemuImg, made.path(c.name), format: try #require(c.format.qemuDriver))
                #expect(Int(disk.size) == info["virtual-size"] as? Int, "\(c.name): size \(disk.size)")
                try Self.expectSameBytes(disk, raw, c.name)
            }
        }
    }

    @Test("a VMDK overlay reads its own sectors and its parent's through openBacking; without it, names the parent")
    func vmdkOverlay() throws {
        try DiskContainerTests.make { made, qemuImg in
            let qemuIO = try #require(ExternalToolTests.tool("qemu-io"), "qemu-io is not installed: apt-get install qemu-utils")
            try Self.writeRaw(made.path("raw.img"), bytes: 64 << 20)
            for (subformat, name) in [("monolithicSparse", "overlay.vmdk"), ("twoGbMaxExtentSparse", "split-overlay.vmdk")] {
                try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "vmdk", made.path("raw.img"), made.path("base.vmdk")])
                try ExternalToolTests.run(qemuImg, ["create", "-q", "-f", "vmdk", "-o", "subformat=\(subformat)", "-b", "base.vmdk", "-F", "vmdk", made.path(name)])
                for write in ["write -P 0x5a 1M 4k", "write -P 0x33 33554000 70000", "write -P 0 5M 512"] {
                    try ExternalToolTests.run(qemuIO, ["-f", "vmdk", "-c", write, made.path(name)])
                }
                try ExternalToolTests.run(qemuImg, ["convert", "-f", "vmdk", "-O", "raw", made.path(name), made.path("overlay.raw")])
                let disk = try #require(try Self.open(made.path(name), format: .vmdk, files: Self.files(made)) as? VMDKDisk)
                #expect(disk.parentName == "base.vmdk" && disk.backingNotOpened == nil, "\(name)")
                try Self.expectSameBytes(disk, try FileByteSource(path: made.path("overlay.raw")), name)

                let alone = try #require(try Self.open(made.path(name), format: .vmdk, files: Self.files(made, parents: false)) as? VMDKDisk)
                #expect(alone.backingNotOpened == "base.vmdk", "\(name)")
                #expect(try alone.read(at: 1 << 20, count: 4096) == [UInt8](repeating: 0x5A, count: 4096))
                #expect(try alone.read(at: 0, count: 4096) == [UInt8](repeating: 0, count: 4096), "the parent's sectors read as zeros")
            }
        }
    }

    @Test("a differencing VHD (qemu-img cannot write one: made by patching a dynamic one) reads bitmap-clear sectors from its parent")
    func differencingVHD() throws {
        try DiskContainerTests.make { made, qemuImg in
            try Self.writeRaw(made.path("raw.img"), bytes: 8 << 20)
            try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw", "-O", "vpc", made.path("raw.img"), made.path("child.vhd")])
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: made.path("child.vhd"))))
            let raw = [UInt8](try Data(contentsOf: URL(fileURLWithPath: made.path("raw.img"))))
            // The footer (both copies) says differencing; the header names the parent.
            for footer in [0, bytes.count - 512] {
                bytes[footer + 63] = 4
                bytes.replaceSubrange((footer + 64)..<(footer + 68), with: [0, 0, 0, 0])
                let sum = ~bytes[footer..<(footer + 512)].reduce(UInt32(0)) { $0 &+ UInt32($1) }
                bytes.replaceSubrange((footer + 64)..<(footer + 68), with: withUnsafeBytes(of: sum.bigEndian, Array.init))
            }
            let header = Int(bytes.be64(16))
            let name = Array("parent.img".utf16).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
            bytes.replaceSubrange((header + 64)..<(header + 64 + name.count), with: name)
            // Clear the bitmap bits of sectors 3 and 8..15 of block 0: they come from the parent.
            let bat = Int(bytes.be64(header + 16)), block0 = Int(bytes.be32(bat)) * 512
            #expect(bytes.be32(bat) != 0xFFFF_FFFF && bytes.be32(bat + 4) == 0xFFFF_FFFF, "block 0 has data, block 1 none")
            bytes[block0] = 0xEF
            bytes[block0 + 1] = 0x00
            try Data(bytes).write(to: URL(fileURLWithPath: made.path("child.vhd")))

            var parentBytes: [UInt8] = []
            for sector in 0..<(raw.count / 512) { parentBytes += [UInt8](repeating: UInt8(truncatingIfNeeded: sector &* 37 &+ 11), count: 512) }
            let parentSource = MemoryByteSource(parentBytes)
            let disk = try VHDDisk(file: FileByteSource(path: made.path("child.vhd")),
                                   files: ContainerFiles(openExtent: { _ in parentSource }, openBacking: { name in
                                       #expect(name == "parent.img")
                                       return parentSource
                                   }))
            #expect(disk.diskType == "differencing" && disk.parentName == "parent.img" && disk.backingNotOpened == nil)
            // Expected: each allocated block's own bytes but for its cleared sectors, the parent's elsewhere.
            var expected = parentBytes + [UInt8](repeating: 0, count: Int(disk.size) - parentBytes.count)
            let blockBytes = 2 << 20
            for block in 0..<(raw.count / blockBytes) where bytes.be32(bat + 4 * block) != 0xFFFF_FFFF {
                let start = block * blockBytes
                expected.replaceSubrange(start..<(start + blockBytes), with: raw[start..<(start + blockBytes)])
            }
            for sector in [3] + Array(8..<16) {
                expected.replaceSubrange((sector * 512)..<(sector * 512 + 512), with: parentBytes[(sector * 512)..<(sector * 512 + 512)])
            }
            try Self.expectSameBytes(disk, MemoryByteSource(expected), "differencing VHD")
            let alone = try VHDDisk(file: FileByteSource(path: made.path("child.vhd")), files: .none)
            #expect(alone.backingNotOpened == "parent.img")
            #expect(try alone.read(at: 3 * 512, count: 512) == [UInt8](repeating: 0, count: 512))
        }
    }

    @Test("1 TiB disks open and read at their end without reading their tables whole")
    func hugeDisksAreReadOnDemand() throws {
        try DiskContainerTests.make { made, qemuImg in
            for (name, format, args) in [("big.vhd", DiskContainer.Format.vhd, ["-f", "vpc"]), ("big.vhdx", .vhdx, ["-f", "vhdx"]),
                                         ("big.vmdk", .vmdk, ["-f", "vmdk"])] {
                try ExternalToolTests.run(qemuImg, ["create", "-q"] + args + [made.path(name), "1T"])
                let disk = try Self.open(made.path(name), format: format, files: Self.files(made))
                let info = try DiskContainerTests.info(qemuImg, made.path(name), format: try #require(format.qemuDriver))
                #expect(Int(disk.size) == info["virtual-size"] as? Int, "\(name)")
                #expect(try disk.read(at: disk.size - (1 << 20), count: 1 << 20) == [UInt8](repeating: 0, count: 1 << 20), "\(name)")
            }
        }
    }

    /// Opening and reading everything either works or throws; the caller says which it expects.
    static func openAndReadAll(_ bytes: [UInt8], _ format: DiskContainer.Format) throws {
        let file = MemoryByteSource(bytes)
        let disk: any ByteSource
        switch format {
        case .vhd: disk = try VHDDisk(file: file, files: .none)
        case .vhdx: disk = try VHDXDisk(file: file, files: .none)
        default: disk = try VMDKDisk(file: file, files: .none)
        }
        var offset: UInt64 = 0
        while offset < disk.size {
            let count = Int(min(1 << 20, disk.size - offset))
            _ = try disk.read(at: offset, count: count)
            offset += UInt64(count)
        }
    }

    @Test("truncated files, tables pointing outside the file, absurd sizes and garbage grains are ContainerErrors")
    func hostileBytes() throws {
        try DiskContainerTests.make { made, qemuImg in
            try Self.writeRaw(made.path("raw.img"), bytes: 8 << 20)
            var images: [DiskContainer.Format: [UInt8]] = [:]
            for (name, format, args) in [("d.vhd", DiskContainer.Format.vhd, ["-O", "vpc"]), ("d.vhdx", .vhdx, ["-O", "vhdx"]),
                                         ("d.vmdk", .vmdk, ["-O", "vmdk"]), ("s.vmdk", .ewf, ["-O", "vmdk", "-o", "subformat=streamOptimized"])] {
                try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw"] + args + [made.path("raw.img"), made.path(name)])
                images[format] = [UInt8](try Data(contentsOf: URL(fileURLWithPath: made.path(name))))
            }
            let vhd = try #require(images[.vhd]), vhdx = try #require(images[.vhdx]), vmdk = try #require(images[.vmdk])
            let stream = try #require(images[.ewf])

            // Truncated: nothing, a sector, a header's worth, half.
            for (format, bytes) in [(DiskContainer.Format.vhd, vhd), (.vhdx, vhdx), (.vmdk, vmdk), (.vmdk, stream)] {
                for length in [0, 511, 4096, bytes.count / 2] {
                    #expect(throws: (any Error).self, "\(format) cut to \(length)") { try Self.openAndReadAll(Array(bytes.prefix(length)), format) }
                }
                try Self.openAndReadAll(bytes, format)  // and the whole file reads
            }

            // VHD: a BAT entry past the end of the file; a block size that is no power of two.
            let header = Int(vhd.be64(16)), bat = Int(vhd.be64(header + 16))
            var badBAT = vhd
            badBAT.replaceSubrange(bat..<(bat + 4), with: [0x00, 0xFF, 0xFF, 0x00])
            #expect(throws: ContainerError.self) { try Self.openAndReadAll(badBAT, .vhd) }
            var badBlock = vhd
            badBlock.replaceSubrange((header + 32)..<(header + 36), with: [0, 0x20, 0, 1])
            #expect(throws: ContainerError.self) { try Self.openAndReadAll(badBlock, .vhd) }

            // VHDX: a BAT entry past the end of the file; a log to replay (with valid CRCs).
            let disk = try VHDXDisk(file: MemoryByteSource(vhdx), files: .none)
            #expect(disk.blockSize > 0)
            let regions = 192 << 10
            let batEntry = try #require((0..<Int(vhdx.le32(regions + 8))).map { regions + 16 + 32 * $0 }
                .first { GUID(bytes: vhdx[$0..<($0 + 16)]) == VHDXDisk.batRegion })
            let batOffset = Int(vhdx.le64(batEntry + 16))
            var badVHDXBAT = vhdx
            badVHDXBAT.replaceSubrange(batOffset..<(batOffset + 8), with: withUnsafeBytes(of: (UInt64(1 << 40) << 20 | 6).littleEndian, Array.init))
            #expect(throws: ContainerError.self) { try Self.openAndReadAll(badVHDXBAT, .vhdx) }
            var logged = vhdx
            for offset in [64 << 10, 128 << 10] {
                logged[offset + 48] = 1
                logged.replaceSubrange((offset + 4)..<(offset + 8), with: [0, 0, 0, 0])
                let crc = CRC32C.checksum(logged[offset..<(offset + 4096)])
                logged.replaceSubrange((offset + 4)..<(offset + 8), with: withUnsafeBytes(of: crc.littleEndian, Array.init))
            }
            #expect { try Self.openAndReadAll(logged, .vhdx) } throws: { error in
                (error as? ContainerError)?.description.contains("log") == true
            }

            // VMDK: a grain directory offset that overflows sectors-to-bytes; a grain table entry past the end.
            var overflow = vmdk
            overflow.replaceSubrange(56..<64, with: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
            #expect(throws: ContainerError.self) { try Self.openAndReadAll(overflow, .vmdk) }
            let table = Int(vmdk.le32(Int(vmdk.le64(56)) * 512)) * 512
            var badGrain = vmdk
            badGrain.replaceSubrange(table..<(table + 4), with: [0xFF, 0xFF, 0xFF, 0x0F])
            #expect(throws: ContainerError.self) { try Self.openAndReadAll(badGrain, .vmdk) }
            var hugeCapacity = vmdk
            hugeCapacity.replaceSubrange(12..<20, with: [0, 0, 0, 0, 0, 0, 0, 0x40])
            #expect(throws: ContainerError.self) { try Self.openAndReadAll(hugeCapacity, .vmdk) }

            // streamOptimized: the first grain's compressed bytes made garbage.
            let firstGrain = Int(stream.le64(64)) * 512  // the overhead: grains start here
            var garbage = stream
            for i in (firstGrain + 12)..<(firstGrain + 200) { garbage[i] = UInt8(truncatingIfNeeded: i &* 151) }
            #expect(throws: ContainerError.self) { try Self.openAndReadAll(garbage, .vmdk) }
            var hugeMarker = stream
            hugeMarker.replaceSubrange((firstGrain + 8)..<(firstGrain + 12), with: [0xFF, 0xFF, 0xFF, 0x7F])
            #expect(throws: ContainerError.self) { try Self.openAndReadAll(hugeMarker, .vmdk) }
        }
    }

    @Test func crc32cCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }
}
