import Testing

@testable import ImgFormats

/// SplitMix64: tiny, fast and fully determined by its seed, so any failure reproduces exactly.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension SeededGenerator {
    /// `count` bytes of the stream, one per draw.
    mutating func bytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) }
    }
}

/// A libFuzzer-free smoke fuzz: mutated tables must give a value or an error, never a trap, hang
/// or huge allocation. The mutations aim at the fields parsers trust least.
@Suite("Robustness")
struct RobustnessTests {
    static let interesting: [UInt64] = [0, 1, 2, 33, 34, 127, 128, 129, 511, 512, 4096, 0x7FFF_FFFF, 0xFFFF_FFFF, .max, .max - 1]

    /// Byte offsets of the fields worth hitting: MBR/EBR entries, GPT header fields, entry fields.
    static func hotOffsets(sectorSize: Int, extraSectors: [Int]) -> [Int] {
        var offsets: [Int] = []
        for sector in [0] + extraSectors {
            for slot in 0..<4 { offsets += [0, 4, 8, 12].map { sector * sectorSize + 446 + 16 * slot + $0 } }
            offsets += [sector * sectorSize + 510]
        }
        offsets += [8, 12, 16, 24, 32, 40, 48, 72, 80, 84, 88].map { sectorSize + $0 }
        for entry in 0..<4 { offsets += [0, 32, 40, 48, 56].map { 2 * sectorSize + 128 * entry + $0 } }
        return offsets
    }

    static func mutate(_ original: ImageBuilder, hot: [Int], using rng: inout SeededGenerator) -> [UInt8] {
        var image = original
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<3:  // flip bits anywhere in the first sectors
                let index = Int.random(in: 0..<min(image.bytes.count, 8 * image.sectorSize), using: &rng)
                image.bytes[index] ^= UInt8.random(in: 1...255, using: &rng)
            case 3..<7:  // an extreme value in a field parsers read
                let offset = hot.randomElement(using: &rng)!
                let width = [1, 2, 4, 8].randomElement(using: &rng)!
                guard offset + width <= image.bytes.count else { continue }
                image.put(interesting.randomElement(using: &rng)!, width: width, at: offset)
            case 7:  // a random byte in the last sectors (the backup GPT)
                let index = image.bytes.count - 1 - Int.random(in: 0..<min(image.bytes.count, 4 * image.sectorSize), using: &rng)
                image.bytes[index] = UInt8.random(in: 0...255, using: &rng)
            case 8:  // truncate
                image.bytes.removeLast(Int.random(in: 0..<image.bytes.count, using: &rng))
            default:  // reseal the GPT so the mutation gets past the CRC checks to the deeper ones
                guard image.bytes.count >= 2 * image.sectorSize else { continue }
                let headerSize = Int(image.read32(at: image.sectorSize + 12))
                let entriesOffset = Int(truncatingIfNeeded: image.read64(at: image.sectorSize + 72)) &* image.sectorSize
                let length = Int(image.read32(at: image.sectorSize + 80)) * Int(image.read32(at: image.sectorSize + 84))
                if entriesOffset >= 0, length >= 0, entriesOffset <= image.bytes.count - length {
                    image.put32(CRC32.checksum(image.bytes[entriesOffset..<entriesOffset + length]), at: image.sectorSize + 88)
                }
                if headerSize <= image.sectorSize { image.resealGPTHeader(at: 1) }
            }
        }
        return image.bytes
    }

    /// What a mutated image turned out to be, so a test can show its mutations reach deep code.
    enum Outcome: Hashable {
        case threw, none, clean(PartitionTable.Kind), flagged(PartitionTable.Kind, Finding.Severity)
    }

    /// Reads `bytes`, checks the invariants every result must keep, and classifies the result.
    @discardableResult
    static func check(_ bytes: [UInt8]) -> Outcome {
        let source = MemoryByteSource(bytes)
        let result: PartitionTable?
        do {
            result = try PartitionTable.read(from: source)
        } catch {
            // A memory source never fails a bounds-checked read, so a throw means a parser bug.
            Issue.record("unexpected throw: \(error)")
            return .threw
        }
        guard let table = result else { return .none }
        let numbers = table.partitions.map(\.number)
        #expect(numbers == numbers.sorted() && Set(numbers).count == numbers.count)
        #expect(numbers.allSatisfy { $0 >= 1 })
        if table.kind == .dos {
            #expect(table.partitions.count <= 4 + MBR.maxEBRHops)
        } else {
            #expect(table.partitions.count <= Int(GPT.maxEntryArrayBytes) / GPT.minEntrySize)
        }
        for severity in [Finding.Severity.error, .warning, .info] where table.findings.contains(where: { $0.severity == severity }) {
            return .flagged(table.kind, severity)
        }
        return .clean(table.kind)
    }

    @Test(.timeLimit(.minutes(1)))
    func mutatedMBRWithEBRChain() throws {
        // A compact version of MBRTests.threeLogicals (32 sectors) so each mutated copy is cheap.
        var image = ImageBuilder(sectors: 32)
        image.setMBREntry(slot: 0, bootable: true, type: 0x83, start: 1, count: 3)
        image.setMBREntry(slot: 1, type: 0x0F, start: 4, count: 28)
        image.writeEBRChain(
            extendedStart: 4,
            logicals: [
                .init(ebrLBA: 4, offsetFromEBR: 1, count: 3),
                .init(ebrLBA: 8, offsetFromEBR: 1, count: 7, type: 0x82),
                .init(ebrLBA: 16, offsetFromEBR: 2, count: 14, type: 0x8E),
            ])
        let seed = try #require(try PartitionTable.read(from: image.source))
        #expect(seed.partitions.map(\.number) == [1, 2, 5, 6, 7] && seed.findings.isEmpty, "the seed image is valid")
        let hot = Self.hotOffsets(sectorSize: 512, extraSectors: [4, 8, 16])
        var rng = SeededGenerator(seed: 0x1D15_C0DE)
        var outcomes: [Outcome: Int] = [:]
        for _ in 0..<1000 {
            outcomes[Self.check(Self.mutate(image, hot: hot, using: &rng)), default: 0] += 1
        }
        // The mutations must reach the chain walker, not just bounce off the 55AA check.
        #expect(outcomes[.flagged(.dos, .error), default: 0] >= 50, "\(outcomes)")
        #expect(outcomes[.clean(.dos), default: 0] >= 50, "\(outcomes)")
        #expect(outcomes[.none, default: 0] >= 10, "\(outcomes)")
    }

    @Test(.timeLimit(.minutes(1)))
    func mutatedGPT() throws {
        // Four entries keep each iteration cheap; the parser takes any count, as the header says.
        var image = ImageBuilder(sectors: 64)
        image.writeGPT(
            diskGUID: TestGUID.disk,
            entries: [
                .init(type: .biosBoot, uuid: TestGUID.part1, first: 8, last: 20, name: "BIOS boot"),
                .init(type: .linuxFilesystem, uuid: TestGUID.part2, first: 21, last: 55, attributes: 4, name: "root"),
            ],
            entryCount: 4)
        #expect(try PartitionTable.read(from: image.source)?.findings.isEmpty == true, "the seed image is valid")
        let hot = Self.hotOffsets(sectorSize: 512, extraSectors: [])
        var rng = SeededGenerator(seed: 0x6E7_F00D)
        var outcomes: [Outcome: Int] = [:]
        for _ in 0..<1000 {
            outcomes[Self.check(Self.mutate(image, hot: hot, using: &rng)), default: 0] += 1
        }
        // Backup fallbacks (warnings) and failures past the CRC checks (errors) must both occur.
        #expect(outcomes[.flagged(.gpt, .warning), default: 0] >= 50, "\(outcomes)")
        #expect(outcomes[.flagged(.gpt, .error), default: 0] >= 50, "\(outcomes)")
    }
}
