import ImgFormats
import ImgSystem

// The JSON documents the reports print (`--json`), and reading them back. Every key is always
// present; absent values are null, so scripts can index without checking. Each report's Codable
// form is this document (`JSONDocument`), so an embedder's encoder and the CLI agree, and a report
// made in an isolated VM comes back as the same value.

/// A report whose JSON document is defined once, in `json`, and read back by `init?(json:)`; its
/// Codable conformance encodes and decodes that document.
public protocol JSONDocument: Codable, JSONRepresentable {
    /// Reads back what `json` wrote; nil if `json` is not such a document.
    init?(json: JSONValue)
}

extension JSONDocument {
    public func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }

    public init(from decoder: any Decoder) throws {
        let value = try JSONValue(from: decoder)
        guard let decoded = Self(json: value) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "not the JSON document of \(Self.self)"))
        }
        self = decoded
    }
}

// MARK: Pieces shared by several reports

extension Finding {
    var json: JSONValue { .object(["severity": .string(severity.rawValue), "message": .string(message)]) }

    init?(json: JSONValue) {
        guard let severity = json["severity"]?.stringValue.flatMap(Severity.init(rawValue:)),
              let message = json["message"]?.stringValue else { return nil }
        self.init(severity, message)
    }

    static func list(_ value: JSONValue?) -> [Finding]? { decodeAll(value, Finding.init(json:)) }
}

extension BootCode {
    var json: JSONValue {
        .object(["kind": .string(kind.rawValue), "description": .string(description),
                 "details": .object(details.mapValues { .string($0) })])
    }

    init?(json: JSONValue) {
        guard let kind = json["kind"]?.stringValue.flatMap(Kind.init(rawValue:)),
              let description = json["description"]?.stringValue,
              case .object(let members)? = json["details"] else { return nil }
        var details: [String: String] = [:]
        for (key, value) in members {
            guard let text = value.stringValue else { return nil }
            details[key] = text
        }
        self.init(kind: kind, description: description, details: details)
    }
}

/// Every element of a JSON array read by `element`; nil if it is not an array or one does not read.
func decodeAll<T>(_ value: JSONValue?, _ element: (JSONValue) -> T?) -> [T]? {
    guard let items = value?.arrayValue else { return nil }
    var out: [T] = []
    for item in items {
        guard let decoded = element(item) else { return nil }
        out.append(decoded)
    }
    return out
}

func strings(_ value: JSONValue?) -> [String]? { decodeAll(value, \.stringValue) }

/// A member that may be null: .some(nil) for null, nil when it is missing or `read` fails.
func optional<T>(_ value: JSONValue?, _ read: (JSONValue) -> T?) -> T?? {
    guard let value else { return nil }
    if value.isNull { return .some(nil) }
    return read(value).map { .some($0) }
}

private func int(_ value: JSONValue) -> Int? { value.int64Value.map { Int($0) } }

// MARK: inspect

extension InspectReport: JSONDocument {
    /// The document `imgtool inspect --json` prints.
    public var json: JSONValue {
        .object([
            "image": .string(image), "size": .uint(size), "sectorSize": JSONValue(sectorSize),
            "partitionTable": partitionTable.json, "filesystem": filesystem?.json ?? .null,
            "bootCode": bootCode.json, "os": os?.json ?? .null, "findings": .array(findings.map(\.json)),
            "container": container?.json ?? .null, "lvm": .array(volumeGroups.map(\.json)),
            "luks": .array(encryptedVolumes.map(\.json)),
        ])
    }

    public init?(json: JSONValue) {
        guard let container = optional(json["container"], DiskContainer.init(json:)),
              let groups = decodeAll(json["lvm"], VolumeGroup.init(json:)),
              let luks = decodeAll(json["luks"], EncryptedVolume.init(json:)),
              let image = json["image"]?.stringValue, let size = json["size"]?.uint64Value,
              let sectorSize = json["sectorSize"].flatMap(int), let table = json["partitionTable"].flatMap(Table.init(json:)),
              let filesystem = optional(json["filesystem"], Filesystem.init(json:)),
              let bootCode = json["bootCode"].flatMap(BootCode.init(json:)),
              let os = optional(json["os"], OSReport.init(json:)), let findings = Finding.list(json["findings"]) else { return nil }
        self.init(image: image, size: size, sectorSize: sectorSize, partitionTable: table, filesystem: filesystem,
                  bootCode: bootCode, os: os, findings: findings, container: container, volumeGroups: groups,
                  encryptedVolumes: luks)
    }
}

extension DiskContainer {
    var json: JSONValue {
        .object([
            "format": .string(format.rawValue), "version": JSONValue(version), "variant": JSONValue(variant),
            "virtualSize": JSONValue(virtualSize), "clusterSize": JSONValue(clusterSize),
            "compression": JSONValue(compression), "backingFile": JSONValue(backingFile), "encrypted": .bool(encrypted),
        ])
    }

    init?(json: JSONValue) {
        guard let format = json["format"]?.stringValue.flatMap(Format.init(rawValue:)),
              let version = optional(json["version"], int), let variant = optional(json["variant"], \.stringValue),
              let virtualSize = optional(json["virtualSize"], \.uint64Value),
              let clusterSize = optional(json["clusterSize"], \.uint64Value),
              let compression = optional(json["compression"], \.stringValue),
              let backingFile = optional(json["backingFile"], \.stringValue),
              let encrypted = json["encrypted"]?.boolValue else { return nil }
        self.init(format: format, version: version, variant: variant, virtualSize: virtualSize, clusterSize: clusterSize,
                  compression: compression, backingFile: backingFile, encrypted: encrypted)
    }
}

extension InspectReport.Filesystem {
    var json: JSONValue {
        .object(["type": .string(type.description), "uuid": JSONValue(uuid), "label": JSONValue(label),
                 "version": JSONValue(version), "blockSize": JSONValue(blockSize)])
    }

    init?(json: JSONValue) {
        guard let type = json["type"]?.stringValue, let uuid = optional(json["uuid"], \.stringValue),
              let label = optional(json["label"], \.stringValue), let version = optional(json["version"], \.stringValue),
              let blockSize = optional(json["blockSize"], int) else { return nil }
        self.init(type: FilesystemKind(type), uuid: uuid, label: label, version: version, blockSize: blockSize)
    }
}

extension InspectReport.Partition {
    var json: JSONValue {
        .object([
            "number": JSONValue(number), "start": .uint(start), "size": .uint(size), "type": .string(type.description),
            "typeName": JSONValue(typeName), "bootable": .bool(bootable), "uuid": JSONValue(uuid),
            "name": JSONValue(name), "filesystem": filesystem?.json ?? .null,
        ])
    }

    init?(json: JSONValue, table: PartitionTableType?) {
        guard let number = json["number"].flatMap(int), let start = json["start"]?.uint64Value,
              let size = json["size"]?.uint64Value,
              let type = json["type"]?.stringValue.flatMap({ PartitionType($0, table: table) }),
              let bootable = json["bootable"]?.boolValue, let uuid = optional(json["uuid"], \.stringValue),
              let name = optional(json["name"], \.stringValue),
              let filesystem = optional(json["filesystem"], InspectReport.Filesystem.init(json:)) else { return nil }
        self.init(number: number, start: start, size: size, type: type, bootable: bootable, uuid: uuid, name: name,
                  filesystem: filesystem)
    }
}

extension InspectReport.Table {
    var json: JSONValue {
        .object([
            "type": JSONValue(type?.description), "id": JSONValue(id), "parsed": .bool(parsed),
            "partitions": .array(partitions.map(\.json)),
            "unallocated": .array(unallocated.map { .object(["start": .uint($0.start), "count": .uint($0.count)]) }),
            "untrusted": .bool(untrusted),
        ])
    }

    init?(json: JSONValue) {
        guard let type = optional(json["type"], \.stringValue), let id = optional(json["id"], \.stringValue),
              let partitions = decodeAll(json["partitions"], { InspectReport.Partition(json: $0, table: type.map(PartitionTableType.init)) }),
              let unallocated = decodeAll(json["unallocated"], { range -> SectorRange? in
                  guard let start = range["start"]?.uint64Value, let count = range["count"]?.uint64Value else { return nil }
                  return SectorRange(start: start, count: count)
              }), let untrusted = json["untrusted"]?.boolValue else { return nil }
        self.init(type: type.map(PartitionTableType.init), id: id, partitions: partitions, unallocated: unallocated,
                  untrusted: untrusted)
    }
}

extension OSReport: JSONDocument {
    /// The `os` member of `imgtool inspect --json`.
    public var json: JSONValue {
        .object([
            "rootPartition": JSONValue(rootPartition), "id": JSONValue(id), "versionID": JSONValue(versionID),
            "prettyName": JSONValue(prettyName), "hostname": JSONValue(hostname), "kernels": JSONValue(kernels),
            "rootLogicalVolume": JSONValue(rootLogicalVolume),
        ])
    }

    public init?(json: JSONValue) {
        guard let root = optional(json["rootPartition"], int), let id = optional(json["id"], \.stringValue),
              let versionID = optional(json["versionID"], \.stringValue),
              let prettyName = optional(json["prettyName"], \.stringValue),
              let hostname = optional(json["hostname"], \.stringValue), let kernels = strings(json["kernels"]),
              let lv = optional(json["rootLogicalVolume"], \.stringValue) else { return nil }
        self.init(rootPartition: root, id: id, versionID: versionID, prettyName: prettyName, hostname: hostname,
                  kernels: kernels, rootLogicalVolume: lv)
    }
}

// MARK: verify

extension VerifyReport: JSONDocument {
    /// The document `imgtool verify --json` prints. `boots` lists the boots under qemu, each with its
    /// `firmware`; `boot`, there since before a hybrid was booted twice, is the only one when there
    /// was exactly one, else null.
    public var json: JSONValue {
        .object([
            "image": .string(image), "bootable": bootable.map(JSONValue.bool) ?? .null,
            "bios": .object(["bootable": biosBootable.map(JSONValue.bool) ?? .null]), "bootCode": bootCode.json,
            "grub": grub?.json ?? .null, "problems": .array(problems.map(\.json)), "efi": efi?.json ?? .null,
            "boot": boots.count == 1 ? boots[0].json : .null, "boots": .array(boots.map(\.json)),
        ])
    }

    /// A document without `boots` (as verify printed before it had them) reads as one without boots.
    public init?(json: JSONValue) {
        guard let image = json["image"]?.stringValue, let bootable = optional(json["bootable"], \.boolValue),
              let biosBootable = optional(json["bios"]?["bootable"], \.boolValue),
              let bootCode = json["bootCode"].flatMap(BootCode.init(json:)),
              let grub = optional(json["grub"], Grub.init(json:)), let problems = Finding.list(json["problems"]),
              let efi = optional(json["efi"], EFI.init(json:)),
              let boots = decodeAll(json["boots"] ?? .array([]), Boot.init(json:)) else { return nil }
        self.init(image: image, bootable: bootable, biosBootable: biosBootable, bootCode: bootCode, grub: grub,
                  problems: problems, efi: efi, boots: boots)
    }
}

extension VerifyReport.Boot {
    /// The observation's members and the firmware ("bios", "efi", "efi-secure": `--firmware`'s values).
    var json: JSONValue {
        guard case .object(var members) = observation.json else { return observation.json }
        members["firmware"] = .string(firmware.rawValue)
        return .object(members)
    }

    init?(json: JSONValue) {
        guard let firmware = json["firmware"]?.stringValue.flatMap(QemuBoot.Firmware.init(rawValue:)),
              let observation = BootObservation(json: json) else { return nil }
        self.init(firmware: firmware, observation: observation)
    }
}

extension VerifyReport.Grub {
    var json: JSONValue {
        .object([
            "coreImage": .object(["sector": .uint(coreImage.sector), "sectors": .uint(coreImage.sectors)]),
            "modules": JSONValue(modules), "prefix": JSONValue(prefix), "config": JSONValue(config),
        ])
    }

    init?(json: JSONValue) {
        guard let core = json["coreImage"], let sector = core["sector"]?.uint64Value, let sectors = core["sectors"]?.uint64Value,
              let modules = strings(json["modules"]), let prefix = optional(json["prefix"], \.stringValue),
              let config = optional(json["config"], \.stringValue) else { return nil }
        self.init(coreImage: .init(sector: sector, sectors: sectors), modules: modules, prefix: prefix, config: config)
    }
}

extension VerifyReport.EFI {
    var json: JSONValue {
        .object([
            "partition": JSONValue(partition), "loader": JSONValue(loader), "machine": JSONValue(machine?.description),
            "subsystem": JSONValue(subsystem?.description),
            "grub": grub.map { .object(["modules": JSONValue($0.modules), "prefix": JSONValue($0.prefix),
                                        "config": JSONValue($0.config)]) } ?? .null,
            "bootable": bootable.map(JSONValue.bool) ?? .null, "problems": .array(problems.map(\.json)),
        ])
    }

    init?(json: JSONValue) {
        guard let partition = json["partition"].flatMap(int), let loader = optional(json["loader"], \.stringValue),
              let machine = optional(json["machine"], { $0.stringValue.flatMap(PEImage.Machine.init(describing:)) }),
              let subsystem = optional(json["subsystem"], { $0.stringValue.flatMap(PEImage.Subsystem.init(describing:)) }),
              let grub = optional(json["grub"], { g -> Grub? in
                  guard let modules = strings(g["modules"]), let prefix = optional(g["prefix"], \.stringValue),
                        let config = optional(g["config"], \.stringValue) else { return nil }
                  return Grub(modules: modules, prefix: prefix, config: config)
              }),
              let bootable = optional(json["bootable"], \.boolValue), let problems = Finding.list(json["problems"]) else { return nil }
        self.init(partition: partition, loader: loader, machine: machine, subsystem: subsystem, grub: grub,
                  bootable: bootable, problems: problems)
    }
}

extension BootObservation: JSONDocument {
    public var json: JSONValue {
        .object([
            "outcome": .string(outcome.rawValue), "screen": JSONValue(screen), "menuEntries": JSONValue(menuEntries),
            "message": JSONValue(message), "seconds": .double(seconds),
        ])
    }

    public init?(json: JSONValue) {
        guard let outcome = json["outcome"]?.stringValue.flatMap(Outcome.init(rawValue:)), let screen = strings(json["screen"]),
              let menuEntries = strings(json["menuEntries"]), let message = optional(json["message"], \.stringValue),
              let seconds = json["seconds"]?.doubleValue else { return nil }
        self.init(outcome: outcome, screen: screen, menuEntries: menuEntries, message: message, seconds: seconds)
    }
}

// MARK: install-grub

extension InstallGrub.Result: JSONDocument {
    /// The document `imgtool install-grub --json` prints.
    public var json: JSONValue {
        .object([
            "image": .string(image), "strategy": .string(strategy.rawValue), "diskDevice": .string(diskDevice),
            "bootPartition": .object([
                "number": JSONValue(bootPartition.number), "device": .string(bootPartition.device),
                "filesystem": .string(bootPartition.filesystem.description), "uuid": JSONValue(bootPartition.uuid),
            ]),
            "target": .string(target.rawValue), "grubInstallVersion": JSONValue(grubInstallVersion), "seconds": .double(seconds),
            "firmware": .string(firmware.rawValue), "secureBoot": .bool(secureBoot),
            "loaders": .array(loaders.map {
                .object(["firmware": .string($0.firmware.rawValue), "partition": JSONValue($0.partition), "location": .string($0.location)])
            }),
        ])
    }

    public init?(json: JSONValue) {
        guard let image = json["image"]?.stringValue, let strategy = json["strategy"]?.stringValue.flatMap(InstallGrub.Strategy.init(rawValue:)),
              let disk = json["diskDevice"]?.stringValue, let boot = json["bootPartition"],
              let number = boot["number"].flatMap(int), let device = boot["device"]?.stringValue,
              let filesystem = boot["filesystem"]?.stringValue, let uuid = optional(boot["uuid"], \.stringValue),
              let target = json["target"]?.stringValue.flatMap(GrubTarget.init(rawValue:)),
              let version = optional(json["grubInstallVersion"], \.stringValue),
              let seconds = json["seconds"]?.doubleValue,
              let firmware = json["firmware"]?.stringValue.flatMap(InstallGrub.Firmware.init(rawValue:)),
              let loaders = decodeAll(json["loaders"], { l -> InstallGrub.Result.Loader? in
                  guard let f = l["firmware"]?.stringValue.flatMap(InstallGrub.Firmware.init(rawValue:)),
                        let partition = optional(l["partition"], int), let location = l["location"]?.stringValue else { return nil }
                  return .init(firmware: f, partition: partition, location: location)
              }) else { return nil }
        self.init(image: image, strategy: strategy, diskDevice: disk,
                  bootPartition: .init(number: number, device: device, filesystem: FilesystemKind(filesystem), uuid: uuid),
                  target: target, firmware: firmware, loaders: loaders, secureBoot: json["secureBoot"]?.boolValue ?? false,
                  grubInstallVersion: version, seconds: seconds)
    }
}

// MARK: status and cleanup

extension SessionStatus: JSONDocument {
    /// One element of the array `imgtool status --json` prints.
    public var json: JSONValue {
        .object([
            "id": .string(id), "live": .bool(live), "pid": pid.map { .int(Int64($0)) } ?? .null, "image": JSONValue(image),
            "journal": JSONValue(journal),
            "holds": .array(holds.map { .object(["kind": .string($0.kind.rawValue), "name": .string($0.name)]) }),
        ])
    }

    public init?(json: JSONValue) {
        guard let id = json["id"]?.stringValue, let live = json["live"]?.boolValue,
              let pid = optional(json["pid"], { $0.int64Value.flatMap { Int32(exactly: $0) } }),
              let image = optional(json["image"], \.stringValue), let journal = optional(json["journal"], \.stringValue),
              let holds = decodeAll(json["holds"], { h -> Resource? in
                  guard let kind = h["kind"]?.stringValue.flatMap(SessionJournal.Kind.init(rawValue:)),
                        let name = h["name"]?.stringValue else { return nil }
                  return Resource(kind: kind, name: name)
              }) else { return nil }
        self.init(id: id, live: live, pid: pid, image: image, journal: journal, holds: holds)
    }
}

extension Cleanup.Result: JSONDocument {
    /// The document `imgtool cleanup --json` prints.
    public var json: JSONValue {
        .object([
            "released": JSONValue(released), "live": JSONValue(live), "pending": JSONValue(pending),
            "failed": .array(failed.map { .object(["resource": .string($0.resource), "reason": .string($0.reason)]) }),
        ])
    }

    public init?(json: JSONValue) {
        guard let released = strings(json["released"]), let live = strings(json["live"]),
              let pending = strings(json["pending"]),
              let failed = decodeAll(json["failed"], { f -> Cleanup.Failure? in
                  guard let resource = f["resource"]?.stringValue, let reason = f["reason"]?.stringValue else { return nil }
                  return Cleanup.Failure(resource: resource, reason: reason)
              }) else { return nil }
        self.init(released: released, failed: failed, live: live, pending: pending)
    }
}
