import CLzma

/// A Linux x86 kernel file (bzImage, as /boot/vmlinuz-* holds it): its release string, and the
/// uncompressed ELF kernel inside it, which qemu can boot directly through the PVH entry point.
///
/// Why: under TCG the bzImage's own decompressor is emulated and costs about a second on every
/// boot; an ELF vmlinux with a PVH note (XEN_ELFNOTE_PHYS32_ENTRY, CONFIG_PVH) skips it. The
/// layout is the x86 boot protocol (Documentation/arch/x86/boot.rst): setup_sects at 0x1F1, "HdrS"
/// at 0x202, the protocol version at 0x206, kernel_version at 0x20E, payload_offset and
/// payload_length at 0x248 and 0x24C (protocol 2.08 and later). The payload is the compressed
/// vmlinux followed by its uncompressed size as a little-endian u32.
public enum LinuxKernelImage {
    public enum Compression: String, Sendable, Equatable {
        case lz4, xz, gzip, zstd, lzma, bzip2, lzo, unknown
    }

    public struct Header: Sendable, Equatable {
        public let protocolVersion: UInt16
        /// "6.1.0-56-cloud-amd64": the first word of the kernel_version string.
        public let release: String?
        /// Byte range of the compressed payload in the file.
        public let payload: Range<Int>
        public let compression: Compression
    }

    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        case notBzImage
        case protocolTooOld(UInt16)
        case payloadOutOfBounds
        case unsupportedCompression(Compression)
        case corrupt(String)
        case noPVHEntry

        public var description: String {
            switch self {
            case .notBzImage: return "not an x86 bzImage (no \"HdrS\" boot header)"
            case .protocolTooOld(let v): return "boot protocol \(v >> 8).\(v & 0xFF) has no payload fields (2.08 or later needed)"
            case .payloadOutOfBounds: return "the payload's offset and length point outside the file"
            case .unsupportedCompression(let c): return "the payload is compressed with \(c.rawValue), which imgtool does not decompress"
            case .corrupt(let what): return "the payload is corrupt: \(what)"
            case .noPVHEntry: return "the kernel has no PVH entry point (CONFIG_PVH), so qemu cannot boot it uncompressed"
            }
        }
    }

    /// The largest vmlinux accepted (the Debian cloud kernel's is 53 MB).
    public static let maximumUncompressedSize = 512 << 20

    /// Parses the boot header from the start of the file (the first 1 KiB suffices for everything but
    /// the release string, which needs the setup code: read 64 KiB).
    public static func header(_ bytes: [UInt8], fileSize: Int? = nil) throws(Problem) -> Header {
        guard bytes.count >= 0x250, bytes.le32(0x202) == 0x5372_6448 else { throw .notBzImage }  // "HdrS"
        let version = bytes.le16(0x206)
        guard version >= 0x0208 else { throw .protocolTooOld(version) }
        let setupSectors = bytes[0x1F1] == 0 ? 4 : Int(bytes[0x1F1])
        let setupSize = (setupSectors + 1) * 512
        let start = setupSize + Int(bytes.le32(0x248))
        let length = Int(bytes.le32(0x24C))
        let (end, overflow) = start.addingReportingOverflow(length)
        guard !overflow, length >= 8, end <= (fileSize ?? bytes.count) else { throw .payloadOutOfBounds }

        var release: String?
        let versionPointer = Int(bytes.le16(0x20E))
        if versionPointer != 0, 0x200 + versionPointer < bytes.count {
            let text = bytes[(0x200 + versionPointer)...].prefix(256).prefix { $0 != 0 && $0 != 0x20 }
            if !text.isEmpty, text.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) { release = String(decoding: text, as: UTF8.self) }
        }
        let magic = start + 6 <= bytes.count ? Array(bytes[start..<(start + 6)]) : []
        return Header(protocolVersion: version, release: release, payload: start..<end, compression: compression(magic))
    }

    static func compression(_ m: [UInt8]) -> Compression {
        guard m.count >= 4 else { return .unknown }
        if m[0..<4] == [0x02, 0x21, 0x4C, 0x18] { return .lz4 }  // legacy frame, as lz4 -l writes it
        if m.count >= 6, m[0..<6] == [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00] { return .xz }
        if m[0..<2] == [0x1F, 0x8B] { return .gzip }
        if m[0..<4] == [0x28, 0xB5, 0x2F, 0xFD] { return .zstd }
        if m[0..<3] == [0x5D, 0x00, 0x00] { return .lzma }
        if m[0..<3] == Array("BZh".utf8)[...] { return .bzip2 }
        if m[0..<4] == [0x89, 0x4C, 0x5A, 0x4F] { return .lzo }
        return .unknown
    }

    /// The uncompressed ELF vmlinux from a whole bzImage file, checked to have a PVH entry point.
    /// Decompresses LZ4 (Debian's cloud kernels) and xz; other compressions are `.unsupportedCompression`.
    public static func extractELF(_ bytes: [UInt8]) throws(Problem) -> [UInt8] {
        let h = try header(bytes)
        let payload = bytes[h.payload]
        let expected = Int(payload.le32(payload.endIndex - 4))
        guard expected > 0, expected <= maximumUncompressedSize else { throw .corrupt("implausible size \(expected)") }
        let compressed = payload.dropLast(4)
        let elf: [UInt8]
        switch h.compression {
        case .lz4:
            do { elf = try LZ4.decompressLegacyFrame(compressed, expectedSize: expected) } catch { throw .corrupt(error.description) }
        case .xz:
            do { elf = try XZ.decompress(compressed, limit: maximumUncompressedSize) } catch { throw .corrupt(error.description) }
        default:
            throw .unsupportedCompression(h.compression)
        }
        guard elf.count == expected else { throw .corrupt("\(elf.count) bytes decompressed, \(expected) announced") }
        guard hasPVHEntry(elf) else { throw .noPVHEntry }
        return elf
    }

    /// Whether `elf` is a 64-bit little-endian ELF with a "Xen" note of type 18
    /// (XEN_ELFNOTE_PHYS32_ENTRY) in a PT_NOTE segment: what qemu's ELF loader for x86 needs.
    public static func hasPVHEntry(_ elf: [UInt8]) -> Bool {
        guard elf.count >= 64, elf[0..<4] == [0x7F, 0x45, 0x4C, 0x46], elf[4] == 2, elf[5] == 1 else { return false }
        let phoff = elf.le64(0x20), phentsize = Int(elf.le16(0x36)), phnum = Int(elf.le16(0x38))
        guard phentsize >= 56, phnum <= 256, phoff < UInt64(elf.count),
              Int(phoff) + phentsize * phnum <= elf.count else { return false }
        for i in 0..<phnum {
            let ph = Int(phoff) + i * phentsize
            guard elf.le32(ph) == 4 else { continue }  // PT_NOTE
            let offset = elf.le64(ph + 8), size = elf.le64(ph + 0x20)
            guard offset < UInt64(elf.count), size <= UInt64(elf.count) - offset else { continue }
            var p = Int(offset)
            let end = Int(offset + size)
            while p + 12 <= end {
                let nameSize = Int(elf.le32(p)), descSize = Int(elf.le32(p + 4)), type = elf.le32(p + 8)
                let name = p + 12
                let desc = name + (nameSize + 3) / 4 * 4
                guard nameSize <= 256, descSize <= 4096, desc + descSize <= end else { break }
                if type == 18, nameSize == 4, elf[name..<(name + 3)] == Array("Xen".utf8)[...] { return true }
                p = desc + (descSize + 3) / 4 * 4
            }
        }
        return false
    }
}

/// LZ4 as the kernel's build compresses with `lz4 -l`: the legacy frame (magic 0x184C2102, then
/// blocks of a little-endian u32 compressed size and an LZ4 block of at most 8 MiB uncompressed).
public enum LZ4 {
    public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
    }

    static let legacyMagic: UInt32 = 0x184C_2102
    static let legacyBlockSize = 8 << 20

    /// Decodes blocks until the input ends (or another frame's magic starts); `expectedSize` bounds
    /// the output and sizes its buffer.
    public static func decompressLegacyFrame(_ input: ArraySlice<UInt8>, expectedSize: Int) throws(Problem) -> [UInt8] {
        guard input.count >= 4, input.le32(input.startIndex) == legacyMagic else { throw Problem(description: "no LZ4 legacy frame magic") }
        var output = [UInt8](repeating: 0, count: expectedSize)
        var produced = 0
        var p = input.startIndex + 4
        while p + 4 <= input.endIndex {
            let size = Int(input.le32(p))
            if size == Int(legacyMagic) { p += 4; continue }  // concatenated frames
            p += 4
            guard size > 0, size <= input.endIndex - p else { break }  // trailing bytes, not a block
            let limit = min(expectedSize, produced + legacyBlockSize)
            produced = try decodeBlock(input[p..<(p + size)], into: &output, at: produced, limit: limit)
            p += size
        }
        return Array(output[..<produced])
    }

    /// One LZ4 block (sequences of literals and back-references) appended at `start`; returns the new end.
    static func decodeBlock(_ block: ArraySlice<UInt8>, into output: inout [UInt8], at start: Int,
                            limit: Int) throws(Problem) -> Int {
        let result: Result<Int, Problem> = block.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                var s = 0, d = start
                let n = src.count
                func length(_ initial: Int) -> Int? {
                    var total = initial
                    guard initial == 15 else { return total }
                    while s < n {
                        let b = Int(src[s]); s += 1
                        total += b
                        if b != 255 { return total }
                    }
                    return nil
                }
                while s < n {
                    let token = Int(src[s]); s += 1
                    guard let literals = length(token >> 4) else { return .failure(Problem(description: "truncated literal length")) }
                    guard literals <= n - s, literals <= limit - d else { return .failure(Problem(description: "literals overrun")) }
                    if literals > 0 {
                        (dst.baseAddress! + d).update(from: src.baseAddress! + s, count: literals)
                    }
                    s += literals; d += literals
                    if s == n { break }  // the last sequence has literals only
                    guard s + 2 <= n else { return .failure(Problem(description: "truncated offset")) }
                    let offset = Int(src.le16(s)); s += 2
                    guard offset > 0, offset <= d else {
                        return .failure(Problem(description: "offset \(offset) before the start of the output"))
                    }
                    guard let extra = length(token & 15) else { return .failure(Problem(description: "truncated match length")) }
                    let match = extra + 4
                    guard match <= limit - d else { return .failure(Problem(description: "match overruns the output")) }
                    let from = dst.baseAddress! + d - offset, to = dst.baseAddress! + d
                    if offset >= match {
                        to.update(from: from, count: match)
                    } else {
                        for i in 0..<match { to[i] = from[i] }  // overlapping: a repeating pattern
                    }
                    d += match
                }
                return .success(d)
            }
        }
        return try result.get()
    }
}

/// xz streams (.xz files, xz-compressed kernels and modules) through liblzma.
public enum XZ {
    public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// Decodes the first xz stream in `input` (bytes after its end are ignored), refusing output
    /// beyond `limit` bytes.
    public static func decompress(_ input: ArraySlice<UInt8>, limit: Int) throws(Problem) -> [UInt8] {
        var stream = lzma_stream()
        guard lzma_stream_decoder(&stream, 1 << 30, 0) == LZMA_OK else { throw Problem(description: "liblzma refused to start") }
        defer { lzma_end(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        let status: lzma_ret = input.withUnsafeBufferPointer { inBuffer in
            stream.next_in = inBuffer.baseAddress
            stream.avail_in = inBuffer.count
            while true {
                let (ret, produced): (lzma_ret, Int) = chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = out.count
                    let ret = lzma_code(&stream, LZMA_FINISH)
                    return (ret, out.count - stream.avail_out)
                }
                output += chunk[..<produced]
                if output.count > limit { return LZMA_MEMLIMIT_ERROR }
                if ret != LZMA_OK { return ret }
                if produced == 0 && stream.avail_in == 0 { return LZMA_BUF_ERROR }
            }
        }
        guard status == LZMA_STREAM_END else {
            throw Problem(description: status == LZMA_MEMLIMIT_ERROR ? "more than \(limit) bytes" : "liblzma error \(status.rawValue)")
        }
        return output
    }
}
