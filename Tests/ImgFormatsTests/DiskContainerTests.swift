import Foundation
import Testing

@testable import ImgFormats

/// Every container format qemu-img writes, identified from its header with the size, cluster,
/// compression and backing file qemu-img put there (`qemu-img info --output=json` is the reference).
@Suite("Disk containers against qemu-img")
struct DiskContainerTests {
    struct Made {
        let directory: String
        func path(_ name: String) -> String { directory + "/" + name }
    }

    static func make(_ body: (Made, String) throws -> Void) throws {
        let qemuImg = try #require(ExternalToolTests.tool("qemu-img"), "qemu-img is not installed: apt-get install qemu-utils")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("imgtool-containers-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let made = Made(directory: directory)
        FileManager.default.createFile(atPath: made.path("raw.img"), contents: nil)
        try FileHandle(forWritingAtPath: made.path("raw.img"))!.truncate(atOffset: 64 << 20)
        try body(made, qemuImg)
    }

    /// qemu-img's reading, with the format given as qemu is always given it (a fixed VHD probes as raw).
    static func info(_ qemuImg: String, _ path: String, format: String) throws -> [String: Any] {
        let data = try ExternalToolTests.run(qemuImg, ["info", "-f", format, "--output=json", path])
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test("qcow2 v2 and v3, zlib and zstd, with a backing file; VMDK sparse, streamOptimized and flat; VHD fixed and dynamic; VHDX")
    func everyFormatQemuImgWrites() throws {
        try Self.make { made, qemuImg in
            let cases: [(name: String, args: [String], format: DiskContainer.Format, variant: String?, compression: String?)] = [
                ("v2.qcow2", ["-O", "qcow2", "-o", "compat=0.10"], .qcow2, nil, "zlib"),
                ("v3.qcow2", ["-O", "qcow2"], .qcow2, nil, "zlib"),
                ("zstd.qcow2", ["-O", "qcow2", "-c", "-o", "compression_type=zstd"], .qcow2, nil, "zstd"),
                ("sparse.vmdk", ["-O", "vmdk"], .vmdk, "monolithicSparse", nil),
                ("stream.vmdk", ["-O", "vmdk", "-o", "subformat=streamOptimized"], .vmdk, "streamOptimized", "deflate"),
                ("flat.vmdk", ["-O", "vmdk", "-o", "subformat=monolithicFlat"], .vmdk, "monolithicFlat", nil),
                ("dynamic.vhd", ["-O", "vpc"], .vhd, "dynamic", nil),
                ("fixed.vhd", ["-O", "vpc", "-o", "subformat=fixed"], .vhd, "fixed", nil),
                ("disk.vhdx", ["-O", "vhdx"], .vhdx, nil, nil),
            ]
            for c in cases {
                try ExternalToolTests.run(qemuImg, ["convert", "-f", "raw"] + c.args + [made.path("raw.img"), made.path(c.name)])
                let container = try #require(try DiskContainer.identify(FileByteSource(path: made.path(c.name))), "\(c.name)")
                let reference = try Self.info(qemuImg, made.path(c.name), format: try #require(c.format.qemuDriver))
                #expect(container.format == c.format && container.variant == c.variant, "\(c.name): \(container)")
                #expect(container.format.qemuDriver == reference["format"] as? String, "\(c.name)")
                #expect(container.virtualSize.map { Int($0) } == reference["virtual-size"] as? Int, "\(c.name): \(container)")
                if let cluster = reference["cluster-size"] as? Int {
                    #expect(container.clusterSize.map { Int($0) } == cluster, "\(c.name): \(container)")
                }
                #expect(container.compression == c.compression, "\(c.name): \(container)")
                #expect(container.backingFile == nil && !container.encrypted, "\(c.name)")
            }
            try ExternalToolTests.run(qemuImg, ["create", "-q", "-f", "qcow2", "-b", "v3.qcow2", "-F", "qcow2", made.path("overlay.qcow2")])
            let overlay = try #require(try DiskContainer.identify(FileByteSource(path: made.path("overlay.qcow2"))))
            #expect(overlay.backingFile == "v3.qcow2" && overlay.virtualSize == 64 << 20)
            // A raw image is no container.
            #expect(try DiskContainer.identify(FileByteSource(path: made.path("raw.img"))) == nil)
        }
    }

    @Test func hostileHeadersAreBounded() throws {
        // A qcow2 header claiming a 4 GiB backing name at an offset past the file, and cluster bits of 63.
        var q = [UInt8](repeating: 0, count: 512)
        q.replaceSubrange(0..<4, with: [0x51, 0x46, 0x49, 0xFB])
        q[7] = 3
        q.replaceSubrange(8..<16, with: [0, 0, 0, 0, 0, 0, 0x10, 0])
        q.replaceSubrange(16..<20, with: [0xFF, 0xFF, 0xFF, 0xFF])
        q[23] = 63
        let c = try #require(try DiskContainer.identify(MemoryByteSource(q)))
        #expect(c.backingFile == nil && c.clusterSize == nil)
        // Truncated headers of each magic still identify, with what is there.
        for magic in [[0x51, 0x46, 0x49, 0xFB], Array("KDMV".utf8), Array("vhdxfile".utf8), Array("# Disk Descriptor".utf8)] as [[UInt8]] {
            #expect(try DiskContainer.identify(MemoryByteSource(magic)) != nil)
        }
    }
}
