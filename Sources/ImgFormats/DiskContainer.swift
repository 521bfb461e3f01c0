/// A virtual-disk container around a raw disk, the formats VMs and clouds hand around, named by its
/// magic and described by its header: the virtual disk's size, how it is stored, and whether it
/// names another file (a backing file) that holds part of the disk. Only headers are read; what is
/// inside is not (yet) presented as a raw disk.
///
/// - qcow2 (QEMU's qcow2 spec, big-endian): "QFI\xfb", version at 4, backing file offset and size
///   at 8 and 16, cluster bits at 20, virtual size at 24, encryption at 32; version 3 adds the
///   incompatible features at 72, the header length at 100 and the compression type at 104.
/// - VMDK: a sparse extent ("KDMV", little-endian: capacity and grain size in sectors at 12 and
///   20, descriptor offset and size at 28 and 36, compression at 77) whose embedded descriptor
///   names its createType; or a descriptor file ("# Disk DescriptorFile") listing its extents.
/// - VHD: the "conectix" footer in the last 512 bytes (big-endian: current size at 48, disk type
///   at 60), for dynamic and differencing disks also copied at 0; a dynamic header ("cxsparse")
///   at the footer's data offset gives the block size at 32 and the parent's name at 64.
/// - VHDX: "vhdxfile"; its region table at 192 KiB locates the metadata region, whose items give
///   the virtual disk size and the block size (and whether there is a parent).
/// - EWF (E01): "EVF\t\r\n\xff\0"; its sections are not read.
public struct DiskContainer: Sendable, Equatable {
    /// The container format.
    public enum Format: String, Sendable, CaseIterable {
        /// QEMU's copy-on-write format.
        case qcow2
        /// VMware's virtual disk: a sparse extent, or a descriptor naming its extents.
        case vmdk
        /// Microsoft's Virtual PC disk (qemu's "vpc").
        case vhd
        /// Hyper-V's virtual disk.
        case vhdx
        /// The Expert Witness Format of forensic acquisitions (E01).
        case ewf

        /// The command that makes a raw copy of the container at `path`: what to run to read or
        /// change it on a machine that cannot present the container as a disk.
        public func rawCopyCommand(_ path: String) -> String {
            qemuDriver.map { "qemu-img convert -f \($0) -O raw \(path) \(path).raw" } ?? "ewfexport \(path)"
        }

        /// qemu's block driver for the format (`format=` names it; qemu never probes it), nil
        /// for formats qemu does not open.
        public var qemuDriver: String? {
            switch self {
            case .qcow2: return "qcow2"
            case .vmdk: return "vmdk"
            case .vhd: return "vpc"
            case .vhdx: return "vhdx"
            case .ewf: return nil
            }
        }
    }

    /// The format.
    public let format: Format
    /// The format's own version (qcow2 2 or 3, VMDK 1 to 3, VHDX 1); nil where the header has none.
    public let version: Int?
    /// How the disk is stored: VMDK's createType ("monolithicSparse", "streamOptimized",
    /// "monolithicFlat"), VHD's disk type ("fixed", "dynamic", "differencing"); nil otherwise.
    public let variant: String?
    /// The virtual disk's size in bytes; nil where it is not in what is read.
    public let virtualSize: UInt64?
    /// The allocation unit in bytes: qcow2's cluster, VMDK's grain, VHD's and VHDX's block.
    public let clusterSize: UInt64?
    /// How compressed data is compressed, where the format says: qcow2's compression type ("zlib",
    /// "zstd"), "deflate" for a VMDK with compressed grains; nil for none or not stated.
    public let compression: String?
    /// The file holding the rest of the disk, as the header names it (a qcow2 or VMDK backing file,
    /// a VHD or VHDX parent). Never opened: an untrusted image can name any path.
    public let backingFile: String?
    /// qcow2's encryption method is not 0 (the contents cannot be read without its key).
    public let encrypted: Bool

    /// Makes a value, for tests and reports.
    public init(format: Format, version: Int? = nil, variant: String? = nil, virtualSize: UInt64? = nil,
                clusterSize: UInt64? = nil, compression: String? = nil, backingFile: String? = nil, encrypted: Bool = false) {
        self.format = format
        self.version = version
        self.variant = variant
        self.virtualSize = virtualSize
        self.clusterSize = clusterSize
        self.compression = compression
        self.backingFile = backingFile
        self.encrypted = encrypted
    }

    /// Bounds on what a hostile header makes us read.
    static let maxNameBytes = 4096
    static let maxDescriptorBytes = 64 * 1024

    /// The container `source` is, by its magic; nil for anything else (a raw disk). Header fields
    /// that are absurd or point outside the file are left nil rather than trusted.
    public static func identify(_ source: some ByteSource) throws -> DiskContainer? {
        guard source.size > 0 else { return nil }
        let head = try source.read(at: 0, count: Int(min(8, source.size)))
        if head.starts(with: [0x51, 0x46, 0x49, 0xFB]) { return try qcow2(source) }
        if head.starts(with: Array("KDMV".utf8)) { return try vmdkSparse(source) }
        if head.starts(with: Array("# Disk D".utf8)) { return try vmdkDescriptor(source) }
        if head.starts(with: Array("vhdxfile".utf8)) { return try vhdx(source) }
        if head.starts(with: [0x45, 0x56, 0x46, 0x09, 0x0D, 0x0A, 0xFF, 0x00]) { return DiskContainer(format: .ewf) }
        if source.size >= 512, let footer = try source.readIfInBounds(at: source.size - 512, count: 512),
           footer.starts(with: Array("conectix".utf8)) {
            return try vhd(source, footer: footer)
        }
        // A dynamic VHD whose last sector was lost still starts with its footer's copy.
        if head.starts(with: Array("conectix".utf8)), let copy = try source.readIfInBounds(at: 0, count: 512) {
            return try vhd(source, footer: copy)
        }
        return nil
    }

    // MARK: qcow2

    static func qcow2(_ source: some ByteSource) throws -> DiskContainer {
        guard let h = try source.readIfInBounds(at: 0, count: 104) ?? source.readIfInBounds(at: 0, count: 72) else {
            return DiskContainer(format: .qcow2)
        }
        let version = Int(h.be32(4))
        let clusterBits = h.be32(20)
        let cluster: UInt64? = (9...21).contains(clusterBits) ? 1 << UInt64(clusterBits) : nil
        var compression: String? = version >= 2 ? "zlib" : nil
        if version >= 3, h.count >= 104, h.be64(72) & (1 << 3) != 0, h.be32(100) > 104,
           let type = try source.readIfInBounds(at: 104, count: 1) {
            compression = type[0] == 1 ? "zstd" : type[0] == 0 ? "zlib" : "unknown (\(type[0]))"
        }
        let backing = try name(source, at: h.be64(8), count: UInt64(h.be32(16)))
        return DiskContainer(format: .qcow2, version: version, virtualSize: h.be64(24), clusterSize: cluster,
                             compression: compression, backingFile: backing, encrypted: h.be32(32) != 0)
    }

    // MARK: VMDK

    static func vmdkSparse(_ source: some ByteSource) throws -> DiskContainer {
        guard let h = try source.readIfInBounds(at: 0, count: 79) else { return DiskContainer(format: .vmdk) }
        let capacity = h.le64(12), grain = h.le64(20)
        var descriptor: Descriptor?
        let (offset, size) = (h.le64(28), h.le64(36))
        // The offset is the header's word: a hostile one overflows sectors-to-bytes.
        let (start, overflow) = offset.multipliedReportingOverflow(by: 512)
        if offset > 0, !overflow, size > 0, size <= UInt64(maxDescriptorBytes / 512),
           let text = try source.readIfInBounds(at: start, count: Int(size * 512)) {
            descriptor = Descriptor(text)
        }
        let (bytes, o1) = capacity.multipliedReportingOverflow(by: 512)
        let (grainBytes, o2) = grain.multipliedReportingOverflow(by: 512)
        return DiskContainer(format: .vmdk, version: Int(h.le32(4)), variant: descriptor?.createType,
                             virtualSize: o1 ? nil : bytes, clusterSize: o2 || grain == 0 ? nil : grainBytes,
                             compression: h.le16(77) == 1 ? "deflate" : nil, backingFile: descriptor?.parent)
    }

    static func vmdkDescriptor(_ source: some ByteSource) throws -> DiskContainer {
        let text = try source.read(at: 0, count: Int(min(source.size, UInt64(maxDescriptorBytes))))
        let d = Descriptor(text)
        return DiskContainer(format: .vmdk, version: d.version, variant: d.createType,
                             virtualSize: d.extentSectors.flatMap { s in s.multipliedReportingOverflow(by: 512).overflow ? nil : s * 512 },
                             backingFile: d.parent)
    }

    /// What a VMDK descriptor says: `version=1`, `createType="streamOptimized"`,
    /// `parentFileNameHint="base.vmdk"`, and extent lines (`RW 131072 FLAT "disk-flat.vmdk" 0`).
    struct Descriptor {
        var version: Int?
        var createType: String?
        var parent: String?
        var extentSectors: UInt64?

        init(_ bytes: [UInt8]) {
            let text = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            var total: UInt64 = 0
            var extents = 0
            for raw in text.split(whereSeparator: \.isNewline) {
                let line = String(raw.drop { $0 == " " || $0 == "\t" })
                if let value = Self.value(line, "version") { version = Int(value) }
                if let value = Self.value(line, "createType") { createType = value }
                if let value = Self.value(line, "parentFileNameHint") { parent = value }
                let words = line.split(separator: " ")
                if words.count >= 3, ["RW", "RDONLY", "NOACCESS"].contains(words[0]), let sectors = UInt64(words[1]) {
                    let (sum, overflow) = total.addingReportingOverflow(sectors)
                    total = overflow ? .max : sum
                    extents += 1
                }
            }
            extentSectors = extents > 0 && total != .max ? total : nil
        }

        /// `key=value` or `key="value"`.
        static func value(_ line: String, _ key: String) -> String? {
            guard line.hasPrefix(key + "=") else { return nil }
            var value = line.dropFirst(key.count + 1)
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = value.dropFirst().dropLast() }
            return String(value)
        }
    }

    // MARK: VHD

    static func vhd(_ source: some ByteSource, footer: [UInt8]) throws -> DiskContainer {
        let type = footer.be32(60)
        let variant = type == 2 ? "fixed" : type == 3 ? "dynamic" : type == 4 ? "differencing" : "type \(type)"
        var block: UInt64?
        var parent: String?
        if type == 3 || type == 4, let header = try source.readIfInBounds(at: footer.be64(16), count: 1024),
           header.starts(with: Array("cxsparse".utf8)) {
            block = UInt64(header.be32(32))
            if type == 4 { parent = utf16(header[64..<576], bigEndian: true) }
        }
        return DiskContainer(format: .vhd, version: Int(footer.be16(12)), variant: variant, virtualSize: footer.be64(48),
                             clusterSize: block, backingFile: parent)
    }

    // MARK: VHDX

    static let regionTableOffset: UInt64 = 192 * 1024
    static let metadataRegion = GUID(string: "8B7CA206-4790-4B9A-B8FE-575F050F886E")!
    static let fileParametersItem = GUID(string: "CAA16737-FA36-4D43-B3B6-33F0AA44E76B")!
    static let virtualDiskSizeItem = GUID(string: "2FA54224-CD1B-4876-B211-5DBED83BF4B8")!

    static func vhdx(_ source: some ByteSource) throws -> DiskContainer {
        var size: UInt64?, block: UInt64?, hasParent = false
        if let table = try source.readIfInBounds(at: regionTableOffset, count: 64 * 1024), table.starts(with: Array("regi".utf8)) {
            let count = min(Int(table.le32(8)), 2047)
            for i in 0..<count where GUID(bytes: table[(16 + 32 * i)..<(32 + 32 * i)]) == metadataRegion {
                let base = table.le64(16 + 32 * i + 16), length = Int(min(table.le32(16 + 32 * i + 24), 1 << 20))
                guard let metadata = try source.readIfInBounds(at: base, count: length), metadata.count >= 32,
                      metadata.starts(with: Array("metadata".utf8)) else { break }
                let items = min(Int(metadata.le16(10)), (metadata.count - 32) / 32)
                for j in 0..<items {
                    let entry = 32 + 32 * j
                    let id = GUID(bytes: metadata[entry..<(entry + 16)])
                    let offset = Int(metadata.le32(entry + 16))
                    guard offset >= 0, offset + 8 <= metadata.count else { continue }
                    if id == virtualDiskSizeItem { size = metadata.le64(offset) }
                    if id == fileParametersItem {
                        block = UInt64(metadata.le32(offset))
                        hasParent = metadata.le32(offset + 4) & 2 != 0
                    }
                }
                break
            }
        }
        return DiskContainer(format: .vhdx, version: 1, virtualSize: size, clusterSize: block,
                             backingFile: hasParent ? "(a parent named in its metadata)" : nil)
    }

    // MARK: names

    /// A name of `count` bytes at `offset` (a qcow2 backing file), bounded; nil for none or one
    /// outside the file.
    static func name(_ source: some ByteSource, at offset: UInt64, count: UInt64) throws -> String? {
        guard offset > 0, count > 0, count <= UInt64(maxNameBytes),
              let bytes = try source.readIfInBounds(at: offset, count: Int(count)) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func utf16(_ bytes: ArraySlice<UInt8>, bigEndian: Bool) -> String? {
        var units: [UInt16] = []
        var i = bytes.startIndex
        while i + 1 < bytes.endIndex {
            let unit = bigEndian ? UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]) : UInt16(bytes[i + 1]) << 8 | UInt16(bytes[i])
            if unit == 0 { break }
            units.append(unit)
            i += 2
        }
        return units.isEmpty ? nil : String(decoding: units, as: UTF16.self)
    }
}
