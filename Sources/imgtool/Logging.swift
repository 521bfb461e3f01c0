import Logging

/// One short line per step on stderr: "imgtool: <message>". Debug lines (--verbose) carry metadata.
struct StepLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = "imgtool: "
        if event.level >= .warning && event.level < .error { line += "warning: " }
        line += "\(event.message)"
        if logLevel <= .debug {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            if !all.isEmpty { line += " [" + all.sorted { $0.key < $1.key }.map { "\($0)=\($1)" }.joined(separator: " ") + "]" }
        }
        writeAll(2, Array((line + "\n").utf8))
    }
}

func makeLogger(label: String, verbose: Bool, quiet: Bool) -> Logger {
    let level: Logger.Level = quiet ? .error : verbose ? .debug : .info
    return Logger(label: label) { _ in StepLogHandler(logLevel: level) }
}
