import Foundation
import ImgSystem
import TestSupport
import Testing

@testable import ImgFormats

/// isolinux.bin's boot info table and checksum, and the isohybrid MBR's pointer to it: on bytes
/// built here, on Debian's isolinux.bin, and on an isohybrid ISO that xorriso builds.
@Suite("ISOLINUX boot info table")
struct IsolinuxBootInfoTableTests {
    static let isolinuxBin = "/usr/lib/ISOLINUX/isolinux.bin"
    static let isohdpfx = "/usr/lib/ISOLINUX/isohdpfx.bin"

    @Test func decodesTheTableAtByte8() throws {
        var b = ImageBuilder(sectors: 0)
        b.bytes = [UInt8](repeating: 0, count: 24)
        b.put32(17, at: 8)
        b.put32(40, at: 12)
        b.put32(38912, at: 16)
        b.put32(0xDEAD_BEEF, at: 20)
        let table = try #require(IsolinuxBootInfoTable(b.bytes))
        #expect(table == IsolinuxBootInfoTable(b.bytes + [1, 2, 3]))
        #expect(table.primaryVolumeDescriptorBlock == 17 && table.descriptorBlock == 17)
        #expect(table.fileBlock == 40 && table.length == 38912 && table.checksum == 0xDEAD_BEEF)
        b.put32(0, at: 8)
        #expect(IsolinuxBootInfoTable(b.bytes)?.descriptorBlock == 16, "0 means the standard place")
        #expect(IsolinuxBootInfoTable(Array(b.bytes.prefix(23))) == nil)
    }

    /// mkisofs' sum: little-endian words from byte 64, a short last word padded with zeros, wrapping.
    @Test func checksumFromByte64() {
        let head = [UInt8](repeating: 0xAA, count: 64)  // not summed
        #expect(IsolinuxBootInfoTable.checksum(head) == 0)
        #expect(IsolinuxBootInfoTable.checksum(head + [1, 0, 0, 0, 2, 0, 0, 0]) == 3)
        #expect(IsolinuxBootInfoTable.checksum(head + [1, 0, 0, 0, 0x10, 0x20]) == 0x2011)
        #expect(IsolinuxBootInfoTable.checksum(head + [0xFF, 0xFF, 0xFF, 0xFF, 2]) == 1)
        #expect(IsolinuxBootInfoTable.checksum([1, 2, 3]) == 0)
    }

    @Test func hybridMBRPointerAndSignature() {
        var mbr = ImageBuilder(sectors: 1)
        mbr.put64(0x1_0000_0010, at: 0x1B0)
        #expect(IsolinuxBootInfoTable.isolinuxSector(hybridMBR: mbr.bytes) == 0x1_0000_0010)
        #expect(IsolinuxBootInfoTable.isolinuxSector(hybridMBR: Array(mbr.bytes.prefix(511))) == nil)
        var head = ImageBuilder(sectors: 0)
        head.bytes = [UInt8](repeating: 0, count: 68)
        #expect(!IsolinuxBootInfoTable.hasHybridSignature(head.bytes))
        head.put32(IsolinuxBootInfoTable.hybridSignature, at: 64)
        #expect(IsolinuxBootInfoTable.hasHybridSignature(head.bytes))
        #expect(!IsolinuxBootInfoTable.hasHybridSignature(Array(head.bytes.prefix(67))))
    }

    /// The fuzzer's isohybrid seed: sector 0 -> isolinux.bin -> its table -> the ISO 9660 volume.
    @Test func corpusSeedIsAWholeChain() throws {
        let bytes = try FuzzCorpusTests.read("\(FuzzCorpusTests.corpus)/isohybrid.bin")
        let sector = try #require(IsolinuxBootInfoTable.isolinuxSector(hybridMBR: bytes))
        let head = Array(bytes[Int(sector) * 512..<Int(sector) * 512 + 2048])
        #expect(IsolinuxBootInfoTable.hasHybridSignature(head))
        let table = try #require(IsolinuxBootInfoTable(head))
        #expect(UInt64(table.fileBlock) * 4 == sector && table.length == 2048)
        #expect(IsolinuxBootInfoTable.checksum(head) == table.checksum)
        #expect(SyslinuxBanner.majorVersion(head, product: "ISOLINUX") == 6)
        let volume = try ISO9660Volume(MemoryByteSource(bytes), descriptorBlock: table.descriptorBlock)
        #expect(try volume.lookup("/isolinux/isolinux.bin").block == table.fileBlock)
        #expect(volume.isFile("/isolinux/isolinux.cfg"))
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: isolinuxBin), "needs Debian's isolinux"))
    func debiansIsolinuxBin() throws {
        let file = try readFile(Self.isolinuxBin)
        #expect(IsolinuxBootInfoTable.hasHybridSignature(file))
        #expect(SyslinuxBanner.majorVersion(file, product: "ISOLINUX") == 6)
        // Debian's build fills in the table as mkisofs would, all but the file's place on an ISO.
        let table = try #require(IsolinuxBootInfoTable(file))
        #expect(table.fileBlock == 0 && table.descriptorBlock == 16)
        #expect(table.length == UInt32(file.count))
        #expect(IsolinuxBootInfoTable.checksum(file) == table.checksum)
    }

    /// xorriso -isohybrid-mbr -boot-info-table, as distributions build hybrid ISOs: the chain
    /// isohdpfx.bin and isolinux.bin follow holds together.
    @Test(.enabled(if: commandExists("xorriso") && FileManager.default.fileExists(atPath: isohdpfx), "needs xorriso and isolinux"))
    func xorrisoIsohybrid() throws {
        let scratch = try Scratch()
        let tree = scratch.file("tree")
        try FileManager.default.createDirectory(atPath: tree + "/isolinux", withIntermediateDirectories: true)
        try run(["cp", Self.isolinuxBin, tree + "/isolinux/"])
        try writeFile(tree + "/isolinux/isolinux.cfg", Array("PROMPT 1\n".utf8))
        let iso = scratch.file("hybrid.iso")
        try run(["xorriso", "-as", "mkisofs", "-quiet", "-isohybrid-mbr", Self.isohdpfx, "-b", "isolinux/isolinux.bin",
                 "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "-o", iso, tree])
        let source = try FileByteSource(path: iso)
        let sector = try #require(IsolinuxBootInfoTable.isolinuxSector(hybridMBR: try source.read(at: 0, count: 512)))
        let head = try source.read(at: sector * 512, count: 2048)
        #expect(IsolinuxBootInfoTable.hasHybridSignature(head))
        let table = try #require(IsolinuxBootInfoTable(head))
        let shipped = try readFile(Self.isolinuxBin)
        #expect(UInt64(table.fileBlock) * 4 == sector)
        #expect(table.length == UInt32(shipped.count))
        #expect(IsolinuxBootInfoTable.checksum(try source.read(at: sector * 512, count: Int(table.length))) == table.checksum)
        let volume = try ISO9660Volume(source, descriptorBlock: table.descriptorBlock)
        #expect(try volume.lookup("/ISOLINUX/ISOLINUX.BIN") == .init(name: "isolinux.bin", block: table.fileBlock, size: table.length, isDirectory: false))
        #expect(volume.isFile("/isolinux/isolinux.cfg"))
        #expect(!volume.isFile("/isolinux/ldlinux.c32"))
    }
}
