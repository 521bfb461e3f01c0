import ImgSystem
import Logging

/// What the host asks the imgtool inside an isolated VM to do, and what comes back, as values:
/// the host sends a workflow and its options as JSON (`imgtool __isolated REQUEST`), the guest runs
/// the workflow through ImgKit and prints a response with its result or its typed error. Log lines
/// go to stderr and reach the host's logger. Nothing is parsed out of human-readable output.
package struct IsolatedRequest: Sendable {
    /// The hidden command the guest runs.
    package static let command = "__isolated"

    package enum Workflow: Sendable {
        case installGrub(InstallGrub.Options)
    }

    package let workflow: Workflow
    /// The guest logs at this level (debug with --verbose).
    package let logLevel: Logger.Level

    package init(_ workflow: Workflow, logLevel: Logger.Level) {
        self.workflow = workflow
        self.logLevel = logLevel
    }

    package var json: JSONValue {
        switch workflow {
        case .installGrub(let o):
            return .object([
                "workflow": .string("install-grub"), "logLevel": .string(logLevel.rawValue),
                "options": .object([
                    "image": .string(o.image), "strategy": JSONValue(o.strategy?.rawValue), "diskName": JSONValue(o.diskName),
                    "bootPartition": JSONValue(o.bootPartition), "modules": JSONValue(o.modules),
                    "showGrubOutput": .bool(o.showGrubOutput),
                ]),
            ])
        }
    }

    package init?(json: JSONValue) {
        guard json["workflow"]?.stringValue == "install-grub",
              let level = json["logLevel"]?.stringValue.flatMap(Logger.Level.init(rawValue:)),
              let o = json["options"], let image = o["image"]?.stringValue, let modules = strings(o["modules"]),
              let showGrubOutput = o["showGrubOutput"]?.boolValue else { return nil }
        let strategy = o["strategy"]?.stringValue.flatMap(InstallGrub.Strategy.init(rawValue:))
        guard strategy != nil || o["strategy"]?.isNull == true else { return nil }
        let bootPartition = o["bootPartition"]?.int64Value.map { Int($0) }
        self.init(.installGrub(.init(image: image, strategy: strategy, diskName: o["diskName"]?.stringValue,
                                     bootPartition: bootPartition, modules: modules,
                                     showGrubOutput: showGrubOutput)),
                  logLevel: level)
    }

    /// Runs the request here (in the guest) and returns the response document and the exit code
    /// the guest exits with.
    package func serve(logger: Logger, interruption: Interruption) -> (response: JSONValue, exitCode: Int32) {
        switch workflow {
        case .installGrub(let options):
            do {
                let result = try InstallGrub.run(options, logger: logger, interruption: interruption)
                return (.object(["result": result.json]), 0)
            } catch {
                return (.object(["error": error.json]), error.exitCode)
            }
        }
    }
}

extension InstallGrubError {
    /// The error as it crosses from the isolated VM to the host: its case and payload, so that the
    /// host gets the same value back (`init?(json:)`), plus its message and exit code for the
    /// failures of the kernel layer, which come back as `.isolated(status:message:)`.
    package var json: JSONValue {
        var members: [String: JSONValue] = ["message": .string(description), "exitCode": .int(Int64(exitCode))]
        func set(_ name: String, _ values: [String: JSONValue]) {
            members["case"] = .string(name)
            members.merge(values) { $1 }
        }
        switch self {
        case .imageMissing(let p): set("imageMissing", ["path": .string(p)])
        case .notAnImage(let p, let kind): set("notAnImage", ["path": .string(p), "kind": .string(kind)])
        case .unreadable(let p, let reason): set("unreadable", ["path": .string(p), "reason": .string(reason)])
        case .empty(let p): set("empty", ["path": .string(p)])
        case .truncated(let p, let detail): set("truncated", ["path": .string(p), "detail": .string(detail)])
        case .noPartitionTable(let p, let fs): set("noPartitionTable", ["path": .string(p), "filesystem": JSONValue(fs)])
        case .damagedPartitionTable(let p, let detail): set("damagedPartitionTable", ["path": .string(p), "detail": .string(detail)])
        case .noPostMBRGap(let p, let start): set("noPostMBRGap", ["path": .string(p), "firstPartitionStart": .uint(start)])
        case .gapTooSmall(let p, let sectors, let needed):
            set("gapTooSmall", ["path": .string(p), "sectors": .uint(sectors), "needed": .uint(needed)])
        case .noBIOSBootPartition(let p): set("noBIOSBootPartition", ["path": .string(p)])
        case .biosBootTooSmall(let p, let n, let sectors, let needed):
            set("biosBootTooSmall", ["path": .string(p), "number": JSONValue(n), "sectors": .uint(sectors), "needed": .uint(needed)])
        case .noBootFilesystem(let p, let found): set("noBootFilesystem", ["path": .string(p), "found": JSONValue(found)])
        case .bootPartitionInvalid(let p, let n, let reason):
            set("bootPartitionInvalid", ["path": .string(p), "number": JSONValue(n), "reason": .string(reason)])
        case .ambiguousBootPartition(let p, let candidates):
            set("ambiguousBootPartition", ["path": .string(p), "candidates": .array(candidates.map { JSONValue($0) })])
        case .bootFilesystemFull(let p, let n, let free, let needed):
            set("bootFilesystemFull", ["path": .string(p), "number": JSONValue(n), "free": .uint(free), "needed": .uint(needed)])
        case .notRoot(let p): set("notRoot", ["path": .string(p)])
        case .toolMissing(let tool, let package): set("toolMissing", ["tool": .string(tool), "package": .string(package)])
        case .strategyUnavailable(let s, let reason): set("strategyUnavailable", ["strategy": .string(s.rawValue), "reason": .string(reason)])
        case .noStrategyWorked(let p, let reasons): set("noStrategyWorked", ["path": .string(p), "reasons": JSONValue(reasons)])
        case .bootPartitionInUse(let device, let holders):
            set("bootPartitionInUse", ["device": .string(device), "holders": JSONValue(holders)])
        case .sessionJournal(let e): set("sessionJournal", e.json)
        case .system(let e): set("system", e.json)
        case .grubToolFailed(let tool, let status, let stderr):
            set("grubToolFailed", ["tool": .string(tool), "status": .int(Int64(status)), "stderr": .string(stderr)])
        case .interrupted(let signal): set("interrupted", ["signal": .int(Int64(signal))])
        case .busy, .loopDevice, .mount, .deviceMapper, .subprocess, .other, .isolatedResultUnreadable, .cleanupFailed,
             .isolation, .isolated:
            set("isolated", [:])
        }
        return .object(members)
    }

    /// The error `json` describes; nil if it is not such a document.
    package init?(json: JSONValue) {
        guard let name = json["case"]?.stringValue else { return nil }
        func string(_ key: String) -> String? { json[key]?.stringValue }
        func uint(_ key: String) -> UInt64? { json[key]?.uint64Value }
        func int(_ key: String) -> Int? { json[key]?.int64Value.map { Int($0) } }
        func strings(_ key: String) -> [String]? { ImgKit.strings(json[key]) }
        // Every case but these names the image; a document without the path it needs is not ours.
        let pathless: Set<String> = ["toolMissing", "strategyUnavailable", "bootPartitionInUse", "sessionJournal", "system",
                                     "grubToolFailed", "interrupted", "isolated"]
        let p = string("path") ?? ""
        guard pathless.contains(name) || !p.isEmpty else { return nil }
        switch name {
        case "imageMissing": self = .imageMissing(path: p)
        case "notAnImage": guard let k = string("kind") else { return nil }; self = .notAnImage(path: p, kind: k)
        case "unreadable": guard let r = string("reason") else { return nil }; self = .unreadable(path: p, reason: r)
        case "empty": self = .empty(path: p)
        case "truncated": guard let d = string("detail") else { return nil }; self = .truncated(path: p, detail: d)
        case "noPartitionTable": self = .noPartitionTable(path: p, filesystem: string("filesystem"))
        case "damagedPartitionTable": guard let d = string("detail") else { return nil }; self = .damagedPartitionTable(path: p, detail: d)
        case "noPostMBRGap": guard let s = uint("firstPartitionStart") else { return nil }; self = .noPostMBRGap(path: p, firstPartitionStart: s)
        case "gapTooSmall":
            guard let s = uint("sectors"), let n = uint("needed") else { return nil }
            self = .gapTooSmall(path: p, sectors: s, needed: n)
        case "noBIOSBootPartition": self = .noBIOSBootPartition(path: p)
        case "biosBootTooSmall":
            guard let number = int("number"), let s = uint("sectors"), let n = uint("needed") else { return nil }
            self = .biosBootTooSmall(path: p, number: number, sectors: s, needed: n)
        case "noBootFilesystem": guard let f = strings("found") else { return nil }; self = .noBootFilesystem(path: p, found: f)
        case "bootPartitionInvalid":
            guard let number = int("number"), let r = string("reason") else { return nil }
            self = .bootPartitionInvalid(path: p, number: number, reason: r)
        case "ambiguousBootPartition":
            guard let c = decodeAll(json["candidates"], { $0.int64Value.map { Int($0) } }) else { return nil }
            self = .ambiguousBootPartition(path: p, candidates: c)
        case "bootFilesystemFull":
            guard let number = int("number"), let free = uint("free"), let n = uint("needed") else { return nil }
            self = .bootFilesystemFull(path: p, number: number, free: free, needed: n)
        case "notRoot": self = .notRoot(path: p)
        case "toolMissing":
            guard let tool = string("tool"), let pkg = string("package") else { return nil }
            self = .toolMissing(tool: tool, package: pkg)
        case "strategyUnavailable":
            guard let s = string("strategy").flatMap(InstallGrub.Strategy.init(rawValue:)), let r = string("reason") else { return nil }
            self = .strategyUnavailable(s, reason: r)
        case "noStrategyWorked": guard let r = strings("reasons") else { return nil }; self = .noStrategyWorked(path: p, reasons: r)
        case "bootPartitionInUse":
            guard let device = string("device"), let h = strings("holders") else { return nil }
            self = .bootPartitionInUse(device: device, holders: h)
        case "sessionJournal": guard let e = SystemError(json: json) else { return nil }; self = .sessionJournal(e)
        case "system": guard let e = SystemError(json: json) else { return nil }; self = .system(e)
        case "grubToolFailed":
            guard let tool = string("tool"), let status = json["status"]?.int64Value.flatMap({ Int32(exactly: $0) }),
                  let e = string("stderr") else { return nil }
            self = .grubToolFailed(tool: tool, status: status, stderr: e)
        case "interrupted":
            guard let signal = json["signal"]?.int64Value.flatMap({ Int32(exactly: $0) }) else { return nil }
            self = .interrupted(signal: signal)
        case "isolated":
            guard let status = json["exitCode"]?.int64Value.flatMap({ Int32(exactly: $0) }), let m = string("message") else { return nil }
            self = .isolated(status: status, message: m)
        default: return nil
        }
    }
}

extension SystemError {
    var json: [String: JSONValue] {
        ["operation": .string(operation), "path": .string(path), "errno": .int(Int64(errno))]
    }

    init?(json: JSONValue) {
        guard let operation = json["operation"]?.stringValue, let path = json["path"]?.stringValue,
              let errno = json["errno"]?.int64Value.flatMap({ Int32(exactly: $0) }) else { return nil }
        self.init(operation, on: path, errno: errno)
    }
}
