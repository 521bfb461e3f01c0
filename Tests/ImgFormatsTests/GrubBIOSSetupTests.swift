import Foundation
import Testing

@testable import ImgFormats

/// GRUB's Reed-Solomon encoder, checked against field arithmetic written out here (bit by bit, no
/// tables), hand-derived vectors and one codeword of a real grub-install embedding.
@Suite("GRUB Reed-Solomon")
struct ReedSolomonTests {
    /// GF(2^8) product the slow way: shift and add, reducing by x^8 + x^4 + x^3 + x^2 + 1.
    static func slowMultiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var product = 0
        for bit in 0..<8 where b >> bit & 1 == 1 { product ^= Int(a) << bit }
        for bit in stride(from: 14, through: 8, by: -1) where product >> bit & 1 == 1 { product ^= 0x11D << (bit - 8) }
        return UInt8(product)
    }

    /// The values of `codeword` (highest degree first) at 1, α, ..., α^(n-1): all zero exactly when
    /// GRUB's decoder sees nothing to repair. Through the encoder's tables for speed; the tables are
    /// checked against `slowMultiply` for every pair.
    static func syndromes(_ codeword: [UInt8], _ n: Int) -> [UInt8] {
        var x: UInt8 = 1
        var values: [UInt8] = []
        for _ in 0..<n {
            values.append(codeword.reduce(0) { ReedSolomon.multiply($0, x) ^ $1 })
            x = slowMultiply(x, 2)
        }
        return values
    }

    /// Every codeword GRUB's layout forms from `data` and `redundancy`: per chunk, per byte offset
    /// in the sector, the data bytes at that offset followed by the redundancy bytes at it.
    static func codewords(data: [UInt8], redundancy: [UInt8]) throws -> [(codeword: [UInt8], checkCount: Int)] {
        let plan = try #require(ReedSolomon.chunks(dataCount: data.count, redundancyCount: redundancy.count))
        var words: [([UInt8], Int)] = []
        var (d, r) = (0, 0)
        for chunk in plan {
            for column in 0..<512 {
                let rows = stride(from: column, to: chunk.data, by: 512).map { data[d + $0] }
                let checks = stride(from: column, to: chunk.redundancy, by: 512).map { redundancy[r + $0] }
                if !rows.isEmpty, !checks.isEmpty { words.append((rows + checks, checks.count)) }
            }
            d += chunk.data
            r += chunk.redundancy
        }
        #expect(d == data.count && r == redundancy.count, "the chunks cover everything")
        return words
    }

    @Test func fieldTablesAgreeWithSlowMultiplication() {
        for a in 0...255 {
            for b in 0...255 {
                #expect(ReedSolomon.multiply(UInt8(a), UInt8(b)) == Self.slowMultiply(UInt8(a), UInt8(b)))
            }
        }
    }

    @Test func handDerivedVectors() throws {
        // One data byte 1, one check byte: X mod (X + 1) = 1.
        #expect(ReedSolomon.grubRedundancy(for: [1][...], count: 1) == [1])
        // Two check bytes for offset 0 need 513 or more redundancy bytes: generator (X + 1)(X + 2)
        // = X^2 + 3X + 2, and X^2 mod it = 3X + 2, stored at 0 and 512. Offsets 1... hold no data,
        // so their redundancy stays zero.
        var expected = [UInt8](repeating: 0, count: 1024)
        expected[0] = 3
        expected[512] = 2
        #expect(ReedSolomon.grubRedundancy(for: [1][...], count: 1024) == expected)
        #expect(ReedSolomon.grubRedundancy(for: [UInt8]()[...], count: 10) == [UInt8](repeating: 0, count: 10))
        #expect(ReedSolomon.grubRedundancy(for: [1, 2, 3][...], count: 0) == [])
    }

    @Test func chunksFollowGrubsProportionalCut() throws {
        // 60000 + 60000 bytes exceed 200 sectors: each gets 200 × 60000 / 120000 = 100 sectors.
        #expect(ReedSolomon.chunks(dataCount: 60000, redundancyCount: 60000)
            == [.init(data: 51200, redundancy: 51200), .init(data: 8800, redundancy: 8800)])
        #expect(ReedSolomon.chunks(dataCount: 24631, redundancyCount: 27246) == [.init(data: 24631, redundancy: 27246)])
        // GRUB would loop forever here (a chunk with no data); the encoder says no instead.
        #expect(ReedSolomon.chunks(dataCount: 1, redundancyCount: 102400) == nil)
        #expect(ReedSolomon.grubRedundancy(for: [7][...], count: 102400) == nil)
    }

    @Test("every codeword has zero syndromes", arguments: [(1, 1), (700, 300), (24631, 27246), (60000, 60000), (90000, 30000), (5000, 70000)])
    func syndromesAreZero(sizes: (data: Int, redundancy: Int)) throws {
        var generator = SeededGenerator(seed: UInt64(sizes.data * 1000 + sizes.redundancy))
        let data = (0..<sizes.data).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let redundancy = try #require(ReedSolomon.grubRedundancy(for: data[...], count: sizes.redundancy))
        #expect(redundancy.count == sizes.redundancy)
        for (codeword, checks) in try Self.codewords(data: data, redundancy: redundancy) {
            #expect(Self.syndromes(codeword, checks).allSatisfy { $0 == 0 })
        }
        // The syndrome check can fail: one flipped redundancy byte breaks its codeword.
        var damaged = redundancy
        damaged[damaged.count / 2] ^= 0x5A
        let broken = try Self.codewords(data: data, redundancy: damaged).filter { !Self.syndromes($0.codeword, $0.checkCount).allSatisfy { $0 == 0 } }
        #expect(broken.count == 1)
    }

    /// Offset 0 of the codewords grub-install 2.06 (Debian 2.06-13+deb12u2) wrote for a 27026-byte
    /// core.img with no-Reed-Solomon length 1883 in a 106-sector post-MBR gap: its 49 data bytes
    /// and the 54 check bytes it stored after them.
    @Test func realCodewordFromGrubInstall() {
        let data = hexBytes("90036bc49f08daa15da58434e867539782071d94873b8eabd91c7fce142f4a9ee3391ceaa0d30347e1e3594c7b2a11184e")
        let checks = hexBytes("0cc7732c9378d43de0c011c48ad8d739f479908a0532c6b6e357c209c1934a7e374b6a06d9e0b62b85c3e31891f63934f3a6baa0b74a")
        #expect(ReedSolomon.checkBytes(data, generator: ReedSolomon.generatorPolynomial(54)) == checks)
        #expect(Self.syndromes(data + checks, 54).allSatisfy { $0 == 0 })
    }

    func hexBytes(_ text: String) -> [UInt8] {
        let digits = Array(text.utf8)
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
    }
}

/// grub-bios-setup's placement on in-memory disks: synthetic core.img files for the rules and the
/// refusals, real ones from grub-mkimage followed back through `GrubCoreDecoder`.
@Suite("grub-bios-setup's embedding")
struct GrubBIOSSetupTests {
    /// A stand-in for boot.img: only copied and patched, so any 512 bytes do.
    static let bootImage: [UInt8] = (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }

    /// A core.img as grub-mkimage leaves it, as far as setup looks: diskboot's code up to 0x150,
    /// zeros to the blocklist, one entry (start 2, the other sectors, segment 0x0820), then the
    /// decompressor's header with `noReedSolomon`, and patterned bytes after it.
    static func syntheticCore(bytes: Int, noReedSolomon: UInt16 = 0x400) -> [UInt8] {
        var core = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) | 1 }
        core.replaceSubrange(0x150..<0x200, with: repeatElement(0, count: 0xB0))
        core.storeLE(UInt64(2), at: 0x1F4)
        core.storeLE(UInt16((bytes + 511) / 512 - 1), at: 0x1FC)
        core.storeLE(UInt16(0x0820), at: 0x1FE)
        core.storeLE(UInt32(0), at: 0x210)
        core.storeLE(noReedSolomon, at: 0x214)
        return core
    }

    /// A disk of `sectors` sectors whose sector 0 has a recognisable BPB area and partition area.
    static func disk(sectors: Int = 4096) -> ImageBuilder {
        var image = ImageBuilder(sectors: sectors)
        image.put((0..<0x57).map { UInt8(0xA0 &+ $0) }, at: 0x03)
        image.setDiskSignature(0x494D_4754)
        image.setMBREntry(slot: 0, type: 0x83, start: 2048, count: 2048)
        return image
    }

    static let gap = EmbeddingArea(kind: .postMBRGap, startSector: 1, sectorCount: 2047)

    static func place(
        core: [UInt8], area: EmbeddingArea = gap, image: ImageBuilder = disk(), boot: [UInt8] = bootImage, reedSolomon: Bool = true
    ) throws(GrubBIOSSetup.Problem) -> GrubBIOSSetup.Placement {
        try GrubBIOSSetup.place(bootImage: boot, coreImage: core, area: area, disk: image.source, reedSolomon: reedSolomon)
    }

    static func problem(
        core: [UInt8], area: EmbeddingArea = gap, image: ImageBuilder = disk(), boot: [UInt8] = bootImage
    ) -> GrubBIOSSetup.Problem? {
        do {
            _ = try place(core: core, area: area, image: image, boot: boot)
            return nil
        } catch {
            return error
        }
    }

    /// The blocklist entries {start, length, segment} from 0x1F4 down to the terminator.
    static func blocklist(_ core: [UInt8]) -> [(start: UInt64, count: UInt16, segment: UInt16)] {
        var entries: [(UInt64, UInt16, UInt16)] = []
        var offset = 0x1F4
        while core.le16(offset + 8) != 0 {
            entries.append((core.le64(offset), core.le16(offset + 8), core.le16(offset + 10)))
            offset -= 12
        }
        return entries
    }

    @Test func bootSectorKeepsTheDisksBPBAndPartitionTable() throws {
        let image = Self.disk()
        let placement = try Self.place(core: Self.syntheticCore(bytes: 20 * 512 + 100), image: image)
        let boot = placement.bootSector
        #expect(boot[0..<3] == Self.bootImage[0..<3])
        #expect(boot[0x03..<0x5A] == image.bytes[0x03..<0x5A], "the BPB area comes from the old sector 0")
        #expect(boot.le64(0x5C) == 1, "the kernel sector")
        #expect(boot[0x64] == 0xFF, "the boot drive: the one the BIOS names")
        #expect(boot[0x66] == 0x90 && boot[0x67] == 0x90, "the drive check is two NOPs")
        #expect(boot[0x68..<0x1B8] == Self.bootImage[0x68..<0x1B8])
        #expect(boot[0x1B8..<0x1FE] == image.bytes[0x1B8..<0x1FE], "disk signature and partition table")
        #expect(boot[0x1FE...] == Self.bootImage[0x1FE...], "boot.img's own 55 AA (here: its pattern)")
    }

    @Test func embeddingTakesTwiceCoreImageAndAddsRedundancy() throws {
        let core = Self.syntheticCore(bytes: 20 * 512 + 100)
        let placement = try Self.place(core: core)
        #expect(placement.sectors == Array(1...42))
        #expect(placement.core.count == 42 * 512)
        #expect(placement.redundancyBytes == 42 * 512 - core.count)
        #expect(placement.core.le32(0x210) == UInt32(placement.redundancyBytes))
        let entries = Self.blocklist(placement.core)
        #expect(entries.count == 1)
        #expect(entries.first.map { [$0.start, UInt64($0.count), UInt64($0.segment)] } == [2, 41, 0x0820])
        // Everything else of core.img is unchanged; the redundancy is GRUB's over the part after the
        // no-Reed-Solomon length.
        var expected = core
        expected.storeLE(UInt16(41), at: 0x1FC)
        expected.storeLE(UInt32(placement.redundancyBytes), at: 0x210)
        #expect(Array(placement.core.prefix(core.count)) == expected)
        let redundancy = ReedSolomon.grubRedundancy(for: core[(512 + 0x400)...], count: placement.redundancyBytes)
        #expect(Array(placement.core[core.count...]) == redundancy)
        #expect(placement.writes.map(\.offset) == [0, 512])
        #expect(placement.writes.map(\.bytes.count) == [512, 42 * 512])
    }

    @Test func withoutRedundancyOnlyCoreImagesSectors() throws {
        let core = Self.syntheticCore(bytes: 20 * 512 + 100)
        let placement = try Self.place(core: core, reedSolomon: false)
        #expect(placement.sectors == Array(1...21))
        #expect(placement.redundancyBytes == 0)
        #expect(placement.core.le32(0x210) == 0)
        #expect(placement.core[core.count...].allSatisfy { $0 == 0 }, "padding only")
    }

    @Test func embeddingIsCappedByTheAreaAndBy888Sectors() throws {
        let core = Self.syntheticCore(bytes: 20 * 512)
        #expect(try Self.place(core: core, area: .init(kind: .postMBRGap, startSector: 1, sectorCount: 23)).sectors.count == 23)
        let big = Self.syntheticCore(bytes: 600 * 512)
        let bios = EmbeddingArea(kind: .biosBootPartition(number: 1), startSector: 2048, sectorCount: 2048)
        let placement = try Self.place(core: big, area: bios, image: Self.disk(sectors: 8192))
        #expect(placement.sectors == Array(2048..<2048 + 888))
        #expect(placement.bootSector.le64(0x5C) == 2048)
        #expect(Self.blocklist(placement.core).map(\.start) == [2049])
        #expect(Self.blocklist(placement.core).map(\.count) == [887])
    }

    @Test func foreignSectorsInTheGapAreSteppedOver() throws {
        var image = Self.disk()
        image.put(Array("ZISD".utf8), at: 3 * 512)
        image.put([0xD8, 0x41, 0xA0, 0xF5, 0x02, 0x00, 0x02, 0x00], at: 4 * 512)
        image.put(Array("GREGRegDone.Tag".utf8) + [0], at: 10 * 512)
        image.put(Array("GREGRegDone.Tag".utf8) + [1], at: 12 * 512)  // not the signature
        let core = Self.syntheticCore(bytes: 6 * 512)
        let placement = try Self.place(core: core, image: image)
        #expect(placement.foreignSectors == [.init(sector: 3, owner: "ZISD"), .init(sector: 4, owner: "FlexNet"),
                                             .init(sector: 10, owner: "Acer registration utility (?)")])
        #expect(placement.sectors == [1, 2, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15])
        let entries = Self.blocklist(placement.core)
        #expect(entries.map(\.start) == [2, 5, 11])
        #expect(entries.map(\.count) == [1, 5, 5])
        #expect(entries.map(\.segment) == [0x0820, 0x0840, 0x08E0])
        #expect(placement.writes.map(\.offset) == [0, 512, 5 * 512, 11 * 512])
        #expect(placement.writes.map(\.bytes.count) == [512, 2 * 512, 5 * 512, 5 * 512])
    }

    @Test func refusals() throws {
        let core = Self.syntheticCore(bytes: 10 * 512)
        #expect(Self.problem(core: core, boot: Array(Self.bootImage.prefix(440))) == .bootImageSize(440))
        #expect(Self.problem(core: Array(core.prefix(500))) == .coreImageTooSmall(500))
        #expect(Self.problem(core: [UInt8](repeating: 0, count: 0xFFFF * 512 + 1)) == .coreImageTooLarge(0xFFFF * 512 + 1))
        #expect(Self.problem(core: core, area: .init(kind: .postMBRGap, startSector: 1, sectorCount: 0)) == .noPostMBRGap)
        #expect(Self.problem(core: core, area: .init(kind: .postMBRGap, startSector: 1, sectorCount: 9))
            == .embeddingAreaTooSmall(coreSectors: 10, gapSectors: 9))
        #expect(Self.problem(core: Self.syntheticCore(bytes: 63 * 512), area: .init(kind: .postMBRGap, startSector: 1, sectorCount: 62))
            == .coreImageUnusuallyLarge(coreSectors: 63, gapSectors: 62))
        #expect(Self.problem(core: core, area: .init(kind: .biosBootPartition(number: 1), startSector: 34, sectorCount: 0)) == .noBIOSBootPartition)
        #expect(Self.problem(core: core, area: .init(kind: .biosBootPartition(number: 1), startSector: 34, sectorCount: 9))
            == .biosBootPartitionTooSmall(coreSectors: 10, partitionSectors: 9))
        let bios = EmbeddingArea(kind: .biosBootPartition(number: 1), startSector: 2048, sectorCount: 2048)
        #expect(Self.problem(core: Self.syntheticCore(bytes: 889 * 512), area: bios, image: Self.disk(sectors: 8192))
            == .tooManySectors(coreSectors: 889, usableSectors: 888))
        #expect(Self.problem(core: Self.syntheticCore(bytes: 10 * 512, noReedSolomon: 0xFFFF)) == .versionMismatch)
        #expect(Self.problem(core: Self.syntheticCore(bytes: 10 * 512, noReedSolomon: 0x1300))
            == .noReedSolomonLengthOutsideCore(length: 0x1300, coreSize: 10 * 512))
        var unterminated = core
        unterminated.replaceSubrange(0..<512, with: repeatElement(0xFF, count: 512))
        #expect(Self.problem(core: unterminated) == .noBlocklistTerminator)
    }

    @Test func tooManyForeignSectorsOrTooManyRuns() throws {
        var crowded = Self.disk()
        for sector in 3...2047 { crowded.put(Array("ycgl".utf8), at: sector * 512) }
        let core = Self.syntheticCore(bytes: 10 * 512)
        let problem = Self.problem(core: core, image: crowded)
        guard case .otherSoftwareInGap(10, let foreign) = problem else {
            Issue.record("expected otherSoftwareInGap, got \(String(describing: problem))")
            return
        }
        #expect(foreign.first == .init(sector: 3, owner: "HighPoint RAID controller"))
        #expect(problem?.description.contains("sector 3 (HighPoint RAID controller)") == true)

        // Every other sector taken: one blocklist entry per sector, more than diskboot.img holds.
        var striped = Self.disk()
        for sector in stride(from: 2, to: 2047, by: 2) { striped.put(Array("ZISD".utf8), at: sector * 512) }
        #expect(Self.problem(core: core, image: striped) == .blocklistTooFragmented)
        // Fewer runs fit: 10 sectors on odd sectors need 9 entries.
        let placement = try Self.place(core: core, image: striped, reedSolomon: false)
        #expect(placement.sectors == Array(stride(from: 1, through: 19, by: 2)))
        let segments: [UInt16] = (0..<9).map { 0x0820 + 0x20 * UInt16($0) }
        #expect(Self.blocklist(placement.core).map(\.segment) == segments)
    }

    // MARK: real core.img files

    /// grub-mkimage's core.img placed in a dos gap and a BIOS boot partition, then followed back
    /// from sector 0 by the decoder `verify` uses.
    @Test(GrubCoreTests.needsGrub, arguments: [false, true])
    func realCoreImageDecodesAfterPlacement(gpt: Bool) throws {
        let core = try GrubCoreTests.makeCore(
            modules: gpt ? ["biosdisk", "part_gpt", "ext2"] : GrubCoreTests.msdosModules,
            prefix: gpt ? "(,gpt2)/boot/grub" : GrubCoreTests.msdosPrefix)
        let boot = try [UInt8](Data(contentsOf: URL(fileURLWithPath: GrubCoreTests.grubDirectory + "/boot.img")))
        let area = gpt ? EmbeddingArea(kind: .biosBootPartition(number: 1), startSector: 2048, sectorCount: 2048) : Self.gap
        var image = Self.disk()
        let placement = try Self.place(core: core, area: area, image: image, boot: boot)
        for write in placement.writes { image.put(Array(write.bytes), at: Int(write.offset)) }

        let sectors = UInt64(GrubCoreTests.coreSectors(core))
        #expect(placement.sectors.count == 2 * Int(sectors))
        #expect(BootCode.identify(sector0: Array(image.bytes.prefix(512))).details["driveCheck"] == "patched")
        let decoded = try GrubCoreDecoder.decode(image.source, bootSector: Array(image.bytes.prefix(512)))
        #expect(decoded.firstSector == area.startSector)
        #expect(decoded.sectors == 2 * sectors)
        #expect(decoded.blocklist == [SectorRange(start: area.startSector + 1, count: 2 * sectors - 1)])
        #expect(decoded.prefix == (gpt ? "(,gpt2)/boot/grub" : GrubCoreTests.msdosPrefix))
    }
}
