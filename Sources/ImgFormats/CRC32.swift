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
