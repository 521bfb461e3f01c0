import Glibc
import ImgSystem
import Testing
import TestSupport

@testable import ImgFormats

/// The bzImage header, the LZ4 legacy frame and xz decoders, and extracting the ELF kernel that
/// IsolatedVM boots through PVH: on bytes made by the real tools (lz4 -l, xz) and on the installed
/// cloud kernel when there is one.
@Suite("Linux kernel image")
struct LinuxKernelImageTests {
    /// `printf 'abcabcabcabcabcabcXYZ' | lz4 -l`: literals, an overlapping match (offset 3, length
    /// 13), then the final literals.
    static let lz4Legacy: [UInt8] = [0x02, 0x21, 0x4c, 0x18, 0x0c, 0x00, 0x00, 0x00, 0x39, 0x61, 0x62, 0x63,
                                     0x03, 0x00, 0x50, 0x62, 0x63, 0x58, 0x59, 0x5a]
    /// `printf 'hello hello hello\n' | xz --check=crc32`.
    static let xzStream: [UInt8] = [
        0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x01, 0x69, 0x22, 0xde, 0x36, 0x02, 0x00, 0x21, 0x01, 0x16, 0x00,
        0x00, 0x00, 0x74, 0x2f, 0xe5, 0xa3, 0xe0, 0x00, 0x11, 0x00, 0x0c, 0x5d, 0x00, 0x34, 0x19, 0x49, 0xee, 0x8d,
        0xe9, 0x4f, 0x7e, 0x21, 0x21, 0xb0, 0x00, 0x00, 0x3b, 0x7c, 0x8a, 0xdf, 0x00, 0x01, 0x24, 0x12, 0xc5, 0x25,
        0xd7, 0x22, 0x90, 0x42, 0x99, 0x0d, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x59, 0x5a,
    ]

    @Test func lz4LegacyFrame() throws {
        let out = try LZ4.decompressLegacyFrame(Self.lz4Legacy[...], expectedSize: 21)
        #expect(String(decoding: out, as: UTF8.self) == "abcabcabcabcabcabcXYZ")
        // Trailing bytes that are not a block (the kernel's appended size) end the frame.
        let withSize = try LZ4.decompressLegacyFrame((Self.lz4Legacy + [21, 0, 0, 0])[...], expectedSize: 21)
        #expect(withSize == out)
    }

    @Test func lz4RefusesWhatDoesNotFit() {
        // An output buffer too small, a match before the start, a truncated block: errors, not crashes.
        #expect(throws: LZ4.Problem.self) { try LZ4.decompressLegacyFrame(Self.lz4Legacy[...], expectedSize: 10) }
        let badOffset: [UInt8] = [0x02, 0x21, 0x4c, 0x18, 0x04, 0x00, 0x00, 0x00, 0x10, 0x61, 0x09, 0x00]
        #expect(throws: LZ4.Problem.self) { try LZ4.decompressLegacyFrame(badOffset[...], expectedSize: 100) }
        for cut in 9..<Self.lz4Legacy.count {
            var truncated = Array(Self.lz4Legacy[..<cut])
            truncated[4] = UInt8(cut - 8)  // the block claims exactly what is left
            _ = try? LZ4.decompressLegacyFrame(truncated[...], expectedSize: 64)
        }
        #expect(throws: LZ4.Problem.self) { try LZ4.decompressLegacyFrame([1, 2, 3, 4, 5][...], expectedSize: 8) }
    }

    @Test func xz() throws {
        #expect(try XZ.decompress(Self.xzStream[...], limit: 100) == Array("hello hello hello\n".utf8))
        #expect(try XZ.decompress((Self.xzStream + [1, 2, 3, 4])[...], limit: 100) == Array("hello hello hello\n".utf8))
        #expect(throws: XZ.Problem.self) { try XZ.decompress(Self.xzStream[...], limit: 5) }
        #expect(throws: XZ.Problem.self) { try XZ.decompress(Self.xzStream.dropLast(10), limit: 100) }
    }

    /// A synthetic bzImage: boot header fields at their offsets around an LZ4 payload.
    static func bzImage(payload: [UInt8], release: String) -> [UInt8] {
        var image = [UInt8](repeating: 0, count: 5 * 512)  // setup_sects 4 (+1 boot sector)
        image[0x1F1] = 4
        func put32(_ value: UInt32, _ at: Int) { for i in 0..<4 { image[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) } }
        put32(0x5372_6448, 0x202)  // "HdrS"
        image[0x206] = 0x0F; image[0x207] = 0x02  // protocol 2.15
        let versionAt = 0x300
        image[0x20E] = UInt8((versionAt - 0x200) & 0xFF); image[0x20F] = UInt8((versionAt - 0x200) >> 8)
        for (i, b) in Array((release + " (builder) #1 SMP").utf8).enumerated() { image[versionAt + i] = b }
        put32(0, 0x248)
        put32(UInt32(payload.count), 0x24C)
        return image + payload
    }

    @Test func header() throws {
        let payload = Self.lz4Legacy + [21, 0, 0, 0]
        let image = Self.bzImage(payload: payload, release: "6.1.0-99-cloud-amd64")
        let h = try LinuxKernelImage.header(image)
        #expect(h.release == "6.1.0-99-cloud-amd64")
        #expect(h.compression == .lz4)
        #expect(h.payload == (5 * 512)..<(5 * 512 + payload.count))
        // Decompresses, but the result is no ELF with a PVH note.
        #expect(throws: LinuxKernelImage.Problem.noPVHEntry) { try LinuxKernelImage.extractELF(image) }

        #expect(throws: LinuxKernelImage.Problem.notBzImage) { try LinuxKernelImage.header([UInt8](repeating: 0, count: 4096)) }
        var short = image
        short.removeLast(10)
        #expect(throws: LinuxKernelImage.Problem.payloadOutOfBounds) { try LinuxKernelImage.header(short) }
        var old = image
        old[0x206] = 0x04
        #expect(throws: LinuxKernelImage.Problem.protocolTooOld(0x0204)) { try LinuxKernelImage.header(old) }
    }

    /// Random bytes behind a valid header: always an error or a result, never a crash.
    @Test func distrustsPayloads() {
        for seed in 1...30 as ClosedRange<UInt64> {
            let payload = [0x02, 0x21, 0x4c, 0x18] + pseudoRandomBytes(count: 600, seed: seed) + [0, 1, 0, 0]
            _ = try? LinuxKernelImage.extractELF(Self.bzImage(payload: payload, release: "x"))
        }
    }

    /// The installed cloud kernel, as IsolatedVM uses it.
    @Test(.enabled(if: Self.cloudKernel != nil, "needs linux-image-cloud-amd64"))
    func installedCloudKernel() throws {
        let path = try #require(Self.cloudKernel)
        let bytes = try CpioTests.read(path)
        let h = try LinuxKernelImage.header(bytes)
        let name = path.split(separator: "/").last.map(String.init) ?? ""
        #expect(h.release.map { "vmlinuz-\($0)" } == name)
        guard h.compression == .lz4 || h.compression == .xz else { return }
        let elf = try LinuxKernelImage.extractELF(bytes)
        #expect(elf.count > bytes.count)
        #expect(LinuxKernelImage.hasPVHEntry(elf))
    }

    static let cloudKernel: String? = {
        directoryEntries("/boot").first { $0.hasPrefix("vmlinuz-") && $0.hasSuffix("-cloud-amd64") }.map { "/boot/\($0)" }
    }()
}
