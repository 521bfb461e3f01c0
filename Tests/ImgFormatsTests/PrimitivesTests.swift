import Foundation
import Testing

@testable import ImgFormats

@Suite("CRC32, GUID, byte sources")
struct PrimitivesTests {
    @Test func crc32KnownValues() {
        #expect(CRC32.checksum([UInt8]()) == 0)
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)  // the standard check value
        #expect(CRC32.checksum("123456789".utf8) == 0xCBF4_3926)  // non-contiguous path agrees
        #expect(CRC32.checksum([UInt8](repeating: 0, count: 32)) == 0x190A_55AD)
    }

    @Test func guidTextAndDiskOrder() throws {
        let guid = try #require(GUID(string: "21686148-6449-6e6f-744e-656564454649"))
        #expect(guid == .biosBoot)
        #expect(guid.description == "21686148-6449-6E6F-744E-656564454649")
        // First three groups little-endian, last two big-endian: the bytes spell "Hah!IdontNeedEFI".
        #expect(guid.bytes == Array("Hah!IdontNeedEFI".utf8))
        #expect(GUID(bytes: guid.bytes) == guid)
        #expect(GUID(string: "{C12A7328-F81F-11D2-BA4B-00A0C93EC93B}") == .efiSystem)
        #expect(GUID.empty.isZero)
        #expect(!GUID.linuxFilesystem.isZero)
        #expect(GUID.linuxFilesystem.description == "0FC63DAF-8483-4772-8E79-3D69D8477DE4")
    }

    @Test(arguments: [
        "", "21686148-6449-6E6F-744E-65656445464", "21686148-6449-6E6F-744E-6565644546499",
        "21686148_6449_6E6F_744E_656564454649", "2168614-86449-6E6F-744E-656564454649",
        "21686148-6449-6E6F-744E-65656445464G", "21686148-6449-6E6F-744E-656564454649-",
    ])
    func guidRejectsMalformedText(text: String) {
        #expect(GUID(string: text) == nil)
    }

    @Test func guidRejectsWrongByteCount() {
        #expect(GUID(bytes: [UInt8](repeating: 1, count: 15)) == nil)
        #expect(GUID(bytes: [UInt8](repeating: 1, count: 17)) == nil)
    }

    @Test func memorySourceBounds() throws {
        let source = MemoryByteSource([1, 2, 3, 4])
        #expect(source.size == 4)
        #expect(try source.read(at: 1, count: 3) == [2, 3, 4])
        #expect(try source.read(at: 4, count: 0) == [])
        #expect(throws: ByteSourceError.self) { try source.read(at: 2, count: 3) }
        #expect(throws: ByteSourceError.self) { try source.read(at: UInt64.max, count: 2) }
        #expect(throws: ByteSourceError.self) { try source.read(at: 0, count: -1) }
        #expect(try source.readIfInBounds(at: UInt64.max - 1, count: 4) == nil)
    }

    @Test func fileSourceReadsAndRefusesShortReads() throws {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("imgformats-\(UUID().uuidString).img").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let contents = (0..<1500).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(contents)))

        let source = try FileByteSource(path: path)
        #expect(source.size == 1500)
        #expect(try source.read(at: 0, count: 1500) == contents)
        #expect(try source.read(at: 1000, count: 10) == Array(contents[1000..<1010]))
        let error = try #require(throws: ByteSourceError.self) { try source.read(at: 1499, count: 2) }
        #expect(error.description.contains(path))

        // A size larger than the file (a caller's mistake, or a file that shrank) makes pread hit EOF.
        let oversized = try FileByteSource(path: path, size: 4096)
        let eof = try #require(throws: ByteSourceError.self) { try oversized.read(at: 1024, count: 1024) }
        #expect(eof.description.hasPrefix("pread on \(path) at 1500"), "\(eof)")
    }

    @Test func fileSourceErrorsNameTheCallAndPath() throws {
        let missing = "/nonexistent-\(UUID().uuidString)/x.img"
        let error = try #require(throws: ByteSourceError.self) { try FileByteSource(path: missing) }
        #expect(error.description == "open on \(missing): No such file or directory")

        // A directory opens read-only but has no meaningful size: the caller must say.
        let dir = try #require(throws: ByteSourceError.self) { try FileByteSource(path: "/") }
        #expect(dir.description.contains("not a regular file"))
    }

    @Test func readingATableFromAFile() throws {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("imgformats-\(UUID().uuidString).img").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (image, _) = GPTTests.standard()
        #expect(FileManager.default.createFile(atPath: path, contents: Data(image.bytes)))
        let table = try #require(try PartitionTable.read(from: FileByteSource(path: path)))
        #expect(table.partitions.count == 3)
        #expect(table.findings.isEmpty)
    }
}
