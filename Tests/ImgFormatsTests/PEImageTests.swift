import Foundation
import Testing

@testable import ImgFormats

/// PE/COFF headers and GRUB's "mods" section: real x86_64-efi images from grub-mkimage (Debian's
/// grub-efi-amd64-bin; a missing package fails the test and names it), hand-made PE32 and PE32+
/// files, and damage to each header, the section table and the module list.
@Suite("PE images and GRUB EFI modules")
struct PEImageTests {
    static let grubDirectory = "/usr/lib/grub/x86_64-efi"

    /// Runs grub-mkimage -O x86_64-efi in a temp dir and returns the EFI binary. `files` are written
    /// next to it first (for -c and -m), named as given.
    static func makeEFI(
        modules: [String] = ["part_gpt", "fat", "normal"], prefix: String = "/EFI/debian", extra: [String] = [],
        files: [String: [UInt8]] = [:]
    ) throws -> [UInt8] {
        let mkimage = try #require(ExternalToolTests.tool("grub-mkimage"), "grub-mkimage is not installed: apt-get install grub-common")
        try #require(
            FileManager.default.fileExists(atPath: grubDirectory + "/kernel.img"),
            "\(grubDirectory) is missing: apt-get install grub-efi-amd64-bin")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("grubefi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, contents) in files { try Data(contents).write(to: dir.appendingPathComponent(name)) }
        let output = dir.appendingPathComponent("out.efi").path
        let arguments =
            ["-O", "x86_64-efi", "-d", grubDirectory, "-p", prefix, "-o", output]
            + extra.map { files[$0] != nil ? dir.appendingPathComponent($0).path : $0 } + modules
        try ExternalToolTests.run(mkimage, arguments)
        return try [UInt8](Data(contentsOf: URL(fileURLWithPath: output)))
    }

    // MARK: little-endian helpers, independent of the parser

    static func le16(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8)] }
    static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    static func le64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) } }
    static func put(_ bytes: inout [UInt8], _ value: [UInt8], at offset: Int) {
        bytes.replaceSubrange(offset..<offset + value.count, with: value)
    }
    static func get32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }

    /// Where the section table of `bytes` starts, and the offset of the named section's header.
    static func sectionHeader(_ bytes: [UInt8], named name: String) throws -> Int {
        let pe = Int(get32(bytes, at: 0x3C))
        let count = Int(bytes[pe + 6]) | Int(bytes[pe + 7]) << 8
        let table = pe + 24 + (Int(bytes[pe + 20]) | Int(bytes[pe + 21]) << 8)
        let wanted = Array(name.utf8) + [UInt8](repeating: 0, count: 8 - name.utf8.count)
        let index = try #require((0..<count).first { bytes[table + 40 * $0..<table + 40 * $0 + 8].elementsEqual(wanted) })
        return table + 40 * index
    }

    // MARK: hand-made images

    /// A PE file: DOS header with e_lfanew 0x80, COFF header, an optional header of the standard
    /// size for `magic`, and `sections` laid out at 0x200-aligned raw offsets.
    static func pe(machine: UInt16 = 0x8664, magic: UInt16 = 0x20B, subsystem: UInt16 = 10, sections: [(String, [UInt8])]) -> [UInt8] {
        let optionalSize = magic == 0x20B ? 240 : 224
        var bytes = [UInt8](repeating: 0, count: 0x80)
        put(&bytes, Array("MZ".utf8), at: 0)
        put(&bytes, le32(0x80), at: 0x3C)
        bytes += Array("PE\0\0".utf8) + le16(machine) + le16(UInt16(sections.count)) + [UInt8](repeating: 0, count: 12)
        bytes += le16(UInt16(optionalSize)) + le16(0x22)
        var optional = [UInt8](repeating: 0, count: optionalSize)
        put(&optional, le16(magic), at: 0)
        put(&optional, le16(subsystem), at: 68)
        bytes += optional
        func align(_ n: Int) -> Int { (n + 0x1FF) & ~0x1FF }
        var raw = align(bytes.count + 40 * sections.count)
        var data: [UInt8] = []
        for (index, (name, contents)) in sections.enumerated() {
            let rawSize = align(contents.count)
            bytes += Array(name.utf8) + [UInt8](repeating: 0, count: 8 - name.utf8.count)
            bytes += le32(UInt32(contents.count)) + le32(UInt32(0x1000 * (index + 1))) + le32(UInt32(rawSize)) + le32(UInt32(raw))
            bytes += [UInt8](repeating: 0, count: 12) + le32(0x4000_0040)
            data += contents + [UInt8](repeating: 0, count: rawSize - contents.count)
            raw += rawSize
        }
        return bytes + [UInt8](repeating: 0, count: align(bytes.count) - bytes.count) + data
    }

    /// A minimal little-endian ELF64 with sections: null, .shstrtab, .modname ("name").
    static func elf64(name: String) -> [UInt8] {
        let names = Array("\0.shstrtab\0.modname\0".utf8)
        let modname = Array(name.utf8) + [0]
        let namesOffset = 64
        let modnameOffset = namesOffset + names.count
        let table = (modnameOffset + modname.count + 7) & ~7
        var bytes = [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1] + [UInt8](repeating: 0, count: 57)
        put(&bytes, le64(UInt64(table)), at: 0x28)
        put(&bytes, le16(64), at: 0x3A)
        put(&bytes, le16(3), at: 0x3C)
        put(&bytes, le16(1), at: 0x3E)
        bytes += names + modname
        bytes += [UInt8](repeating: 0, count: table - bytes.count)
        func section(name: UInt32, offset: Int, size: Int) -> [UInt8] {
            le32(name) + le32(3) + le64(0) + le64(0) + le64(UInt64(offset)) + le64(UInt64(size)) + [UInt8](repeating: 0, count: 24)
        }
        bytes += section(name: 0, offset: 0, size: 0)
        bytes += section(name: 1, offset: namesOffset, size: names.count)
        bytes += section(name: 11, offset: modnameOffset, size: modname.count)
        return bytes
    }

    /// A "mods" section: grub_module_info64 (or 32) and the entries, each padded to the pointer size
    /// as grub-mkimage pads them.
    static func mods(wide: Bool = true, entries: [(UInt32, [UInt8])]) -> [UInt8] {
        let alignment = wide ? 8 : 4
        var area: [UInt8] = []
        for (type, body) in entries {
            let padded = body + [UInt8](repeating: 0, count: (alignment - body.count % alignment) % alignment)
            area += le32(type) + le32(UInt32(8 + padded.count)) + padded
        }
        let header = wide ? 24 : 12
        let info =
            wide
            ? Array("mimg".utf8) + le32(0) + le64(24) + le64(UInt64(header + area.count))
            : Array("mimg".utf8) + le32(12) + le32(UInt32(header + area.count))
        return info + area
    }

    static func problem(_ bytes: [UInt8]) -> PEImage.Problem? {
        do {
            _ = try PEImage.parse(bytes)
            return nil
        } catch {
            return error
        }
    }

    static func grubProblem(_ bytes: [UInt8]) throws -> GrubEFIImage.Problem? {
        let pe = try PEImage.parse(bytes)
        do {
            _ = try GrubEFIImage.decode(pe: pe)
            return nil
        } catch {
            return error
        }
    }

    // MARK: real GRUB images

    @Test func grubMkimageX86_64() throws {
        let bytes = try Self.makeEFI()
        let pe = try PEImage.parse(bytes)
        #expect(pe.machine == .x86_64 && pe.machine.description == "x86-64")
        #expect(pe.format == .pe32Plus)
        #expect(pe.subsystem == .efiApplication)
        #expect(pe.sections.map(\.name).starts(with: [".text", ".data", "mods"]), "\(pe.sections.map(\.name))")
        for section in pe.sections {
            #expect(UInt64(section.rawPointer) + UInt64(section.rawSize) <= UInt64(bytes.count))
            #expect(section.rawPointer % 0x200 == 0 && section.virtualAddress % 0x1000 == 0, "\(section)")
        }
        let mods = try #require(pe.section(named: "mods"))
        #expect(Array(mods.prefix(4)) == Array("mimg".utf8))
        #expect(pe.section(named: "nothing") == nil)

        let grub = try GrubEFIImage.decode(pe: pe)
        #expect(Set(["part_gpt", "fat", "normal"]).isSubset(of: grub.modules), "\(grub.modules)")
        // grub-mkimage adds dependencies, each one a .mod file of the platform, each once.
        #expect(grub.modules.count > 3 && Set(grub.modules).count == grub.modules.count)
        for module in grub.modules {
            #expect(FileManager.default.fileExists(atPath: "\(Self.grubDirectory)/\(module).mod"), "\(module)")
        }
        #expect(grub.prefix == "/EFI/debian")
        #expect(grub.config == nil)
        #expect(grub.otherObjects.isEmpty)
    }

    @Test func grubMkimageWithConfigMemdiskAndShimLockOff() throws {
        let config = "search --file --set=root /EFI/debian/grub.cfg\nconfigfile ($root)/EFI/debian/grub.cfg\n"
        let bytes = try Self.makeEFI(
            modules: ["part_gpt", "fat", "search", "configfile", "memdisk"], prefix: "(memdisk)/boot/grub",
            extra: ["-c", "early.cfg", "-m", "memdisk.tar", "--disable-shim-lock"],
            files: ["early.cfg": Array(config.utf8), "memdisk.tar": [UInt8](repeating: 0, count: 10240)])
        let grub = try GrubEFIImage.decode(pe: try PEImage.parse(bytes))
        #expect(grub.config == config)
        #expect(grub.prefix == "(memdisk)/boot/grub")
        #expect(grub.otherObjects.sorted() == [1, 6], "the memdisk and disable_shim_lock")
        #expect(Set(["part_gpt", "fat", "search", "configfile", "memdisk"]).isSubset(of: grub.modules))
    }

    @Test func damagedGrubImage() throws {
        let good = try Self.makeEFI()
        let header = try Self.sectionHeader(good, named: "mods")
        let mods = Int(Self.get32(good, at: header + 20))
        let size = Int(Self.get32(good, at: mods + 16))  // grub_module_info64.size (low half)
        let sectionSize = Int(min(Self.get32(good, at: header + 8), Self.get32(good, at: header + 16)))

        // The file cut inside the mods section: the section no longer fits.
        let truncated = Array(good.prefix(mods + 1000))
        guard case .sectionOutOfRange(let name, _, _, let fileSize)? = Self.problem(truncated) else {
            Issue.record("expected the mods section out of range, got \(String(describing: Self.problem(truncated)))")
            return
        }
        #expect(name == "mods" && fileSize == mods + 1000)

        // The section table says the section is shorter than the module info claims.
        var short = good
        Self.put(&short, Self.le32(1000), at: header + 8)
        #expect(try Self.grubProblem(short) == .moduleInfoOutOfRange(offset: 24, size: UInt64(size), sectionSize: 1000))
        var tiny = good
        Self.put(&tiny, Self.le32(10), at: header + 8)
        #expect(try Self.grubProblem(tiny) == .moduleInfoMissing)

        var noMagic = good
        noMagic[mods] = 0
        #expect(try Self.grubProblem(noMagic) == .moduleInfoMissing)
        var hugeSize = good
        Self.put(&hugeSize, Self.le64(.max), at: mods + 16)
        #expect(try Self.grubProblem(hugeSize) == .moduleInfoOutOfRange(offset: 24, size: .max, sectionSize: sectionSize))
        var badOffset = good
        Self.put(&badOffset, Self.le64(8), at: mods + 8)
        #expect(try Self.grubProblem(badOffset) == .moduleInfoOutOfRange(offset: 8, size: UInt64(size), sectionSize: sectionSize))

        // Module headers: size 0 (GRUB itself would loop forever), below 8, past the end.
        let first = mods + 24
        for bad: UInt32 in [0, 7, UInt32(size), 0xFFFF_FFFF] {
            var damaged = good
            Self.put(&damaged, Self.le32(bad), at: first + 4)
            #expect(
                try Self.grubProblem(damaged) == .moduleEntryInvalid(
                    entry: 1, offset: 24, reason: "size \(bad) is below 8 or runs past the end (\(size - 24) bytes left)"),
                "size \(bad)")
        }
        var notELF = good
        notELF[first + 8] = 0
        #expect(try Self.grubProblem(notELF) == .moduleNameMissing(entry: 1, reason: "not an ELF file"))

        var renamed = good
        Self.put(&renamed, Array("mod2".utf8), at: header)
        #expect(try Self.grubProblem(renamed) == .modsSectionMissing)
        #expect(try Self.grubProblem(renamed)?.description.contains("no \"mods\" section") == true)
    }

    /// Single-byte damage all over the headers and the start of the module list: a result or a
    /// problem, never a trap or a hang.
    @Test func singleByteDamageNeverTraps() throws {
        let good = try Self.makeEFI()
        let header = try Self.sectionHeader(good, named: "mods")
        let mods = Int(Self.get32(good, at: header + 20))
        for offset in Array(0..<0x400) + Array(stride(from: mods, to: mods + 0x2000, by: 7)) {
            for flip: UInt8 in [0x01, 0x80, 0xFF] {
                var damaged = good
                damaged[offset] ^= flip
                if let pe = try? PEImage.parse(damaged) { _ = try? GrubEFIImage.decode(pe: pe) }
            }
        }
    }

    // MARK: hand-made images

    @Test func handMadePE32AndPE32Plus() throws {
        let list64 = Self.mods(entries: [
            (0, Self.elf64(name: "fat")), (3, Array("/EFI/boot\0".utf8)), (0, Self.elf64(name: "part_gpt")),
            (2, Array("set root=hd0,gpt1\n\0".utf8)), (6, []), (42, [1, 2, 3]),
        ])
        let wide = try PEImage.parse(Self.pe(sections: [(".text", [0xC3]), ("mods", list64)]))
        #expect(wide.sections.map(\.name) == [".text", "mods"])
        #expect(wide.sections.map(\.virtualSize) == [1, UInt32(list64.count)])
        #expect(wide.section(named: "mods") == list64, "raw data cut to the virtual size")
        #expect(wide.section(named: ".text") == [0xC3])
        #expect(try GrubEFIImage.decode(pe: wide) == GrubEFIImage(
            modules: ["fat", "part_gpt"], prefix: "/EFI/boot", config: "set root=hd0,gpt1\n", otherObjects: [6, 42]))

        // PE32 (i386-efi): 32-bit module info and ELF32 modules.
        let list32 = Self.mods(wide: false, entries: [(0, GrubCoreTests.elf(name: "ext2")), (3, Array("(hd0)\0".utf8))])
        let narrow = try PEImage.parse(Self.pe(machine: 0x14C, magic: 0x10B, subsystem: 11, sections: [("mods", list32)]))
        #expect(narrow.machine == .i386 && narrow.format == .pe32 && narrow.subsystem == .efiBootServiceDriver)
        #expect(try GrubEFIImage.decode(pe: narrow) == GrubEFIImage(modules: ["ext2"], prefix: "(hd0)", config: nil, otherObjects: []))

        // A module of the other ELF class is not one this kernel can load.
        let mixed = try PEImage.parse(Self.pe(sections: [("mods", Self.mods(entries: [(0, GrubCoreTests.elf(name: "ext2"))]))]))
        #expect(throws: GrubEFIImage.Problem.moduleNameMissing(entry: 1, reason: "not a little-endian 64-bit ELF file")) {
            try GrubEFIImage.decode(pe: mixed)
        }

        let arm = try PEImage.parse(Self.pe(machine: 0xAA64, subsystem: 12, sections: []))
        #expect(arm.machine == .aarch64 && arm.subsystem == .efiRuntimeDriver && arm.sections.isEmpty)
        let riscv = try PEImage.parse(Self.pe(machine: 0x5064, subsystem: 3, sections: []))
        #expect(riscv.machine == .other(0x5064) && riscv.subsystem == .other(3))
        #expect(riscv.machine.description == "machine 0x5064" && riscv.subsystem.description == "subsystem 3")
        #expect(throws: GrubEFIImage.Problem.modsSectionMissing) { try GrubEFIImage.decode(pe: riscv) }
    }

    /// The fuzzer's PE seeds (TestImages/corpus/formats) decode to what they were made with.
    @Test func fuzzSeeds() throws {
        let wide = try PEImage.parse(try FuzzCorpusTests.read("\(FuzzCorpusTests.corpus)/pe32plus-grub-mods.bin"))
        #expect(wide.machine == .x86_64 && wide.format == .pe32Plus && wide.sections.map(\.name) == [".text", "mods"])
        #expect(try GrubEFIImage.decode(pe: wide) == GrubEFIImage(
            modules: ["part_gpt", "fat"], prefix: "/EFI/debian", config: "configfile /EFI/debian/grub.cfg\n", otherObjects: [6]))
        let narrow = try PEImage.parse(try FuzzCorpusTests.read("\(FuzzCorpusTests.corpus)/pe32-grub-mods.bin"))
        #expect(narrow.machine == .i386 && narrow.format == .pe32)
        #expect(try GrubEFIImage.decode(pe: narrow) == GrubEFIImage(
            modules: ["fat"], prefix: "(hd0,gpt1)/boot/grub", config: nil, otherObjects: []))
    }

    @Test func hostileHeaders() throws {
        let good = Self.pe(sections: [(".text", [UInt8](repeating: 0x90, count: 100)), ("mods", Self.mods(entries: []))])
        #expect(Self.problem(good) == nil)
        let table = 0x80 + 24 + 240

        #expect(Self.problem([UInt8](repeating: 0, count: 64)) == .notMZ)
        #expect(Self.problem(Array("MZ".utf8)) == .notMZ)

        for lfanew: UInt32 in [UInt32(good.count), UInt32(good.count - 23), 0xFFFF_FFFF] {
            var damaged = good
            Self.put(&damaged, Self.le32(lfanew), at: 0x3C)
            #expect(Self.problem(damaged) == .peHeaderOutOfRange(offset: lfanew, fileSize: good.count))
        }
        var notPE = good
        notPE[0x81] = 0x58
        #expect(Self.problem(notPE) == .notPE(offset: 0x80))

        var manySections = good
        Self.put(&manySections, Self.le16(0xFFFF), at: 0x86)
        #expect(Self.problem(manySections) == .tooManySections(65535))
        var ninetySix = good
        Self.put(&ninetySix, Self.le16(96), at: 0x86)
        #expect(Self.problem(ninetySix) == .headersOutOfRange(end: table + 96 * 40, fileSize: good.count))
        var hugeOptional = good
        Self.put(&hugeOptional, Self.le16(0xFFFF), at: 0x80 + 20)
        let hugeEnd = 0x80 + 24 + 0xFFFF + 80
        #expect(Self.problem(hugeOptional) == .headersOutOfRange(end: hugeEnd, fileSize: good.count))
        var smallOptional = good
        Self.put(&smallOptional, Self.le16(100), at: 0x80 + 20)
        #expect(Self.problem(smallOptional) == .optionalHeaderTooSmall(size: 100, needed: 112))
        var badMagic = good
        Self.put(&badMagic, Self.le16(0x107), at: 0x80 + 24)
        #expect(Self.problem(badMagic) == .unknownOptionalHeader(magic: 0x107))

        // Raw data past the end, and a pointer + size that overflows 32 bits.
        var pastEnd = good
        Self.put(&pastEnd, Self.le32(UInt32(good.count)), at: table + 40 + 16)
        #expect(Self.problem(pastEnd) == .sectionOutOfRange(name: "mods", pointer: Self.get32(good, at: table + 40 + 20), size: UInt32(good.count), fileSize: good.count))
        var overflow = good
        Self.put(&overflow, Self.le32(0xFFFF_FF00), at: table + 20)
        Self.put(&overflow, Self.le32(0x200), at: table + 16)
        #expect(Self.problem(overflow) == .sectionOutOfRange(name: ".text", pointer: 0xFFFF_FF00, size: 0x200, fileSize: good.count))
        #expect(Self.problem(overflow)?.description.contains("section \".text\" claims 512 bytes") == true)
        // No raw data: the pointer is not used.
        var bss = good
        Self.put(&bss, Self.le32(0), at: table + 16)
        Self.put(&bss, Self.le32(0xFFFF_FFFF), at: table + 20)
        #expect(try PEImage.parse(bss).section(named: ".text") == [])
    }

    @Test func hostileModuleLists() throws {
        func decode(_ mods: [UInt8]) throws -> GrubEFIImage.Problem? {
            try Self.grubProblem(Self.pe(sections: [("mods", mods)]))
        }
        var zero = Self.mods(entries: [(3, Array("/EFI\0".utf8)), (3, Array("/x\0".utf8))])
        Self.put(&zero, Self.le32(0), at: 24 + 16 + 4)  // the second entry's size
        #expect(try decode(zero) == .moduleEntryInvalid(entry: 2, offset: 40, reason: "size 0 is below 8 or runs past the end (16 bytes left)"))
        // A trailing entry with no room for its header.
        var trailing = Self.mods(entries: [])
        trailing += [0, 0, 0, 0]
        Self.put(&trailing, Self.le64(28), at: 16)
        #expect(try decode(trailing) == .moduleEntryInvalid(entry: 1, offset: 24, reason: "only 4 bytes left for its 8-byte header"))
        // An ELF64 module whose section table lies outside it.
        var elf = Self.elf64(name: "fat")
        Self.put(&elf, Self.le64(.max - 10), at: 0x28)
        #expect(try decode(Self.mods(entries: [(0, elf)])) == .moduleNameMissing(entry: 1, reason: "its section header table lies outside the module"))
        var section = Self.elf64(name: "fat")
        Self.put(&section, Self.le64(.max), at: section.count - 64 + 0x20)  // .modname's size
        #expect(try decode(Self.mods(entries: [(0, section)])) == .moduleNameMissing(entry: 1, reason: "section 2 lies outside the module"))
        #expect(try decode(Self.mods(entries: [])) == nil)
    }
}
