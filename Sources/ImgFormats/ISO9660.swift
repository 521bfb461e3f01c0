/// A read-only ISO 9660 volume, read as ISOLINUX reads it (SYSLINUX 6 core/fs/iso9660): the
/// primary volume descriptor's root directory, directory records, and files found by path with
/// names compared case-insensitively without their ";1" version and trailing dots. Rock Ridge and
/// Joliet are ignored. Fields stored both-endian (ECMA-119 7.2.3, 7.3.3) are read from their
/// little-endian half, as ISOLINUX does.
///
/// Every extent and size read from the image is checked against the source, and directories and
/// paths have hard bounds, so hostile input yields a `Problem`, never a trap or an unbounded read.
public struct ISO9660Volume: Sendable {
    /// The logical block size in bytes; ISOLINUX supports no other.
    public static let blockSize = 2048
    /// Where the primary volume descriptor is unless something says otherwise.
    public static let primaryDescriptorBlock: UInt64 = 16
    /// Directories are small on a boot ISO; a larger one is refused, not read.
    public static let maximumDirectoryBytes = 1 << 20
    /// ISO 9660 allows 8 levels; Rock Ridge images go deeper, but not this deep.
    public static let maximumPathDepth = 64
    /// A directory record's fixed part; the name follows it.
    static let recordHeaderBytes = 33
    /// The root directory record's place in the primary volume descriptor.
    static let rootRecordOffset = 156

    /// One directory record.
    public struct Record: Sendable, Equatable {
        /// The file identifier without its ";version" and trailing dots, as ISOLINUX compares it.
        public let name: String
        /// The first 2048-byte block of the extent.
        public let block: UInt32
        /// The data length in bytes.
        public let size: UInt32
        /// Whether the record is a directory (file flag bit 1).
        public let isDirectory: Bool

        /// Makes a record as a directory listing returns it.
        public init(name: String, block: UInt32, size: UInt32, isDirectory: Bool) {
            self.name = name
            self.block = block
            self.size = size
            self.isDirectory = isDirectory
        }
    }

    /// Why the volume or a path in it cannot be read. `description` is the message the user reads.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// The source refused a read; holds its message.
        case readFailed(String)
        /// The volume descriptor's block lies past the end of the source.
        case descriptorOutsideSource(block: UInt64, sourceBytes: UInt64)
        /// The block holds no primary volume descriptor (type 1, "CD001").
        case notPrimaryDescriptor(block: UInt64)
        /// A directory's extent reaches past the end of the source.
        case directoryOutsideSource(block: UInt32, bytes: UInt32, sourceBytes: UInt64)
        /// A directory is larger than `maximumDirectoryBytes`.
        case directoryTooLarge(block: UInt32, bytes: UInt32)
        /// No record at this path.
        case notFound(String)
        /// A component of the path is a file, not a directory.
        case notADirectory(String)
        /// The path has more than `maximumPathDepth` components.
        case pathTooDeep(String)

        public var description: String {
            switch self {
            case .readFailed(let message):
                return "reading the ISO 9660 filesystem failed: \(message)"
            case .descriptorOutsideSource(let block, let sourceBytes):
                return "block \(block), where the primary volume descriptor should be, lies past the end of the image (\(sourceBytes) bytes)"
            case .notPrimaryDescriptor(let block):
                return "block \(block) holds no ISO 9660 primary volume descriptor (type 1, \"CD001\")"
            case .directoryOutsideSource(let block, let bytes, let sourceBytes):
                return "a directory of \(bytes) bytes at block \(block) runs past the end of the image (\(sourceBytes) bytes); the image is truncated or damaged"
            case .directoryTooLarge(let block, let bytes):
                return "the directory at block \(block) is \(bytes) bytes, more than the \(ISO9660Volume.maximumDirectoryBytes) read"
            case .notFound(let path):
                return "\(path) does not exist on the ISO 9660 filesystem"
            case .notADirectory(let path):
                return "\(path) on the ISO 9660 filesystem is a file, not a directory"
            case .pathTooDeep(let path):
                return "\(path) has more than \(ISO9660Volume.maximumPathDepth) components"
            }
        }
    }

    /// The root directory, from the primary volume descriptor.
    public let root: Record
    private let source: any ByteSource

    /// Opens the volume whose primary volume descriptor is at `descriptorBlock`.
    public init(_ source: any ByteSource, descriptorBlock: UInt64 = primaryDescriptorBlock) throws(Problem) {
        let blockSize = UInt64(Self.blockSize)
        guard descriptorBlock < source.size / blockSize else {
            throw .descriptorOutsideSource(block: descriptorBlock, sourceBytes: source.size)
        }
        let descriptor = try Self.read(source, at: descriptorBlock * blockSize, count: Self.blockSize)
        guard descriptor[0] == 1, descriptor[1..<6].elementsEqual("CD001".utf8) else {
            throw .notPrimaryDescriptor(block: descriptorBlock)
        }
        let at = Self.rootRecordOffset
        root = Record(name: "/", block: descriptor.le32(at + 2), size: descriptor.le32(at + 10), isDirectory: true)
        self.source = source
    }

    /// The records of `directory`, "." and ".." left out.
    public func list(_ directory: Record) throws(Problem) -> [Record] {
        guard directory.size <= Self.maximumDirectoryBytes else {
            throw .directoryTooLarge(block: directory.block, bytes: directory.size)
        }
        let offset = UInt64(directory.block) * UInt64(Self.blockSize)
        guard offset <= source.size, UInt64(directory.size) <= source.size - offset else {
            throw .directoryOutsideSource(block: directory.block, bytes: directory.size, sourceBytes: source.size)
        }
        return Self.records(try Self.read(source, at: offset, count: Int(directory.size)))
    }

    /// The record at `path` ("/isolinux/isolinux.cfg"); the first match in each directory wins.
    public func lookup(_ path: String) throws(Problem) -> Record {
        // Split on the scalar "/", not on Characters: a name starting with a combining mark would
        // otherwise merge with the slash before it.
        let parts = path.unicodeScalars.split(separator: "/").map { String(String.UnicodeScalarView($0)) }
        guard parts.count <= Self.maximumPathDepth else { throw .pathTooDeep(path) }
        var current = root
        for (i, part) in parts.enumerated() {
            guard current.isDirectory else { throw .notADirectory("/" + parts[..<i].joined(separator: "/")) }
            let name = part.lowercased()
            guard let entry = try list(current).first(where: { $0.name.lowercased() == name }) else { throw .notFound(path) }
            current = entry
        }
        return current
    }

    /// Whether `path` names a file (not a directory) that `lookup` finds.
    public func isFile(_ path: String) -> Bool {
        (try? lookup(path)).map { !$0.isDirectory } ?? false
    }

    /// The records in a directory's bytes. A record never crosses a block boundary: a length too
    /// short for a record, or one that would cross, means the rest of the block is padding.
    public static func records(_ data: [UInt8]) -> [Record] {
        var records: [Record] = []
        var offset = 0
        while offset < data.count {
            let length = Int(data[offset])
            let blockEnd = (offset / blockSize + 1) * blockSize
            guard length >= recordHeaderBytes, offset + length <= min(blockEnd, data.count) else {
                offset = blockEnd
                continue
            }
            let nameLength = Int(data[offset + 32])
            // Identifiers 0 and 1 (one byte) are the directory itself and its parent.
            if recordHeaderBytes + nameLength <= length, !(nameLength == 1 && data[offset + 33] <= 1) {
                let identifier = data[(offset + 33)..<(offset + 33 + nameLength)].prefix { $0 != UInt8(ascii: ";") }
                var name = String(decoding: identifier, as: UTF8.self)
                while name.count > 1, name.hasSuffix(".") { name.removeLast() }
                // The System Use area follows the identifier (and a pad byte after an even-length one).
                let systemUse = offset + 33 + nameLength + (nameLength % 2 == 0 ? 1 : 0)
                if systemUse < offset + length, let rockRidge = rockRidgeName(data[systemUse..<(offset + length)]) {
                    name = rockRidge
                }
                records.append(Record(name: name, block: data.le32(offset + 2), size: data.le32(offset + 10),
                                      isDirectory: data[offset + 25] & 0x02 != 0))
            }
            offset += length
        }
        return records
    }

    /// The Rock Ridge name (RRIP "NM" entries, concatenated while they say CONTINUE) in a
    /// record's System Use area; nil when there is none. A continuation area (CE) elsewhere on the
    /// disc is not followed: names long enough to need one keep their ISO 9660 name.
    static func rockRidgeName(_ area: ArraySlice<UInt8>) -> String? {
        var name: [UInt8] = []
        var found = false
        var at = area.startIndex
        // Each SUSP entry: two signature bytes, its length (at least 4), its version, its data.
        while at + 4 <= area.endIndex {
            let length = Int(area[at + 2])
            guard length >= 4, at + length <= area.endIndex else { break }
            if area[at] == UInt8(ascii: "N"), area[at + 1] == UInt8(ascii: "M"), length >= 5 {
                let flags = area[at + 4]
                // CURRENT (2) and PARENT (4) name "." and ".."; those records are skipped anyway.
                if flags & 0x06 == 0 {
                    name += area[(at + 5)..<(at + length)]
                    found = true
                }
                if flags & 0x01 == 0 && found { break }
            } else if area[at] == UInt8(ascii: "S"), area[at + 1] == UInt8(ascii: "T") {
                break
            }
            at += length
        }
        return found && !name.isEmpty ? String(decoding: name, as: UTF8.self) : nil
    }

    private static func read(_ source: any ByteSource, at offset: UInt64, count: Int) throws(Problem) -> [UInt8] {
        do {
            return try source.read(at: offset, count: count)
        } catch {
            throw .readFailed(String(describing: error))
        }
    }
}
