import Glibc
import ImgSystem
import ImgVM
import Testing
import TestSupport

/// The one qemu lifecycle, on a stand-in for qemu (sh): no root, no qemu. Each run must end with
/// the process group gone, the child reaped and the private directory removed.
@Suite(.serialized) struct QemuProcessTests {
    static let prefix = "imgtool-qemuprocess-test-"

    /// Runs `script` under sh as the "qemu" of a QemuProcess until it ends, at most `timeout`
    /// seconds; the script may start a child and write its pid to $1.
    func run(_ script: String, timeout: Double, interruption: Interruption? = nil,
             interruptAfter: Double? = nil) throws -> (ending: QemuProcess.Ending, seconds: Double, leftovers: [String]) {
        let scratch = try Scratch()
        let childFile = scratch.file("child")
        var directory = "", pid: pid_t = 0
        let started = monotonicNow()
        let ending: QemuProcess.Ending = try {
            var process = try QemuProcess(temporaryPrefix: Self.prefix, interruption: interruption)
            directory = process.directory
            try process.start(["/bin/sh", "-c", script, "sh", childFile], monitor: false)
            pid = process.pid!
            while true {
                if let interruptAfter, monotonicNow() - started >= interruptAfter { interruption?.interrupt(signal: SIGINT) }
                if let e = process.ending(deadline: started + timeout) { return e }
                usleep(5_000)
            }
        }()
        let seconds = monotonicNow() - started
        var leftovers: [String] = []
        if access(directory, F_OK) == 0 { leftovers.append("directory \(directory)") }
        // Reaped: no zombie of our child's is left.
        if waitpid(pid, nil, WNOHANG) >= 0 || errno != ECHILD { leftovers.append("unreaped qemu \(pid)") }
        if let text = try? readTextFile(childFile), let child = pid_t(text.split(separator: "\n").first ?? "") {
            // The process group is killed: the child is gone (or a zombie its new parent has yet to reap).
            let deadline = monotonicNow() + 2
            while Self.alive(child) && monotonicNow() < deadline { usleep(10_000) }
            if Self.alive(child) { leftovers.append("child \(child)") }
        }
        return (ending, seconds, leftovers)
    }

    static func alive(_ pid: pid_t) -> Bool {
        guard let stat = try? readTextFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return false }
        return !stat[close...].hasPrefix(") Z")
    }

    @Test("qemu's own exit is reported with its status, its files read before the directory goes")
    func exits() throws {
        let r = try run("exit 3", timeout: 10)
        #expect(r.ending == .exited(status: 3))
        #expect(r.leftovers == [])
        let killed = try run("kill -9 $$", timeout: 10)
        #expect(killed.ending == .exited(status: 137))
    }

    @Test("at the deadline the whole process group is killed and reaped")
    func deadline() throws {
        let r = try run("sleep 300 & echo $! > \"$1\"; wait", timeout: 0.5)
        #expect(r.ending == .timedOut)
        #expect(r.seconds >= 0.5 && r.seconds < 5)
        #expect(r.leftovers == [])
    }

    @Test("an interruption kills qemu's group; one whose SIGTERM ended qemu first is still the interruption")
    func interruption() throws {
        // sh ignores nothing here: the interruption's SIGTERM ends it, usually before `ending` looks.
        for _ in 1...10 {
            let r = try run("sleep 300 & echo $! > \"$1\"; wait", timeout: 30, interruption: Interruption(), interruptAfter: 0.1)
            #expect(r.ending == .interrupted(signal: SIGINT))
            #expect(r.seconds < 5)
            #expect(r.leftovers == [])
        }
        // A qemu that ignores SIGTERM is killed all the same.
        let stubborn = try run("trap '' TERM; sleep 300 & echo $! > \"$1\"; while :; do sleep 1; done", timeout: 30,
                               interruption: Interruption(), interruptAfter: 0.1)
        #expect(stubborn.ending == .interrupted(signal: SIGINT))
        #expect(stubborn.seconds < 5)
        #expect(stubborn.leftovers == [])
    }

    @Test("an interruption that came before the start stops qemu at once")
    func interruptedBeforeStart() throws {
        let interruption = Interruption()
        interruption.interrupt(signal: SIGTERM)
        let r = try run("sleep 300", timeout: 30, interruption: interruption)
        #expect(r.ending == .interrupted(signal: SIGTERM))
        #expect(r.seconds < 5)
        #expect(r.leftovers == [])
    }

    @Test("a directory whose qemu never started is removed too")
    func neverStarted() throws {
        var directory = ""
        do {
            let process = try QemuProcess(temporaryPrefix: Self.prefix, interruption: nil)
            directory = process.directory
            #expect(access(directory, F_OK) == 0)
            try writeNewFile(process.file("console.log"), Array("x".utf8))
        }
        #expect(access(directory, F_OK) != 0)
    }
}
