import Foundation
import TestSupport
import Testing

@testable import ImgFormats

/// The fuzzer's seed corpus (TestImages/make-corpus.sh) read by the parsers: each seed must still
/// be what it was written to be, or the fuzzer would start from the wrong place. Crash inputs the
/// fuzzer finds go in Fuzz/regressions/ and are replayed here with the fuzzer's invariants.
@Suite("Fuzz corpus")
struct FuzzCorpusTests {
    static let corpus = "\(repositoryRoot)/TestImages/corpus/formats"
    static let regressions = "\(repositoryRoot)/Fuzz/regressions"

    static func read(_ path: String) throws -> [UInt8] {
        let source = try FileByteSource(path: path)
        return try source.read(at: 0, count: Int(source.size))
    }

    static func files(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { !$0.hasPrefix(".") && $0 != "README.md" }.sorted().map { "\(directory)/\($0)" }
    }

    @Test(arguments: [
        ("mbr-ebr-chain.bin", PartitionTable.Kind.dos, [1, 2, 5, 6, 7]),
        ("mbr-ebr-loop.bin", .dos, [1, 5]),
        ("gpt-128-entries.bin", .gpt, [1, 2]),
        ("gpt-4-entries.bin", .gpt, [1, 2]),
        ("gpt-4k-sectors.bin", .gpt, [1]),
        ("gpt-hybrid-mbr.bin", .gpt, [1, 2]),
    ])
    func tableSeeds(name: String, kind: PartitionTable.Kind, numbers: [Int]) throws {
        let table = try #require(try PartitionTable.read(from: MemoryByteSource(try Self.read("\(Self.corpus)/\(name)"))))
        #expect(table.kind == kind)
        #expect(table.partitions.map(\.number) == numbers)
    }

    @Test func seedFindings() throws {
        func table(_ name: String) throws -> PartitionTable {
            try #require(try PartitionTable.read(from: MemoryByteSource(try Self.read("\(Self.corpus)/\(name)"))))
        }
        #expect(try table("mbr-ebr-chain.bin").findings.isEmpty)
        #expect(try table("gpt-4-entries.bin").findings.isEmpty)
        #expect(try table("gpt-4k-sectors.bin").sectorSize == 4096)
        #expect(try table("mbr-ebr-loop.bin").findings.contains { $0.message.contains("a loop") })
        #expect(try table("gpt-hybrid-mbr.bin").findings.contains { $0.message.contains("hybrid MBR") })
    }

    @Test(arguments: [
        ("grub2-boot-img.bin", BootCode.Kind.grub2),
        ("grub-legacy-stage1.bin", .grubLegacy),
        ("syslinux-gptmbr.bin", .syslinux),
        ("zeroed.bin", .none),
    ])
    func bootCodeSeeds(name: String, kind: BootCode.Kind) throws {
        let path = "\(Self.corpus)/\(name)"
        try #require(FileManager.default.fileExists(atPath: path), "run TestImages/make-corpus.sh")
        #expect(BootCode.identify(sector0: try Self.read(path)).kind == kind)
    }

    @Test func luksSeeds() throws {
        let one = try #require(try LUKSHeader.read(MemoryByteSource(try Self.read("\(Self.corpus)/luks1-header.bin")), offset: 0))
        #expect(one == LUKSHeader(version: 1, uuid: "9677f01f-77e5-4d28-8783-89a9e554635d", cipher: "aes-xts-plain64", keySlots: [0],
                                  payloadOffset: 4096 * 512))
        let two = try #require(try LUKSHeader.read(MemoryByteSource(try Self.read("\(Self.corpus)/luks2-header.bin")), offset: 0))
        #expect(two == LUKSHeader(version: 2, uuid: "f77ebc6d-55d8-440e-822a-073d7fe0db9c", cipher: "aes-xts-plain64", keySlots: [0],
                                  payloadOffset: 16 << 20))
    }

    @Test func lvmSeed() throws {
        let bytes = try Self.read("\(Self.corpus)/lvm2-pv.bin")
        let pv = try #require(try LVMPhysicalVolume.read(MemoryByteSource(bytes), offset: 0, length: UInt64(bytes.count)))
        #expect(pv.uuid == "TpMSoD-bdUV-OFCP-E4pa-ik1S-w0sG-GofWx5" && pv.volumeGroup == "vgtest" && pv.extentSize == 4 << 20)
        #expect(pv.logicalVolumes.map(\.name) == ["root", "swap"] && pv.findings.isEmpty)
        // root has a gap (extents 0-5, then 8-9): not one run; swap is extents 6-7 after the 1 MiB pe_start.
        #expect(pv.extent(of: pv.logicalVolumes[0]) == nil)
        let swap = try #require(pv.extent(of: pv.logicalVolumes[1]))
        #expect(swap.offset == (1 << 20) + 6 * (4 << 20) && swap.length == 8 << 20)
    }

    @Test func containerSeeds() throws {
        func identify(_ name: String) throws -> DiskContainer? {
            try DiskContainer.identify(MemoryByteSource(try Self.read("\(Self.corpus)/\(name)")))
        }
        #expect(try identify("qcow2-header.bin") == DiskContainer(format: .qcow2, version: 3, virtualSize: 64 << 20,
                                                                  clusterSize: 65536, compression: "zstd", backingFile: "base.img"))
        let vmdk = try #require(try identify("vmdk-sparse-header.bin"))
        #expect(vmdk.variant == "streamOptimized" && vmdk.compression == "deflate" && vmdk.virtualSize == 64 << 20)
        let vhd = try #require(try identify("vhd-dynamic.bin"))
        #expect(vhd.variant == "dynamic" && vhd.clusterSize == 2 << 20 && vhd.virtualSize == 64 << 20)
    }

    @Test func appleMapBSDLabelAndRockRidgeSeeds() throws {
        let apm = try #require(try PartitionTable.read(from: MemoryByteSource(try Self.read("\(Self.corpus)/apm-map.bin"))))
        #expect(apm.kind == .mac && apm.partitions.map(\.apmType) == ["Apple_partition_map", "Apple_HFS", "Apple_Free"])
        let bsd = try #require(try PartitionTable.read(from: MemoryByteSource(try Self.read("\(Self.corpus)/mbr-bsd-label.bin"))))
        #expect(bsd.partitions.map(\.number) == [1, 5, 6] && bsd.partitions.last?.bsdType == 1)
        let directory = try Self.read("\(Self.corpus)/iso9660-rock-ridge-dir.bin")
        #expect(ISO9660Volume.records(directory).map(\.name) == ["normal.mod"])
    }

    /// Every seed and every saved crash input, through the checks the fuzzer makes.
    @Test func seedsAndRegressionsKeepInvariants() throws {
        let paths = Self.files(in: Self.corpus) + Self.files(in: Self.regressions)
        #expect(paths.count >= 10)
        for path in paths {
            let bytes = try Self.read(path)
            let source = MemoryByteSource(bytes)
            _ = BootCode.identify(sector0: Array(bytes.prefix(512)))
            // The newer parsers of the fuzz target: never a trap (a crash input here traps the test).
            _ = try DiskContainer.identify(source)
            _ = try LVMPhysicalVolume.read(source, offset: 0, length: source.size)
            _ = try LUKSHeader.read(source, offset: 0)
            _ = ResponseFrame.decode(bytes)
            for block in [0, ISO9660Volume.primaryDescriptorBlock] {
                if let volume = try? ISO9660Volume(source, descriptorBlock: block) { Self.expectListedNamesAreFound(volume, path) }
            }
            guard let table = try PartitionTable.read(from: source) else { continue }
            let total = source.size / UInt64(table.sectorSize)
            let free = table.unallocated(totalSectors: total)
            #expect(free.allSatisfy { $0.count > 0 && $0.start >= 1 && $0.end <= total }, "\(path): \(free)")
            #expect(zip(free, free.dropFirst()).allSatisfy { $0.end < $1.start }, "\(path): \(free)")
        }
    }

    /// The fuzzer's ISO 9660 invariant, on the root directory: every name a listing returns that a
    /// path can spell (no scalar "/") is found again by lookup.
    static func expectListedNamesAreFound(_ volume: ISO9660Volume, _ file: String) {
        for record in (try? volume.list(volume.root)) ?? [] where !record.name.isEmpty && !record.name.unicodeScalars.contains("/") {
            #expect((try? volume.lookup("/" + record.name)) != nil, "\(file): /\(record.name) is listed but not found")
        }
    }
}
