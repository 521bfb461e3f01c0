import Glibc

/// What a disk image showed on its screen when booted in a throwaway VM.
public struct BootObservation: Sendable, Equatable {
    public enum Outcome: String, Sendable {
        case grubMenu, grubPrompt, grubRescue, grubError, noBootableDevice, timeout, other
    }
    public let outcome: Outcome
    /// The 80x25 VGA text screen as last observed, one string a row, trailing spaces trimmed.
    public let screen: [String]
    /// For `.grubMenu`: the entry titles as shown.
    public let menuEntries: [String]
    /// GRUB's last "error: ..." line, or SeaBIOS's "No bootable device." line.
    public let message: String?
    /// From starting qemu to the observation.
    public let seconds: Double

    public init(outcome: Outcome, screen: [String], menuEntries: [String], message: String?, seconds: Double) {
        self.outcome = outcome
        self.screen = screen
        self.menuEntries = menuEntries
        self.message = message
        self.seconds = seconds
    }
}

/// Boots a disk image under qemu and reads what the screen shows, from the VGA text buffer rather
/// than a serial console, so that it works for any image, whatever its grub.cfg says.
///
/// qemu runs under TCG with no network and no default devices; its QMP monitor is its stdin and
/// stdout (one end of a socketpair), so there is no socket path to race for. Every ~150 ms QMP
/// `pmemsave` dumps the text buffer at 0xB8000 into a file in a private temp dir, which is decoded
/// from CP437 character/attribute pairs.
public enum QemuBoot {
    public static let qemuProgram = "qemu-system-x86_64"
    /// The temp dir (under $TMPDIR or /tmp) holds the dump, qemu's stderr and its snapshot overlay.
    public static let temporaryPrefix = "imgtool-qemu-"
    static let pollInterval = 0.15
    static let textBuffer = (address: 0xB8000, columns: 80, rows: 25)

    public enum Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        case qemuMissing
        case image(SystemError)
        case system(SystemError)
        /// qemu exited before the guest showed anything; `stderr` is its (truncated) complaint.
        case qemuFailed(status: Int32, stderr: String)
        case monitor(String)
        case interrupted(signal: Int32)

        public var description: String {
            switch self {
            case .qemuMissing:
                return "\(QemuBoot.qemuProgram) was not found in PATH; install the Debian package qemu-system-x86."
            case .image(let e): return "Cannot read the image to boot: \(e.description)."
            case .system(let e): return "Cannot run qemu: \(e.description)."
            case .qemuFailed(let status, let stderr):
                return "qemu exited with status \(status) before the guest showed a screen: \(stderr)"
            case .monitor(let what): return "qemu's QMP monitor \(what)."
            case .interrupted(let signal): return "Interrupted by signal \(signal); qemu was stopped."
            }
        }
    }

    /// Boots `image` (raw) read-only via a copy-on-write overlay (snapshot=on, kept in the private temp
    /// dir) so the image never changes, under TCG, without network or serial console. Polls the VGA
    /// text buffer until the screen settles into a recognisable state (the same classification twice in
    /// a row) or `timeout` seconds pass. Always kills qemu and removes its temp dir, also when
    /// `interruption` fires.
    public static func observe(image: String, timeout: Double,
                               interruption: Interruption? = nil) throws(QemuBoot.Error) -> BootObservation {
        guard let qemu = Subprocess.find(qemuProgram) else { throw .qemuMissing }
        // Fail with the image's own errno rather than qemu's paraphrase of it.
        do {
            let fd = try systemCall("open", on: image) { open(image, O_RDONLY | O_CLOEXEC) }
            close(fd)
        } catch { throw .image(error) }

        let dir: String
        do { dir = try makeTemporaryDirectory() } catch { throw .system(error) }
        defer { removeTemporaryDirectory(dir) }

        let started = monotonicNow()
        let vm = try VM.start(qemu: qemu, image: image, dir: dir, interruption: interruption)
        defer { vm.stop() }

        var last = blankScreen
        var previous: Classification?
        func observation(_ outcome: BootObservation.Outcome, _ c: Classification?) -> BootObservation {
            BootObservation(outcome: outcome, screen: last, menuEntries: c?.menuEntries ?? [],
                            message: c?.message, seconds: monotonicNow() - started)
        }

        try vm.handshake(deadline: started + max(timeout, 10), interruption: interruption)
        while true {
            if let signal = interruption?.signal { throw .interrupted(signal: signal) }
            if vm.hasExited() {
                // A guest that powers off or reboots (-no-reboot) ends the run; judge its last screen.
                let c = classify(screen: last)
                return observation(c?.outcome ?? .other, c)
            }
            let bytes: [UInt8]
            do {
                bytes = try vm.dumpTextBuffer(deadline: monotonicNow() + 5, interruption: interruption)
            } catch .monitor(let what) {
                if vm.hasExited() { continue }  // reported above, with the last screen
                throw .monitor(what)
            }
            last = decodeTextBuffer(bytes)
            let c = classify(screen: last)
            // Screens are drawn a line at a time: only a classification seen twice counts as settled.
            if let c, c == previous { return observation(c.outcome, c) }
            previous = c
            if monotonicNow() >= started + timeout { return observation(c?.outcome ?? .timeout, c) }
            usleep(UInt32(pollInterval * 1_000_000))
        }
    }

    // MARK: Reading the screen

    /// What a screen shows, if it is a state worth reporting.
    public struct Classification: Sendable, Equatable {
        public let outcome: BootObservation.Outcome
        public let menuEntries: [String]
        public let message: String?
    }

    /// Classifies a decoded screen; nil if it shows nothing recognisable (yet). The rows are the
    /// guest's, so nothing here assumes more than that they are strings.
    public static func classify(screen: [String]) -> Classification? {
        let rows = screen.map { trimTrailing($0) }
        let lastRow = rows.last(where: { !$0.isEmpty }) ?? ""
        // GRUB prints its errors at column 0 as "error: ...".
        let error = rows.last(where: { $0.hasPrefix("error:") })
        if lastRow.hasPrefix("grub rescue>") { return Classification(outcome: .grubRescue, menuEntries: [], message: error) }
        if lastRow.hasPrefix("grub>") { return Classification(outcome: .grubPrompt, menuEntries: [], message: error) }
        if let error { return Classification(outcome: .grubError, menuEntries: [], message: error) }
        if let entries = menuEntries(rows), !entries.isEmpty {
            return Classification(outcome: .grubMenu, menuEntries: entries, message: nil)
        }
        if let line = rows.first(where: { $0.contains("No bootable device") }) {
            return Classification(outcome: .noBootableDevice, menuEntries: [],
                                  message: String(line.drop(while: { $0 == " " })))
        }
        return nil
    }

    /// GRUB's text menu: a ┌─┐ frame whose rows are "│" + a marker column ("*" on the highlighted
    /// entry) + the title + "│". The hints below it are not required: they are translated.
    static func menuEntries(_ rows: [String]) -> [String]? {
        guard let top = rows.firstIndex(where: { $0.contains("┌") && $0.contains("┐") }),
              let bottom = rows[(top + 1)...].firstIndex(where: { $0.contains("└") && $0.contains("┘") })
        else { return nil }
        var entries: [String] = []
        for row in rows[(top + 1)..<bottom] {
            guard let open = row.firstIndex(of: "│"), let close = row.lastIndex(of: "│"), open < close else { return nil }
            var inner = row[row.index(after: open)..<close]
            if !inner.isEmpty { inner = inner.dropFirst() }  // the marker column
            // GRUB shows ↑/↓ at the frame's edge when the list scrolls; they are not part of a title.
            let title = trimTrailing(String(inner)).droppingSuffix("↑").droppingSuffix("↓")
            if !title.isEmpty { entries.append(trimTrailing(title)) }
        }
        return entries
    }

    static let blankScreen = [String](repeating: "", count: textBuffer.rows)

    /// Decodes a VGA text buffer (character, attribute pairs; attributes ignored) into rows with
    /// trailing spaces trimmed. Anything but exactly 80x25 cells decodes as a blank screen.
    public static func decodeTextBuffer(_ bytes: [UInt8]) -> [String] {
        let (columns, rows) = (textBuffer.columns, textBuffer.rows)
        guard bytes.count == columns * rows * 2 else { return blankScreen }
        return (0..<rows).map { row in
            var line = String.UnicodeScalarView()
            for column in 0..<columns { line.append(cp437[Int(bytes[(row * columns + column) * 2])]) }
            return trimTrailing(String(line))
        }
    }

    /// Code page 437 as the VGA ROM font draws it: glyphs for 0x01-0x1F too, so that no byte of the
    /// guest's becomes a control character in our strings. 0x00 and 0xFF (NBSP) become spaces.
    static let cp437: [Unicode.Scalar] = {
        let low = " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"
        let ascii = (0x20...0x7E).map { Character(Unicode.Scalar(UInt8($0))) }
        let high = "⌂ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■ "
        return Array(low.unicodeScalars) + ascii.flatMap { $0.unicodeScalars } + Array(high.unicodeScalars)
    }()

    static func trimTrailing(_ s: String) -> String {
        var s = Substring(s)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }

    // MARK: Temp dir

    static func makeTemporaryDirectory() throws(SystemError) -> String {
        let parent = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(parent)/\(temporaryPrefix)XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw SystemError("mkdtemp", on: parent, errno: errno)
        }
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// Removes the files directly in `dir` (the dump, qemu.err, qemu's overlay), then `dir`. Only
    /// one level and no symlinks followed: nothing else is ever put there.
    static func removeTemporaryDirectory(_ dir: String) {
        if let d = opendir(dir) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { unlink("\(dir)/\(name)") }
            }
            closedir(d)
        }
        rmdir(dir)
    }
}

/// One running qemu: its pid (and process group) and the QMP connection on its stdio.
private final class VM {
    let pid: pid_t
    let monitor: Int32
    let dumpPath: String
    let errorPath: String
    let interruption: Interruption?
    private var exited = false
    private var status: Int32 = 0
    private var buffer: [UInt8] = []

    private init(pid: pid_t, monitor: Int32, dir: String, interruption: Interruption?) {
        self.pid = pid
        self.monitor = monitor
        self.dumpPath = "\(dir)/screen.bin"
        self.errorPath = "\(dir)/qemu.err"
        self.interruption = interruption
    }

    static func start(qemu: String, image: String, dir: String,
                      interruption: Interruption?) throws(QemuBoot.Error) -> VM {
        var pair: [Int32] = [-1, -1]
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, type, 0, &pair) == 0 else {
            throw .system(SystemError("socketpair", on: qemu, errno: errno))
        }
        // file.driver=file keeps qemu from reading a protocol ("nbd:", "json:") into the path;
        // qemu's option syntax escapes a comma as two.
        let path = image.replacingAll(",", with: ",,")
        let arguments = [
            qemu, "-accel", "tcg", "-m", "128", "-nodefaults", "-no-user-config", "-display", "none",
            "-vga", "std", "-no-reboot", "-nic", "none",
            "-drive", "file.driver=file,file.filename=\(path),format=raw,if=ide,snapshot=on",
            "-chardev", "stdio,id=qmp,signal=off", "-mon", "chardev=qmp,mode=control",
        ]

        // The snapshot=on overlay goes to $TMPDIR: point that at our dir, which is removed afterwards.
        var environment = [String]()
        var e = environ
        while let entry = e.pointee {
            let s = String(cString: entry)
            if !s.hasPrefix("TMPDIR=") { environment.append(s) }
            e += 1
        }
        environment.append("TMPDIR=\(dir)")

        let pid: pid_t
        do {
            pid = try Subprocess.spawnInOwnGroup(qemu, arguments, environment: environment) { actions in
                posix_spawn_file_actions_adddup2(&actions, pair[1], 0)
                posix_spawn_file_actions_adddup2(&actions, pair[1], 1)
                posix_spawn_file_actions_addopen(&actions, 2, "\(dir)/qemu.err", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            }
        } catch {
            close(pair[0]); close(pair[1])
            throw .system(error)
        }
        close(pair[1])
        interruption?.register(child: pid)
        return VM(pid: pid, monitor: pair[0], dir: dir, interruption: interruption)
    }

    /// Kills the whole process group and reaps qemu. SIGKILL at once: the guest's state is
    /// worthless and the overlay lives in a directory we remove anyway.
    func stop() {
        if !exited {
            kill(-pid, SIGKILL)
            var s: Int32 = 0
            while waitpid(pid, &s, 0) < 0 && errno == EINTR {}
            exited = true
        }
        interruption?.unregister(child: pid)
        close(monitor)
    }

    func hasExited() -> Bool {
        if exited { return true }
        var s: Int32 = 0
        if waitpid(pid, &s, WNOHANG) == pid {
            exited = true
            status = (s & 0x7f) == 0 ? (s >> 8) & 0xff : 128 + (s & 0x7f)
        }
        return exited
    }

    /// Reads the greeting and leaves QMP's negotiation mode.
    func handshake(deadline: Double, interruption: Interruption?) throws(QemuBoot.Error) {
        do throws(QemuBoot.Error) {
            let greeting = try readLine(deadline: deadline, interruption: interruption)
            guard greeting.hasPrefix("{\"QMP\"") else { throw QemuBoot.Error.monitor("sent no greeting") }
            try command("{\"execute\":\"qmp_capabilities\"}", deadline: deadline, interruption: interruption)
        } catch .monitor(let what) {
            // Most often qemu refused its arguments or the image; its stderr says why.
            for _ in 0..<50 where !hasExited() { usleep(20_000) }
            if hasExited() { throw .qemuFailed(status: status, stderr: errorOutput()) }
            throw .monitor(what)
        }
    }

    /// Dumps the VGA text buffer with QMP pmemsave and reads the file back.
    func dumpTextBuffer(deadline: Double, interruption: Interruption?) throws(QemuBoot.Error) -> [UInt8] {
        let t = QemuBoot.textBuffer
        let size = t.columns * t.rows * 2
        unlink(dumpPath)
        try command("{\"execute\":\"pmemsave\",\"arguments\":{\"val\":\(t.address),\"size\":\(size),"
                    + "\"filename\":\(jsonString(dumpPath))}}", deadline: deadline, interruption: interruption)
        guard let file = try? FileHandle(path: dumpPath, flags: O_RDONLY) else { return [] }
        var bytes = [UInt8](repeating: 0, count: size + 1)  // one more, to notice a longer file
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(file.fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            count += n
        }
        return Array(bytes[..<count])
    }

    /// Sends one command and waits for its reply, skipping asynchronous events.
    private func command(_ json: String, deadline: Double, interruption: Interruption?) throws(QemuBoot.Error) {
        let bytes = Array((json + "\n").utf8)
        var sent = 0
        while sent < bytes.count {
            // MSG_NOSIGNAL: a dead qemu must give EPIPE, not kill us with SIGPIPE.
            let n = bytes.withUnsafeBytes { send(monitor, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .monitor("could not be written to (\(String(cString: strerror(errno))))") }
            sent += n
        }
        while true {
            let line = try readLine(deadline: deadline, interruption: interruption)
            if line.hasPrefix("{\"return\"") { return }
            if line.hasPrefix("{\"error\"") { throw .monitor("refused a command: \(line.prefix(300))") }
            // Anything else is an event ({"timestamp": ..., "event": ...}).
        }
    }

    private static let maxLine = 65536

    private func readLine(deadline: Double, interruption: Interruption?) throws(QemuBoot.Error) -> String {
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
            var fds = [pollfd(fd: monitor, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&fds, 1, Int32(min(remaining, 0.1) * 1000) + 1)
            if ready < 0 && errno != EINTR { throw .monitor("could not be polled (\(String(cString: strerror(errno))))") }
            if ready <= 0 { continue }
            let n = read(monitor, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .monitor("closed the connection") }
            buffer += chunk[..<n]
        }
    }

    private func errorOutput() -> String {
        guard let file = try? FileHandle(path: errorPath, flags: O_RDONLY) else { return "" }
        var bytes = [UInt8](repeating: 0, count: 2000)
        let n = read(file.fd, &bytes, bytes.count)
        return String(decoding: bytes[..<max(n, 0)], as: UTF8.self)
            .split(separator: "\n").joined(separator: " ")
    }
}

/// A JSON string literal for `s`.
private func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where u.value < 0x20:
            let hex = String(u.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

private extension String {
    func droppingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }

    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
