import Glibc
import ImgFormats
import ImgSystem

/// Files written into a FAT filesystem inside an image file by mtools, which needs no mount and
/// no root: directories by mmd(1), files by mcopy(1), one run per directory where names allow.
/// Written in place: the offline install writes into a copy of the image that is dropped if
/// anything fails (`OfflineTarget`).
final class MtoolsWriter: GrubDirectoryWriter {
    private let target: OfflineTarget, offset: UInt64, length: UInt64
    private let session: Session
    /// The time mtools records (its SOURCE_DATE_EPOCH); nil: now.
    private let time: Int64?

    /// The FAT filesystem of `length` bytes at `offset` in `target`.
    init(_ target: OfflineTarget, offset: UInt64, length: UInt64, time: Int64? = nil, session: Session) {
        self.target = target
        self.offset = offset
        self.length = length
        self.time = time
        self.session = session
    }

    /// mtools' name for the filesystem: the image and the offset of the filesystem in it.
    private var drive: String { "\(target.path)@@\(offset)" }

    /// Reads the filesystem as it is now (ImgFormats' FAT reader).
    func exists(_ path: String) throws -> Bool { try entry(path) != nil }

    /// Reads the filesystem as it is now (ImgFormats' FAT reader).
    func isDirectory(_ path: String) throws -> Bool { try entry(path)?.isDirectory == true }

    private func entry(_ path: String) throws -> FATFilesystem.Entry? { try filesystem().lookup(path) }

    private func filesystem() throws -> FATFilesystem {
        try FATFilesystem.open(try target.source(), offset: offset, length: length)
    }

    /// Wraps mmd(1).
    func makeDirectory(_ path: String) throws {
        let fat = try filesystem()
        var missing: [String] = [], above = ""
        for component in path.split(separator: "/") {
            above += "/\(component)"
            // Below a missing directory everything is missing: no need to look.
            if try !missing.isEmpty || fat.lookup(above) == nil { missing.append(above) }
        }
        if !missing.isEmpty { try Self.run("mmd", ["-i", drive] + missing.map { "::" + $0 }, time: time, session: session) }
    }

    /// Wraps mcopy(1), from a memory file.
    func write(_ path: String, bytes: [UInt8]) throws {
        let file = try MemoryFile(name: path, contents: bytes)
        try Self.run("mcopy", ["-o", "-i", drive, file.path, "::" + path], time: time, session: session)
    }

    /// Files whose name is their source's go in one mcopy(1) per directory; the others (a
    /// translation is `<language>/LC_MESSAGES/grub.mo` on the host) one by one.
    func copy(_ files: [GrubFiles.File], into directory: String) throws {
        var byDirectory: [String: [String]] = [:], order: [String] = []
        for file in files {
            let destination = "\(directory)/\(file.destination)"
            let parent = String(destination[..<destination.lastIndex(of: "/")!])
            if baseName(destination) == baseName(file.source) {
                if byDirectory[parent] == nil { order.append(parent) }
                byDirectory[parent, default: []].append(file.source)
            } else {
                try Self.run("mcopy", ["-o", "-i", drive, file.source, "::" + destination], time: time, session: session)
            }
        }
        for parent in order {
            try Self.run("mcopy", ["-o", "-i", drive] + byDirectory[parent]! + ["::\(parent)/"], time: time, session: session)
        }
    }

    /// mtools has written everything by the time each of its runs ends.
    func finish() {}

    private func baseName(_ path: String) -> Substring { path[path.index(after: path.lastIndex(of: "/") ?? path.startIndex)...] }

    /// Runs an mtools `tool` (mcopy, mdel, mmd) with `arguments`, dying with imgtool should it be
    /// killed. MTOOLS_SKIP_CHECK: mtools would otherwise insist on a floppy-like geometry.
    /// `time`: what mtools records as now (SOURCE_DATE_EPOCH, which it reads; FAT starts in 1980).
    static func run(_ tool: String, _ arguments: [String], time: Int64? = nil, session: Session) throws {
        let epoch = time.map { ["SOURCE_DATE_EPOCH=\(max($0, 315_532_800))"] } ?? []
        let r = try Subprocess.run(["setpriv", "--pdeathsig", "KILL", "--", "env", "MTOOLS_SKIP_CHECK=1"] + epoch + [tool] + arguments,
                                   interruption: session.interruption)
        try session.checkpoint()
        guard r.succeeded else { throw InstallGrubError.grubToolFailed(tool: tool, status: r.status, stderr: r.stderr) }
    }
}
