import TestSupport
import Testing

@testable import ImgFormats

/// Builds ISO 9660 volumes field by field (ECMA-119: 2048-byte blocks, both-endian fields),
/// independently of the reader under test.
struct ISOBuilder {
    var image: ImageBuilder

    init(blocks: Int) { image = ImageBuilder(sectors: blocks * 4) }

    var source: MemoryByteSource { image.source }

    /// One directory record; names are written as given (with ";1" where a file has a version).
    static func record(_ name: [UInt8], block: UInt32, size: UInt32, directory: Bool) -> [UInt8] {
        var r = ImageBuilder(sectors: 0)
        r.bytes = [UInt8](repeating: 0, count: 33 + name.count + (name.count % 2 == 0 ? 1 : 0))
        r.bytes[0] = UInt8(r.bytes.count)
        r.putBothEndian(block, width: 4, at: 2)
        r.putBothEndian(size, width: 4, at: 10)
        r.bytes[25] = directory ? 0x02 : 0
        r.putBothEndian(1, width: 2, at: 28)
        r.bytes[32] = UInt8(name.count)
        r.put(name, at: 33)
        return r.bytes
    }

    static func file(_ name: String, block: UInt32, size: UInt32) -> [UInt8] {
        record(Array(name.utf8), block: block, size: size, directory: false)
    }

    static func directory(_ name: String, block: UInt32, size: UInt32 = 2048) -> [UInt8] {
        record(Array(name.utf8), block: block, size: size, directory: true)
    }

    /// A primary volume descriptor at `block` whose root directory is at `root`.
    mutating func descriptor(at block: Int, root: UInt32, rootSize: UInt32 = 2048, type: UInt8 = 1) {
        let at = block * 2048
        image.bytes[at] = type
        image.put(Array("CD001".utf8) + [1], at: at + 1)
        image.putBothEndian(UInt32(image.bytes.count / 2048), width: 4, at: at + 80)
        image.put(Self.record([0], block: root, size: rootSize, directory: true), at: at + 156)
    }

    /// "." and "..", then `records` one after the other from the start of `block`.
    mutating func directory(at block: Int, parent: Int, _ records: [[UInt8]]) {
        let all = [Self.record([0], block: UInt32(block), size: 2048, directory: true),
                   Self.record([1], block: UInt32(parent), size: 2048, directory: true)] + records
        image.put(all.flatMap { $0 }, at: block * 2048)
    }

    /// Descriptor at block 0; the root (1) holds ISOLINUX/ and README.; ISOLINUX/ (2) holds
    /// isolinux.cfg (data at block 3) and ldlinux.c32.
    static func bootVolume() -> ISOBuilder {
        var iso = ISOBuilder(blocks: 4)
        iso.descriptor(at: 0, root: 1)
        iso.directory(at: 1, parent: 1, [directory("ISOLINUX", block: 2), file("README.;1", block: 3, size: 0)])
        iso.directory(at: 2, parent: 1, [file("ISOLINUX.CFG;1", block: 3, size: 11), file("LDLINUX.C32;1", block: 3, size: 0)])
        iso.image.put(Array("PROMPT 1\n\n".utf8), at: 3 * 2048)
        return iso
    }
}

@Suite("ISO 9660")
struct ISO9660Tests {
    @Test func listsTheRootWithoutDotEntries() throws {
        let volume = try ISO9660Volume(ISOBuilder.bootVolume().source, descriptorBlock: 0)
        #expect(volume.root == .init(name: "/", block: 1, size: 2048, isDirectory: true))
        #expect(try volume.list(volume.root) == [
            .init(name: "ISOLINUX", block: 2, size: 2048, isDirectory: true),
            .init(name: "README", block: 3, size: 0, isDirectory: false),
        ])
    }

    /// As ISOLINUX compares: case-insensitively, without ";1" and trailing dots.
    @Test func looksUpPathsAsIsolinuxDoes() throws {
        let volume = try ISO9660Volume(ISOBuilder.bootVolume().source, descriptorBlock: 0)
        #expect(try volume.lookup("/isolinux/isolinux.cfg") == .init(name: "ISOLINUX.CFG", block: 3, size: 11, isDirectory: false))
        #expect(volume.isFile("/Isolinux/LDLINUX.c32"))
        #expect(volume.isFile("/readme"))
        #expect(!volume.isFile("/isolinux"))
        #expect(!volume.isFile("/"))
        #expect(try volume.lookup("/") == volume.root)
        #expect(throws: ISO9660Volume.Problem.notFound("/isolinux/menu.c32")) { try volume.lookup("/isolinux/menu.c32") }
        #expect(throws: ISO9660Volume.Problem.notADirectory("/isolinux/isolinux.cfg")) {
            try volume.lookup("/isolinux/isolinux.cfg/more")
        }
        let deep = String(repeating: "/d", count: ISO9660Volume.maximumPathDepth + 1)
        #expect(throws: ISO9660Volume.Problem.pathTooDeep(deep)) { try volume.lookup(deep) }
    }

    /// Paths split on the scalar "/": a name that starts with a combining mark is still found, and
    /// one with a "/" in it (which no path can spell) is listed but not reachable.
    @Test func namesWithCombiningMarksAndSlashes() throws {
        var iso = ISOBuilder(blocks: 2)
        iso.descriptor(at: 0, root: 1)
        iso.directory(at: 1, parent: 1, [ISOBuilder.file("\u{301}X;1", block: 0, size: 0), ISOBuilder.file("A/\u{315}B;1", block: 0, size: 0)])
        let volume = try ISO9660Volume(iso.source, descriptorBlock: 0)
        #expect(try volume.list(volume.root).map(\.name) == ["\u{301}X", "A/\u{315}B"])
        #expect(volume.isFile("/\u{301}x"))
        #expect(!volume.isFile("/A/\u{315}B"))
        FuzzCorpusTests.expectListedNamesAreFound(volume, "built")
    }

    /// Records never cross a block: a zero or short length, or one that would cross, ends the block.
    /// Rock Ridge: NM entries in the System Use area (after the pad byte of an even-length
    /// identifier) give the name, continued over entries while CONTINUE is set; other entries
    /// before them are stepped over, and a malformed entry ends the walk with the ISO name.
    @Test func rockRidgeNames() {
        func withSystemUse(_ name: String, _ entries: [[UInt8]]) -> [UInt8] {
            var r = ISOBuilder.file(name, block: 7, size: 3)
            r += entries.joined()
            r[0] = UInt8(r.count)
            return r
        }
        func nm(_ text: String, continues: Bool = false) -> [UInt8] {
            [UInt8(ascii: "N"), UInt8(ascii: "M"), UInt8(5 + text.utf8.count), 1, continues ? 1 : 0] + Array(text.utf8)
        }
        let px: [UInt8] = [UInt8(ascii: "P"), UInt8(ascii: "X"), 8, 1, 0, 0, 0, 0]
        let names = ISO9660Volume.records(withSystemUse("I386_PC;1", [px, nm("i386-pc")])
            + withSystemUse("NORMAL.MOD;1", [nm("normal", continues: true), nm(".mod")])
            + withSystemUse("PLAIN;1", [])
            + withSystemUse("BROKEN;1", [[UInt8(ascii: "N"), UInt8(ascii: "M"), 2, 1]])).map(\.name)
        #expect(names == ["i386-pc", "normal.mod", "PLAIN", "BROKEN"])
    }

    @Test func recordsSkipTheRestOfABlock() {
        let a = ISOBuilder.file("A;1", block: 5, size: 1), b = ISOBuilder.file("B;1", block: 6, size: 2)
        #expect(a.count == 36)
        var data = [UInt8](repeating: 0, count: 3 * 2048)
        data.replaceSubrange(0..<36, with: a)  // then zeros: padding
        for i in 0..<56 { data.replaceSubrange(2048 + 36 * i..<2048 + 36 * (i + 1), with: b) }
        data.replaceSubrange(4064..<4096, with: a.prefix(32))  // says 36 bytes, would cross into block 2
        var longName = a
        longName[32] = 200  // a name longer than its record: skipped, the walk goes on
        data.replaceSubrange(4096..<4132, with: longName)
        data.replaceSubrange(4132..<4168, with: a)
        data[4168] = 20  // too short for a record
        data.replaceSubrange(4169..<4205, with: b)  // in the skipped rest
        #expect(ISO9660Volume.records(data).map(\.name) == ["A"] + Array(repeating: "B", count: 56) + ["A"])
        #expect(ISO9660Volume.records([]) == [])
        #expect(ISO9660Volume.records(Array(a.prefix(35))) == [])
    }

    @Test func malformedVolumesAreProblems() {
        let small = ISOBuilder.bootVolume()
        #expect(throws: ISO9660Volume.Problem.descriptorOutsideSource(block: 16, sourceBytes: 8192)) {
            try ISO9660Volume(small.source)
        }
        #expect(throws: ISO9660Volume.Problem.notPrimaryDescriptor(block: 1)) { try ISO9660Volume(small.source, descriptorBlock: 1) }
        var supplementary = ISOBuilder.bootVolume()
        supplementary.descriptor(at: 0, root: 1, type: 2)
        #expect(throws: ISO9660Volume.Problem.notPrimaryDescriptor(block: 0)) {
            try ISO9660Volume(supplementary.source, descriptorBlock: 0)
        }
        #expect(throws: ISO9660Volume.Problem.descriptorOutsideSource(block: .max, sourceBytes: 8192)) {
            try ISO9660Volume(small.source, descriptorBlock: .max)
        }
    }

    @Test func directoriesAreBounded() throws {
        var outside = ISOBuilder.bootVolume()
        outside.descriptor(at: 0, root: 4)  // the root's block is past the end
        let volume = try ISO9660Volume(outside.source, descriptorBlock: 0)
        #expect(throws: ISO9660Volume.Problem.directoryOutsideSource(block: 4, bytes: 2048, sourceBytes: 8192)) {
            try volume.list(volume.root)
        }
        var huge = ISOBuilder.bootVolume()
        huge.descriptor(at: 0, root: 1, rootSize: UInt32(ISO9660Volume.maximumDirectoryBytes) + 1)
        let hugeVolume = try ISO9660Volume(huge.source, descriptorBlock: 0)
        #expect(throws: ISO9660Volume.Problem.directoryTooLarge(block: 1, bytes: UInt32(ISO9660Volume.maximumDirectoryBytes) + 1)) {
            try hugeVolume.list(hugeVolume.root)
        }
        #expect(!hugeVolume.isFile("/isolinux/isolinux.cfg"))
        var farBlock = ISOBuilder.bootVolume()
        farBlock.descriptor(at: 0, root: .max, rootSize: .max)
        let far = try ISO9660Volume(farBlock.source, descriptorBlock: 0)
        #expect(throws: ISO9660Volume.Problem.directoryTooLarge(block: .max, bytes: .max)) { try far.list(far.root) }
    }

    /// Every prefix of a volume opens or is refused, and lookups in it answer; none traps.
    @Test func truncatedVolumesNeverTrap() {
        let bytes = ISOBuilder.bootVolume().image.bytes
        for length in stride(from: 0, through: bytes.count, by: 7) {
            let source = MemoryByteSource(Array(bytes.prefix(length)))
            guard let volume = try? ISO9660Volume(source, descriptorBlock: 0) else {
                #expect(length < 2048)
                continue
            }
            #expect(volume.isFile("/isolinux/isolinux.cfg") == (length >= 3 * 2048))
        }
    }

    /// The fuzzer's seed with its descriptor at block 0 is this volume's layout.
    @Test func corpusSeed() throws {
        let bytes = try FuzzCorpusTests.read("\(FuzzCorpusTests.corpus)/iso9660-volume.bin")
        let volume = try ISO9660Volume(MemoryByteSource(bytes), descriptorBlock: 0)
        #expect(try volume.lookup("/isolinux/isolinux.cfg").size == 11)
        #expect(volume.isFile("/isolinux/ldlinux.c32"))
    }
}
