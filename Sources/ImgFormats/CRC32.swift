import CLzma

/// CRC-32 as GPT (and zlib, Ethernet) use it: IEEE 802.3 polynomial, reflected, initial value and
/// final XOR 0xFFFFFFFF.
enum CRC32 {
    /// The checksum of `bytes`; `checksum([])` is 0 and `checksum("123456789".utf8)` is 0xCBF43926.
    /// liblzma's lzma_crc32 is this same function, several times faster than a byte-wise table.
    static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        if let crc = bytes.withContiguousStorageIfAvailable({ lzma_crc32($0.baseAddress, $0.count, 0) }) { return crc }
        return checksum(Array(bytes))
    }
}

/// CRC-32C (Castagnoli) as VHDX (and iSCSI, ext4, btrfs) use it: polynomial 0x1EDC6F41, reflected
/// (0x82F63B78), initial value and final XOR 0xFFFFFFFF. Table-driven: VHDX checksums cover at
/// most a 64 KiB region table, so a byte-wise table is fast enough.
enum CRC32C {
    /// The checksum of `bytes`; `checksum("123456789".utf8)` is 0xE3069283.
    static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
        }
        return crc ^ 0xFFFF_FFFF
    }

    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 != 0 ? (value >> 1) ^ 0x82F6_3B78 : value >> 1 }
        return value
    }
}
