import Glibc
import ImgFormats
import ImgSystem
import Logging

/// What the host asks the imgtool inside an isolated VM to do, and what comes back, as values:
/// the host sends a workflow and its options as JSON (`imgtool __isolated REQUEST`), the guest runs
/// the workflow through ImgKit and answers with its result or its typed error (`ResponseFrame`).
/// Log lines go to stderr and reach the host's logger. Nothing is parsed out of human-readable
/// output.
package struct IsolatedRequest: Sendable {
    /// The hidden command the guest runs.
    package static let command = "__isolated"

    /// The workflows that run isolated, with their options (without the isolation they run in).
    package enum Workflow: Sendable {
        case installGrub(InstallGrub.Options)
        case inspect(Inspect.Options)
        case verify(Verify.Options)
        /// `ImageFiles.list`.
        case list(ImageFiles.Options, path: String)
        /// `ImageFiles.read`: the file's bytes come back in data frames.
        case read(ImageFiles.Options, path: String)

        /// The command's name, for the request and for messages.
        package var name: String {
            switch self {
            case .installGrub: return "install-grub"
            case .inspect: return "inspect"
            case .verify: return "verify"
            case .list: return "ls"
            case .read: return "cat"
            }
        }

        var image: String {
            switch self {
            case .installGrub(let o): return o.image
            case .inspect(let o): return o.image
            case .verify(let o): return o.image
            case .list(let o, _), .read(let o, _): return o.image
            }
        }
    }

    package let workflow: Workflow
    /// The guest logs at this level (debug with --verbose).
    package let logLevel: Logger.Level

    package init(_ workflow: Workflow, logLevel: Logger.Level) {
        self.workflow = workflow
        self.logLevel = logLevel
    }

    package var json: JSONValue {
        let options: JSONValue
        switch workflow {
        case .installGrub(let o):
            options = .object([
                "image": .string(o.image), "strategy": JSONValue(o.strategy?.rawValue), "diskName": JSONValue(o.diskName),
                "bootPartition": JSONValue(o.bootPartition), "modules": JSONValue(o.modules),
                "showGrubOutput": .bool(o.showGrubOutput), "firmware": JSONValue(o.firmware?.rawValue),
                "secureBoot": .bool(o.secureBoot),
            ])
        case .inspect(let o): options = .object(["image": .string(o.image)])
        case .verify(let o): options = .object(["image": .string(o.image)])
        case .list(let o, let path), .read(let o, let path):
            options = .object(["image": .string(o.image), "partition": JSONValue(o.partition),
                               "logicalVolume": JSONValue(o.logicalVolume), "path": .string(path)])
        }
        return .object(["workflow": .string(workflow.name), "logLevel": .string(logLevel.rawValue), "options": options])
    }

    package init?(json: JSONValue) {
        guard let name = json["workflow"]?.stringValue,
              let level = json["logLevel"]?.stringValue.flatMap(Logger.Level.init(rawValue:)),
              let o = json["options"], let image = o["image"]?.stringValue else { return nil }
        let workflow: Workflow
        switch name {
        case "install-grub":
            guard let modules = strings(o["modules"]), let showGrubOutput = o["showGrubOutput"]?.boolValue,
                  let strategyName = optional(o["strategy"], \.stringValue),
                  let diskName = optional(o["diskName"], \.stringValue),
                  let bootPartition = optional(o["bootPartition"], { $0.int64Value.flatMap { Int(exactly: $0) } })
            else { return nil }
            let strategy = strategyName.flatMap(InstallGrub.Strategy.init(rawValue:))
            guard strategy != nil || strategyName == nil else { return nil }
            // Absent in a request from an imgtool that predates the choice: the layout's.
            let firmwareName = o["firmware"].flatMap { optional($0, \.stringValue) } ?? nil
            let firmware = firmwareName.flatMap(InstallGrub.Firmware.init(rawValue:))
            guard firmware != nil || firmwareName == nil else { return nil }
            workflow = .installGrub(.init(image: image, strategy: strategy, diskName: diskName, bootPartition: bootPartition,
                                          modules: modules, showGrubOutput: showGrubOutput, firmware: firmware,
                                          secureBoot: o["secureBoot"]?.boolValue ?? false))
        case "inspect": workflow = .inspect(.init(image: image))
        case "verify": workflow = .verify(.init(image: image))
        case "ls", "cat":
            guard let path = o["path"]?.stringValue,
                  let partition = optional(o["partition"], { $0.int64Value.flatMap { Int(exactly: $0) } }),
                  let logicalVolume = optional(o["logicalVolume"], \.stringValue) else { return nil }
            let files = ImageFiles.Options(image: image, partition: partition, logicalVolume: logicalVolume)
            workflow = name == "ls" ? .list(files, path: path) : .read(files, path: path)
        default: return nil
        }
        self.init(workflow, logLevel: level)
    }

    /// Runs the request here (in the guest), handing each frame of the response to `emit` as it
    /// is made; returns the exit code the guest exits with.
    package func serve(logger: Logger, interruption: Interruption, emit: ([UInt8]) -> Void) -> Int32 {
        func respond<E: IsolatedError>(_ body: () throws(E) -> JSONValue) -> Int32 {
            do {
                emit(ResponseFrame.result(try body()).encoded)
                return 0
            } catch {
                emit(ResponseFrame.error(error.isolatedJSON).encoded)
                return error.exitCode
            }
        }
        switch workflow {
        case .installGrub(let o): return respond { () throws(InstallGrubError) in try InstallGrub.run(o, logger: logger, interruption: interruption).json }
        case .inspect(let o): return respond { () throws(ReportError) in try Inspect.run(o, logger: logger).json }
        case .verify(let o): return respond { () throws(ReportError) in try Verify.run(o, logger: logger).json }
        case .list(let o, let path): return respond { () throws(ImageFiles.Error) in try ImageFiles.list(o, path: path, logger: logger).json }
        case .read(let o, let path):
            return respond { () throws(ImageFiles.Error) in
                try ImageFiles.read(o, path: path, logger: logger) { chunk in
                    emit(ResponseFrame.dataHeader(count: chunk.count))
                    emit(Array(chunk))
                }
                return .bool(true)
            }
        }
    }

    /// Runs the request in a VM that `isolation` describes (on the host): the guest's log lines
    /// go to `logger`, data frames to `data` (in order, once the VM has finished), and the result
    /// document becomes the value `decode` reads. The guest's typed error is rethrown as it was.
    package func send<Value, Failure: IsolatedError>(
        through isolation: Isolation, logger: Logger, errors: Failure.Type, decode: (JSONValue) -> Value?,
        data: (ArraySlice<UInt8>) throws(Failure) -> Void = { _ in }
    ) throws(Failure) -> Value {
        var isolation = isolation
        if case .installGrub(let o) = workflow { isolation.installStrategy = o.strategy }
        let purpose: Isolation.Purpose
        if case .installGrub = workflow { purpose = .installGrub } else { purpose = .readOnly }
        do { _ = try ImageSource.check(workflow.image) } catch { throw .unusableImage(error) }
        // A container goes to qemu with its format named (never probed), and only when it names no
        // other file: the host reads its header, nothing more.
        if let container = try? DiskContainer.identify(FileByteSource(path: workflow.image)) {
            if let refusal = container.isolationRefusal { throw .isolation(.container(path: workflow.image, reason: refusal)) }
            isolation.vm.imageFormat = container.format.qemuDriver ?? "raw"
        }
        let r: IsolatedVM.Result
        do {
            r = try isolation.run([Self.command, json.rendered()], image: workflow.image, purpose: purpose, logger: logger)
        } catch {
            throw .isolation(.vm(error))
        }
        // The guest's log lines, as a local run would have logged them.
        for line in String(decoding: r.stderr, as: UTF8.self).split(separator: "\n") {
            logger.log(level: logger.logLevel, "\(line.hasPrefix("imgtool: ") ? line.dropFirst("imgtool: ".count) : line)")
        }
        logger.debug("isolated VM finished", metadata: ["seconds": "\(r.seconds)", "qemu": "\(r.vmSeconds)",
                                                         "accelerator": "\(r.accelerator)", "resumed": "\(r.resumed)"])
        let start = String(decoding: r.stdout.prefix(200), as: UTF8.self)
        guard let (chunks, end) = ResponseFrame.decode(r.stdout) else {
            // No whole response: the guest died before it could answer (its console is in the log).
            guard r.status == 0 else {
                throw .isolation(.guest(status: r.status, message: "\(workflow.name) stopped in the isolated VM with exit \(r.status) before it reported a result"))
            }
            throw .isolation(.unreadableResponse(workflow: workflow.name, output: start))
        }
        for chunk in chunks { try data(chunk) }
        switch end {
        case .error(let document):
            throw Failure(isolatedJSON: document) ?? .isolation(.unreadableResponse(workflow: workflow.name, output: start))
        case .result(let document):
            guard let value = decode(document) else {
                throw .isolation(.unreadableResponse(workflow: workflow.name, output: start))
            }
            return value
        }
    }
}
