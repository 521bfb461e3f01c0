/// Fixed-width unsigned integers stored in a byte buffer, decoded with an explicit byte order: the
/// one integer reader of every format (and of ImgSystem and ImgKit, which import it).
///
/// `i` is an index of the collection, so on an `ArraySlice` it is an index of the base array, as
/// with its subscript. Two forms of each:
/// - `le32(at: i)` is bounds-aware: nil unless all the bytes lie inside (a negative or overflowing
///   `i` included). Use it for offsets computed from image contents.
/// - `le32(i)` is for a fixed offset into a buffer whose length the caller has checked; reading
///   past the end is a bug in that caller and stops the program with a message naming the read.
extension RandomAccessCollection where Element == UInt8, Index == Int {
    public func le16(at i: Int) -> UInt16? { unsigned(at: i, bigEndian: false) }
    public func le32(at i: Int) -> UInt32? { unsigned(at: i, bigEndian: false) }
    public func le64(at i: Int) -> UInt64? { unsigned(at: i, bigEndian: false) }
    public func be16(at i: Int) -> UInt16? { unsigned(at: i, bigEndian: true) }
    public func be32(at i: Int) -> UInt32? { unsigned(at: i, bigEndian: true) }
    public func be64(at i: Int) -> UInt64? { unsigned(at: i, bigEndian: true) }

    public func le16(_ i: Int) -> UInt16 { checked(i, bigEndian: false) }
    public func le32(_ i: Int) -> UInt32 { checked(i, bigEndian: false) }
    public func le64(_ i: Int) -> UInt64 { checked(i, bigEndian: false) }
    public func be16(_ i: Int) -> UInt16 { checked(i, bigEndian: true) }
    public func be32(_ i: Int) -> UInt32 { checked(i, bigEndian: true) }
    public func be64(_ i: Int) -> UInt64 { checked(i, bigEndian: true) }

    /// The `T.bitWidth / 8` bytes at `i` as one integer, or nil when they are not all inside.
    @inlinable
    func unsigned<T: FixedWidthInteger & UnsignedInteger>(at i: Int, bigEndian: Bool) -> T? {
        let width = T.bitWidth / 8
        // Compared as distances, so an `i` near Int.max cannot overflow.
        guard i >= startIndex, i <= endIndex, endIndex - i >= width else { return nil }
        var value: T = 0
        for k in 0..<width {
            value = value << 8 | T(self[bigEndian ? i + k : i + width - 1 - k])
        }
        return value
    }

    @inlinable
    func checked<T: FixedWidthInteger & UnsignedInteger>(_ i: Int, bigEndian: Bool) -> T {
        guard let value: T = unsigned(at: i, bigEndian: bigEndian) else {
            preconditionFailure("a \(T.bitWidth)-bit read at \(i) of \(startIndex)..<\(endIndex): the caller's length check is missing")
        }
        return value
    }
}

extension MutableCollection where Element == UInt8, Index == Int {
    /// Stores `value` little-endian in the `T.bitWidth / 8` bytes at `i`, which the caller has
    /// checked lie inside: the writing counterpart of `le16(_:)` and its siblings.
    mutating func storeLE<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at i: Int) {
        for k in 0..<T.bitWidth / 8 { self[i + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
    }
}
