import ImgFormats
import ImgSystem

extension InspectReport {
    /// An LVM2 volume group found on the image's physical volumes, with its logical volumes.
    public struct VolumeGroup: Sendable, Equatable {
        /// A logical volume: where it lies in the image when it is one run of extents there.
        public struct LogicalVolume: Sendable, Equatable {
            /// One segment, its physical volume named as in the metadata ("pv0"; `physicalVolumes`
            /// gives its UUID).
            public typealias Segment = LVMPhysicalVolume.Segment

            /// The name in the metadata.
            public let name: String
            /// The UUID lvm2 gave it, as it prints it.
            public let uuid: String?
            /// Bytes.
            public let size: UInt64
            /// Where its bytes start in the image, when they are one run there; nil when not
            /// (several physical volumes, gaps, or segments that are not linear). A linear volume
            /// in several runs is still read (`filesystem`), through its segments.
            public let offset: UInt64?
            /// Its segments, in the order of their first extents.
            public let segments: [Segment]
            /// What libblkid finds in it: a volume with an `offset`, or a linear one in several runs
            /// of this image's physical volumes.
            public let filesystem: Filesystem?

            /// Makes a value, for an embedder's tests.
            public init(name: String, uuid: String?, size: UInt64, offset: UInt64?, segments: [Segment], filesystem: Filesystem?) {
                self.name = name
                self.uuid = uuid
                self.size = size
                self.offset = offset
                self.segments = segments
                self.filesystem = filesystem
            }
        }

        /// A physical volume of the group found in this image: its name in the metadata ("pv0"),
        /// its UUID and its partition (nil for a PV that fills the image).
        public struct PhysicalVolume: Sendable, Equatable {
            /// Its name in the metadata, as segments name it.
            public let name: String?
            /// The UUID, as lvm2 prints it (with dashes).
            public let uuid: String
            /// The partition holding it; nil for a physical volume that fills the image.
            public let partition: Int?

            /// Makes a value, for an embedder's tests.
            public init(name: String?, uuid: String, partition: Int?) {
                self.name = name
                self.uuid = uuid
                self.partition = partition
            }
        }

        /// The name in the metadata.
        public let name: String
        /// The UUID lvm2 gave it, as it prints it.
        public let uuid: String?
        /// Bytes per extent.
        public let extentSize: UInt64?
        /// Its physical volumes found in this image.
        public let physicalVolumes: [PhysicalVolume]
        /// The logical volumes, in the metadata's order.
        public let logicalVolumes: [LogicalVolume]

        /// Makes a value, for an embedder's tests.
        public init(name: String, uuid: String?, extentSize: UInt64?, physicalVolumes: [PhysicalVolume], logicalVolumes: [LogicalVolume]) {
            self.name = name
            self.uuid = uuid
            self.extentSize = extentSize
            self.physicalVolumes = physicalVolumes
            self.logicalVolumes = logicalVolumes
        }
    }
}

extension InspectReport {
    /// A LUKS-encrypted volume: where it is, and what its header says (never opened).
    public struct EncryptedVolume: Sendable, Equatable {
        /// The partition holding it; nil for one that fills the image.
        public let partition: Int?
        /// Its header.
        public let header: LUKSHeader

        /// Makes a value, for an embedder's tests.
        public init(partition: Int?, header: LUKSHeader) {
            self.partition = partition
            self.header = header
        }

        var json: JSONValue {
            .object([
                "partition": JSONValue(partition), "version": .int(Int64(header.version)), "uuid": .string(header.uuid),
                "cipher": JSONValue(header.cipher), "keySlots": .array(header.keySlots.map { JSONValue($0) }),
                "payloadOffset": JSONValue(header.payloadOffset),
            ])
        }

        init?(json: JSONValue) {
            guard let partition = optional(json["partition"], { $0.int64Value.map { Int($0) } }),
                  let version = json["version"]?.int64Value, let uuid = json["uuid"]?.stringValue,
                  let cipher = optional(json["cipher"], \.stringValue),
                  let slots = decodeAll(json["keySlots"], { $0.int64Value.map { Int($0) } }),
                  let payload = optional(json["payloadOffset"], \.uint64Value) else { return nil }
            self.init(partition: partition, header: LUKSHeader(version: Int(version), uuid: uuid, cipher: cipher, keySlots: slots,
                                                               payloadOffset: payload))
        }
    }
}

extension Inspect {
    /// A physical volume found at `offset` (in `partition`) of the image.
    struct FoundPV {
        let pv: LVMPhysicalVolume
        let partition: Int?
        let offset: UInt64
    }

    /// The volume groups of `found`, one per group (every PV carries the whole group's metadata),
    /// their linear volumes probed by libblkid where they lie in one run; ext ones join `filesystems`.
    static func volumeGroups(_ found: [FoundPV], source: any ByteSource, path: String,
                             filesystems: inout [OSInspection.Filesystem], findings: inout [Finding]) -> [InspectReport.VolumeGroup] {
        var groups: [InspectReport.VolumeGroup] = []
        var seen: Set<String> = []
        for first in found {
            findings += first.pv.findings
            guard let name = first.pv.volumeGroup, seen.insert(first.pv.volumeGroupUUID ?? name).inserted else { continue }
            let members = found.filter { ($0.pv.volumeGroupUUID ?? $0.pv.volumeGroup) == (first.pv.volumeGroupUUID ?? name) }
            let nameOf = Dictionary(first.pv.members.map { ($0.uuid, $0.name) }, uniquingKeysWith: { a, _ in a })
            // Where each of the group's PVs on this disk lies, by its name in the metadata.
            var places: [String: (offset: UInt64, extentStart: UInt64)] = [:]
            for m in members {
                if let member = first.pv.members.first(where: { $0.uuid == m.pv.uuid }) { places[member.name] = (m.offset, member.extentStart) }
            }
            var volumes: [InspectReport.VolumeGroup.LogicalVolume] = []
            for lv in first.pv.logicalVolumes {
                // The PV holding all of it, if one of this image's does.
                let placed = members.lazy.compactMap { m in m.pv.extent(of: lv).map { (m, $0) } }.first
                var offset: UInt64?, fs: FilesystemProbe?
                if let (member, extent) = placed {
                    let (start, overflow) = member.offset.addingReportingOverflow(extent.offset)
                    if !overflow, start < source.size {
                        offset = start
                        fs = try? FilesystemProbe.probe(source, offset: start, length: min(extent.length, source.size - start), name: path)
                        if let fs, FilesystemKind(fs.type).isExt {
                            filesystems.append(.init(partition: member.partition, offset: start, logicalVolume: "\(name)/\(lv.name)"))
                        }
                    }
                }
                // In pieces: read through its segments, as device mapper's linear targets would.
                if placed == nil, let size = first.pv.extentSize,
                   let pieces = LogicalVolumeSource(volume: lv, extentSize: size, physicalVolumes: places, disk: source) {
                    fs = try? FilesystemProbe.probe(pieces, offset: 0, length: pieces.size, name: path)
                    if let fs, FilesystemKind(fs.type).isExt {
                        filesystems.append(.init(partition: first.partition, offset: 0, logicalVolume: "\(name)/\(lv.name)", source: pieces))
                    }
                }
                volumes.append(.init(name: lv.name, uuid: lv.uuid, size: lv.extentCount &* (first.pv.extentSize ?? 0), offset: offset,
                                     segments: lv.segments, filesystem: fs.map(InspectReport.Filesystem.init)))
            }
            groups.append(InspectReport.VolumeGroup(
                name: name, uuid: first.pv.volumeGroupUUID, extentSize: first.pv.extentSize,
                physicalVolumes: members.map { .init(name: nameOf[$0.pv.uuid], uuid: $0.pv.uuid, partition: $0.partition) },
                logicalVolumes: volumes))
        }
        return groups
    }
}

extension InspectReport.VolumeGroup {
    var json: JSONValue {
        .object([
            "name": .string(name), "uuid": JSONValue(uuid), "extentSize": JSONValue(extentSize),
            "physicalVolumes": .array(physicalVolumes.map {
                .object(["name": JSONValue($0.name), "uuid": .string($0.uuid), "partition": JSONValue($0.partition)])
            }),
            "logicalVolumes": .array(logicalVolumes.map { lv in
                .object([
                    "name": .string(lv.name), "uuid": JSONValue(lv.uuid), "size": .uint(lv.size), "offset": JSONValue(lv.offset),
                    "filesystem": lv.filesystem?.json ?? .null,
                    "segments": .array(lv.segments.map { s in
                        .object(["startExtent": .uint(s.startExtent), "extentCount": .uint(s.extentCount), "type": .string(s.type),
                                 "physicalVolume": JSONValue(s.physicalVolume), "physicalExtent": JSONValue(s.physicalExtent)])
                    }),
                ])
            }),
        ])
    }

    init?(json: JSONValue) {
        typealias LV = LogicalVolume
        guard let name = json["name"]?.stringValue, let uuid = optional(json["uuid"], \.stringValue),
              let extentSize = optional(json["extentSize"], \.uint64Value),
              let pvs = decodeAll(json["physicalVolumes"], { pv -> PhysicalVolume? in
                  guard let name = optional(pv["name"], \.stringValue), let uuid = pv["uuid"]?.stringValue,
                        let partition = optional(pv["partition"], { $0.int64Value.map { Int($0) } }) else { return nil }
                  return PhysicalVolume(name: name, uuid: uuid, partition: partition)
              }),
              let lvs = decodeAll(json["logicalVolumes"], { lv -> LV? in
                  guard let name = lv["name"]?.stringValue, let uuid = optional(lv["uuid"], \.stringValue),
                        let size = lv["size"]?.uint64Value, let offset = optional(lv["offset"], \.uint64Value),
                        let fs = optional(lv["filesystem"], InspectReport.Filesystem.init(json:)),
                        let segments = decodeAll(lv["segments"], { s -> LV.Segment? in
                            guard let start = s["startExtent"]?.uint64Value, let count = s["extentCount"]?.uint64Value,
                                  let type = s["type"]?.stringValue, let pv = optional(s["physicalVolume"], \.stringValue),
                                  let pe = optional(s["physicalExtent"], \.uint64Value) else { return nil }
                            return LV.Segment(startExtent: start, extentCount: count, type: type, physicalVolume: pv, physicalExtent: pe)
                        }) else { return nil }
                  return LV(name: name, uuid: uuid, size: size, offset: offset, segments: segments, filesystem: fs)
              }) else { return nil }
        self.init(name: name, uuid: uuid, extentSize: extentSize, physicalVolumes: pvs, logicalVolumes: lvs)
    }
}
