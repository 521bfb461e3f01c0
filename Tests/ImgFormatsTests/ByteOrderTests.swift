import Testing

@testable import ImgFormats

@Suite("Byte-order reader")
struct ByteOrderTests {
    static let bytes: [UInt8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09]

    @Test func littleAndBigEndianValues() {
        let b = Self.bytes
        #expect(b.le16(0) == 0x0201)
        #expect(b.le32(1) == 0x0504_0302)
        #expect(b.le64(1) == 0x0908_0706_0504_0302)
        #expect(b.be16(0) == 0x0102)
        #expect(b.be32(1) == 0x0203_0405)
        #expect(b.be64(0) == 0x0102_0304_0506_0708)
        #expect([UInt8](repeating: 0xFF, count: 8).le64(0) == .max)
    }

    @Test func boundsAwareFormsReturnNilOutside() {
        let b = Self.bytes
        #expect(b.le16(at: 7) == 0x0908)
        #expect(b.le16(at: 8) == nil)
        #expect(b.le32(at: 6) == nil)
        #expect(b.le64(at: 1) == 0x0908_0706_0504_0302)
        #expect(b.le64(at: 2) == nil)
        #expect(b.be32(at: 9) == nil)
        #expect(b.le32(at: -1) == nil)
        #expect(b.le32(at: .max) == nil)
        #expect(b.le64(at: .max - 3) == nil)
        #expect(b.le16(at: .min) == nil)
        #expect([UInt8]().le16(at: 0) == nil)
    }

    /// Indices are the collection's own, as with its subscript: a slice reads its base's bytes.
    @Test func slicesAndBuffersUseTheirIndices() {
        let slice = Self.bytes[4..<8]
        #expect(slice.le16(4) == 0x0605)
        #expect(slice.le32(at: 4) == 0x0807_0605)
        #expect(slice.le16(at: 3) == nil)
        #expect(slice.le16(at: 7) == nil)
        #expect(slice.be32(at: 4) == 0x0506_0708)
        Self.bytes.withUnsafeBufferPointer { buffer in
            #expect(buffer.le32(5) == 0x0908_0706)
            #expect(buffer.le32(at: 6) == nil)
        }
    }
}
