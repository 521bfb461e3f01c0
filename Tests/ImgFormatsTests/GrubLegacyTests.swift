import Testing

@testable import ImgFormats

/// GRUB legacy's stage1, start sector and stage2 header on sectors built field by field from GRUB
/// 0.97's layout (stage1.h, start.S, asm.S); Debian 12 ships no GRUB legacy to read instead.
@Suite("GRUB legacy")
struct GrubLegacyTests {
    static func stage1(sector: UInt32 = 1, address: UInt16 = 0x8000, version: (UInt8, UInt8) = (3, 2)) -> [UInt8] {
        var b = ImageBuilder(sectors: 1)
        b.put([0xEB, 0x48, 0x90], at: 0)
        b.put([version.0, version.1, 0x80], at: 0x3E)
        b.put16(address, at: 0x42)
        b.put32(sector, at: 0x44)
        b.put16(0x0800, at: 0x48)
        return b.bytes
    }

    /// A start sector linked at `link`, saying "Loading stage1.5" or "Loading stage2", with `blocks`.
    static func startSector(stage1_5: Bool = false, link: UInt16? = 0x8000, blocks: [(sector: UInt32, count: UInt16)] = [(2, 1)]) -> [UInt8] {
        var b = ImageBuilder(sectors: 1)
        b.put([0x52, 0x56, 0xBE], at: 0)
        if let link {
            b.bytes[9] = 0xBF
            b.put16(link &+ 0x1F8, at: 10)
        }
        b.put(Array((stage1_5 ? "Loading stage1.5" : "Loading stage2").utf8) + [0], at: 0x160)
        for (i, block) in blocks.enumerated() {
            b.put32(block.sector, at: 0x1F8 - 8 * i)
            b.put16(block.count, at: 0x1F8 - 8 * i + 4)
            b.put16(0x0820, at: 0x1F8 - 8 * i + 6)
        }
        return b.bytes
    }

    static func header(id: UInt8 = 0, version: [UInt8] = Array("0.97".utf8), config: String = "/boot/grub/menu.lst") -> [UInt8] {
        var b = ImageBuilder(sectors: 1)
        b.put([3, 2], at: 6)
        b.bytes[0x10] = id
        let after = 0x12 + version.count + 1 + (id == 0 ? 0 : 4)
        b.put(version, at: 0x12)
        b.put(Array(config.utf8), at: after)
        return b.bytes
    }

    @Test func stage1Fields() throws {
        let stage1 = try GrubLegacy.Stage1(Self.stage1(sector: 0x0102_0304, address: 0x7000, version: (2, 9)))
        #expect(stage1.versionMajor == 2 && stage1.versionMinor == 9 && stage1.bootDrive == 0x80)
        #expect(stage1.stage2Address == 0x7000 && stage1.stage2Sector == 0x0102_0304 && stage1.stage2Segment == 0x0800)
        #expect(throws: GrubLegacy.Problem.tooShort(bytes: 511)) { try GrubLegacy.Stage1(Array(Self.stage1().prefix(511))) }
    }

    @Test func stage2StartSector() throws {
        let start = try GrubLegacy.StartSector(Self.startSector(blocks: [(2, 100), (300, 5)]))
        #expect(start.kind == .stage2)
        #expect(start.linkAddress == 0x8000)
        #expect(start.blocklist == [.init(sector: 2, count: 100), .init(sector: 300, count: 5)])
    }

    @Test func stage1_5StartSectorWithoutLinkInstruction() throws {
        let start = try GrubLegacy.StartSector(Self.startSector(stage1_5: true, link: nil, blocks: []))
        #expect(start.kind == .stage1_5)
        #expect(start.linkAddress == nil)
        #expect(start.blocklist.isEmpty)
    }

    /// The list runs down from 0x1F8 and start.S's code ends before 0x1A0: 12 entries at most,
    /// even when the bytes below look like more.
    @Test func blocklistStopsAt0x1A0() throws {
        let blocks = (0..<14).map { (sector: UInt32(10 + $0), count: UInt16(1)) }
        let start = try GrubLegacy.StartSector(Self.startSector(blocks: blocks))
        #expect(start.blocklist.count == 12)
        #expect(start.blocklist.last == .init(sector: 21, count: 1))
    }

    @Test func notAStartSector() {
        #expect(throws: GrubLegacy.Problem.notStartSector(zeroed: true)) { try GrubLegacy.StartSector([UInt8](repeating: 0, count: 512)) }
        var noMessage = Self.startSector()
        noMessage.replaceSubrange(0x160..<0x16D, with: [UInt8](repeating: 0x20, count: 13))
        #expect(throws: GrubLegacy.Problem.notStartSector(zeroed: false)) { try GrubLegacy.StartSector(noMessage) }
        var otherCode = Self.startSector()
        otherCode[2] = 0xBF
        #expect(throws: GrubLegacy.Problem.notStartSector(zeroed: false)) { try GrubLegacy.StartSector(otherCode) }
        #expect(throws: GrubLegacy.Problem.tooShort(bytes: 100)) { try GrubLegacy.StartSector(Array(Self.startSector().prefix(100))) }
        #expect("\(GrubLegacy.Problem.notStartSector(zeroed: true))" == "it is zeroed")
    }

    @Test func stage2Header() throws {
        let stage2 = try GrubLegacy.Stage2Header(Self.header())
        #expect(stage2.id == 0 && stage2.version == "0.97" && stage2.configFile == "/boot/grub/menu.lst")
        #expect(!stage2.isStage1_5 && stage2.stage1_5FileName == nil)
        let e2fs = try GrubLegacy.Stage2Header(Self.header(id: 2, config: "/boot/grub/stage2"))
        #expect(e2fs.isStage1_5 && e2fs.stage1_5FileName == "e2fs_stage1_5" && e2fs.configFile == "/boot/grub/stage2")
        #expect(try GrubLegacy.Stage2Header(Self.header(id: 10)).stage1_5FileName == "ufs2_stage1_5")
        #expect(try GrubLegacy.Stage2Header(Self.header(id: 11)).stage1_5FileName == nil)
        var old = Self.header()
        old[7] = 1
        #expect(throws: GrubLegacy.Problem.notStage2(major: 3, minor: 1)) { try GrubLegacy.Stage2Header(old) }
        #expect(throws: GrubLegacy.Problem.tooShort(bytes: 0)) { try GrubLegacy.Stage2Header([]) }
    }

    /// Strings are bounded (16 bytes of version, 128 of file name) and non-printable bytes shown as "?".
    @Test func headerStringsAreBoundedAndPrintable() throws {
        let unterminated = try GrubLegacy.Stage2Header(Self.header(version: [UInt8](repeating: 0x41, count: 20), config: "x"))
        #expect(unterminated.version == String(repeating: "A", count: 16))
        #expect(unterminated.configFile == "AAA", "the file name starts after the 16 bytes read as the version and their NUL")
        let control = try GrubLegacy.Stage2Header(Self.header(version: [0x30, 0x07, 0xFF], config: String(repeating: "c", count: 200)))
        #expect(control.version == "0??")
        #expect(control.configFile == String(repeating: "c", count: 128))
    }

    /// make-corpus.sh's chain decodes link by link to what it was built as.
    @Test func corpusChain() throws {
        let bytes = try FuzzCorpusTests.read("\(FuzzCorpusTests.corpus)/grub-legacy-chain.bin")
        let stage1 = try GrubLegacy.Stage1(Array(bytes[0..<512]))
        #expect(stage1.stage2Sector == 1 && stage1.stage2Address == 0x8000)
        let start = try GrubLegacy.StartSector(Array(bytes[512..<1024]))
        #expect(start.kind == .stage2 && start.linkAddress == stage1.stage2Address && start.blocklist == [.init(sector: 2, count: 1)])
        #expect(try GrubLegacy.Stage2Header(Array(bytes[1024..<1536])).configFile == "/boot/grub/menu.lst")
        #expect(BootCode.identify(sector0: bytes).kind == .grubLegacy)
    }
}
