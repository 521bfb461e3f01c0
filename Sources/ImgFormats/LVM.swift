/// An LVM2 physical volume read from its own bytes, as lvm2's format_text reads it: the label, the
/// metadata area, and the volume group's text metadata, with each logical volume's segments mapped
/// to where their extents lie in the physical volume.
///
/// - The label ("LABELONE" at the start of one of the first 4 sectors, little-endian): its sector
///   at 8, the offset of the PV header at 20, "LVM2 001" at 24.
/// - The PV header: the PV's UUID (32 characters), its size (u64), then two lists of (offset, size)
///   pairs ended by a zero pair: data areas, then metadata areas.
/// - A metadata area starts with its header (" LVM2 x[5A%r0N*>" at 4, its start at 24 and size at
///   32) whose first location (offset at 40, size at 48, from the area's start) holds the current
///   metadata; text that would run past the area's end wraps to just after the 512-byte header.
/// - The metadata is lvm2's config text: `name { key = value ... }`, values being numbers,
///   "strings" or [ lists ].
public struct LVMPhysicalVolume: Sendable, Equatable {
    /// A logical volume's segment: `extentCount` extents from `startExtent` of the LV, lying on
    /// physical volume `physicalVolume` from its extent `physicalExtent` (a linear mapping), or of
    /// another `type` imgtool does not map.
    public struct Segment: Sendable, Equatable {
        /// The segment's first extent within the logical volume.
        public let startExtent: UInt64
        /// How many extents the segment has.
        public let extentCount: UInt64
        /// lvm2's segment type: "striped" (linear when it has one stripe), "mirror", "raid1", "thin", ...
        public let type: String
        /// The PV's name in the metadata ("pv0") and the extent there; nil for what is not linear.
        public let physicalVolume: String?
        /// The extent on the physical volume where a linear segment starts; nil for other types.
        public let physicalExtent: UInt64?

        /// Makes a value, for tests and reports.
        public init(startExtent: UInt64, extentCount: UInt64, type: String, physicalVolume: String?, physicalExtent: UInt64?) {
            self.startExtent = startExtent
            self.extentCount = extentCount
            self.type = type
            self.physicalVolume = physicalVolume
            self.physicalExtent = physicalExtent
        }
    }

    /// A logical volume as the metadata describes it.
    public struct LogicalVolume: Sendable, Equatable {
        /// The name in the metadata.
        public let name: String
        /// The UUID lvm2 gave it, as it prints it.
        public let uuid: String?
        /// Its segments, in the order of their first extents.
        public let segments: [Segment]
        /// Extents, summed over the segments.
        public var extentCount: UInt64 { segments.reduce(0) { $0 &+ $1.extentCount } }
    }

    /// A physical volume the metadata lists.
    public struct Member: Sendable, Equatable {
        /// Its name in the metadata ("pv0").
        public let name: String
        /// The UUID, as lvm2 prints it (with dashes).
        public let uuid: String
        /// Where its first extent lies in it, in bytes.
        public let extentStart: UInt64
    }

    /// This PV's UUID, as lvm2 prints it (with dashes).
    public let uuid: String
    /// The volume group's name, and its UUID; nil when the PV belongs to none or its metadata does
    /// not read.
    public let volumeGroup: String?
    /// The volume group's UUID.
    public let volumeGroupUUID: String?
    /// Bytes per extent.
    public let extentSize: UInt64?
    /// The physical volumes the metadata lists (this one among them).
    public let members: [Member]
    /// The logical volumes, in the metadata's order.
    public let logicalVolumes: [LogicalVolume]
    /// What was wrong: a metadata area that does not read, segments imgtool does not map.
    public let findings: [Finding]

    static let labelID: [UInt8] = Array("LABELONE".utf8)
    static let labelType: [UInt8] = Array("LVM2 001".utf8)
    static let mdaMagic: [UInt8] = Array(" LVM2 x[5A%r0N*>".utf8)
    /// Metadata larger than this is not read (lvm2's own default area is 1 MiB).
    static let maxMetadataBytes: UInt64 = 4 << 20

    /// The PV whose label is in the first 4 sectors of the `length` bytes at `offset` in `source`;
    /// nil when there is no LVM2 label.
    public static func read(_ source: some ByteSource, offset: UInt64, length: UInt64) throws -> LVMPhysicalVolume? {
        for sector in 0..<UInt64(4) {
            guard let label = try source.readIfInBounds(at: offset + sector * 512, count: 512), label.starts(with: labelID),
                  label[24..<32].elementsEqual(labelType) else { continue }
            let headerOffset = Int(label.le32(20))
            guard headerOffset >= 32, headerOffset < 512 - 40 else { return nil }
            return try read(source, offset: offset, length: length, header: Array(label[headerOffset...]))
        }
        return nil
    }

    static func read(_ source: some ByteSource, offset: UInt64, length: UInt64, header: [UInt8]) throws -> LVMPhysicalVolume {
        let raw = String(decoding: header[0..<32], as: UTF8.self)
        // lvm2 prints the 32 characters as 6-4-4-4-4-4-6.
        var uuid = ""
        for (i, c) in raw.enumerated() {
            if [6, 10, 14, 18, 22, 26].contains(i) { uuid.append("-") }
            uuid.append(c)
        }
        // Data areas, then metadata areas, each list ended by a zero pair.
        var lists: [[(offset: UInt64, size: UInt64)]] = [[], []]
        var at = 40, list = 0
        while list < 2, at + 16 <= header.count {
            let area = (header.le64(at), header.le64(at + 8))
            at += 16
            if area.0 == 0 && area.1 == 0 { list += 1 } else { lists[list].append(area) }
        }
        var findings: [Finding] = []
        var text: [UInt8]?
        for area in lists[1] where text == nil {
            do { text = try metadataText(source, pvOffset: offset, pvLength: length, area: area) } catch let problem as MetadataProblem {
                findings.append(Finding(.error, "the LVM metadata area at byte \(area.offset) of the physical volume: \(problem.description)"))
            }
        }
        guard let text, let config = try? LVMConfig.parse(text) else {
            if text != nil { findings.append(Finding(.error, "the LVM metadata text does not parse")) }
            return LVMPhysicalVolume(uuid: uuid, volumeGroup: nil, volumeGroupUUID: nil, extentSize: nil, members: [],
                                     logicalVolumes: [], findings: findings)
        }
        return volumeGroup(config, uuid: uuid, findings: findings)
    }

    struct MetadataProblem: Error, CustomStringConvertible {
        let description: String
    }

    /// The current metadata text in the area, unwrapped.
    static func metadataText(_ source: some ByteSource, pvOffset: UInt64, pvLength: UInt64,
                             area: (offset: UInt64, size: UInt64)) throws -> [UInt8] {
        guard area.size >= 1024, area.offset < pvLength, area.size <= pvLength - area.offset else {
            throw MetadataProblem(description: "it lies outside the physical volume")
        }
        guard let header = try source.readIfInBounds(at: pvOffset + area.offset, count: 512),
              header[4..<20].elementsEqual(mdaMagic) else { throw MetadataProblem(description: "no metadata area header") }
        let location = (offset: header.le64(40), size: header.le64(48))
        guard location.size > 0, location.size <= min(maxMetadataBytes, area.size - 512), location.offset >= 512,
              location.offset < area.size else { throw MetadataProblem(description: "no current metadata in it") }
        let first = min(location.size, area.size - location.offset)
        var text = try source.read(at: pvOffset + area.offset + location.offset, count: Int(first))
        if first < location.size { text += try source.read(at: pvOffset + area.offset + 512, count: Int(location.size - first)) }
        return text
    }

    static func volumeGroup(_ config: LVMConfig.Section, uuid: String, findings: [Finding]) -> LVMPhysicalVolume {
        var findings = findings
        guard let (name, vg) = config.sections.first else {
            return LVMPhysicalVolume(uuid: uuid, volumeGroup: nil, volumeGroupUUID: nil, extentSize: nil, members: [],
                                     logicalVolumes: [], findings: findings)
        }
        let extentSectors = vg.number("extent_size")
        var members: [Member] = []
        for (pvName, pv) in vg.section("physical_volumes")?.sections ?? [] {
            members.append(Member(name: pvName, uuid: pv.string("id") ?? "", extentStart: (pv.number("pe_start") ?? 0) &* 512))
        }
        var volumes: [LogicalVolume] = []
        for (lvName, lv) in vg.section("logical_volumes")?.sections ?? [] {
            var segments: [Segment] = []
            for (_, segment) in lv.sections {
                let type = segment.string("type") ?? "?"
                var pv: String?, pe: UInt64?
                if type == "striped", segment.number("stripe_count") == 1, case .list(let stripes)? = segment.values["stripes"],
                   stripes.count == 2, case .string(let p) = stripes[0], case .number(let e) = stripes[1] {
                    pv = p
                    pe = e
                } else {
                    findings.append(Finding(.info, "a \(type) segment of logical volume \(name)/\(lvName) is not mapped: imgtool maps linear segments only"))
                }
                segments.append(Segment(startExtent: segment.number("start_extent") ?? 0, extentCount: segment.number("extent_count") ?? 0,
                                        type: type, physicalVolume: pv, physicalExtent: pe))
            }
            volumes.append(LogicalVolume(name: lvName, uuid: lv.string("id"), segments: segments.sorted { $0.startExtent < $1.startExtent }))
        }
        return LVMPhysicalVolume(uuid: uuid, volumeGroup: name, volumeGroupUUID: vg.string("id"),
                                 extentSize: extentSectors.map { $0 &* 512 }, members: members, logicalVolumes: volumes,
                                 findings: findings)
    }

    /// Where `volume` lies in this PV when all of it is one run of extents on it: its offset from
    /// the PV's start and its length, in bytes; nil when it spans PVs, is not linear or has gaps.
    public func extent(of volume: LogicalVolume) -> (offset: UInt64, length: UInt64)? {
        guard let size = extentSize, size > 0, let me = members.first(where: { $0.uuid == uuid }), !volume.segments.isEmpty
        else { return nil }
        var next: UInt64?
        var start: UInt64?
        for segment in volume.segments {
            guard segment.physicalVolume == me.name, let pe = segment.physicalExtent else { return nil }
            if let next, pe != next { return nil }
            if start == nil { start = pe }
            let (end, overflow) = pe.addingReportingOverflow(segment.extentCount)
            guard !overflow else { return nil }
            next = end
        }
        guard let start, let next else { return nil }
        let (offset, o1) = start.multipliedReportingOverflow(by: size)
        let (length, o2) = (next - start).multipliedReportingOverflow(by: size)
        let (absolute, o3) = me.extentStart.addingReportingOverflow(offset)
        guard !o1, !o2, !o3 else { return nil }
        return (absolute, length)
    }
}

/// lvm2's metadata text: sections of `key = value` lines, values numbers, "strings" (with \"
/// and \\ escapes) or [ lists ]; `#` starts a comment. Nesting is bounded.
enum LVMConfig {
    indirect enum Value: Equatable {
        case number(UInt64), string(String), list([Value]), section(Section)
    }

    struct Section: Equatable {
        var values: [String: Value] = [:]
        /// Subsections in the order they appear.
        var sections: [(String, Section)] = []

        static func == (a: Section, b: Section) -> Bool {
            a.values == b.values && a.sections.map(\.0) == b.sections.map(\.0) && a.sections.map(\.1) == b.sections.map(\.1)
        }

        func number(_ key: String) -> UInt64? { if case .number(let n)? = values[key] { return n }; return nil }
        func string(_ key: String) -> String? { if case .string(let s)? = values[key] { return s }; return nil }
        func section(_ key: String) -> Section? { sections.first { $0.0 == key }?.1 }
    }

    struct SyntaxError: Error {}
    static let maxDepth = 16

    static func parse(_ text: [UInt8]) throws(SyntaxError) -> Section {
        var p = Parser(bytes: text.prefix { $0 != 0 }.map { $0 })
        let top = try p.section(depth: 0, closing: false)
        return top
    }

    struct Parser {
        let bytes: [UInt8]
        var at = 0

        mutating func skip() {
            while at < bytes.count {
                if bytes[at] == UInt8(ascii: "#") {
                    while at < bytes.count, bytes[at] != UInt8(ascii: "\n") { at += 1 }
                } else if [9, 10, 13, 32].contains(bytes[at]) {
                    at += 1
                } else {
                    return
                }
            }
        }

        mutating func identifier() -> String? {
            let start = at
            while at < bytes.count, bytes[at] > 32, !"={}[],\"#".utf8.contains(bytes[at]) { at += 1 }
            return at > start ? String(decoding: bytes[start..<at], as: UTF8.self) : nil
        }

        mutating func section(depth: Int, closing: Bool) throws(SyntaxError) -> Section {
            guard depth <= LVMConfig.maxDepth else { throw SyntaxError() }
            var section = Section()
            while true {
                skip()
                if at >= bytes.count {
                    if closing { throw SyntaxError() }
                    return section
                }
                if bytes[at] == UInt8(ascii: "}") {
                    guard closing else { throw SyntaxError() }
                    at += 1
                    return section
                }
                guard let key = identifier() else { throw SyntaxError() }
                skip()
                guard at < bytes.count else { throw SyntaxError() }
                if bytes[at] == UInt8(ascii: "{") {
                    at += 1
                    section.sections.append((key, try self.section(depth: depth + 1, closing: true)))
                } else if bytes[at] == UInt8(ascii: "=") {
                    at += 1
                    skip()
                    section.values[key] = try value(depth: depth + 1)
                } else {
                    throw SyntaxError()
                }
            }
        }

        mutating func value(depth: Int) throws(SyntaxError) -> Value {
            guard depth <= LVMConfig.maxDepth, at < bytes.count else { throw SyntaxError() }
            switch bytes[at] {
            case UInt8(ascii: "\""):
                at += 1
                var out: [UInt8] = []
                while at < bytes.count, bytes[at] != UInt8(ascii: "\"") {
                    if bytes[at] == UInt8(ascii: "\\"), at + 1 < bytes.count { at += 1 }
                    out.append(bytes[at])
                    at += 1
                }
                guard at < bytes.count else { throw SyntaxError() }
                at += 1
                return .string(String(decoding: out, as: UTF8.self))
            case UInt8(ascii: "["):
                at += 1
                var items: [Value] = []
                while true {
                    skip()
                    guard at < bytes.count else { throw SyntaxError() }
                    if bytes[at] == UInt8(ascii: "]") { at += 1; return .list(items) }
                    if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                    items.append(try value(depth: depth + 1))
                }
            default:
                let start = at
                while at < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[at]) || bytes[at] == UInt8(ascii: "-") || bytes[at] == UInt8(ascii: ".") { at += 1 }
                guard at > start else { throw SyntaxError() }
                // Negative and fractional numbers (rare: a timestamp's fraction) are kept as 0.
                return .number(UInt64(String(decoding: bytes[start..<at], as: UTF8.self)) ?? 0)
            }
        }
    }
}
