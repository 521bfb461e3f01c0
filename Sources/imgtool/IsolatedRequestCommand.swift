import ImgKit

/// `imgtool __isolated REQUEST`: what a workflow run with an `Isolation` starts inside the VM.
/// The workflow's steps go to stderr as a local run logs them; the response (data frames, then the
/// result or the typed error) goes to stdout, and the exit code is the workflow's.
func serveIsolatedRequest(_ arguments: [String]) -> Int32 {
    guard arguments.count == 1, let document = try? JSONValue.parse(arguments[0]),
          let request = IsolatedRequest(json: document) else {
        printError("\(IsolatedRequest.command) takes one request document: it is how imgtool reaches the imgtool inside an isolated VM, not a command for people. Use --isolate.")
        return ExitStatus.usage.rawValue
    }
    let interruption = Interruption()
    let trap = SignalTrap(interruption)
    defer { withExtendedLifetime(trap) {} }
    let logger = Logger(label: "imgtool.isolated") { _ in StepLogHandler(logLevel: request.logLevel) }
    return request.serve(logger: logger, interruption: interruption) { writeAll(1, $0) }
}
