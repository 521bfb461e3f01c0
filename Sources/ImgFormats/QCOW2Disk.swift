import CZlib
import CZstd
import Synchronization

/// The virtual disk inside a qcow2 image (versions 2 and 3), read-only, as a byte source.
///
/// Read from QEMU's specification (docs/interop/qcow2.txt) and block/qcow2-cluster.c, big-endian:
/// the header gives the virtual size at 24, the cluster size as a power of two at 20 and the active
/// L1 table (entries at 36, offset at 40). A guest cluster's L1 entry (bits 9-55) locates an L2
/// table of one cluster, whose entry maps the cluster: a host cluster (bits 9-55), a compressed
/// cluster (bit 62), zeros (bit 0, version 3) or nothing, in which case the backing file, or
/// zeros, supply it. Extended L2 entries (incompatible bit 4) add a 64-bit bitmap that splits the
/// cluster into 32 subclusters, each allocated, zero or unallocated.
///
/// Nothing is read up front beyond the first cluster: L1 entries are read in 4 KiB pages and L2
/// tables in 4 KiB slices (as qemu's L2 cache does) through small LRU caches, and the last
/// decompressed cluster is kept, so memory and the bytes read follow what is read, never the
/// virtual size. Every offset the image gives is checked against overflow and the file's size;
/// a bad one is a `ContainerError` naming it, at open for the header and the L1 table, at read
/// time for what the tables point to.
///
/// An external data file (incompatible bit 2) is opened through `ContainerFiles.openExtent` with
/// the name its header extension gives, as an extent of the image: it holds the guest clusters,
/// the qcow2 file only the tables. Encrypted images are refused.
public final class QCOW2Disk: ByteSource {
    /// The virtual disk's size in bytes (the header's `size`).
    public let size: UInt64
    /// The qcow2 version, 2 or 3.
    public let version: Int
    /// The cluster size in bytes, 512 to 2 MiB.
    public let clusterSize: Int
    /// The backing file as the header names it (not resolved, not checked); nil for none.
    public let backingFile: String?
    /// The backing file's format as the header extension states it ("qcow2", "raw"); nil when the
    /// image does not say (qemu then probes it).
    public let backingFormat: String?
    /// The backing file's name when the image has one but `ContainerFiles.openBacking` was nil: the
    /// clusters it would supply read as zeros, which the caller should report.
    public let backingNotOpened: String?
    /// The external data file's name from the header extension, opened as an extent; nil when the
    /// guest clusters are in the image file itself.
    public let dataFile: String?

    private let file: any ByteSource
    /// Where guest clusters live: the image file, or its external data file.
    private let data: any ByteSource
    private let backing: (any ByteSource)?
    private let layout: Layout
    private let cache: Mutex<Cache>

    /// Opens the qcow2 image `file`, reading its header, its header extensions and checking where its
    /// L1 table lies; a backing file is opened through `files.openBacking` when it is allowed, an
    /// external data file through `files.openExtent`.
    ///
    /// Throws `ContainerError` for what cannot be read as a disk (with the next step to take), and
    /// passes on the errors of `file` and of the `files` callbacks.
    public init(file: any ByteSource, files: ContainerFiles) throws {
        guard file.size >= Self.v2HeaderLength,
              let h = try file.readIfInBounds(at: 0, count: Self.v2HeaderLength),
              h.starts(with: Self.magic) else {
            throw ContainerError("the file is not a qcow2 image: it does not start with QEMU's \"QFI\\xfb\" header")
        }
        let version = h.be32(4)
        guard version == 2 || version == 3 else {
            let what = version == 1 ? "QEMU's original qcow format (version 1)" : "qcow2 version \(version)"
            throw ContainerError("the image is \(what), which cannot be read here; convert it with qemu-img convert -O qcow2")
        }
        let clusterBits = h.be32(20)
        // qemu opens 512 B to 2 MiB clusters; beyond, the shifts below would be meaningless.
        guard (9...21).contains(clusterBits) else {
            throw ContainerError("the qcow2 header's cluster_bits is \(clusterBits), outside qemu's 9...21 (512 B to 2 MiB): the header is damaged or not qcow2")
        }
        let clusterSize = 1 << Int(clusterBits)
        let cryptMethod = h.be32(32)
        guard cryptMethod == 0 else {
            let method = cryptMethod == 1 ? "AES" : cryptMethod == 2 ? "LUKS" : "method \(cryptMethod)"
            throw ContainerError("the qcow2 image is encrypted (\(method)), and its contents cannot be read without the key; decrypt it with qemu-img convert --object secret,... --image-opts ... -O qcow2")
        }

        var incompatible: UInt64 = 0
        var headerLength = Self.v2HeaderLength
        var compression = Compression.zlib
        if version >= 3 {
            guard let v3 = try file.readIfInBounds(at: 0, count: Self.v3HeaderLength) else {
                throw ContainerError("the qcow2 version 3 header is cut short: the file has \(file.size) bytes, the header needs \(Self.v3HeaderLength)")
            }
            incompatible = v3.be64(72)
            let length = v3.be32(100)
            guard length >= Self.v3HeaderLength, length <= clusterSize else {
                throw ContainerError("the qcow2 header_length is \(length), outside \(Self.v3HeaderLength)...\(clusterSize) (its first cluster): the header is damaged")
            }
            headerLength = Int(length)
            let unknown = incompatible & ~Self.knownIncompatible
            guard unknown == 0 else {
                let bits = (0..<64).filter { unknown & (1 << UInt64($0)) != 0 }.map(String.init).joined(separator: ", ")
                throw ContainerError("the qcow2 image uses incompatible features this reader does not know (bits \(bits) of incompatible_features); convert it with a newer qemu-img convert -O qcow2 -o compat=1.1")
            }
            // The compression type is present when the header reaches byte 104 (spec: "additional fields").
            let type: UInt8 = headerLength > 104 ? (try file.readIfInBounds(at: 104, count: 1))?.first ?? 0 : 0
            switch (type, incompatible & Self.compressionTypeBit != 0) {
            case (0, false): compression = .zlib
            case (1, true): compression = .zstd
            case (let t, true) where t != 0 && t != 1:
                throw ContainerError("the qcow2 image's compression type is \(t), neither zlib (0) nor zstd (1); convert it with a newer qemu-img convert -O qcow2")
            default:
                throw ContainerError("the qcow2 header's compression type (\(type)) contradicts its compression-type feature bit: the header is damaged")
            }
        }
        // Bit 0 (dirty) says refcounts may be stale and bit 1 (corrupt) forbids writing: neither
        // changes the L1/L2 mapping a read follows, so both are read as qemu reads them read-only;
        // every table entry is bounds-checked anyway.
        let extendedL2 = incompatible & Self.extendedL2Bit != 0

        let size = h.be64(24)
        guard size <= Self.maxVirtualSize else {
            throw ContainerError("the qcow2 header's virtual size (\(size) bytes) is beyond 2^55 bytes, more than qcow2's 56-bit host offsets can hold: the header is damaged")
        }

        // The L1 table is only located and bounded here; its entries are read when needed.
        let entryBytes = extendedL2 ? 16 : 8
        let l2Entries = clusterSize / entryBytes
        let l1Size = UInt64(h.be32(36))
        let l1Offset = h.be64(40)
        let l2Coverage = UInt64(clusterSize) * UInt64(l2Entries)  // at least 2^14, size at most 2^55
        let l1Needed = (size + l2Coverage - 1) / l2Coverage
        guard l1Size >= l1Needed else {
            throw ContainerError("the qcow2 L1 table has \(l1Size) entries, but a \(size)-byte disk needs \(l1Needed): the header is damaged; check it with qemu-img check")
        }
        if l1Size > 0 {
            let (end, overflow) = l1Offset.addingReportingOverflow(l1Size * 8)
            guard l1Offset & UInt64(clusterSize - 1) == 0, l1Offset > 0, !overflow, end <= file.size else {
                throw ContainerError("the qcow2 L1 table (\(l1Size) entries at offset \(l1Offset)) is not cluster-aligned or lies outside the \(file.size)-byte file: the image is damaged or truncated")
            }
        }

        // Header extensions follow the header, up to the backing file name or the first cluster's end.
        let backingOffset = h.be64(8)
        let backingLength = UInt64(h.be32(16))
        let extensionsEnd = backingOffset != 0 ? min(backingOffset, UInt64(clusterSize)) : UInt64(clusterSize)
        let head = try file.read(at: 0, count: Int(min(extensionsEnd, file.size)))
        let extensions = try Self.extensions(head, from: version >= 3 ? headerLength : Self.v2HeaderLength)

        var backingName: String?
        if backingOffset != 0 {
            // qemu: the name lies inside the first cluster and has at most 1023 bytes.
            let (end, overflow) = backingOffset.addingReportingOverflow(backingLength)
            guard backingLength <= 1023, !overflow, end <= UInt64(clusterSize), end <= file.size else {
                throw ContainerError("the qcow2 backing file name (\(backingLength) bytes at offset \(backingOffset)) is longer than 1023 bytes or lies outside the image's first cluster: the header is damaged")
            }
            if backingLength > 0 {
                backingName = String(decoding: try file.read(at: backingOffset, count: Int(backingLength)), as: UTF8.self)
            }
        }

        var dataName: String?
        var data = file
        if incompatible & Self.externalDataBit != 0 {
            guard let name = extensions.dataFile, !name.isEmpty else {
                throw ContainerError("the qcow2 image keeps its data in an external data file but does not name it; convert it with qemu-img convert --image-opts driver=qcow2,file.filename=IMAGE,data-file.filename=DATA -O raw OUT")
            }
            dataName = name
            data = try files.openExtent(name)
        }

        self.size = size
        self.version = Int(version)
        self.clusterSize = clusterSize
        self.backingFile = backingName
        self.backingFormat = extensions.backingFormat
        self.dataFile = dataName
        self.file = file
        self.data = data
        if let backingName, let open = files.openBacking {
            backing = try open(backingName)
            backingNotOpened = nil
        } else {
            backing = nil
            backingNotOpened = backingName
        }
        layout = Layout(clusterBits: Int(clusterBits), extendedL2: extendedL2, l2Entries: UInt64(l2Entries),
                        l1Offset: l1Offset, l1Size: l1Size, compression: compression,
                        externalData: dataName != nil)
        cache = Mutex(Cache(clusterBits: Int(clusterBits)))
    }

    /// Reads exactly `count` bytes of the virtual disk at `offset`; a range past `size` is an error.
    /// Throws `ContainerError` when a table entry the range needs is damaged or points outside the file.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(max(count, 0)))
        guard count >= 0, !overflow, end <= size else {
            throw ByteSourceError("read of \(count) bytes at \(offset) from a qcow2 disk runs past its end (\(size) bytes)")
        }
        guard count > 0 else { return [] }
        let segments = try cache.withLock { cache in try plan(offset: offset, count: count, cache: &cache) }

        // The common sequential case, one run of contiguous host clusters or of backing data, is
        // the underlying source's own read: no second buffer, no copy.
        if segments.count == 1, let only = segments.first {
            if only.kind == .data, only.host <= data.size, data.size - only.host >= UInt64(count) {
                return try data.read(at: only.host, count: count)
            }
            if only.kind == .unallocated, let backing, end <= backing.size {
                return try backing.read(at: offset, count: count)
            }
        }
        return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            let base = buffer.baseAddress!
            var at = 0
            for segment in segments {
                let target = base + at
                switch segment.kind {
                case .zero:
                    target.initialize(repeating: 0, count: segment.length)
                case .data:
                    try Self.readClamped(data, at: segment.host, count: segment.length, into: target)
                case .unallocated:
                    if let backing {
                        // A backing disk shorter than this one reads as zeros past its end, as in qemu.
                        try Self.readClamped(backing, at: segment.guest, count: segment.length, into: target)
                    } else {
                        target.initialize(repeating: 0, count: segment.length)
                    }
                case .compressed:
                    let cluster = try cache.withLock { cache in try decompressed(entry: segment.host, cache: &cache) }
                    let within = Int(segment.guest & UInt64(clusterSize - 1))
                    cluster.withUnsafeBufferPointer { source in
                        target.initialize(from: source.baseAddress! + within, count: segment.length)
                    }
                }
                at += segment.length
            }
            initialized = count
        }
    }

    // MARK: format constants

    static let magic: [UInt8] = [0x51, 0x46, 0x49, 0xFB]
    static let v2HeaderLength = 72
    static let v3HeaderLength = 104
    static let externalDataBit: UInt64 = 1 << 2
    static let compressionTypeBit: UInt64 = 1 << 3
    static let extendedL2Bit: UInt64 = 1 << 4
    /// Dirty, corrupt, external data file, compression type, extended L2 entries.
    static let knownIncompatible: UInt64 = 0b1_1111
    /// Bits 9-55 of an L1 or standard L2 entry: a host offset.
    static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    static let copiedBit: UInt64 = 1 << 63
    static let compressedBit: UInt64 = 1 << 62
    static let zeroBit: UInt64 = 1
    static let maxVirtualSize: UInt64 = 1 << 55
    /// Header extension types (docs/interop/qcow2.txt, "Header extensions").
    static let backingFormatExtension: UInt32 = 0xE279_2ACA
    static let dataFileExtension: UInt32 = 0x4441_5441
    /// Bytes of L1 table per cached page and of L2 table per cached slice (qemu's default L2 slice).
    static let tablePageBytes = 4096

    enum Compression: Sendable { case zlib, zstd }

    /// What the header fixes about the mapping.
    struct Layout: Sendable {
        let clusterBits: Int
        let extendedL2: Bool
        let l2Entries: UInt64
        let l1Offset: UInt64
        let l1Size: UInt64
        let compression: Compression
        let externalData: Bool
        var clusterMask: UInt64 { (1 << UInt64(clusterBits)) - 1 }
        var entryBytes: Int { extendedL2 ? 16 : 8 }
    }

    // MARK: header extensions

    struct Extensions {
        var backingFormat: String?
        var dataFile: String?
    }

    /// Walks the header extensions in `head` from `start`: 8-byte type and length, data padded to 8.
    static func extensions(_ head: [UInt8], from start: Int) throws -> Extensions {
        var result = Extensions()
        var at = start
        // Each step advances at least 8 bytes through at most one cluster, so the walk is bounded.
        while at + 8 <= head.count {
            let type = head.be32(at), length = Int(head.be32(at + 4))
            at += 8
            if type == 0 { break }
            guard length <= head.count - at else {
                throw ContainerError("a qcow2 header extension (type 0x\(String(type, radix: 16))) claims \(length) bytes, more than its first cluster holds: the header is damaged")
            }
            if type == backingFormatExtension || type == dataFileExtension {
                guard length <= 1023 else {
                    throw ContainerError("a qcow2 header extension names a file of \(length) bytes, longer than 1023: the header is damaged")
                }
                let name = String(decoding: head[at..<(at + length)], as: UTF8.self)
                if type == backingFormatExtension { result.backingFormat = name } else { result.dataFile = name }
            }
            at += (length + 7) & ~7
        }
        return result
    }

    // MARK: mapping

    /// How a run of the virtual disk is read.
    enum Kind: Sendable { case data, zero, unallocated, compressed }

    /// A run of the virtual disk that reads one way: `host` is the data's offset in the data file
    /// for `.data`, the L2 entry for `.compressed`.
    struct Segment: Sendable {
        var kind: Kind
        var guest: UInt64
        var length: Int
        var host: UInt64
    }

    /// The runs `offset..<offset+count` is made of, neighbours of a kind merged (contiguous host
    /// clusters become one read).
    private func plan(offset: UInt64, count: Int, cache: inout Cache) throws -> [Segment] {
        var segments: [Segment] = []
        var position = offset
        var left = count
        while left > 0 {
            let next = try segment(at: position, limit: left, cache: &cache)
            if let last = segments.last, last.kind == next.kind, last.kind != .compressed,
               last.kind != .data || last.host + UInt64(last.length) == next.host {
                segments[segments.count - 1].length += next.length
            } else {
                segments.append(next)
            }
            position += UInt64(next.length)
            left -= next.length
        }
        return segments
    }

    /// The run at `position`, up to the end of its cluster (or subcluster run) and `limit`.
    private func segment(at position: UInt64, limit: Int, cache: inout Cache) throws -> Segment {
        let cluster = position >> UInt64(layout.clusterBits)
        let within = Int(position & layout.clusterMask)
        let (entry, bitmap) = try l2Entry(cluster: cluster, cache: &cache)
        var extent = clusterSize - within
        let kind: Kind
        var host: UInt64 = 0
        if entry & Self.compressedBit != 0 {
            guard !layout.externalData else {
                throw ContainerError("guest cluster \(cluster) of the qcow2 image is compressed, which external data files do not allow: the image is damaged; check it with qemu-img check")
            }
            kind = .compressed
            host = entry
        } else {
            let hostCluster = entry & Self.offsetMask
            // With an external data file, offset 0 is a real cluster, told apart by the copied bit
            // (qcow2_get_cluster_type).
            let allocated = hostCluster != 0 || (layout.externalData && entry & Self.copiedBit != 0)
            if layout.extendedL2 {
                let allocatedBits = UInt32(truncatingIfNeeded: bitmap), zeroBits = UInt32(truncatingIfNeeded: bitmap >> 32)
                guard allocatedBits & zeroBits == 0, allocated || allocatedBits == 0 else {
                    throw ContainerError("the extended L2 entry of guest cluster \(cluster) is invalid (a subcluster both allocated and zero, or allocated without a host cluster): the image is damaged; check it with qemu-img check")
                }
                func status(_ sub: Int) -> Kind {
                    zeroBits & (1 << UInt32(sub)) != 0 ? .zero : allocatedBits & (1 << UInt32(sub)) != 0 ? .data : .unallocated
                }
                let subclusterBits = layout.clusterBits - 5
                let first = within >> subclusterBits
                kind = status(first)
                var end = first + 1
                while end < 32, status(end) == kind { end += 1 }
                extent = (end << subclusterBits) - within
            } else if entry & Self.zeroBit != 0 {
                kind = .zero
            } else {
                kind = allocated ? .data : .unallocated
            }
            if kind == .data {
                guard hostCluster & layout.clusterMask == 0, hostCluster < data.size else {
                    throw ContainerError("guest cluster \(cluster) of the qcow2 image maps to host offset \(hostCluster), which is not cluster-aligned or lies past the end of the \(data.size)-byte \(dataFile == nil ? "image" : "data file"): the image is damaged or truncated")
                }
                host = hostCluster + UInt64(within)
            }
        }
        return Segment(kind: kind, guest: position, length: min(limit, extent), host: host)
    }

    /// The L2 entry (and, with extended L2 entries, its subcluster bitmap) of guest `cluster`;
    /// (0, 0), unallocated, where the L1 entry has no L2 table.
    private func l2Entry(cluster: UInt64, cache: inout Cache) throws -> (UInt64, UInt64) {
        let l1Index = cluster / layout.l2Entries
        // The L1 table covers the disk (checked at open); an index past it cannot come from a read.
        guard l1Index < layout.l1Size else { return (0, 0) }
        let perPage = UInt64(Self.tablePageBytes / 8)
        let page = l1Index / perPage
        // Inside the file: the whole table was checked at open.
        let pageOffset = layout.l1Offset + page * UInt64(Self.tablePageBytes)
        let pageBytes = Int(min(perPage, layout.l1Size - page * perPage)) * 8
        let l1Page = try cache.l1Pages.bytes(at: pageOffset) { try file.read(at: pageOffset, count: pageBytes) }
        let l1Entry = l1Page.be64(Int(l1Index % perPage) * 8)
        let l2Offset = l1Entry & Self.offsetMask
        guard l2Offset != 0 else { return (0, 0) }

        let entryBytes = layout.entryBytes
        let sliceBytes = min(Self.tablePageBytes, clusterSize)
        let perSlice = UInt64(sliceBytes / entryBytes)
        let l2Index = cluster % layout.l2Entries
        // l2Offset < 2^56 and the slice lies inside one cluster, so the sum cannot overflow.
        let sliceOffset = l2Offset + (l2Index / perSlice) * UInt64(sliceBytes)
        guard l2Offset & layout.clusterMask == 0, sliceOffset + UInt64(sliceBytes) <= file.size else {
            throw ContainerError("the qcow2 L1 entry \(l1Index) points to an L2 table at offset \(l2Offset), which is not cluster-aligned or lies past the end of the \(file.size)-byte image: the image is damaged or truncated")
        }
        let slice = try cache.l2Slices.bytes(at: sliceOffset) { try file.read(at: sliceOffset, count: sliceBytes) }
        let at = Int(l2Index % perSlice) * entryBytes
        return (slice.be64(at), layout.extendedL2 ? slice.be64(at + 8) : 0)
    }

    /// Reads `count` bytes at `offset` of `source` into `target`, zeros where the range runs past
    /// its end: qemu's block layer reads a file's missing tail as zeros (a last cluster written
    /// short, a shorter backing disk).
    private static func readClamped(_ source: any ByteSource, at offset: UInt64, count: Int,
                                    into target: UnsafeMutablePointer<UInt8>) throws {
        let present = offset < source.size ? Int(min(UInt64(count), source.size - offset)) : 0
        if present > 0 {
            let bytes = try source.read(at: offset, count: present)
            bytes.withUnsafeBufferPointer { target.initialize(from: $0.baseAddress!, count: present) }
        }
        (target + present).initialize(repeating: 0, count: count - present)
    }

    // MARK: compressed clusters

    /// The cluster a compressed L2 `entry` describes, decompressed to exactly one cluster (cached:
    /// sequential reads of 512 B to 64 KiB touch the same cluster many times).
    private func decompressed(entry: UInt64, cache: inout Cache) throws -> [UInt8] {
        if let last = cache.lastCluster, last.entry == entry { return last.bytes }
        // Compressed descriptor: x = 62 - (cluster_bits - 8); offset in bits 0..x-1, additional
        // 512-byte sectors in bits x..61 (qcow2_parse_compressed_l2_entry).
        let shift = UInt64(62 - (layout.clusterBits - 8))
        let offset = entry & ((1 << shift) - 1)
        let sectors = ((entry >> shift) & ((1 << UInt64(layout.clusterBits - 8)) - 1)) + 1
        let length = sectors * 512 - (offset & 511)  // at most two clusters
        guard offset < data.size else {
            throw ContainerError("a compressed qcow2 cluster lies at offset \(offset), past the end of the \(data.size)-byte image: the image is damaged or truncated")
        }
        // The sector count rounds up, so the last cluster's data may end before the file does.
        let input = try data.read(at: offset, count: Int(min(length, data.size - offset)))
        var ok = false
        let output = [UInt8](unsafeUninitializedCapacity: clusterSize) { buffer, initialized in
            ok = cache.codec.decompress(input, into: buffer, as: layout.compression)
            initialized = ok ? clusterSize : 0
        }
        guard ok else {
            let what = layout.compression == .zstd ? "zstd" : "deflate"
            throw ContainerError("a compressed qcow2 cluster at offset \(offset) is not valid \(what) data of exactly one \(clusterSize)-byte cluster: the image is damaged; check it with qemu-img check")
        }
        cache.lastCluster = (entry, output)
        return output
    }

    // MARK: caches

    /// Everything reads share, behind the mutex.
    struct Cache {
        /// 4 KiB pages of the L1 table: 4 pages map 2048 L2 tables.
        var l1Pages = PageCache(capacity: 4)
        /// 4 KiB slices of L2 tables: 32 slices map 1 GiB with 64 KiB clusters.
        var l2Slices = PageCache(capacity: 32)
        var lastCluster: (entry: UInt64, bytes: [UInt8])?
        let codec: Decompressor

        init(clusterBits: Int) {
            codec = Decompressor(clusterBits: clusterBits)
        }
    }

    /// A few pages of a file by offset, the least recently used replaced.
    struct PageCache {
        private var entries: [(key: UInt64, bytes: [UInt8], used: UInt64)] = []
        private var clock: UInt64 = 0
        let capacity: Int

        init(capacity: Int) { self.capacity = capacity }

        mutating func bytes(at key: UInt64, load: () throws -> [UInt8]) rethrows -> [UInt8] {
            clock &+= 1
            if let i = entries.firstIndex(where: { $0.key == key }) {
                entries[i].used = clock
                return entries[i].bytes
            }
            let bytes = try load()
            if entries.count < capacity {
                entries.append((key, bytes, clock))
            } else if let victim = entries.indices.min(by: { entries[$0].used < entries[$1].used }) {
                entries[victim] = (key, bytes, clock)
            }
            return bytes
        }
    }

    /// zlib's inflate and zstd's decompression context, made once and reset per cluster (a zstd
    /// context is a few hundred KiB of tables). Used only under the mutex.
    final class Decompressor {
        private var zstream: UnsafeMutablePointer<z_stream>?
        private var zstd: OpaquePointer?
        /// zstd frames may declare any window; qemu's are at most one cluster, so a larger one is
        /// refused instead of allocated (zstd's default limit is 128 MiB).
        private let windowLogMax: Int32

        init(clusterBits: Int) { windowLogMax = Int32(max(20, clusterBits + 1)) }

        deinit {
            if let zstream {
                inflateEnd(zstream)
                zstream.deallocate()
            }
            if let zstd { ZSTD_freeDCtx(zstd) }
        }

        /// Decompresses `input` to exactly `output.count` bytes; false for anything else.
        func decompress(_ input: [UInt8], into output: UnsafeMutableBufferPointer<UInt8>, as compression: Compression) -> Bool {
            input.withUnsafeBufferPointer { source in
                compression == .zstd ? unzstd(source, into: output) : inflateRaw(source, into: output)
            }
        }

        /// Raw deflate with a 4 KiB window (inflateInit2 with -12), as qemu's qcow2_zlib_decompress:
        /// the input is rounded up to sectors, so a full output with the stream unfinished
        /// (Z_BUF_ERROR) is success as well as Z_STREAM_END.
        private func inflateRaw(_ input: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableBufferPointer<UInt8>) -> Bool {
            let stream: UnsafeMutablePointer<z_stream>
            if let zstream {
                stream = zstream
                guard inflateReset(stream) == Z_OK else { return false }
            } else {
                // zlib keeps a pointer back to the stream, so it lives at one address for good.
                stream = .allocate(capacity: 1)
                stream.initialize(to: z_stream())
                guard inflateInit2_(stream, -12, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
                    stream.deallocate()
                    return false
                }
                zstream = stream
            }
            stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.pointee.avail_in = uInt(input.count)
            stream.pointee.next_out = output.baseAddress
            stream.pointee.avail_out = uInt(output.count)
            let result = inflate(stream, Z_FINISH)
            stream.pointee.next_in = nil
            stream.pointee.next_out = nil
            return (result == Z_STREAM_END || result == Z_BUF_ERROR) && stream.pointee.avail_out == 0
        }

        /// zstd, as qemu's qcow2_zstd_decompress: the data may be several frames, decoded until the
        /// cluster is full; each step must make progress, and the last frame must end there.
        private func unzstd(_ input: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableBufferPointer<UInt8>) -> Bool {
            let context: OpaquePointer
            if let zstd {
                context = zstd
                guard ZSTD_isError(ZSTD_DCtx_reset(context, ZSTD_reset_session_only)) == 0 else { return false }
            } else {
                guard let made = ZSTD_createDCtx() else { return false }
                guard ZSTD_isError(ZSTD_DCtx_setParameter(made, ZSTD_d_windowLogMax, windowLogMax)) == 0 else {
                    ZSTD_freeDCtx(made)
                    return false
                }
                zstd = made
                context = made
            }
            var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
            var target = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
            var remaining = 0
            while target.pos < target.size {
                let (inBefore, outBefore) = (source.pos, target.pos)
                remaining = ZSTD_decompressStream(context, &target, &source)
                if ZSTD_isError(remaining) != 0 { return false }
                if source.pos <= inBefore, target.pos <= outBefore { return false }
            }
            return remaining == 0
        }
    }
}

extension QCOW2Disk: ContainerDisk, SparseByteSource {
    /// The allocated and compressed clusters of `range`, and what the backing disk holds where
    /// this one has nothing (all of it, unless the backing disk says otherwise).
    public func dataRanges(in range: Range<UInt64>) throws -> [Range<UInt64>] {
        let upper = min(range.upperBound, size)
        guard range.lowerBound < upper else { return [] }
        var found: [Range<UInt64>] = []
        func add(_ r: Range<UInt64>) {
            if let last = found.last, last.upperBound == r.lowerBound { found[found.count - 1] = last.lowerBound..<r.upperBound } else { found.append(r) }
        }
        // In slices, so the plan for a huge range stays small.
        var position = range.lowerBound
        while position < upper {
            let count = Int(min(upper - position, 64 << 20))
            let segments = try cache.withLock { cache in try plan(offset: position, count: count, cache: &cache) }
            for segment in segments {
                let r = segment.guest..<segment.guest + UInt64(segment.length)
                switch segment.kind {
                case .data, .compressed: add(r)
                case .zero: break
                case .unallocated:
                    guard let backing else { break }
                    let inBacking = r.clamped(to: 0..<backing.size)
                    if inBacking.isEmpty { break }
                    if let sparse = backing as? any SparseByteSource { try sparse.dataRanges(in: inBacking).forEach(add) } else { add(inBacking) }
                }
            }
            position += UInt64(count)
        }
        return found
    }
}
