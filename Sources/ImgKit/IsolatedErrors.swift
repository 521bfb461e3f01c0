import ImgSystem

/// A workflow's error as it crosses from an isolated VM to the host: the guest prints
/// `isolatedJSON` (its case and payload, plus its message and exit code), and the host reads back
/// the same value. A failure with no typed form on the host (a loop device's, a mount's) comes back
/// as `.isolation(.guest(status:message:))`, with the guest's message and exit code.
package protocol IsolatedError: ImgKitError {
    var isolatedJSON: JSONValue { get }
    init?(isolatedJSON: JSONValue)
    static func isolation(_ failure: IsolationFailure) -> Self
    /// The error a local run throws for an image it cannot open: the host checks the image before
    /// it starts a VM, so that this failure reads the same isolated or not.
    static func unusableImage(_ error: ImageOpenError) -> Self
}

/// The members every error document has, and the case name with its payload.
private func errorDocument(_ error: some ImgKitError, case name: String, _ payload: [String: JSONValue] = [:]) -> JSONValue {
    var members = payload
    members["case"] = .string(name)
    members["message"] = .string(error.description)
    members["exitCode"] = .int(Int64(error.exitCode))
    return .object(members)
}

/// The guest failure an error document stands for when its case has no typed form here.
private func guestFailure(_ json: JSONValue) -> IsolationFailure? {
    guard let status = json["exitCode"]?.int64Value.flatMap({ Int32(exactly: $0) }),
          let message = json["message"]?.stringValue else { return nil }
    return .guest(status: status, message: message)
}

extension ImageOpenError {
    var isolatedPayload: [String: JSONValue] {
        switch problem {
        case .missing: return ["path": .string(path), "problem": .string("missing")]
        case .notAnImage(let kind): return ["path": .string(path), "problem": .string("notAnImage"), "kind": .string(kind)]
        case .unreadable(let reason): return ["path": .string(path), "problem": .string("unreadable"), "reason": .string(reason)]
        }
    }

    init?(isolatedPayload json: JSONValue) {
        guard let path = json["path"]?.stringValue else { return nil }
        switch json["problem"]?.stringValue {
        case "missing": self.init(path: path, problem: .missing)
        case "notAnImage": guard let kind = json["kind"]?.stringValue else { return nil }; self.init(path: path, problem: .notAnImage(kind: kind))
        case "unreadable": guard let r = json["reason"]?.stringValue else { return nil }; self.init(path: path, problem: .unreadable(reason: r))
        default: return nil
        }
    }
}

extension ReportError: IsolatedError {
    package static func unusableImage(_ error: ImageOpenError) -> ReportError { .open(error) }

    package var isolatedJSON: JSONValue {
        switch self {
        case .open(let e): return errorDocument(self, case: "open", e.isolatedPayload)
        case .isolation: return errorDocument(self, case: "isolated")
        }
    }

    package init?(isolatedJSON json: JSONValue) {
        switch json["case"]?.stringValue {
        case "open": guard let e = ImageOpenError(isolatedPayload: json) else { return nil }; self = .open(e)
        case "isolated": guard let f = guestFailure(json) else { return nil }; self = .isolation(f)
        default: return nil
        }
    }
}

extension ImageFiles.Error: IsolatedError {
    package static func unusableImage(_ error: ImageOpenError) -> ImageFiles.Error { .cannotOpen(error) }

    package var isolatedJSON: JSONValue {
        switch self {
        case .cannotOpen(let e): return errorDocument(self, case: "cannotOpen", e.isolatedPayload)
        case .unreadable(let p, let reason): return errorDocument(self, case: "unreadable", ["path": .string(p), "reason": .string(reason)])
        case .container(let p, let format, let reason):
            return errorDocument(self, case: "container", ["path": .string(p), "format": .string(format.rawValue), "reason": .string(reason)])
        case .backingNotOpened(let p, let backing):
            return errorDocument(self, case: "backingNotOpened", ["path": .string(p), "backing": .string(backing)])
        case .noPartitionTable(let p, let fs):
            return errorDocument(self, case: "noPartitionTable", ["path": .string(p), "filesystem": JSONValue(fs)])
        case .noSuchPartition(let p, let n, let available):
            return errorDocument(self, case: "noSuchPartition", ["path": .string(p), "number": JSONValue(n), "available": .array(available.map { JSONValue($0) })])
        case .notExt(let p, let n, let found):
            return errorDocument(self, case: "notExt", ["path": .string(p), "partition": JSONValue(n), "found": JSONValue(found)])
        case .noExtFilesystem(let p, let found):
            return errorDocument(self, case: "noExtFilesystem", ["path": .string(p), "found": JSONValue(found)])
        case .ambiguous(let p, let candidates):
            return errorDocument(self, case: "ambiguous", ["path": .string(p), "candidates": JSONValue(candidates)])
        case .damaged(let p, let n, let reason):
            return errorDocument(self, case: "damaged", ["path": .string(p), "partition": JSONValue(n), "reason": .string(reason)])
        case .unreadableFilesystem(let p, let n, let fs, let reason):
            return errorDocument(self, case: "unreadableFilesystem", ["path": .string(p), "partition": JSONValue(n),
                                                                      "filesystem": .string(fs), "reason": .string(reason)])
        case .file(let e, let image, let n):
            return errorDocument(self, case: "file", ["path": .string(image), "partition": JSONValue(n), "file": e.isolatedJSON])
        case .output, .isolatedOpen, .isolation, .noSuchLogicalVolume, .logicalVolumeNotContiguous:
            return errorDocument(self, case: "isolated")
        }
    }

    package init?(isolatedJSON json: JSONValue) {
        guard let name = json["case"]?.stringValue else { return nil }
        if name == "isolated" {
            guard let f = guestFailure(json) else { return nil }
            self = .isolation(f)
            return
        }
        if name == "cannotOpen" {
            guard let e = ImageOpenError(isolatedPayload: json) else { return nil }
            self = .cannotOpen(e)
            return
        }
        func int(_ value: JSONValue) -> Int? { value.int64Value.flatMap { Int(exactly: $0) } }
        guard let p = json["path"]?.stringValue else { return nil }
        switch name {
        case "unreadable": guard let r = json["reason"]?.stringValue else { return nil }; self = .unreadable(path: p, reason: r)
        case "container":
            guard let f = json["format"]?.stringValue.flatMap(DiskContainer.Format.init(rawValue:)),
                  let r = json["reason"]?.stringValue else { return nil }
            self = .container(path: p, format: f, reason: r)
        case "backingNotOpened":
            guard let b = json["backing"]?.stringValue else { return nil }
            self = .backingNotOpened(path: p, backing: b)
        case "noPartitionTable":
            guard let fs = optional(json["filesystem"], \.stringValue) else { return nil }
            self = .noPartitionTable(path: p, filesystem: fs)
        case "noSuchPartition":
            guard let n = json["number"].flatMap(int), let available = decodeAll(json["available"], int) else { return nil }
            self = .noSuchPartition(path: p, number: n, available: available)
        case "notExt":
            guard let n = optional(json["partition"], int), let found = optional(json["found"], \.stringValue) else { return nil }
            self = .notExt(path: p, partition: n, found: found)
        case "noExtFilesystem": guard let found = strings(json["found"]) else { return nil }; self = .noExtFilesystem(path: p, found: found)
        case "ambiguous": guard let c = strings(json["candidates"]) else { return nil }; self = .ambiguous(path: p, candidates: c)
        case "damaged":
            guard let n = optional(json["partition"], int), let r = json["reason"]?.stringValue else { return nil }
            self = .damaged(path: p, partition: n, reason: r)
        case "unreadableFilesystem":
            guard let n = optional(json["partition"], int), let fs = json["filesystem"]?.stringValue,
                  let r = json["reason"]?.stringValue else { return nil }
            self = .unreadableFilesystem(path: p, partition: n, filesystem: fs, reason: r)
        case "file":
            guard let n = optional(json["partition"], int), let e = json["file"].flatMap(Ext2Filesystem.Error.init(isolatedJSON:))
            else { return nil }
            self = .file(e, image: p, partition: n)
        default: return nil
        }
    }
}

extension Ext2Filesystem.Error {
    var isolatedJSON: JSONValue {
        switch self {
        case .notFound(let p, let missing): return .object(["case": .string("notFound"), "path": .string(p), "missing": .string(missing)])
        case .notADirectory(let p, let c): return .object(["case": .string("notADirectory"), "path": .string(p), "component": .string(c)])
        case .isADirectory(let p): return .object(["case": .string("isADirectory"), "path": .string(p)])
        case .notARegularFile(let p): return .object(["case": .string("notARegularFile"), "path": .string(p)])
        case .notASymlink(let p): return .object(["case": .string("notASymlink"), "path": .string(p)])
        case .symlinkLoop(let p): return .object(["case": .string("symlinkLoop"), "path": .string(p)])
        case .tooLarge(let p, let limit): return .object(["case": .string("tooLarge"), "path": .string(p), "limit": JSONValue(limit)])
        case .library(let operation, let p, let code, let message):
            return .object(["case": .string("library"), "operation": .string(operation), "path": .string(p),
                            "code": JSONValue(code), "message": .string(message)])
        }
    }

    init?(isolatedJSON json: JSONValue) {
        guard let p = json["path"]?.stringValue else { return nil }
        func string(_ key: String) -> String? { json[key]?.stringValue }
        func int(_ key: String) -> Int? { json[key]?.int64Value.flatMap { Int(exactly: $0) } }
        switch json["case"]?.stringValue {
        case "notFound": guard let m = string("missing") else { return nil }; self = .notFound(p, missing: m)
        case "notADirectory": guard let c = string("component") else { return nil }; self = .notADirectory(p, component: c)
        case "isADirectory": self = .isADirectory(p)
        case "notARegularFile": self = .notARegularFile(p)
        case "notASymlink": self = .notASymlink(p)
        case "symlinkLoop": self = .symlinkLoop(p)
        case "tooLarge": guard let l = int("limit") else { return nil }; self = .tooLarge(p, limit: l)
        case "library":
            guard let o = string("operation"), let code = int("code"), let m = string("message") else { return nil }
            self = .library(operation: o, path: p, code: code, message: m)
        default: return nil
        }
    }
}

extension InstallGrubError: IsolatedError {
    package static func unusableImage(_ error: ImageOpenError) -> InstallGrubError {
        switch error.problem {
        case .missing: return .imageMissing(path: error.path)
        case .notAnImage(let kind): return .notAnImage(path: error.path, kind: kind)
        case .unreadable(let reason): return .unreadable(path: error.path, reason: reason)
        }
    }

    package var isolatedJSON: JSONValue {
        var name = "", members: [String: JSONValue] = [:]
        func set(_ n: String, _ values: [String: JSONValue]) {
            name = n
            members = values
        }
        switch self {
        case .imageMissing(let p): set("imageMissing", ["path": .string(p)])
        case .notAnImage(let p, let kind): set("notAnImage", ["path": .string(p), "kind": .string(kind)])
        case .unreadable(let p, let reason): set("unreadable", ["path": .string(p), "reason": .string(reason)])
        case .empty(let p): set("empty", ["path": .string(p)])
        case .container(let p, let format): set("container", ["path": .string(p), "format": .string(format)])
        case .truncated(let p, let detail): set("truncated", ["path": .string(p), "detail": .string(detail)])
        case .noPartitionTable(let p, let fs): set("noPartitionTable", ["path": .string(p), "filesystem": JSONValue(fs)])
        case .damagedPartitionTable(let p, let detail): set("damagedPartitionTable", ["path": .string(p), "detail": .string(detail)])
        case .noPostMBRGap(let p, let start): set("noPostMBRGap", ["path": .string(p), "firstPartitionStart": .uint(start)])
        case .gapTooSmall(let p, let sectors, let needed):
            set("gapTooSmall", ["path": .string(p), "sectors": .uint(sectors), "needed": .uint(needed)])
        case .noBIOSBootPartition(let p): set("noBIOSBootPartition", ["path": .string(p)])
        case .unsupportedPartitionTable(let p, let table):
            set("unsupportedPartitionTable", ["path": .string(p), "table": .string(table)])
        case .biosBootTooSmall(let p, let n, let sectors, let needed):
            set("biosBootTooSmall", ["path": .string(p), "number": JSONValue(n), "sectors": .uint(sectors), "needed": .uint(needed)])
        case .noBootFilesystem(let p, let found): set("noBootFilesystem", ["path": .string(p), "found": JSONValue(found)])
        case .bootPartitionInvalid(let p, let n, let reason):
            set("bootPartitionInvalid", ["path": .string(p), "number": JSONValue(n), "reason": .string(reason)])
        case .ambiguousBootPartition(let p, let candidates):
            set("ambiguousBootPartition", ["path": .string(p), "candidates": .array(candidates.map { JSONValue($0) })])
        case .bootFilesystemFull(let p, let n, let free, let needed):
            set("bootFilesystemFull", ["path": .string(p), "number": JSONValue(n), "free": .uint(free), "needed": .uint(needed)])
        case .noESP(let p): set("noESP", ["path": .string(p)])
        case .secureBootNeedsUEFI(let p): set("secureBootNeedsUEFI", ["path": .string(p)])
        case .biosNeeds512ByteSectors(let p, let size):
            set("biosNeeds512ByteSectors", ["path": .string(p), "sectorSize": JSONValue(size)])
        case .espInvalid(let p, let n, let reason):
            set("espInvalid", ["path": .string(p), "number": JSONValue(n), "reason": .string(reason)])
        case .notRoot(let p): set("notRoot", ["path": .string(p)])
        case .notWritable(let p, let what): set("notWritable", ["path": .string(p), "what": .string(what)])
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
        case .busy, .loopDevice, .mount, .deviceMapper, .subprocess, .other, .cleanupFailed, .leftovers, .isolation:
            set("isolated", [:])
        }
        return errorDocument(self, case: name, members)
    }

    package init?(isolatedJSON json: JSONValue) {
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
        case "container": guard let f = string("format") else { return nil }; self = .container(path: p, format: f)
        case "truncated": guard let d = string("detail") else { return nil }; self = .truncated(path: p, detail: d)
        case "noPartitionTable": self = .noPartitionTable(path: p, filesystem: string("filesystem"))
        case "damagedPartitionTable": guard let d = string("detail") else { return nil }; self = .damagedPartitionTable(path: p, detail: d)
        case "noPostMBRGap": guard let s = uint("firstPartitionStart") else { return nil }; self = .noPostMBRGap(path: p, firstPartitionStart: s)
        case "gapTooSmall":
            guard let s = uint("sectors"), let n = uint("needed") else { return nil }
            self = .gapTooSmall(path: p, sectors: s, needed: n)
        case "noBIOSBootPartition": self = .noBIOSBootPartition(path: p)
        case "unsupportedPartitionTable":
            guard let t = string("table") else { return nil }
            self = .unsupportedPartitionTable(path: p, table: t)
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
        case "noESP": self = .noESP(path: p)
        case "secureBootNeedsUEFI": self = .secureBootNeedsUEFI(path: p)
        case "biosNeeds512ByteSectors":
            guard let size = int("sectorSize") else { return nil }
            self = .biosNeeds512ByteSectors(path: p, sectorSize: size)
        case "espInvalid":
            guard let number = int("number"), let reason = string("reason") else { return nil }
            self = .espInvalid(path: p, number: number, reason: reason)
        case "notRoot": self = .notRoot(path: p)
        case "notWritable":
            guard let what = string("what") else { return nil }
            self = .notWritable(path: p, what: what)
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
        case "isolated": guard let f = guestFailure(json) else { return nil }; self = .isolation(f)
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
