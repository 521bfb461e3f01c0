import Foundation
import TestSupport
import Testing

@testable import ImgFormats

/// ldlinux.sys's patch area, on files built here field by field (SYSLINUX 6 libinstaller/syslxint.h)
/// and on ldlinux.sys as Debian's syslinux installs it into a FAT volume.
@Suite("SYSLINUX patch area")
struct SyslinuxPatchAreaTests {
    static let patchOffset = 0x10
    static let extendedOffset = 0x40
    static let directoryOffset = 0x80
    static let mapOffset = 0x100

    /// A 3-sector ldlinux.sys: struct patch_area at 0x10, struct ext_patch_area at 0x40, the current
    /// directory at 0x80 (64 bytes), a 4-entry sector map at 0x100, boot sector pointers at 0x1E0
    /// and 0x1E4, the checksum over all 384 words sealed.
    static func ldlinux(
        dataSectors: UInt16 = 3, words: UInt32 = 384, directory: String = "/boot/syslinux",
        extents: [(lba: UInt64, sectors: UInt16)] = [(100, 1), (200, 1)], mapEntries: UInt16 = 4,
        pointers: (UInt16, UInt16) = (0x1E0, 0x1E4), extendedArea: UInt16 = UInt16(extendedOffset)
    ) -> [UInt8] {
        var b = ImageBuilder(sectors: 3)
        b.put16(0x3CEB, at: 0)
        b.put32(SyslinuxPatchArea.magic, at: patchOffset)
        b.put32(0x1234_5678, at: patchOffset + 4)  // instance
        b.put16(dataSectors, at: patchOffset + 8)
        b.put16(2, at: patchOffset + 10)  // ADV sectors
        b.put32(words, at: patchOffset + 12)
        b.put16(0xFFFF, at: patchOffset + 20)  // maxtransfer
        b.put16(extendedArea, at: patchOffset + 22)
        b.put16(UInt16(directoryOffset), at: extendedOffset + 2)
        b.put16(64, at: extendedOffset + 4)
        b.put16(UInt16(mapOffset), at: extendedOffset + 10)
        b.put16(mapEntries, at: extendedOffset + 12)
        b.put16(pointers.0, at: extendedOffset + 14)
        b.put16(pointers.1, at: extendedOffset + 16)
        b.put(Array(directory.utf8), at: directoryOffset)
        for (i, extent) in extents.enumerated() {
            b.put64(extent.lba, at: mapOffset + 10 * i)
            b.put16(extent.sectors, at: mapOffset + 10 * i + 8)
        }
        b.put(Array("SYSLINUX 6.04 ".utf8), at: 600)
        return sealed(b.bytes, words: Int(min(words, 384)))
    }

    /// Sets struct patch_area's checksum field so the first `words` words sum to LDLINUX_MAGIC, as the installer does.
    static func sealed(_ file: [UInt8], words: Int) -> [UInt8] {
        var b = ImageBuilder(sectors: 0)
        b.bytes = file
        b.put32(0, at: patchOffset + 16)
        let sum = (0..<words).reduce(UInt32(0)) { $0 &+ b.read32(at: 4 * $1) }
        b.put32(SyslinuxPatchArea.magic &- sum, at: patchOffset + 16)
        return b.bytes
    }

    @Test func decodesItsFields() throws {
        let file = Self.ldlinux()
        let patch = try SyslinuxPatchArea(ldlinux: file)
        #expect(patch.offset == 0x10)
        #expect(patch.dataSectors == 3)
        #expect(patch.checksumWords == 384)
        #expect(patch.firstSectorPointerLow == 0x1E0 && patch.firstSectorPointerHigh == 0x1E4)
        #expect(patch.extents == [.init(lba: 100, sectors: 1), .init(lba: 200, sectors: 1)])
        #expect(patch.currentDirectory == "/boot/syslinux")
        #expect(patch.checksumMatches(file))
    }

    @Test func checksumNoticesOneChangedByte() throws {
        var file = Self.ldlinux()
        let patch = try SyslinuxPatchArea(ldlinux: file)
        file[1000] ^= 0x01
        #expect(!patch.checksumMatches(file))
        #expect(!patch.checksumMatches(Array(file.prefix(1000))))
    }

    @Test func firstSectorJoinsTheBootSectorsTwoHalves() throws {
        let patch = try SyslinuxPatchArea(ldlinux: Self.ldlinux())
        var boot = ImageBuilder(sectors: 1)
        boot.put32(0x0000_1234, at: 0x1E0)
        boot.put32(0x1, at: 0x1E4)
        #expect(patch.firstSector(bootSector: boot.bytes) == 0x1_0000_1234)
        #expect(patch.firstSector(bootSector: Array(boot.bytes.prefix(0x1E7))) == nil)
    }

    @Test func theMapEndsAtItsFirstEmptyEntry() throws {
        let patch = try SyslinuxPatchArea(ldlinux: Self.ldlinux(extents: [(100, 2), (0, 0), (300, 1)]))
        #expect(patch.extents == [.init(lba: 100, sectors: 2)])
    }

    @Test func bootSectorSignature() {
        var vbr = ImageBuilder(sectors: 1)
        #expect(!SyslinuxPatchArea.isSyslinuxBootSector(vbr.bytes))
        vbr.put32(SyslinuxPatchArea.magic, at: 0x1F8)
        #expect(SyslinuxPatchArea.isSyslinuxBootSector(vbr.bytes))
        #expect(!SyslinuxPatchArea.isSyslinuxBootSector(Array(vbr.bytes.prefix(0x1FB))))
    }

    static func withMagic(at offset: Int, count: Int) -> [UInt8] {
        var b = ImageBuilder(sectors: 0)
        b.bytes = [UInt8](repeating: 0, count: count)
        b.put32(SyslinuxPatchArea.magic, at: offset)
        return b.bytes
    }

    @Test(arguments: [
        ("511 bytes", Array(ldlinux().prefix(511)), SyslinuxPatchArea.Problem.tooShort(bytes: 511)),
        ("no magic", [UInt8](repeating: 0, count: 1536), .noMagic),
        ("magic not 4-aligned", withMagic(at: 0x12, count: 1536), .noMagic),
        ("magic past 4 KiB", withMagic(at: 4096, count: 5000), .noMagic),
        ("patch area cut off", withMagic(at: 500, count: 512), .noMagic),
        ("no data sectors", ldlinux(dataSectors: 0), .dataSectorsInvalid(sectors: 0, fileBytes: 1536)),
        ("more data sectors than the file", ldlinux(dataSectors: 4), .dataSectorsInvalid(sectors: 4, fileBytes: 1536)),
        ("checksum past the data", ldlinux(words: 385), .checksumRangeInvalid(words: 385, dataSectors: 3)),
        ("checksum of 2^32-1 words", ldlinux(words: .max), .checksumRangeInvalid(words: Int(UInt32.max), dataSectors: 3)),
        ("extended area past the end", ldlinux(extendedArea: 1530), .extendedAreaOutsideFile(offset: 1530, fileBytes: 1536)),
        ("pointer past the boot sector", ldlinux(pointers: (0x1E0, 0x1FD)), .sectorPointerOutsideBootSector(offset: 0x1FD)),
        ("pointer at 0xFFFF", ldlinux(pointers: (0xFFFF, 0x1E4)), .sectorPointerOutsideBootSector(offset: 0xFFFF)),
        ("map past the end", ldlinux(mapEntries: 200), .sectorMapOutsideFile(offset: 0x100, entries: 200, fileBytes: 1536)),
    ])
    func malformedFilesAreProblems(_ what: String, file: [UInt8], problem: SyslinuxPatchArea.Problem) {
        #expect(throws: problem, "\(what)") { try SyslinuxPatchArea(ldlinux: file) }
    }

    @Test func currentDirectoryIsPrintableTextOrNil() throws {
        #expect(try SyslinuxPatchArea(ldlinux: Self.ldlinux(directory: "")).currentDirectory == nil)
        #expect(try SyslinuxPatchArea(ldlinux: Self.ldlinux(directory: "/boot\u{7}")).currentDirectory == nil)
        // dirlen bounds it: 64 bytes without a NUL are cut at 64.
        let long = String(repeating: "d", count: 70)
        #expect(try SyslinuxPatchArea(ldlinux: Self.ldlinux(directory: long)).currentDirectory == String(repeating: "d", count: 64))
        // A field offset past the end of the file.
        var b = ImageBuilder(sectors: 0)
        b.bytes = Self.ldlinux()
        b.put16(0xFFF0, at: Self.extendedOffset + 2)
        #expect(try SyslinuxPatchArea(ldlinux: b.bytes).currentDirectory == nil)
    }

    /// Every prefix of a valid file, and pseudo-random files with the magic planted, decode or
    /// throw; none traps.
    @Test func truncatedAndRandomFilesNeverTrap() {
        let file = Self.ldlinux()
        for length in 0...file.count {
            let prefix = Array(file.prefix(length))
            if let patch = try? SyslinuxPatchArea(ldlinux: prefix) {
                #expect(patch.dataSectors * 512 <= length)
                _ = patch.checksumMatches(prefix)
            } else {
                #expect(length < file.count)
            }
        }
        for seed in 1...200 {
            var random = pseudoRandomBytes(count: 1536, seed: UInt64(seed))
            random.replaceSubrange(0x10..<0x14, with: [0xFE, 0x02, 0xB2, 0x3E])
            if let patch = try? SyslinuxPatchArea(ldlinux: random) {
                #expect(patch.firstSector(bootSector: random) != nil)
                _ = patch.checksumMatches(random)
            }
        }
    }

    @Test(arguments: [
        ("SYSLINUX 6.04 EDD", 6), ("xx SYSLINUX 12.1", 12), ("SYSLINUX 4.07", 4), ("SYSLINUX 1234.5", nil),
        ("SYSLINUX 6", nil), ("SYSLINUX .04", nil), ("SYSLINUX x.1 SYSLINUX 5.10", 5), ("ISOLINUX 6.04", nil), ("", nil),
    ])
    func bannerVersion(_ text: String, major: Int?) {
        #expect(SyslinuxBanner.majorVersion(Array(text.utf8), product: "SYSLINUX") == major)
    }

    /// The fuzzer's seeds: the one built byte by byte, and Debian's ldlinux.sys when make-corpus.sh could write it.
    @Test func corpusSeeds() throws {
        let built = try FuzzCorpusTests.read("\(FuzzCorpusTests.corpus)/syslinux-patch-area.bin")
        let patch = try SyslinuxPatchArea(ldlinux: built)
        #expect(patch.currentDirectory == "/boot/syslinux" && patch.checksumMatches(built) && patch.extents.count == 2)
        #expect(built == Self.ldlinux(), "make-corpus.sh and this test build the same file")
        let installed = "\(FuzzCorpusTests.corpus)/syslinux-ldlinux-sys.bin"
        if FileManager.default.fileExists(atPath: installed) {
            let bytes = try FuzzCorpusTests.read(installed)
            #expect(try SyslinuxPatchArea(ldlinux: bytes).checksumMatches(bytes))
        }
    }

    /// Debian's syslinux installs ldlinux.sys into a FAT volume: the boot sector points at its first
    /// sector, its sector map at the others, its checksum holds, and its directory is the one given.
    @Test(.enabled(if: commandExists("syslinux") && commandExists("mkfs.fat") && commandExists("mmd"),
                   "needs Debian's syslinux, dosfstools and mtools"))
    func installedBySyslinux() throws {
        let scratch = try Scratch()
        let image = scratch.file("syslinux.img")
        try run(["mkfs.fat", "-C", "--invariant", image, "1024"])
        try run(["mmd", "-i", image, "::/boot", "::/boot/syslinux"])
        try run(["syslinux", "--install", "--directory", "/boot/syslinux", image])
        let source = try FileByteSource(path: image)
        let fs = try FATFilesystem.open(source, offset: 0, length: source.size)
        let file = try fs.read("/boot/syslinux/ldlinux.sys", maxBytes: SyslinuxPatchArea.maximumLdlinuxBytes)
        let patch = try SyslinuxPatchArea(ldlinux: file)
        #expect(patch.checksumMatches(file))
        #expect(patch.currentDirectory == "/boot/syslinux")
        #expect(SyslinuxBanner.majorVersion(file, product: "SYSLINUX") == 6)

        let vbr = try source.read(at: 0, count: 512)
        #expect(SyslinuxPatchArea.isSyslinuxBootSector(vbr))
        let first = try #require(patch.firstSector(bootSector: vbr))
        #expect(try source.read(at: first * 512, count: 512) == Array(file[0..<512]))
        var next = 1
        for extent in patch.extents {
            for k in 0..<UInt64(extent.sectors) where next < patch.dataSectors {
                #expect(try source.read(at: (extent.lba + k) * 512, count: 512) == Array(file[next * 512..<(next + 1) * 512]))
                next += 1
            }
        }
        #expect(next == patch.dataSectors)
    }
}
