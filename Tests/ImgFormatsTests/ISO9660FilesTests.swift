import Testing

@testable import ImgFormats

/// ISO 9660 volumes with Rock Ridge and Joliet built byte by byte (ECMA-119, SUSP 1.12, RRIP
/// 1.12), independently of the reader under test.
struct RRBuilder {
    var bytes: [UInt8]

    init(blocks: Int) { bytes = [UInt8](repeating: 0, count: blocks * 2048) }

    var source: MemoryByteSource { MemoryByteSource(bytes) }

    static func both32(_ v: UInt32) -> [UInt8] {
        [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)]
            + [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
    }

    /// One SUSP entry.
    static func entry(_ signature: String, _ payload: [UInt8]) -> [UInt8] {
        Array(signature.utf8) + [UInt8(4 + payload.count), 1] + payload
    }

    static func px(mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0, serial: UInt32? = nil) -> [UInt8] {
        entry("PX", both32(mode) + both32(1) + both32(uid) + both32(gid) + (serial.map(both32) ?? []))
    }

    static func nm(_ name: String, continues: Bool = false) -> [UInt8] { entry("NM", [continues ? 1 : 0] + Array(name.utf8)) }

    static let sp = entry("SP", [0xBE, 0xEF, 0])

    /// 2023-11-14 22:13:20 UTC (1_700_000_000) as a 7-byte date.
    static let date: [UInt8] = [123, 11, 14, 22, 13, 20, 0]

    /// A directory record: identifier, extent, flags, then the System Use bytes; padded to even length.
    static func record(_ identifier: [UInt8], block: UInt32, size: UInt32, flags: UInt8 = 0, date: [UInt8] = date,
                       systemUse: [UInt8] = []) -> [UInt8] {
        var r = [UInt8](repeating: 0, count: 33)
        r[2..<10] = both32(block)[...]
        r[10..<18] = both32(size)[...]
        r[18..<25] = date[...]
        r[25] = flags
        r[28] = 1
        r[32] = UInt8(identifier.count)
        r += identifier
        if identifier.count % 2 == 0 { r.append(0) }
        r += systemUse
        if r.count % 2 == 1 { r.append(0) }
        r[0] = UInt8(r.count)
        return r
    }

    /// A volume descriptor at `block`: type 1 (primary) or 2 (supplementary, with `escape`).
    mutating func descriptor(at block: Int, type: UInt8, root: UInt32, rootSize: UInt32 = 2048, escape: [UInt8] = []) {
        let at = block * 2048
        bytes[at] = type
        bytes.replaceSubrange((at + 1)..<(at + 7), with: Array("CD001".utf8) + [1])
        bytes.replaceSubrange((at + 80)..<(at + 88), with: Self.both32(UInt32(bytes.count / 2048)))
        bytes.replaceSubrange((at + 88)..<(at + 88 + escape.count), with: escape)
        bytes.replaceSubrange((at + 128)..<(at + 132), with: [0x00, 0x08, 0x08, 0x00])  // 2048, both-endian
        let r = Self.record([0], block: root, size: rootSize, flags: 2)
        bytes.replaceSubrange((at + 156)..<(at + 156 + r.count), with: r)
    }

    mutating func terminator(at block: Int) {
        bytes.replaceSubrange((block * 2048)..<(block * 2048 + 7), with: [255] + Array("CD001".utf8) + [1])
    }

    /// Records one after the other from the start of `block`.
    mutating func put(_ records: [[UInt8]], at block: Int, offset: Int = 0) {
        let all = records.flatMap { $0 }
        bytes.replaceSubrange((block * 2048 + offset)..<(block * 2048 + offset + all.count), with: all)
    }

    static func ucs2(_ s: String) -> [UInt8] { s.utf16.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } }

    /// A Rock Ridge volume, descriptors at 0 and 1:
    ///   block 2  root: "." (SP, PX), "..", hello.txt (NM continued, TF long form), big (multi-extent:
    ///            blocks 6 and 7), link -> /directory/../hello.txt (SL over two entries), DIR (PX, NM
    ///            "directory" in the continuation area at block 5),
    ///            deep (CL -> 4), RR_MOVED (RE placeholder, left out)
    ///   block 3  dir: ".", ".."
    ///   block 4  the relocated directory: "." (PX 040700, RE-less), "..", inner.txt (data block 6)
    ///   block 5  continuation area: NM "directory"
    ///   block 6, 7: file data
    static func rockRidge() -> RRBuilder {
        var iso = RRBuilder(blocks: 9)
        iso.descriptor(at: 0, type: 1, root: 2)
        iso.terminator(at: 1)
        let tf = entry("TF", [0x82] + Array("2023111422132000".utf8) + [0])  // modify, long form
        let ce = entry("CE", both32(5) + both32(100) + both32(UInt32(nm("directory").count)))
        iso.put([
            record([0], block: 2, size: 2048, flags: 2, systemUse: sp + px(mode: 0o40755)),
            record([1], block: 2, size: 2048, flags: 2),
            record(Array("HELLO.TXT;1".utf8), block: 6, size: 6, date: [0, 0, 0, 0, 0, 0, 0],
                   systemUse: px(mode: 0o100644, uid: 1000, gid: 100, serial: 77) + nm("hel", continues: true) + nm("lo.txt") + tf),
            record(Array("BIG;1".utf8), block: 6, size: 2048, flags: 0x80, systemUse: px(mode: 0o100600) + nm("big")),
            record(Array("BIG;1".utf8), block: 7, size: 10, systemUse: px(mode: 0o100600) + nm("big")),
            record(Array("LINK.;1".utf8), block: 0, size: 0, systemUse: px(mode: 0o120777) + nm("link")
                   + entry("SL", [1, 0x08, 0, 0, 9] + Array("directory".utf8) + [0x04, 0, 0x01, 3] + Array("hel".utf8))
                   + entry("SL", [0, 0, 6] + Array("lo.txt".utf8))),
            record(Array("DIR".utf8), block: 3, size: 2048, flags: 2, systemUse: px(mode: 0o40750) + ce),
            record(Array("DEEP".utf8), block: 0, size: 0, systemUse: px(mode: 0o100644) + nm("deep") + entry("CL", both32(4))),
            record(Array("RR_MOVED".utf8), block: 4, size: 2048, flags: 2, systemUse: nm("rr_moved") + entry("RE", [])),
        ], at: 2)
        iso.put([record([0], block: 3, size: 2048, flags: 2), record([1], block: 2, size: 2048, flags: 2)], at: 3)
        iso.put([record([0], block: 4, size: 2048, flags: 2, systemUse: px(mode: 0o40700)),
                 record([1], block: 2, size: 2048, flags: 2),
                 record(Array("INNER.TXT;1".utf8), block: 6, size: 5, systemUse: nm("inner.txt"))], at: 4)
        iso.put([nm("directory")], at: 5, offset: 100)
        iso.bytes.replaceSubrange((6 * 2048)..<(6 * 2048 + 6), with: Array("hello\n".utf8))
        iso.bytes.replaceSubrange((7 * 2048)..<(7 * 2048 + 10), with: Array("0123456789".utf8))
        return iso
    }
}

@Suite("ISO 9660 files: Rock Ridge, Joliet, plain names")
struct ISO9660FilesTests {
    typealias FS = ISO9660Filesystem

    @Test func systemUseEntries() {
        var use = FS.SystemUse()
        let area = RRBuilder.px(mode: 0o100640, uid: 5, gid: 6, serial: 9) + RRBuilder.nm("na", continues: true) + RRBuilder.nm("me")
            + RRBuilder.entry("TF", [0x03] + [100, 1, 1, 0, 0, 0, 0] + RRBuilder.date)  // creation, then modify
            + RRBuilder.entry("ST", []) + RRBuilder.nm("ignored")
        #expect(use.parse(area[...]) == nil)
        #expect(use.mode == 0o100640 && use.uid == 5 && use.gid == 6 && use.serial == 9)
        #expect(use.name == Array("name".utf8) && use.modified == 1_700_000_000 && !use.isSymlink)

        // SL: the root flag, "..", ".", a component continued over two SL entries.
        var link = FS.SystemUse()
        _ = link.parse((RRBuilder.entry("SL", [1, 0x08, 0, 0x04, 0, 0x01, 2] + Array("lo".utf8))
                        + RRBuilder.entry("SL", [0, 0, 2] + Array("ng".utf8) + [0x02, 0])
                        + RRBuilder.entry("SL", [0, 0, 1] + Array("x".utf8)))[...])  // a second link is ignored
        #expect(link.target == "/../long/.")
        var relative = FS.SystemUse()
        _ = relative.parse(RRBuilder.entry("SL", [0, 0, 3] + Array("a/b".utf8) + [0, 1] + Array("c".utf8))[...])
        #expect(relative.target == "a/b/c")

        // CE is returned; a length past the area, or below 4, ends the parse without a trap.
        var ce = FS.SystemUse()
        #expect(ce.parse(RRBuilder.entry("CE", RRBuilder.both32(9) + RRBuilder.both32(8) + RRBuilder.both32(7))[...])
                == FS.Continuation(block: 9, offset: 8, length: 7))
        var bad = FS.SystemUse()
        #expect(bad.parse([UInt8(ascii: "P"), UInt8(ascii: "X"), 200, 1, 0, 0][...]) == nil && bad.mode == nil)
        #expect(bad.parse([UInt8(ascii: "P"), UInt8(ascii: "X"), 2, 1][...]) == nil)
        // A PX too short for its fields records what fits and nothing past it.
        var short = FS.SystemUse()
        _ = short.parse(RRBuilder.entry("PX", RRBuilder.both32(0o100644))[...])
        #expect(short.mode == 0o100644 && short.uid == nil)
    }

    @Test func times() {
        #expect(FS.recordingTime(RRBuilder.date[...]) == 1_700_000_000)
        // 23:13:20 at GMT+1 (4 quarter hours) is 22:13:20 UTC; an offset past ±13 hours is ignored.
        #expect(FS.recordingTime([123, 11, 14, 23, 13, 20, 4][...]) == 1_700_000_000)
        #expect(FS.recordingTime([123, 11, 14, 21, 13, 20, UInt8(bitPattern: -4)][...]) == 1_700_000_000)
        #expect(FS.recordingTime([123, 11, 14, 22, 13, 20, 100][...]) == 1_700_000_000)
        #expect(FS.recordingTime([70, 0, 0, 0, 0, 0, 0][...]) == 0, "month and day 0 count as 1")
        #expect(FS.recordingTime([1, 2][...]) == 0)
        #expect(FS.longTime((Array("2023111422132000".utf8) + [0])[...]) == 1_700_000_000)
        #expect(FS.longTime((Array("2023111423132000".utf8) + [4])[...]) == 1_700_000_000)
        #expect(FS.longTime((Array("0000000000000000".utf8) + [0])[...]) == nil)
        #expect(FS.longTime((Array("2023x11422132000".utf8) + [0])[...]) == nil)
        // FAT: 2023-11-14 22:13:20 as the writer's local time, taken as UTC.
        let date = UInt16(2023 - 1980) << 9 | 11 << 5 | 14, time = UInt16(22) << 11 | 13 << 5 | 10
        #expect(FATFilesystem.unixTime(date: date, time: time) == 1_700_000_000)
        #expect(FATFilesystem.unixTime(date: 0, time: 0) == 315_532_800, "1980-01-01: month and day 0 count as 1")
        #expect(FATFilesystem.unixTime(date: 0xFFFF, time: 0xFFFF) > 0, "out-of-range fields do not trap")
        let entry = FATFilesystem.Entry(name: "A", shortName: "A", isDirectory: false, size: 1, firstCluster: 3, attributes: 0x21,
                                        modifiedDate: date, modifiedTime: time)
        #expect(entry.isReadOnly && entry.modified == 1_700_000_000)
    }

    @Test func names() {
        #expect(FS.primaryName(Array("README.;1".utf8)[...]) == "readme")
        #expect(FS.primaryName(Array("FOO.TXT;1".utf8)[...]) == "foo.txt")
        #expect(FS.primaryName(Array("A;B".utf8)[...]) == "a.b")
        #expect(FS.primaryName(Array("X;2".utf8)[...]) == "x.2")
        #expect(FS.primaryName(Array("NO_VERSION".utf8)[...]) == "no_version")
        #expect(FS.primaryName([0x41, 0, 0x42][...]) == "a")
        #expect(FS.jolietName(RRBuilder.ucs2("Ünïcödé ﬁle.txt;1")[...]) == "Ünïcödé ﬁle.txt")
        #expect(FS.jolietName(RRBuilder.ucs2("dots..;1")[...]) == "dots")
        #expect(FS.jolietName((RRBuilder.ucs2("odd") + [0x41])[...]) == "odd")
        #expect(FS.jolietName(RRBuilder.ucs2("😀")[...]) == "😀", "surrogate pairs (UCS-2 level 3 writers emit UTF-16)")
    }

    @Test func rockRidgeVolume() throws {
        let fs = try FS.open(RRBuilder.rockRidge().source, offset: 0, length: 9 * 2048, descriptorBlock: 0)
        #expect(fs.names == .rockRidge && fs.root.mode == 0o40755)
        let root = try fs.list(fs.root, path: "/")
        #expect(root.map(\.name) == ["hello.txt", "big", "link", "directory", "deep"])
        let hello = root[0]
        #expect(hello.kind == .file && hello.mode == 0o100644 && hello.uid == 1000 && hello.gid == 100 && hello.inode == 77)
        #expect(hello.modified == 1_700_000_000 && hello.size == 6, "TF's long form over the record's zero date")
        #expect(root[1].extents == [.init(block: 6, length: 2048), .init(block: 7, length: 10)] && root[1].size == 2058)
        #expect(root[2].kind == .symlink && root[2].target == "/directory/../hello.txt" && root[2].size == 23)
        #expect(root[3].kind == .directory && root[3].mode == 0o40750, "the name came from the continuation area")
        #expect(root[4].kind == .directory && root[4].mode == 0o40700 && root[4].extents == [.init(block: 4, length: 2048)])

        var bytes: [UInt8] = []
        try fs.stream(try fs.lookup("/big"), path: "/big") { bytes += $0; return true }
        #expect(bytes.count == 2058 && Array(bytes.prefix(6)) == Array("hello\n".utf8) && Array(bytes.suffix(10)) == Array("0123456789".utf8))
        // The link resolves inside the volume ("/directory/.." back to the root); lookup without
        // following gives the link itself.
        #expect(try fs.lookup("/link").name == "hello.txt")
        #expect(try fs.lookup("/link", followFinal: false).kind == .symlink)
        #expect(try fs.lookup("/deep/inner.txt").size == 5)
        #expect(try fs.lookup("/directory/../deep/./inner.txt").size == 5)
        #expect(try fs.lookup("/../../hello.txt").name == "hello.txt", "the root's parent is the root")
        #expect(throws: FS.Problem.notFound("/HELLO.TXT", missing: "/HELLO.TXT")) { try fs.lookup("/HELLO.TXT") }
        #expect(throws: FS.Problem.notADirectory("/hello.txt/x", component: "/hello.txt")) { try fs.lookup("/hello.txt/x") }
        #expect(throws: FS.Problem.isADirectory("/deep")) { try fs.stream(try fs.lookup("/deep"), path: "/deep") { _ in true } }
        #expect(throws: FS.Problem.notARegularFile("/link")) {
            try fs.stream(try fs.lookup("/link", followFinal: false), path: "/link") { _ in true }
        }
    }

    /// A Rock Ridge root holding links a -> b -> a, "c" whose CE points at itself, "far" whose
    /// extent runs past the end, and (when `out`) "out" whose CE lies outside the volume.
    static func hostile(out: Bool) -> RRBuilder {
        var iso = RRBuilder(blocks: 5)
        iso.descriptor(at: 0, type: 1, root: 2)
        iso.terminator(at: 1)
        func link(_ name: String, _ target: String) -> [UInt8] {
            RRBuilder.record(Array(name.uppercased().utf8), block: 0, size: 0, systemUse: RRBuilder.px(mode: 0o120777) + RRBuilder.nm(name)
                             + RRBuilder.entry("SL", [0, 0, UInt8(target.utf8.count)] + Array(target.utf8)))
        }
        let selfCE = RRBuilder.entry("CE", RRBuilder.both32(3) + RRBuilder.both32(0) + RRBuilder.both32(28))
        var records = [RRBuilder.record([0], block: 2, size: 2048, flags: 2, systemUse: RRBuilder.sp),
                       RRBuilder.record([1], block: 2, size: 2048, flags: 2),
                       link("a", "b"), link("b", "a"),
                       RRBuilder.record(Array("C".utf8), block: 4, size: 1, systemUse: RRBuilder.nm("c") + selfCE),
                       RRBuilder.record(Array("FAR".utf8), block: 4, size: 4096, systemUse: RRBuilder.nm("far"))]
        if out {
            records.append(RRBuilder.record(Array("OUT".utf8), block: 0, size: 0, systemUse: RRBuilder.nm("out")
                                            + RRBuilder.entry("CE", RRBuilder.both32(4000) + RRBuilder.both32(0) + RRBuilder.both32(10))))
        }
        iso.put(records, at: 2)
        iso.put([selfCE], at: 3)
        return iso
    }

    @Test func linkLoopsAndBoundsAreProblems() throws {
        let bad = try FS.open(Self.hostile(out: true).source, offset: 0, length: 5 * 2048, descriptorBlock: 0)
        #expect(throws: FS.Problem.outsideVolume(what: "a Rock Ridge continuation area in /", block: 4000, bytes: 10, volumeBytes: 10240)) {
            try bad.list(bad.root, path: "/")
        }
        let fs = try FS.open(Self.hostile(out: false).source, offset: 0, length: 5 * 2048, descriptorBlock: 0)
        #expect(try fs.list(fs.root, path: "/").map(\.name) == ["a", "b", "c", "far"], "a CE chain to itself ends")
        #expect(throws: FS.Problem.symlinkLoop("/a")) { try fs.lookup("/a") }
        #expect(throws: FS.Problem.outsideVolume(what: "/far", block: 4, bytes: 4096, volumeBytes: 10240)) {
            try fs.stream(try fs.lookup("/far"), path: "/far") { _ in true }
        }
        // The volume is what the source holds, whatever the caller says.
        #expect(throws: FS.Problem.outsideVolume(what: "/far", block: 4, bytes: 4096, volumeBytes: 10240)) {
            let wide = try FS.open(Self.hostile(out: false).source, offset: 0, length: 1 << 40, descriptorBlock: 0)
            try wide.stream(try wide.lookup("/far"), path: "/far") { _ in true }
        }
        #expect(throws: FS.Problem.noPrimaryDescriptor) { try FS.open(MemoryByteSource([UInt8](repeating: 0, count: 4096)), offset: 0, length: 1 << 40) }
        #expect(throws: FS.Problem.noPrimaryDescriptor) { try FS.open(MemoryByteSource([]), offset: .max, length: .max) }
    }

    @Test func jolietAndPlainVolumes() throws {
        var iso = RRBuilder(blocks: 7)
        iso.descriptor(at: 0, type: 1, root: 3)
        iso.descriptor(at: 1, type: 2, root: 4, escape: Array("%/E".utf8))
        iso.terminator(at: 2)
        let dot = RRBuilder.record([0], block: 3, size: 2048, flags: 2), dotdot = RRBuilder.record([1], block: 3, size: 2048, flags: 2)
        iso.put([dot, dotdot, RRBuilder.record(Array("LONG_NAM.TXT;1".utf8), block: 5, size: 3),
                 RRBuilder.record(Array("SUB".utf8), block: 6, size: 2048, flags: 2),
                 RRBuilder.record(Array("ASSOC".utf8), block: 5, size: 3, flags: 4)], at: 3)
        iso.put([dot, dotdot, RRBuilder.record(RRBuilder.ucs2("Long name.txt;1"), block: 5, size: 3),
                 RRBuilder.record(RRBuilder.ucs2("Sub dir"), block: 6, size: 2048, flags: 2)], at: 4)
        iso.put([RRBuilder.record([0], block: 6, size: 2048, flags: 2), dotdot], at: 6)
        iso.bytes.replaceSubrange((5 * 2048)..<(5 * 2048 + 3), with: Array("abc".utf8))
        let joliet = try FS.open(iso.source, offset: 0, length: UInt64(iso.bytes.count), descriptorBlock: 0)
        #expect(joliet.names == .joliet)
        let entries = try joliet.list(joliet.root, path: "/")
        #expect(entries.map(\.name) == ["Long name.txt", "Sub dir"])
        #expect(entries.map(\.mode) == [0o100555, 0o40555] && entries.allSatisfy { $0.uid == 0 && $0.modified == 1_700_000_000 })
        #expect(try joliet.lookup("/long NAME.txt").size == 3, "outside Rock Ridge, case-insensitively when no exact match")
        // Without the Joliet descriptor: isofs's map=normal names; associated files left out.
        iso.bytes[2048 + 88] = 0
        let plain = try FS.open(iso.source, offset: 0, length: UInt64(iso.bytes.count), descriptorBlock: 0)
        #expect(plain.names == .primary)
        #expect(try plain.list(plain.root, path: "/").map(\.name) == ["long_nam.txt", "sub"])
        var read: [UInt8] = []
        try plain.stream(try plain.lookup("/LONG_NAM.TXT"), path: "/LONG_NAM.TXT") { read += $0; return true }
        #expect(read == Array("abc".utf8))
    }
}
