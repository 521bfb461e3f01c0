/// CRC-32 as GPT (and zlib, Ethernet) use it: IEEE 802.3 polynomial, reflected, initial value and
/// final XOR 0xFFFFFFFF.
public enum CRC32 {
    /// The 256-entry table for the reflected polynomial 0xEDB88320, built once.
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 {
            crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1
        }
        return crc
    }

    /// The checksum of `bytes`; `checksum([])` is 0 and `checksum("123456789".utf8)` is 0xCBF43926.
    public static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        ~update(0xFFFF_FFFF, with: bytes)
    }

    /// Feeds `bytes` into a running (pre-inversion) CRC register.
    static func update(_ register: UInt32, with bytes: some Collection<UInt8>) -> UInt32 {
        // Contiguous storage avoids generic iteration overhead, which matters in debug builds.
        let fast = bytes.withContiguousStorageIfAvailable { buffer in
            table.withUnsafeBufferPointer { table in
                var crc = register
                for byte in buffer {
                    crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
                }
                return crc
            }
        }
        if let fast { return fast }
        var crc = register
        for byte in bytes {
            crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
        }
        return crc
    }
}
