/// A LUKS header, identified and described, never opened: its version, UUID, cipher and which key
/// slots are in use (cryptsetup's LUKS1 and LUKS2 on-disk formats).
///
/// - Both start with "LUKS\xba\xbe" and a big-endian version (u16 at 6), and keep the UUID as 40
///   bytes of text at 168.
/// - LUKS1: cipher name and mode (32 bytes each at 8 and 40), the payload's offset in sectors
///   (u32 at 104), and 8 key slots of 48 bytes from 208, each enabled when it starts 0x00AC71F3.
/// - LUKS2: the header's size (u64 at 8) covers a 4 KiB binary header and the JSON area after it,
///   whose "keyslots" object names the slots in use and whose first "segments" entry has the cipher
///   ("encryption") and the payload's offset.
public struct LUKSHeader: Sendable, Equatable {
    /// 1 or 2.
    public let version: Int
    /// The UUID cryptsetup gave the volume (blkid's UUID for it).
    public let uuid: String
    /// "aes-xts-plain64".
    public let cipher: String?
    /// The key slots in use, by number.
    public let keySlots: [Int]
    /// Where the encrypted data starts, in bytes from the header.
    public let payloadOffset: UInt64?

    /// Makes a value, for tests and reports.
    public init(version: Int, uuid: String, cipher: String?, keySlots: [Int], payloadOffset: UInt64?) {
        self.version = version
        self.uuid = uuid
        self.cipher = cipher
        self.keySlots = keySlots
        self.payloadOffset = payloadOffset
    }

    static let magic: [UInt8] = [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE]
    static let luks1SlotEnabled: UInt32 = 0x00AC_71F3
    /// LUKS2's JSON area is 12 KiB to 4 MiB in practice; more is not read.
    static let maxJSONBytes = 4 << 20

    /// The header at `offset` in `source`; nil when there is none.
    public static func read(_ source: some ByteSource, offset: UInt64) throws -> LUKSHeader? {
        guard let h = try source.readIfInBounds(at: offset, count: 592), h.starts(with: magic) else { return nil }
        let uuid = text(h[168..<208])
        switch h.be16(6) {
        case 1:
            let name = text(h[8..<40]), mode = text(h[40..<72])
            let slots = (0..<8).filter { h.be32(208 + 48 * $0) == luks1SlotEnabled }
            return LUKSHeader(version: 1, uuid: uuid, cipher: name.isEmpty ? nil : mode.isEmpty ? name : "\(name)-\(mode)",
                              keySlots: slots, payloadOffset: UInt64(h.be32(104)) &* 512)
        case 2:
            let size = h.be64(8)
            var cipher: String?, slots: [Int] = [], payload: UInt64?
            if size > 4096, size - 4096 <= UInt64(maxJSONBytes),
               let area = try source.readIfInBounds(at: offset + 4096, count: Int(size - 4096)),
               let json = try? JSONValue.parse(Array(area.prefix { $0 != 0 })) {
                if case .object(let keyslots)? = json["keyslots"] { slots = keyslots.keys.compactMap { Int($0) }.sorted() }
                if case .object(let segments)? = json["segments"],
                   let first = segments.keys.compactMap({ Int($0) }).min().flatMap({ segments[String($0)] }) {
                    cipher = first["encryption"]?.stringValue
                    payload = first["offset"]?.stringValue.flatMap { UInt64($0) }
                }
            }
            return LUKSHeader(version: 2, uuid: uuid, cipher: cipher, keySlots: slots, payloadOffset: payload)
        default:
            return LUKSHeader(version: Int(h.be16(6)), uuid: uuid, cipher: nil, keySlots: [], payloadOffset: nil)
        }
    }

    static func text(_ field: ArraySlice<UInt8>) -> String {
        String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }
}
