import Glibc
import ImgSystem

/// A QMP connection to qemu over one end of a socketpair whose other end is qemu's stdin and
/// stdout (`-chardev stdio,id=qmp,signal=off -mon chardev=qmp,mode=control`): no socket path to
/// race for. One command at a time; each reply is one line.
package final class QemuMonitor {
    package enum Error: Swift.Error {
        /// What went wrong, completing "qemu's QMP monitor ...".
        case monitor(String)
        case interrupted(signal: Int32)
    }

    /// qemu's arguments that put its monitor on stdin and stdout.
    package static let qemuArguments = ["-chardev", "stdio,id=qmp,signal=off", "-mon", "chardev=qmp,mode=control"]

    /// Our end; qemu's end is `qemuEnd` until the caller has passed it on and called `didSpawn`.
    let fd: Int32
    private(set) var qemuEnd: Int32
    private var buffer: [UInt8] = []
    private static let maxLine = 65536

    /// Makes the pair of connected sockets. Wraps socketpair(2).
    init() throws(SystemError) {
        var pair: [Int32] = [-1, -1]
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        try systemCall("socketpair", on: "qemu") { socketpair(AF_UNIX, type, 0, &pair) }
        fd = pair[0]
        qemuEnd = pair[1]
    }

    /// Makes qemu's end its stdin and stdout.
    func redirect(_ actions: inout posix_spawn_file_actions_t) {
        posix_spawn_file_actions_adddup2(&actions, qemuEnd, 0)
        posix_spawn_file_actions_adddup2(&actions, qemuEnd, 1)
    }

    /// Closes our copy of qemu's end once qemu has it (or will never have it).
    func didSpawn() {
        if qemuEnd >= 0 { closeDescriptor(qemuEnd); qemuEnd = -1 }
    }

    deinit {
        didSpawn()
        closeDescriptor(fd)
    }

    /// Reads the greeting and leaves QMP's negotiation mode.
    package func handshake(deadline: Double, interruption: Interruption?) throws(Error) {
        let greeting = try readLine(deadline: deadline, interruption: interruption)
        guard greeting.hasPrefix("{\"QMP\"") else { throw .monitor("sent no greeting") }
        try command("{\"execute\":\"qmp_capabilities\"}", deadline: deadline, interruption: interruption)
    }

    /// Sends one command and returns its reply line, skipping asynchronous events. Wraps send(2).
    @discardableResult
    package func command(_ json: String, deadline: Double, interruption: Interruption?) throws(Error) -> String {
        let bytes = Array((json + "\n").utf8)
        var sent = 0
        while sent < bytes.count {
            // MSG_NOSIGNAL: a dead qemu must give EPIPE, not kill us with SIGPIPE.
            let n: Int
            do {
                n = try systemCall("send", on: "qemu's monitor") {
                    bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
                }
            } catch { throw lost("could not be written to (\(String(cString: strerror(error.errno))))", interruption) }
            // A stream socket never takes nothing of a non-empty write; if it did, that is an I/O error.
            guard n > 0 else { throw lost("could not be written to (\(String(cString: strerror(EIO))))", interruption) }
            sent += n
        }
        while true {
            let line = try readLine(deadline: deadline, interruption: interruption)
            if line.hasPrefix("{\"return\"") { return line }
            if line.hasPrefix("{\"error\"") { throw .monitor("refused a command: \(line.prefix(300))") }
            // Anything else is an event ({"timestamp": ..., "event": ...}).
        }
    }

    /// The string value of the first member `name` in a reply line, for flat values such as
    /// query-migrate's "status" (qemu writes `"name": "value"`, and these values have no escapes).
    package static func stringMember(_ name: String, in line: String) -> String? {
        let bytes = Array(line.utf8), key = Array("\"\(name)\": \"".utf8)
        guard bytes.count >= key.count,
              let at = (0...(bytes.count - key.count)).first(where: { bytes[$0..<($0 + key.count)].elementsEqual(key) }) else { return nil }
        let rest = bytes[(at + key.count)...]
        guard let end = rest.firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: rest[..<end], as: UTF8.self)
    }

    /// A connection that died: an interruption's SIGTERM to qemu kills it too, and is the reason then.
    private func lost(_ what: String, _ interruption: Interruption?) -> Error {
        interruption?.signal.map { .interrupted(signal: $0) } ?? .monitor(what)
    }

    /// The next line qemu sends, without its newline. Wraps poll(2) and read(2).
    private func readLine(deadline: Double, interruption: Interruption?) throws(Error) -> String {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            guard buffer.count <= Self.maxLine else { throw .monitor("sent a line longer than \(Self.maxLine) bytes") }
            if let signal = interruption?.signal { throw .interrupted(signal: signal) }
            let remaining = deadline - monotonicNow()
            guard remaining > 0 else { throw .monitor("did not answer in time") }
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            let ready: Int32
            do {
                ready = try systemCall("poll", on: "qemu's monitor") { poll(&fds, 1, Int32(min(remaining, 0.1) * 1000) + 1) }
            } catch { throw .monitor("could not be polled (\(String(cString: strerror(error.errno))))") }
            if ready == 0 { continue }
            // A read that fails is a connection lost, like its end.
            let n = (try? systemCall("read", on: "qemu's monitor") { read(fd, &chunk, chunk.count) }) ?? 0
            guard n > 0 else { throw lost("closed the connection", interruption) }
            buffer += chunk[..<n]
        }
    }
}
