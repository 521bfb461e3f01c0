import Glibc
import ImgFormats
import ImgSystem

/// The operating system installed in an image, as virt-inspector reports it.
public struct OSReport: Sendable, Equatable {
    /// The partition number holding the root filesystem (nil for a bare filesystem); for a root in
    /// an LVM logical volume, the partition holding its physical volume.
    public let rootPartition: Int?
    /// "vg/lv" when the root filesystem is in an LVM logical volume.
    public let rootLogicalVolume: String?
    /// os-release ID ("debian").
    public let id: String?
    /// os-release VERSION_ID ("12").
    public let versionID: String?
    /// os-release PRETTY_NAME.
    public let prettyName: String?
    /// /etc/hostname: its first line that is neither empty nor a comment, trimmed.
    public let hostname: String?
    /// The names of the kernels (vmlinuz-*) in /boot, from the root filesystem or a separate /boot
    /// partition, sorted.
    public let kernels: [String]

    /// Makes a value, for an embedder's tests.
    public init(rootPartition: Int?, id: String?, versionID: String?, prettyName: String?, hostname: String?,
                kernels: [String], rootLogicalVolume: String? = nil) {
        self.rootLogicalVolume = rootLogicalVolume
        self.rootPartition = rootPartition
        self.id = id
        self.versionID = versionID
        self.prettyName = prettyName
        self.hostname = hostname
        self.kernels = kernels
    }
}

/// Finds the OS in an image's ext2/3/4 filesystems by reading files through libext2fs: no mount,
/// no root, no writes. Best effort: a filesystem that cannot be read is skipped. Embedders get its
/// result in `InspectReport.os`.
enum OSInspection {
    /// An ext2/3/4 filesystem of the image: its partition (nil for a bare filesystem) and byte offset.
    struct Filesystem: Sendable {
        let partition: Int?
        let offset: UInt64
        /// "vg/lv" for a filesystem in an LVM logical volume (whose PV is in `partition`).
        var logicalVolume: String? = nil
        /// Where to read it when not at `offset` of the image: a logical volume in pieces.
        var source: (any ByteSource)? = nil
    }

    /// os-release is a few hundred bytes; more is not an os-release file.
    static let osReleaseMaxBytes = 64 * 1024
    static let hostnameMaxBytes = 4096
    /// /boot holds a handful of files; a huge directory there is not worth walking.
    static let bootEntryLimit = 10_000

    /// `filesystems`: each ext2/3/4 filesystem found (partition number, nil for a bare filesystem;
    /// byte offset). The root is the first with an os-release file (/etc/os-release, else
    /// /usr/lib/os-release, symbolic links followed inside the filesystem) and an /etc directory.
    /// Kernels come from its /boot, else from the top of another filesystem that has vmlinuz-*
    /// and no /etc (a separate /boot). Returns nil if no root is found.
    static func inspect(image: String, filesystems: [Filesystem]) -> OSReport? {
        guard let source = try? ImageSource.open(image) else { return nil }
        return inspect(image: image, source: source, filesystems: filesystems)
    }

    /// `inspect(image:filesystems:)` on `source`, the disk `image` holds (a container's virtual disk).
    static func inspect(image: String, source: any ByteSource, filesystems: [Filesystem]) -> OSReport? {
        let opened = filesystems.compactMap { candidate -> (partition: Int?, fs: Ext2Filesystem, logicalVolume: String?)? in
            guard let fs = try? Ext2Filesystem(source: candidate.source ?? source, offset: candidate.offset, name: image) else { return nil }
            return (candidate.partition, fs, candidate.logicalVolume)
        }
        for (index, root) in opened.enumerated() {
            guard (try? root.fs.stat("/etc").kind) == .directory,
                  let release = readOSRelease(root.fs) else { continue }
            var kernels = kernelNames(root.fs, in: "/boot")
            if kernels.isEmpty {
                for (otherIndex, other) in opened.enumerated() where otherIndex != index && !other.fs.exists("/etc") {
                    kernels = kernelNames(other.fs, in: "/")
                    if !kernels.isEmpty { break }
                }
            }
            return OSReport(rootPartition: root.partition, id: release["ID"], versionID: release["VERSION_ID"],
                            prettyName: release["PRETTY_NAME"], hostname: hostname(root.fs), kernels: kernels,
                            rootLogicalVolume: root.logicalVolume)
        }
        return nil
    }

    /// Parses os-release(5): KEY=value lines, values unquoted or in single or double quotes (shell
    /// style, so quoted parts may be joined: `A="x"'y'`), backslash escapes (in double quotes only
    /// for $ ` " \, as in sh). Blank lines and `#` comments are skipped, as are lines that are not
    /// assignments or have an unterminated quote. A later assignment wins.
    static func parseOSRelease(_ text: String) -> [String: String] {
        var values: [String: String] = [:]
        for rawLine in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let line = rawLine.drop { $0 == " " || $0 == "\t" }
            guard !line.isEmpty, line.first != "#", let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals]
            guard isVariableName(key), let value = unquote(line[line.index(after: equals)...]) else { continue }
            values[String(key)] = value
        }
        return values
    }

    private static func isVariableName(_ s: Substring) -> Bool {
        guard let first = s.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else {
            return false
        }
        return s.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    /// A shell word: nil if a quote is left open. Unquoted whitespace ends it (a trailing comment).
    private static func unquote(_ raw: Substring) -> String? {
        enum Quote { case none, single, double }
        var quote = Quote.none
        var out = ""
        var chars = raw.makeIterator()
        while let c = chars.next() {
            switch quote {
            case .none:
                switch c {
                case "'": quote = .single
                case "\"": quote = .double
                case "\\": if let next = chars.next() { out.append(next) }
                case " ", "\t": return out
                default: out.append(c)
                }
            case .single:
                if c == "'" { quote = .none } else { out.append(c) }
            case .double:
                if c == "\"" {
                    quote = .none
                } else if c == "\\" {
                    guard let next = chars.next() else { return nil }
                    if !["$", "`", "\"", "\\"].contains(next) { out.append(c) }
                    out.append(next)
                } else {
                    out.append(c)
                }
            }
        }
        return quote == .none ? out : nil
    }

    private static func readOSRelease(_ fs: Ext2Filesystem) -> [String: String]? {
        for path in ["/etc/os-release", "/usr/lib/os-release"] {
            guard let bytes = try? fs.read(path, maxBytes: osReleaseMaxBytes) else { continue }
            return parseOSRelease(String(decoding: bytes, as: UTF8.self))
        }
        return nil
    }

    private static func hostname(_ fs: Ext2Filesystem) -> String? {
        guard let bytes = try? fs.read("/etc/hostname", maxBytes: hostnameMaxBytes) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let name = line.trimmingASCIIWhitespace()
            if !name.isEmpty && !name.hasPrefix("#") { return String(name) }
        }
        return nil
    }

    private static func kernelNames(_ fs: Ext2Filesystem, in directory: String) -> [String] {
        guard let entries = try? fs.list(directory, limit: bootEntryLimit) else { return [] }
        return entries.filter { $0.name.hasPrefix("vmlinuz-") && $0.kind != .directory }.map(\.name)
    }
}

extension Substring {
    fileprivate func trimmingASCIIWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        var s = self
        while let c = s.first, isSpace(c) { s = s.dropFirst() }
        while let c = s.last, isSpace(c) { s = s.dropLast() }
        return s
    }
}
