import ImgFormats
import ImgSystem

// The JSON documents the reports print (`--json`). Every key is always present; absent values
// are null, so scripts can index without checking.

extension InspectReport: JSONRepresentable, Encodable {
    public var json: JSONValue {
        .object([
            "image": .string(image), "size": .uint(size), "sectorSize": JSONValue(sectorSize),
            "partitionTable": partitionTable.json, "filesystem": filesystem?.json ?? .null,
            "bootCode": bootCode.json, "os": os?.json ?? .null, "findings": .array(findings.map(\.json)),
        ])
    }

    public func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }
}

extension InspectReport.Filesystem: JSONRepresentable {
    public var json: JSONValue {
        .object(["type": .string(type), "uuid": JSONValue(uuid), "label": JSONValue(label),
                 "version": JSONValue(version), "blockSize": JSONValue(blockSize)])
    }
}

extension InspectReport.Partition: JSONRepresentable {
    public var json: JSONValue {
        .object([
            "number": JSONValue(number), "start": .uint(start), "size": .uint(size), "type": .string(type),
            "typeName": JSONValue(typeName), "bootable": .bool(bootable), "uuid": JSONValue(uuid),
            "name": JSONValue(name), "filesystem": filesystem?.json ?? .null,
        ])
    }
}

extension InspectReport.Table: JSONRepresentable {
    public var json: JSONValue {
        .object([
            "type": JSONValue(type), "id": JSONValue(id), "parsed": .bool(parsed),
            "partitions": .array(partitions.map(\.json)),
            "unallocated": .array(unallocated.map { .object(["start": .uint($0.start), "count": .uint($0.count)]) }),
        ])
    }
}

extension InspectReport.BootCodeSummary: JSONRepresentable {
    public var json: JSONValue {
        .object(["kind": .string(kind), "description": .string(description),
                 "details": .object(details.mapValues { .string($0) })])
    }
}

extension InspectReport.FindingEntry: JSONRepresentable {
    public var json: JSONValue { .object(["severity": .string(severity), "message": .string(message)]) }
}

extension OSReport: JSONRepresentable, Encodable {
    public var json: JSONValue {
        .object([
            "rootPartition": JSONValue(rootPartition), "id": JSONValue(id), "versionID": JSONValue(versionID),
            "prettyName": JSONValue(prettyName), "hostname": JSONValue(hostname), "kernels": JSONValue(kernels),
        ])
    }

    public func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }
}

extension VerifyReport: JSONRepresentable, Encodable {
    public var json: JSONValue {
        .object([
            "image": .string(image), "bootable": bootable.map(JSONValue.bool) ?? .null,
            "bios": .object(["bootable": biosBootable.map(JSONValue.bool) ?? .null]), "bootCode": bootCode.json,
            "grub": grub?.json ?? .null, "problems": .array(problems.map(\.json)), "efi": efi?.json ?? .null,
        ])
    }

    public func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }
}

extension VerifyReport.Grub: JSONRepresentable {
    public var json: JSONValue {
        .object([
            "coreImage": .object(["sector": .uint(coreImage.sector), "sectors": .uint(coreImage.sectors)]),
            "modules": JSONValue(modules), "prefix": JSONValue(prefix), "config": JSONValue(config),
        ])
    }
}

extension VerifyReport.EFI: JSONRepresentable {
    public var json: JSONValue {
        .object([
            "partition": JSONValue(partition), "loader": JSONValue(loader), "machine": JSONValue(machine),
            "subsystem": JSONValue(subsystem),
            "grub": grub.map { .object(["modules": JSONValue($0.modules), "prefix": JSONValue($0.prefix),
                                        "config": JSONValue($0.config)]) } ?? .null,
            "bootable": bootable.map(JSONValue.bool) ?? .null, "problems": .array(problems.map(\.json)),
        ])
    }
}

extension BootObservation: JSONRepresentable {
    public var json: JSONValue {
        .object([
            "outcome": .string(outcome.rawValue), "screen": JSONValue(screen), "menuEntries": JSONValue(menuEntries),
            "message": JSONValue(message), "seconds": .double(seconds),
        ])
    }
}

extension InstallGrub.Result: JSONRepresentable, Encodable {
    public var json: JSONValue {
        .object([
            "image": .string(image), "strategy": .string(strategy.rawValue), "diskDevice": .string(diskDevice),
            "bootPartition": .object([
                "number": JSONValue(bootPartition.number), "device": .string(bootPartition.device),
                "filesystem": .string(bootPartition.filesystem), "uuid": JSONValue(bootPartition.uuid),
            ]),
            "target": .string(target), "grubInstallVersion": JSONValue(grubInstallVersion), "seconds": .double(seconds),
        ])
    }

    public func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }
}

extension SessionStatus: JSONRepresentable {
    public var json: JSONValue {
        .object([
            "id": .string(id), "live": .bool(live), "pid": pid.map { .int(Int64($0)) } ?? .null, "image": JSONValue(image),
            "journal": JSONValue(journal),
            "holds": .array(holds.map { .object(["kind": .string($0.kind.rawValue), "name": .string($0.name)]) }),
        ])
    }
}

// Reading `verify --json` back: how a run in an isolated VM hands its report to the host.

extension VerifyReport {
    /// The report `json` printed; nil if `value` is not such a document.
    public init?(json value: JSONValue) {
        guard let image = value["image"]?.stringValue, let code = value["bootCode"],
              let kind = code["kind"]?.stringValue, let description = code["description"]?.stringValue,
              case .object(let detailValues)? = code["details"],
              let problems = Self.findings(value["problems"]) else { return nil }
        var details: [String: String] = [:]
        for (key, detail) in detailValues {
            guard let text = detail.stringValue else { return nil }
            details[key] = text
        }
        var grub: Grub?
        if let g = value["grub"], !g.isNull {
            guard let core = g["coreImage"], let sector = core["sector"]?.uint64Value, let sectors = core["sectors"]?.uint64Value,
                  let modules = Self.strings(g["modules"]) else { return nil }
            grub = Grub(coreImage: .init(sector: sector, sectors: sectors), modules: modules,
                        prefix: g["prefix"]?.stringValue, config: g["config"]?.stringValue)
        }
        var efi: EFI?
        if let e = value["efi"], !e.isNull {
            guard let partition = e["partition"]?.int64Value, let efiProblems = Self.findings(e["problems"]) else { return nil }
            var efiGrub: EFI.Grub?
            if let g = e["grub"], !g.isNull {
                guard let modules = Self.strings(g["modules"]) else { return nil }
                efiGrub = EFI.Grub(modules: modules, prefix: g["prefix"]?.stringValue, config: g["config"]?.stringValue)
            }
            efi = EFI(partition: Int(partition), loader: e["loader"]?.stringValue, machine: e["machine"]?.stringValue,
                      subsystem: e["subsystem"]?.stringValue, grub: efiGrub, bootable: e["bootable"]?.boolValue,
                      problems: efiProblems)
        }
        self.init(image: image, bootable: value["bootable"]?.boolValue, biosBootable: value["bios"]?["bootable"]?.boolValue,
                  bootCode: .init(kind: kind, description: description, details: details), grub: grub,
                  problems: problems, efi: efi)
    }

    private static func strings(_ value: JSONValue?) -> [String]? {
        guard let items = value?.arrayValue else { return nil }
        let strings = items.compactMap(\.stringValue)
        return strings.count == items.count ? strings : nil
    }

    private static func findings(_ value: JSONValue?) -> [InspectReport.FindingEntry]? {
        guard let items = value?.arrayValue else { return nil }
        var out: [InspectReport.FindingEntry] = []
        for item in items {
            guard let severity = item["severity"]?.stringValue, let message = item["message"]?.stringValue else { return nil }
            out.append(.init(severity: severity, message: message))
        }
        return out
    }
}
