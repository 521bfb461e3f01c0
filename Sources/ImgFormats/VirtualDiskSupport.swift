import Synchronization

// What the virtual-disk readers (VHDDisk, VHDXDisk, VMDKDisk) share: on-demand table reads through
// a small page cache, range checks that turn a hostile offset into a ContainerError, and the
// parent (backing file) that supplies what a differencing disk does not hold.

/// Reads little- and big-endian table entries (a VHD BAT, a VHDX BAT, a VMDK grain directory or
/// grain table) from files on demand, keeping the last few 4 KiB pages of all of them.
///
/// A table proportional to the virtual size (4 MiB of BAT for a 1 TiB VHD, 512 KiB of grain
/// directory for a 1 TiB VMDK) is never read whole: memory stays at `pageCount` pages however
/// many files (VMDK extents) share the cache, and sequential reads hit the same page for
/// thousands of entries.
final class TablePageCache: Sendable {
    static let pageSize: UInt64 = 4096
    static let pageCount = 16

    /// Recently read pages, most recent last: (file number, page start, bytes). At most `pageCount`.
    private let pages = Mutex<[(file: Int, start: UInt64, bytes: [UInt8])]>([])

    /// The `width` bytes at `offset` of `source`, which the caller numbers `file` (its VMDK extent).
    func bytes(_ source: any ByteSource, file: Int, at offset: UInt64, width: Int,
               what: @autoclosure () -> String) throws -> ArraySlice<UInt8> {
        guard VirtualDisk.fits(offset, UInt64(width), in: source.size) else {
            throw ContainerError("\(what()) at byte \(offset) lies outside the file (\(source.size) bytes)")
        }
        let start = offset - offset % Self.pageSize
        let page: [UInt8]
        if let hit = pages.withLock({ list in list.last(where: { $0.file == file && $0.start == start })?.bytes }) {
            page = hit
        } else {
            // The I/O happens outside the lock; two readers racing for one page both read it.
            page = try source.read(at: start, count: Int(min(Self.pageSize, source.size - start)))
            pages.withLock { list in
                list.removeAll { $0.file == file && $0.start == start }
                if list.count >= Self.pageCount { list.removeFirst() }
                list.append((file, start, page))
            }
        }
        let index = Int(offset - start)
        if index + width <= page.count { return page[index..<(index + width)] }
        // An entry straddling two pages (only at an unaligned table offset): read it directly.
        return try source.read(at: offset, count: width)[...]
    }

    /// The little-endian UInt32 at `offset` (a VMDK grain directory or grain table entry).
    func le32(_ source: any ByteSource, file: Int = 0, at offset: UInt64, what: @autoclosure () -> String) throws -> UInt32 {
        let entry = try bytes(source, file: file, at: offset, width: 4, what: what())
        return entry.le32(entry.startIndex)
    }

    /// The big-endian UInt32 at `offset` (a VHD BAT entry).
    func be32(_ source: any ByteSource, file: Int = 0, at offset: UInt64, what: @autoclosure () -> String) throws -> UInt32 {
        let entry = try bytes(source, file: file, at: offset, width: 4, what: what())
        return entry.be32(entry.startIndex)
    }

    /// The little-endian UInt64 at `offset` (a VHDX BAT entry).
    func le64(_ source: any ByteSource, file: Int = 0, at offset: UInt64, what: @autoclosure () -> String) throws -> UInt64 {
        let entry = try bytes(source, file: file, at: offset, width: 8, what: what())
        return entry.le64(entry.startIndex)
    }
}

/// Helpers shared by the virtual-disk readers.
enum VirtualDisk {
    /// Virtual sizes above this are refused as absurd (64 PiB; VHDX's own limit is 64 TiB).
    static let maxVirtualSize: UInt64 = 1 << 56

    /// True when `offset..<offset+length` lies inside `0..<size`, without overflow.
    static func fits(_ offset: UInt64, _ length: UInt64, in size: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return !overflow && end <= size
    }

    /// Checks a read request against the ByteSource contract: inside the disk, count not negative.
    static func checkRequest(offset: UInt64, count: Int, size: UInt64, what: String) throws {
        guard count >= 0, fits(offset, UInt64(count), in: size) else {
            throw ByteSourceError("read of \(count) bytes at \(offset) from \(what) runs past its end (\(size) bytes)")
        }
    }

    /// Reads a range of the parent, or zeros when there is none; a parent smaller than the child
    /// reads as zeros past its end, as qemu reads a short backing file.
    static func appendParent(_ parent: (any ByteSource)?, at offset: UInt64, count: Int, to out: inout [UInt8]) throws {
        guard let parent, offset < parent.size else {
            out.append(contentsOf: [UInt8](repeating: 0, count: count))
            return
        }
        let inside = Int(min(UInt64(count), parent.size - offset))
        out.append(contentsOf: try parent.read(at: offset, count: inside))
        out.append(contentsOf: [UInt8](repeating: 0, count: count - inside))
    }

    /// Opens the parent `name` through `files.openBacking`; nil (and the name, for
    /// `backingNotOpened`) when opening parents is not allowed.
    static func openParent(_ name: String, files: ContainerFiles, of what: String) throws -> (parent: (any ByteSource)?, notOpened: String?) {
        guard let open = files.openBacking else { return (nil, name) }
        do {
            return (try open(name), nil)
        } catch {
            throw ContainerError("\(what) names its parent \(name), which cannot be opened: \(error)")
        }
    }

    /// A parent name as a Windows tool wrote it (".\\base.vhd") in the '/'-separated form that
    /// `ContainerFiles.openBacking` resolves relative to the image ("base.vhd").
    static func portableName(_ name: String) -> String {
        var text = name.replacingAll("\\", with: "/")
        while text.hasPrefix("./") { text.removeFirst(2) }
        return text
    }

    /// Splits the bytes `start..<start+count` of a block into runs of whole or partial units
    /// (sectors) whose bitmap answer `present(unit)` is the same, and calls `body` with each run's
    /// start, length and answer: a differencing block's own sectors and its parent's.
    static func forEachRun(from start: UInt64, count: UInt64, unit: UInt64, present: (UInt64) -> Bool,
                           _ body: (UInt64, UInt64, Bool) throws -> Void) rethrows {
        var position = start
        let end = start + count
        while position < end {
            let state = present(position / unit)
            var next = (position / unit + 1) * unit
            while next < end, present(next / unit) == state { next += unit }
            let runEnd = min(next, end)
            try body(position, runEnd - position, state)
            position = runEnd
        }
    }

    /// Bytes that are the UTF-16 text of a name, up to the first NUL.
    static func utf16(_ bytes: ArraySlice<UInt8>, bigEndian: Bool) -> String? {
        DiskContainer.utf16(bytes, bigEndian: bigEndian)
    }
}

extension String {
    fileprivate func replacingAll(_ target: Character, with replacement: Character) -> String {
        String(map { $0 == target ? replacement : $0 })
    }
}
