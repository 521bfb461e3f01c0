import Synchronization

/// A Microsoft VHD (Virtual PC's format, qemu's "vpc") presented as the raw disk it holds: fixed,
/// dynamic and differencing disks, read-only.
///
/// Layout (Microsoft's "Virtual Hard Disk Image Format Specification", big-endian throughout):
/// - the footer, the last 512 bytes ("conectix"; a dynamic or differencing disk also copies it at
///   0): data offset at 16, creator application at 28, current size at 48, geometry (cylinders,
///   heads, sectors per track) at 56, 58, 59, disk type at 60 (2 fixed, 3 dynamic, 4 differencing),
///   checksum at 64 (the ones' complement of the byte sum, the checksum field counted as zero);
/// - a fixed disk is its data followed by the footer;
/// - a dynamic disk's header ("cxsparse") at the footer's data offset: BAT offset at 16, BAT
///   entries at 28, block size at 32, the parent's UTF-16BE name at 64 (512 bytes) and eight parent
///   locators of 24 bytes at 576. The BAT holds, for each block, the sector where the block starts
///   (0xFFFFFFFF: not allocated): a sector bitmap padded to a 512-byte multiple, then the data.
///
/// A dynamic disk reads unallocated blocks as zeros and ignores the bitmap (as qemu does: it sets
/// every bit when it allocates). A differencing disk reads an unallocated block, and each sector
/// whose bitmap bit (most significant bit first) is clear, from its parent.
public final class VHDDisk: ByteSource {
    /// The virtual disk's size in bytes, as qemu-img reports it (see `virtualSize(footer:)`).
    public let size: UInt64
    /// The disk type: "fixed", "dynamic" or "differencing".
    public let diskType: String
    /// The parent a differencing disk names, when `ContainerFiles.openBacking` was nil, so the
    /// parent's sectors read as zeros; nil when there is no parent or it was opened.
    public let backingNotOpened: String?
    /// The parent's name as the header gives it (unicode name, else a parent locator), for a
    /// differencing disk; nil otherwise.
    public let parentName: String?

    private let file: any ByteSource
    private let parent: (any ByteSource)?
    private let sparse: Sparse?
    private let table: TablePageCache
    /// The last sector bitmap a differencing read needed: (its file offset, its bytes).
    private let lastBitmap = Mutex<(offset: UInt64, bytes: [UInt8])?>(nil)

    /// What a dynamic or differencing disk's header says.
    private struct Sparse {
        var batOffset: UInt64
        var batEntries: UInt64
        var blockSize: UInt64
        var bitmapBytes: UInt64
        var differencing: Bool
    }

    static let footerBytes: UInt64 = 512
    static let unallocated: UInt32 = 0xFFFF_FFFF
    /// qemu's VHD_MAX_SECTORS: 2040 GiB, the largest size the format's tools create.
    static let maxSectors: UInt64 = 0xFF00_0000
    /// Block sizes beyond 256 MiB are refused, which bounds a sector bitmap at 64 KiB.
    static let maxBlockSize: UInt64 = 256 << 20

    /// Opens `file` as a VHD. Throws a `ContainerError` for anything that is not a readable VHD
    /// (no footer, a bad checksum, an absurd size or block size, a table outside the file), and
    /// whatever `file` or `files.openBacking` throws.
    public init(file: any ByteSource, files: ContainerFiles) throws {
        self.file = file
        self.table = TablePageCache()
        let cookie = Array("conectix".utf8)
        var footer: [UInt8] = []
        if file.size >= Self.footerBytes {
            footer = try file.read(at: file.size - Self.footerBytes, count: Int(Self.footerBytes))
        }
        if !footer.starts(with: cookie), file.size >= Self.footerBytes {
            // A dynamic disk whose last sector was lost still has the footer's copy at 0.
            footer = try file.read(at: 0, count: Int(Self.footerBytes))
        }
        guard footer.starts(with: cookie) else {
            throw ContainerError("not a VHD: no \"conectix\" footer in the last 512 bytes or at the start")
        }
        let stored = footer.be32(64)
        var sum: UInt32 = 0
        for (index, byte) in footer.enumerated() where !(64..<68).contains(index) { sum &+= UInt32(byte) }
        guard ~sum == stored else {
            throw ContainerError("VHD footer checksum is \(stored), but its bytes sum to \(~sum): the footer is damaged")
        }
        let sectors = Self.virtualSectors(footer: footer)
        guard sectors <= Self.maxSectors else {
            throw ContainerError("VHD virtual size of \(sectors) sectors is larger than the format allows (\(Self.maxSectors))")
        }
        size = sectors * 512
        let type = footer.be32(60)
        switch type {
        case 2:
            diskType = "fixed"
            guard size <= file.size - Self.footerBytes else {
                throw ContainerError("fixed VHD of \(size) bytes is in a file of only \(file.size) bytes: it is truncated")
            }
            sparse = nil
            parent = nil
            parentName = nil
            backingNotOpened = nil
        case 3, 4:
            diskType = type == 3 ? "dynamic" : "differencing"
            let headerOffset = footer.be64(16)
            guard VirtualDisk.fits(headerOffset, 1024, in: file.size) else {
                throw ContainerError("VHD dynamic header offset \(headerOffset) lies outside the file (\(file.size) bytes)")
            }
            let header = try file.read(at: headerOffset, count: 1024)
            guard header.starts(with: Array("cxsparse".utf8)) else {
                throw ContainerError("VHD dynamic header at \(headerOffset) lacks its \"cxsparse\" cookie")
            }
            let blockSize = UInt64(header.be32(32))
            guard blockSize >= 512, blockSize <= Self.maxBlockSize, blockSize & (blockSize - 1) == 0 else {
                throw ContainerError("VHD block size \(blockSize) is not a power of two from 512 bytes to 256 MiB")
            }
            let entries = UInt64(header.be32(28)), batOffset = header.be64(16)
            // qemu's checks: the BAT must cover the disk, and not describe more than the format allows.
            guard entries * blockSize >= size, entries <= Self.maxSectors * 512 / blockSize else {
                throw ContainerError("VHD BAT of \(entries) entries of \(blockSize) bytes does not fit a \(size)-byte disk")
            }
            guard VirtualDisk.fits(batOffset, entries * 4, in: file.size) else {
                throw ContainerError("VHD BAT at \(batOffset) (\(entries) entries) lies outside the file (\(file.size) bytes)")
            }
            let bitmapBytes = (blockSize / 512 / 8 + 511) / 512 * 512
            sparse = Sparse(batOffset: batOffset, batEntries: entries, blockSize: blockSize,
                            bitmapBytes: bitmapBytes, differencing: type == 4)
            if type == 4 {
                let name = try Self.parentName(header: header, file: file)
                parentName = name
                (parent, backingNotOpened) = try VirtualDisk.openParent(name, files: files, of: "differencing VHD")
            } else {
                parentName = nil
                parent = nil
                backingNotOpened = nil
            }
        default:
            throw ContainerError("VHD disk type \(type) is none of fixed (2), dynamic (3) or differencing (4)")
        }
    }

    /// The virtual size in sectors, by qemu's rule (block/vpc.c, vpc_open): the CHS geometry's
    /// cylinders × heads × sectors, as Virtual PC sizes a disk, unless the creator application is
    /// one that sizes disks by the footer's current size ("win " Hyper-V, "qem2" qemu with
    /// force_size, "d2v " Disk2vhd, "CTXS" XenConverter, "tap\0" XenServer) or the geometry is the
    /// largest there is (65535/16/255), which would truncate. qemu-img's own images ("qemu") are
    /// created with a current size equal to the geometry's, rounded up from the size asked for.
    static func virtualSectors(footer: [UInt8]) -> UInt64 {
        let chs = UInt64(footer.be16(56)) * UInt64(footer[58]) * UInt64(footer[59])
        let creator = Array(footer[28..<32])
        let bySize: [[UInt8]] = [Array("win ".utf8), Array("qem2".utf8), Array("d2v ".utf8), Array("CTXS".utf8), [0x74, 0x61, 0x70, 0]]
        if bySize.contains(creator) || chs == 65535 * 16 * 255 { return footer.be64(48) / 512 }
        return chs
    }

    /// The parent's name: the header's UTF-16BE unicode name, else the first Windows relative,
    /// Windows absolute or Mac OS X locator, in the form `ContainerFiles` resolves.
    static func parentName(header: [UInt8], file: any ByteSource) throws -> String {
        if let name = VirtualDisk.utf16(header[64..<576], bigEndian: true), !name.isEmpty {
            return VirtualDisk.portableName(name)
        }
        for code in ["W2ru", "W2ku", "MacX"] {
            for entry in stride(from: 576, to: 768, by: 24) where Array(header[entry..<(entry + 4)]) == Array(code.utf8) {
                let length = UInt64(header.be32(entry + 8)), offset = header.be64(entry + 16)
                guard length > 0, length <= UInt64(DiskContainer.maxNameBytes), VirtualDisk.fits(offset, length, in: file.size) else { continue }
                let bytes = try file.read(at: offset, count: Int(length))
                let text = code == "MacX"
                    ? String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                    : VirtualDisk.utf16(bytes[...], bigEndian: false) ?? ""
                let name = code == "MacX" && text.hasPrefix("file://") ? String(text.dropFirst(7)) : text
                if !name.isEmpty { return VirtualDisk.portableName(name) }
            }
        }
        throw ContainerError("differencing VHD names no parent: its unicode name and parent locators are empty")
    }

    /// Reads exactly `count` bytes of the virtual disk at `offset`, or throws.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        try VirtualDisk.checkRequest(offset: offset, count: count, size: size, what: "VHD virtual disk")
        guard let sparse else { return try file.read(at: offset, count: count) }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var position = offset
        let end = offset + UInt64(count)
        while position < end {
            let block = position / sparse.blockSize, within = position % sparse.blockSize
            let length = min(end - position, sparse.blockSize - within)
            let entry = block < sparse.batEntries
                ? try table.be32(file, at: sparse.batOffset + block * 4, what: "VHD BAT entry \(block)") : Self.unallocated
            if entry == Self.unallocated {
                if sparse.differencing {
                    try VirtualDisk.appendParent(parent, at: position, count: Int(length), to: &out)
                } else {
                    out.append(contentsOf: [UInt8](repeating: 0, count: Int(length)))
                }
            } else {
                let bitmapOffset = UInt64(entry) * 512, dataOffset = bitmapOffset + sparse.bitmapBytes
                guard VirtualDisk.fits(dataOffset, sparse.blockSize, in: file.size) else {
                    throw ContainerError("VHD BAT entry \(block) puts the block at sector \(entry), past the end of the file (\(file.size) bytes)")
                }
                if !sparse.differencing {
                    out.append(contentsOf: try file.read(at: dataOffset + within, count: Int(length)))
                } else {
                    let bitmap = try self.bitmap(at: bitmapOffset, bytes: sparse.bitmapBytes)
                    try VirtualDisk.forEachRun(from: within, count: length, unit: 512, present: { sector in
                        bitmap[Int(sector / 8)] & (0x80 >> UInt8(sector % 8)) != 0
                    }) { runStart, runLength, present in
                        if present {
                            out.append(contentsOf: try file.read(at: dataOffset + runStart, count: Int(runLength)))
                        } else {
                            try VirtualDisk.appendParent(parent, at: block * sparse.blockSize + runStart, count: Int(runLength), to: &out)
                        }
                    }
                }
            }
            position += length
        }
        return out
    }

    /// The sector bitmap at `offset`, kept while sequential reads stay in its block.
    private func bitmap(at offset: UInt64, bytes: UInt64) throws -> [UInt8] {
        if let hit = lastBitmap.withLock({ $0?.offset == offset ? $0?.bytes : nil }) { return hit }
        let bitmap = try file.read(at: offset, count: Int(bytes))
        lastBitmap.withLock { $0 = (offset, bitmap) }
        return bitmap
    }
}

extension VHDDisk: ContainerDisk {}
