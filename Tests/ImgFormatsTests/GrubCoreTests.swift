import Foundation
import Testing

@testable import ImgFormats

/// Decodes real core.img files that grub-mkimage builds (no root needed), placed on an in-memory
/// disk the way grub-setup places them, plus hand-made damage to each link of the chain.
@Suite("GRUB core.img")
struct GrubCoreTests {
    static let grubDirectory = "/usr/lib/grub/i386-pc"
    static let grubAvailable =
        ExternalToolTests.tool("grub-mkimage") != nil
        && FileManager.default.fileExists(atPath: grubDirectory + "/boot.img")
        && FileManager.default.fileExists(atPath: grubDirectory + "/lzma_decompress.img")
    static let needsGrub = Testing.ConditionTrait.enabled(
        if: grubAvailable, "needs grub-mkimage and GRUB's i386-pc files (Debian packages grub-common, grub-pc-bin)")

    static let msdosModules = ["biosdisk", "part_msdos", "ext2"]
    static let msdosPrefix = "(,msdos1)/boot/grub"

    // MARK: building images

    /// Runs grub-mkimage in a temp dir and returns core.img. `files` are written next to it first
    /// (for -c and -m), named as given.
    static func makeCore(
        modules: [String] = msdosModules, prefix: String = msdosPrefix, extra: [String] = [], files: [String: [UInt8]] = [:]
    ) throws -> [UInt8] {
        let mkimage = try #require(ExternalToolTests.tool("grub-mkimage"))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("grubcore-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, contents) in files { try Data(contents).write(to: dir.appendingPathComponent(name)) }
        let output = dir.appendingPathComponent("core.img").path
        let arguments =
            ["-O", "i386-pc", "-d", grubDirectory, "-p", prefix, "-o", output]
            + extra.map { files[$0] != nil ? dir.appendingPathComponent($0).path : $0 } + modules
        try ExternalToolTests.run(mkimage, arguments)
        return try [UInt8](Data(contentsOf: URL(fileURLWithPath: output)))
    }

    static func coreSectors(_ core: [UInt8]) -> Int { (core.count + 511) / 512 }

    /// A disk with boot.img in sector 0 pointing at `kernelSector`, core.img written from there, and
    /// diskboot's first blocklist entry patched as grub-setup does (start kernel + 1, the rest of
    /// core.img, segment 0x0820).
    static func disk(core: [UInt8], kernelSector: UInt64 = 1, totalSectors: Int? = nil) throws -> ImageBuilder {
        let sectors = coreSectors(core)
        var image = ImageBuilder(sectors: totalSectors ?? Int(kernelSector) + sectors + 16)
        let boot = try [UInt8](Data(contentsOf: URL(fileURLWithPath: grubDirectory + "/boot.img")))
        image.put(boot, at: 0)
        image.put64(kernelSector, at: 0x5C)
        let base = image.offset(lba: kernelSector)
        image.put(core, at: base)
        image.put64(kernelSector + 1, at: base + 0x1F4)
        image.put16(UInt16(sectors - 1), at: base + 0x1FC)
        image.put16(0x0820, at: base + 0x1FE)
        return image
    }

    static func decode(_ image: ImageBuilder) throws(GrubCoreDecoder.Problem) -> GrubCoreImage {
        try GrubCoreDecoder.decode(image.source, bootSector: Array(image.bytes.prefix(512)))
    }

    /// The problem `image` decodes to, or nil if it decodes.
    static func problem(_ image: ImageBuilder) -> GrubCoreDecoder.Problem? {
        do {
            _ = try decode(image)
            return nil
        } catch {
            return error
        }
    }

    // MARK: real core.img files

    @Test(needsGrub)
    func msdosCoreInThePostMBRGap() throws {
        let core = try Self.makeCore()
        let decoded = try Self.decode(try Self.disk(core: core))
        let sectors = UInt64(Self.coreSectors(core))
        #expect(decoded.firstSector == 1)
        #expect(decoded.sectors == sectors)
        #expect(decoded.blocklist == [SectorRange(start: 2, count: sectors - 1)])
        #expect(Set(Self.msdosModules).isSubset(of: decoded.modules), "\(decoded.modules)")
        #expect(decoded.prefix == Self.msdosPrefix)
        #expect(decoded.config == nil)
        #expect(decoded.otherObjects.isEmpty)
        #expect(decoded.uncompressedSize > decoded.compressedSize)
        // The header's sizes match the file grub-mkimage wrote: diskboot + decompressor + stream.
        #expect(Int(decoded.compressedSize) < core.count - 512)
    }

    @Test(needsGrub)
    func embeddedConfigIsDecoded() throws {
        let config = "search.fs_uuid 0123-4567 root hd0,msdos1\nset prefix=($root)'/boot/grub'\n"
        let core = try Self.makeCore(extra: ["-c", "embedded.cfg"], files: ["embedded.cfg": Array(config.utf8)])
        let decoded = try Self.decode(try Self.disk(core: core))
        #expect(decoded.config == config)
        #expect(decoded.prefix == Self.msdosPrefix)
    }

    @Test(needsGrub)
    func gptCoreInABIOSBootPartitionAt2048() throws {
        let modules = ["biosdisk", "part_gpt", "ext2"]
        let core = try Self.makeCore(modules: modules, prefix: "(,gpt2)/boot/grub")
        let image = try Self.disk(core: core, kernelSector: 2048)
        let decoded = try Self.decode(image)
        #expect(decoded.firstSector == 2048)
        #expect(decoded.blocklist == [SectorRange(start: 2049, count: UInt64(Self.coreSectors(core) - 1))])
        #expect(Set(modules).isSubset(of: decoded.modules))
        #expect(!decoded.modules.contains("part_msdos"))
        #expect(decoded.prefix == "(,gpt2)/boot/grub")

        // The same bytes read from a file through FileByteSource.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("grubcore-\(UUID().uuidString).img").path
        try Data(image.bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fromFile = try GrubCoreDecoder.decode(try FileByteSource(path: path), bootSector: Array(image.bytes.prefix(512)))
        #expect(fromFile == decoded)
    }

    @Test(needsGrub)
    func moreModulesAndAMemdisk() throws {
        let modules = ["biosdisk", "part_msdos", "part_gpt", "ext2", "fat", "lvm", "search", "normal", "configfile", "memdisk"]
        let core = try Self.makeCore(modules: modules, extra: ["-m", "memdisk.tar"], files: ["memdisk.tar": [UInt8](repeating: 0, count: 10240)])
        let decoded = try Self.decode(try Self.disk(core: core))
        #expect(Set(modules).isSubset(of: decoded.modules), "\(decoded.modules)")
        // grub-mkimage adds dependencies: lvm needs diskfilter.
        #expect(decoded.modules.contains("diskfilter"))
        #expect(decoded.otherObjects == [1], "the memdisk")
        #expect(decoded.sectors == UInt64(Self.coreSectors(core)))
    }

    @Test(needsGrub)
    func fragmentedBlocklistWithTwoEntries() throws {
        let core = try Self.makeCore()
        let sectors = Self.coreSectors(core)
        var image = try Self.disk(core: core, totalSectors: 400)
        // Keep core sectors 0...9 at disk sectors 1...10, move the rest to sector 200.
        let tail = Array(image.bytes[image.offset(lba: 11)..<image.offset(lba: UInt64(1 + sectors))])
        image.put([UInt8](repeating: 0, count: tail.count), at: image.offset(lba: 11))
        image.put(tail, at: image.offset(lba: 200))
        image.put16(9, at: 512 + 0x1FC)
        image.put64(200, at: 512 + 0x1E8)
        image.put16(UInt16(sectors - 10), at: 512 + 0x1F0)
        image.put16(0x0820 + 9 * 0x20, at: 512 + 0x1F2)
        let decoded = try Self.decode(image)
        #expect(decoded.blocklist == [SectorRange(start: 2, count: 9), SectorRange(start: 200, count: UInt64(sectors - 10))])
        #expect(decoded.sectors == UInt64(sectors))
        #expect(Set(Self.msdosModules).isSubset(of: decoded.modules))
    }

    // MARK: damaged chains

    @Test(needsGrub)
    func chainProblems() throws {
        let core = try Self.makeCore()
        let good = try Self.disk(core: core)
        let sectors = Self.coreSectors(core)
        let diskboot = 512

        var notBoot = good
        notBoot.put([UInt8](repeating: 0, count: 440), at: 0)
        #expect(Self.problem(notBoot) == .notGrubBootImage)

        var zeroed = good
        zeroed.put([UInt8](repeating: 0, count: sectors * 512), at: diskboot)
        #expect(Self.problem(zeroed) == .notDiskboot(sector: 1))
        #expect(Self.problem(zeroed)?.description.contains("core.img's first sector") == true)

        var kernelPastEnd = good
        kernelPastEnd.put64(1 << 40, at: 0x5C)
        #expect(Self.problem(kernelPastEnd) == .coreOutsideImage(sector: 1 << 40, imageSectors: good.sectors))

        var pastEnd = good
        pastEnd.put64(good.sectors - 3, at: diskboot + 0x1F4)
        #expect(Self.problem(pastEnd) == .blocklistOutsideImage(
            entry: 1, range: SectorRange(start: good.sectors - 3, count: UInt64(sectors - 1)), imageSectors: good.sectors))
        #expect(Self.problem(pastEnd)?.description.contains("points past the end of the image") == true)

        var hugeStart = good
        hugeStart.put64(.max - 1, at: diskboot + 0x1F4)
        #expect(Self.problem(hugeStart)?.description.contains("past the end") == true)

        var loadsItself = good
        loadsItself.put64(1, at: diskboot + 0x1F4)
        #expect(Self.problem(loadsItself) == .blocklistOverlap(entry: 1, range: SectorRange(start: 1, count: UInt64(sectors - 1))))

        var twice = good
        twice.put16(4, at: diskboot + 0x1FC)
        twice.put64(3, at: diskboot + 0x1E8)
        twice.put16(4, at: diskboot + 0x1F0)
        twice.put16(0x0820 + 4 * 0x20, at: diskboot + 0x1F2)
        #expect(Self.problem(twice) == .blocklistOverlap(entry: 2, range: SectorRange(start: 3, count: 4)))

        var badSegment = good
        badSegment.put16(0x1000, at: diskboot + 0x1FE)
        #expect(Self.problem(badSegment) == .blocklistSegment(entry: 1, found: 0x1000, expected: 0x0820))

        var empty = good
        empty.put16(0, at: diskboot + 0x1FC)
        #expect(Self.problem(empty) == .blocklistEmpty)

        var tooMany = good
        tooMany.put16(900, at: diskboot + 0x1FC)
        #expect(Self.problem(tooMany) == .tooManySectors(901))

        // 41 one-sector entries, each valid on its own: the list never ends where diskboot's code begins.
        var endless = try Self.disk(core: core, totalSectors: 200)
        for entry in 0..<41 {
            let offset = diskboot + 0x1F4 - entry * 12
            endless.put64(UInt64(100 + entry), at: offset)
            endless.put16(1, at: offset + 8)
            endless.put16(UInt16(0x0820 + entry * 0x20), at: offset + 10)
        }
        #expect(Self.problem(endless) == .blocklistUnterminated)
    }

    @Test(needsGrub)
    func decompressorAndStreamProblems() throws {
        let core = try Self.makeCore()
        let good = try Self.disk(core: core)
        let header = 1024  // core.img's sector 1 on the disk
        let compressed = good.read32(at: header + 8)
        let uncompressed = good.read32(at: header + 12)

        var noDecompressor = good
        noDecompressor.put([UInt8](repeating: 0, count: 512), at: header)
        #expect(Self.problem(noDecompressor) == .notDecompressor)

        var mismatch = good
        mismatch.put16(0xFFFF, at: header + 0x14)
        #expect(Self.problem(mismatch) == .versionMismatch)

        var huge = good
        huge.put32(2 << 30, at: header + 12)
        #expect(Self.problem(huge) == .uncompressedSizeInvalid(2 << 30))

        // The header promises fewer compressed bytes than the stream needs.
        var truncated = good
        truncated.put32(compressed / 2, at: header + 8)
        guard case .lzmaTruncated(let decoded, let expected)? = Self.problem(truncated) else {
            Issue.record("expected a truncated stream, got \(String(describing: Self.problem(truncated)))")
            return
        }
        #expect(decoded < expected && expected == Int(uncompressed))

        // The header promises more compressed bytes than the blocklist loads.
        var tooLong = good
        tooLong.put32(compressed + 100_000, at: header + 8)
        guard case .compressedOutsideCore? = Self.problem(tooLong) else {
            Issue.record("expected compressed data outside core.img, got \(String(describing: Self.problem(tooLong)))")
            return
        }

        // The blocklist stops short, so the stream is cut off inside the image.
        var shortList = good
        shortList.put16(UInt16(Self.coreSectors(core) / 2), at: 512 + 0x1FC)
        #expect(Self.problem(shortList) != nil)

        // Claiming more output than the stream holds runs it dry (or into garbage): a problem, no crash.
        var longer = good
        longer.put32(uncompressed + 4096, at: header + 12)
        #expect(Self.problem(longer) != nil)
    }

    /// Every single-byte change in the first sectors must give a result or a problem, never a trap.
    @Test(needsGrub)
    func singleByteDamageNeverTraps() throws {
        let core = try Self.makeCore()
        let good = try Self.disk(core: core)
        for offset in stride(from: 512, to: 512 + 0xC00, by: 23) {
            var damaged = good
            damaged.bytes[offset] ^= 0xA5
            _ = Self.problem(damaged)
        }
    }

    // MARK: module info on hand-made bytes

    /// A kernel of `code` bytes followed by module info holding `entries` (type, body), each padded
    /// to 4 bytes as grub-mkimage does.
    static func kernel(code: Int = 64, entries: [(UInt32, [UInt8])]) -> [UInt8] {
        var area: [UInt8] = []
        for (type, body) in entries {
            let padded = body + [UInt8](repeating: 0, count: (4 - body.count % 4) % 4)
            area += le32(type) + le32(UInt32(8 + padded.count)) + padded
        }
        return [UInt8](repeating: 0x90, count: code) + Array("mimg".utf8) + le32(12) + le32(UInt32(12 + area.count)) + area
    }

    static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    static func le16(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8)] }

    /// A minimal ELF32 with sections: null, .shstrtab, .modname ("name").
    static func elf(name: String) -> [UInt8] {
        let names = Array("\0.shstrtab\0.modname\0".utf8)
        let modname = Array(name.utf8) + [0]
        let namesOffset = 52
        let modnameOffset = namesOffset + names.count
        let table = (modnameOffset + modname.count + 3) & ~3
        var bytes = [0x7F, 0x45, 0x4C, 0x46, 1, 1, 1] + [UInt8](repeating: 0, count: 45)
        bytes.replaceSubrange(0x20..<0x24, with: le32(UInt32(table)))
        bytes.replaceSubrange(0x2E..<0x30, with: le16(40))
        bytes.replaceSubrange(0x30..<0x32, with: le16(3))
        bytes.replaceSubrange(0x32..<0x34, with: le16(1))
        bytes += names + modname
        bytes += [UInt8](repeating: 0, count: table - bytes.count)
        func section(name: UInt32, offset: Int, size: Int) -> [UInt8] {
            le32(name) + le32(3) + le32(0) + le32(0) + le32(UInt32(offset)) + le32(UInt32(size))
                + [UInt8](repeating: 0, count: 16)
        }
        bytes += section(name: 0, offset: 0, size: 0)
        bytes += section(name: 1, offset: namesOffset, size: names.count)
        bytes += section(name: 11, offset: modnameOffset, size: modname.count)
        return bytes
    }

    @Test func moduleInfoOnHandMadeBytes() throws {
        let objects = try GrubCoreDecoder.parseModuleInfo(Self.kernel(entries: [
            (0, Self.elf(name: "biosdisk")), (3, Array("(,msdos1)/boot/grub\0".utf8)), (0, Self.elf(name: "ext2")),
            (2, Array("set root=hd0\n\0".utf8)), (4, [1, 2, 3, 4]), (42, []),
        ]))
        #expect(objects == GrubCoreDecoder.Objects(
            modules: ["biosdisk", "ext2"], prefix: "(,msdos1)/boot/grub", config: "set root=hd0\n", other: [4, 42]))
    }

    @Test func moduleInfoMissingMagic() {
        var bytes = Self.kernel(entries: [(3, Array("(hd0)\0".utf8))])
        bytes[64] = 0  // "mimg" -> "\0img"
        #expect(throws: GrubCoreDecoder.Problem.moduleInfoMissing) { try GrubCoreDecoder.parseModuleInfo(bytes) }
        // "mimg" whose size does not reach the end (as inside kernel code) is not the module info.
        var early = Self.kernel(entries: [])
        early.replaceSubrange(68..<72, with: Self.le32(4))
        #expect(throws: GrubCoreDecoder.Problem.moduleInfoMissing) { try GrubCoreDecoder.parseModuleInfo(early) }
        #expect(throws: GrubCoreDecoder.Problem.moduleInfoMissing) { try GrubCoreDecoder.parseModuleInfo([1, 2, 3]) }
    }

    @Test func moduleEntrySizesAreChecked() {
        for size: UInt32 in [0, 7, 0xFFFF_FFF8, 0xFFFF_FFFF, 17] {
            var bytes = Self.kernel(entries: [(3, Array("(hd0)\0\0\0".utf8))])
            bytes.replaceSubrange(80..<84, with: Self.le32(size))  // the entry's size field
            #expect(throws: GrubCoreDecoder.Problem.self, "size \(size)") { try GrubCoreDecoder.parseModuleInfo(bytes) }
        }
        // A trailing entry with no room for its header.
        var trailing = Self.kernel(entries: [])
        trailing += [0, 0, 0, 0]
        trailing.replaceSubrange(72..<76, with: Self.le32(16))
        #expect(throws: GrubCoreDecoder.Problem.moduleEntryInvalid(entry: 1, offset: 76, reason: "only 4 bytes left for its 8-byte header")) {
            try GrubCoreDecoder.parseModuleInfo(trailing)
        }
    }

    @Test func elfModuleNamesAreChecked() {
        #expect(throws: GrubCoreDecoder.Problem.self) {
            try GrubCoreDecoder.parseModuleInfo(Self.kernel(entries: [(0, [1, 2, 3, 4])]))
        }
        var badTable = Self.elf(name: "ext2")
        badTable.replaceSubrange(0x20..<0x24, with: Self.le32(0xFFFF_FFF0))
        #expect(throws: GrubCoreDecoder.Problem.self) { try GrubCoreDecoder.parseModuleInfo(Self.kernel(entries: [(0, badTable)])) }
        var badSection = Self.elf(name: "ext2")
        let third = badSection.count - 40
        badSection.replaceSubrange(third + 20..<third + 24, with: Self.le32(0xFFFF_FFFF))
        #expect(throws: GrubCoreDecoder.Problem.self) { try GrubCoreDecoder.parseModuleInfo(Self.kernel(entries: [(0, badSection)])) }
        var noName = Self.elf(name: "ext2")
        noName.replaceSubrange(third..<third + 4, with: Self.le32(1))  // now also named .shstrtab
        #expect(throws: GrubCoreDecoder.Problem.moduleNameMissing(entry: 1, reason: "it has no .modname section")) {
            try GrubCoreDecoder.parseModuleInfo(Self.kernel(entries: [(0, noName)]))
        }
    }
}
