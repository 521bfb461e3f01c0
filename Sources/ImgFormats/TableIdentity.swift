/// The bytes that give a freshly written partition table the identities and types its layout
/// asks for, where the writer (libparted 3.5) cannot: it draws the GPT disk and partition GUIDs
/// and the MBR disk signature from the random generator, and sets type GUIDs and MBR type bytes
/// only through its flags and filesystem names (3.6 added ped_partition_set_type_uuid/_id).
/// Everything else (geometry, names, flags, headers) stays as the writer made it; this changes
/// fields in place and recomputes the CRCs that cover them.
public enum TableIdentity {
    /// One GPT entry's new fields; nil leaves a field as it is.
    public struct GPTEntry: Sendable {
        /// 0-based slot in the entry array (partition number - 1 for a table libparted wrote).
        public var slot: Int
        /// The partition type GUID.
        public var type: GUID?
        /// The unique partition GUID.
        public var unique: GUID?
        /// Attribute bits to set (ORed into what is there: libparted's legacy-BIOS-bootable stays).
        public var attributes: UInt64
        /// Changes for the entry in `slot`.
        public init(slot: Int, type: GUID? = nil, unique: GUID? = nil, attributes: UInt64 = 0) {
            self.slot = slot
            self.type = type
            self.unique = unique
            self.attributes = attributes
        }
    }

    /// What to write, at which byte offset.
    public typealias Write = (offset: UInt64, bytes: [UInt8])

    /// The writes that set `diskGUID` and `entries` in both GPT copies of `source`, with their
    /// entry-array and header CRCs. Throws when either copy does not verify before the change.
    public static func gptWrites(in source: some ByteSource, sectorSize: Int, diskGUID: GUID?, entries: [GPTEntry]) throws -> [Write] {
        let sector = UInt64(sectorSize)
        guard case .usable(let primary) = try GPT.checkHeader(at: 1, sectorSize: sectorSize, in: source),
              case .usable(let backup) = try GPT.checkHeader(at: primary.alternateLBA, sectorSize: sectorSize, in: source)
        else { throw Unreadable("the GPT just written does not verify") }
        var array = primary.entries
        for entry in entries {
            let base = entry.slot * primary.entrySize
            guard entry.slot >= 0, entry.slot < primary.entryCount else { throw Unreadable("GPT entry \(entry.slot) is out of range") }
            if let type = entry.type { array.replaceSubrange(base..<base + 16, with: type.bytes) }
            if let unique = entry.unique { array.replaceSubrange(base + 16..<base + 32, with: unique.bytes) }
            if entry.attributes != 0 {
                array.storeLE(array.le64(base + 48) | entry.attributes, at: base + 48)
            }
        }
        let arrayCRC = CRC32.checksum(array)
        var writes: [Write] = []
        for header in [primary, backup] {
            var bytes = try source.read(at: header.lba * sector, count: sectorSize)
            let size = Int(bytes.le32(12))
            if let diskGUID { bytes.replaceSubrange(56..<72, with: diskGUID.bytes) }
            bytes.storeLE(arrayCRC, at: 88)
            bytes.storeLE(UInt32(0), at: 16)
            bytes.storeLE(CRC32.checksum(bytes[0..<size]), at: 16)
            writes.append((header.lba * sector, bytes))
            writes.append((header.entriesLBA * sector, array))
        }
        return writes
    }

    /// The writes that set the MBR's disk signature and the type bytes of `types` (partition
    /// number: 1-4 primary, 5 on logical, counted along the EBR chain) in `source`.
    public static func mbrWrites(in source: some ByteSource, sectorSize: Int, signature: UInt32?, types: [Int: UInt8]) throws -> [Write] {
        let sector = UInt64(sectorSize)
        var writes: [Write] = []
        if let signature {
            var bytes = [UInt8](repeating: 0, count: 4)
            bytes.storeLE(signature, at: 0)
            writes.append((440, bytes))
        }
        let mbr = try source.read(at: 0, count: 512)
        var extendedStart: UInt64?
        for number in 1...4 {
            let entry = 446 + (number - 1) * 16
            if [0x05, 0x0F, 0x85].contains(mbr[entry + 4]) { extendedStart = UInt64(mbr.le32(entry + 8)) }
            if let type = types[number] { writes.append((UInt64(entry + 4), [type])) }
        }
        guard let extendedStart, types.keys.contains(where: { $0 > 4 }) else { return writes }
        var ebr = extendedStart
        var number = 5
        // The chain is the one libparted just wrote: bounded by the partitions asked for.
        while number <= types.keys.max()! {
            let bytes = try source.read(at: ebr * sector, count: 512)
            guard bytes[510] == 0x55, bytes[511] == 0xAA else { throw Unreadable("the EBR at sector \(ebr) has no signature") }
            if let type = types[number] { writes.append((ebr * sector + 446 + 4, [type])) }
            let next = UInt64(bytes.le32(446 + 16 + 8))
            guard next != 0 else { break }
            ebr = extendedStart + next
            number += 1
        }
        return writes
    }

    /// The table is not what was just written.
    public struct Unreadable: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }
}
