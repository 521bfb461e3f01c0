import Dispatch
import Foundation
import Glibc
import ImgSystem
import Synchronization
import Testing
import TestSupport

@Suite struct SubprocessTests {
    @Test("stdout and stderr are captured separately, with the exit code")
    func capturesSeparately() throws {
        let r = try Subprocess.run(["sh", "-c", "echo out; echo err >&2; printf more; exit 3"])
        #expect(r.stdout == "out\nmore")
        #expect(r.stderr == "err\n")
        #expect(r.status == 3)
        #expect(!r.succeeded)
        let ok = try Subprocess.run(["true"])
        #expect(ok.status == 0)
        #expect(ok.succeeded)
        #expect(ok.output.isEmpty && ok.errorOutput.isEmpty)
    }

    @Test("a child killed by a signal reports 128 + the signal")
    func killedBySignal() throws {
        #expect(try Subprocess.run(["sh", "-c", "kill -KILL $$"]).status == 128 + SIGKILL)
        #expect(try Subprocess.run(["sh", "-c", "kill -TERM $$; sleep 5"]).status == 128 + SIGTERM)
    }

    @Test("the child gets an empty signal mask even when the calling thread blocks SIGTERM")
    func signalMaskReset() throws {
        var block = sigset_t(), old = sigset_t()
        sigemptyset(&block)
        sigaddset(&block, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &block, &old)
        defer { pthread_sigmask(SIG_SETMASK, &old, nil) }
        let started = Date()
        let r = try Subprocess.run(["sh", "-c", "kill -TERM $$; sleep 5; echo survived"])
        #expect(r.status == 128 + SIGTERM)
        #expect(!r.stdout.contains("survived"))
        #expect(Date().timeIntervalSince(started) < 4)
    }

    @Test("a program that is not in PATH is .notFound naming it")
    func notFound() throws {
        let error = #expect(throws: Subprocess.Error.self) { try Subprocess.run(["imgtool-no-such-program-4711", "x"]) }
        guard case .notFound(let program)? = error else {
            Issue.record("expected .notFound, got \(String(describing: error))")
            return
        }
        #expect(program == "imgtool-no-such-program-4711")
        #expect(Subprocess.find("imgtool-no-such-program-4711") == nil)
        #expect(Subprocess.find("sh") != nil)
        #expect(throws: Subprocess.Error.self) { try Subprocess.run(["/nonexistent/dir/prog"]) }
    }

    @Test("onLine sees every line of both streams, the unterminated last one too")
    func onLine() throws {
        var lines: [String] = []
        let r = try Subprocess.run(["sh", "-c", "printf 'a\\nb\\n'; echo e1 >&2; printf 'c'"]) { lines.append($0) }
        #expect(lines.sorted() == ["a", "b", "c", "e1"])
        #expect(lines.filter { $0 != "e1" } == ["a", "b", "c"])
        #expect(r.stdout == "a\nb\nc")
        #expect(r.stderr == "e1\n")
    }

    @Test("megabytes on both pipes at once do not stall the child; stdin is /dev/null")
    func largeOutput() throws {
        let r = try Subprocess.run(["sh", "-c", "head -c 3000000 /dev/zero >&2 & head -c 3000000 /dev/zero; wait"])
        #expect(r.status == 0)
        #expect(r.output.count == 3_000_000)
        #expect(r.errorOutput.count == 3_000_000)
        let cat = try Subprocess.run(["cat"])
        #expect(cat.status == 0 && cat.output.isEmpty)
    }
}

@Suite struct InterruptionTests {
    @Test("interrupt(signal:) from another thread stops a running `sleep 30` quickly with 143")
    func interruptRunningChild() throws {
        let interruption = Interruption()
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { interruption.interrupt(signal: SIGTERM) }
        let started = Date()
        let r = try Subprocess.run(["sleep", "30"], interruption: interruption)
        let elapsed = Date().timeIntervalSince(started)
        #expect(r.status == 143)
        #expect(elapsed >= 0.15 && elapsed < 5, "took \(elapsed) s")
        #expect(interruption.signal == SIGTERM)
    }

    @Test("the whole process group stops, so a grandchild holding the pipes does not keep run() waiting")
    func interruptStopsGrandchildren() throws {
        let interruption = Interruption()
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { interruption.interrupt(signal: SIGHUP) }
        let started = Date()
        let r = try Subprocess.run(["sh", "-c", "sleep 30 & sleep 30; wait"], interruption: interruption)
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(r.status == 143)  // children are always sent SIGTERM
        #expect(interruption.signal == SIGHUP)
    }

    @Test("a child that ignores SIGTERM gets SIGKILL after the grace period")
    func escalatesToKill() throws {
        let interruption = Interruption()
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { interruption.interrupt(signal: SIGTERM) }
        let started = Date()
        // The ignored disposition is inherited by sleep through exec.
        let r = try Subprocess.run(["sh", "-c", "trap '' TERM; exec sleep 30"], interruption: interruption)
        let elapsed = Date().timeIntervalSince(started)
        #expect(r.status == 128 + SIGKILL)
        #expect(elapsed >= Subprocess.killGraceSeconds && elapsed < Subprocess.killGraceSeconds + 3, "took \(elapsed) s")
    }

    @Test("a child started after interrupt() is stopped at once; the first signal wins")
    func childAfterInterrupt() throws {
        let interruption = Interruption()
        #expect(interruption.signal == nil)
        interruption.interrupt(signal: SIGINT)
        interruption.interrupt(signal: SIGTERM)
        #expect(interruption.signal == SIGINT)
        let started = Date()
        let r = try Subprocess.run(["sleep", "30"], interruption: interruption)
        #expect(r.status == 143)
        #expect(Date().timeIntervalSince(started) < 5)
    }

    @Test("an interruption that never fires does not disturb the child")
    func quietInterruption() throws {
        let r = try Subprocess.run(["sh", "-c", "sleep 0.1; echo done"], interruption: Interruption())
        #expect(r.status == 0)
        #expect(r.stdout == "done\n")
    }
}

@Suite struct SessionTests {
    struct Refused: Error, CustomStringConvertible { var description: String { "refused by test" } }

    @Test("close() releases in reverse order, keeps going after a failure, and returns the failures")
    func closeOrder() throws {
        let session = Session(logger: testLogger)
        var released: [String] = []
        session.onClose("first") { released.append("first") }
        session.onClose("second") { released.append("second"); throw Refused() }
        session.onClose("third") { released.append("third") }
        session.onClose("fourth") { released.append("fourth"); throw Refused() }
        #expect(session.held == 4)
        let failures = session.close()
        #expect(released == ["fourth", "third", "second", "first"])
        #expect(failures.map(\.resource) == ["fourth", "second"])
        #expect(failures.allSatisfy { $0.reason == "refused by test" })
        #expect(failures.first?.description == "could not release fourth: refused by test")
        #expect(session.held == 0)
        #expect(session.close().isEmpty)
        #expect(released.count == 4, "a second close() released something again")
    }

    @Test("a session that goes away releases what it holds")
    func deinitCloses() {
        let released = Mutex<[String]>([])
        do {
            let session = Session(logger: testLogger)
            session.onClose("a") { released.withLock { $0.append("a") } }
            session.onClose("b") { released.withLock { $0.append("b") } }
        }
        #expect(released.withLock { $0 } == ["b", "a"])
    }

    @Test("checkpoint() passes until an interrupt, then throws Interrupted with that signal")
    func checkpoint() throws {
        let interruption = Interruption()
        let session = Session(logger: testLogger, interruption: interruption)
        #expect(throws: Never.self) { try session.checkpoint() }
        let other = Thread { interruption.interrupt(signal: SIGHUP) }
        other.start()
        #expect(waitUntil(seconds: 2) { interruption.signal != nil })
        let error = #expect(throws: Session.Interrupted.self) { try session.checkpoint() }
        #expect(error?.signal == SIGHUP)
        #expect(error?.description.contains("Hangup") == true)
        #expect(session.interruption.signal == SIGHUP)
    }
}

@Suite struct ImageLockTests {
    @Test("a second lock on the same image is .held, naming this process; after release a new lock succeeds")
    func secondLockHeld() throws {
        let scratch = try Scratch()
        let image = scratch.file("locked.img")
        try run(["truncate", "-s", "1M", image])
        var first: ImageLock? = try ImageLock(path: image)
        #expect(first != nil)
        let error = #expect(throws: ImageLock.Error.self) { _ = try ImageLock(path: image) }
        guard case .held(let path, let pid)? = error else {
            Issue.record("expected .held, got \(String(describing: error))")
            return
        }
        #expect(path == image)
        #expect(pid == getpid())
        #expect(error?.description.contains("process \(getpid())") == true)
        first = nil
        #expect(throws: Never.self) { _ = try ImageLock(path: image) }
    }

    @Test("a lock held by another process names that process and its command")
    func heldByAnotherProcess() throws {
        let scratch = try Scratch()
        let image = scratch.file("locked.img")
        try run(["truncate", "-s", "1M", image])
        let interruption = Interruption()
        let done = DispatchSemaphore(value: 0)
        // flock(1) takes the lock, then runs sleep; the Interruption stops both at the end.
        DispatchQueue.global().async {
            _ = try? Subprocess.run(["flock", "--exclusive", image, "sleep", "30"], interruption: interruption)
            done.signal()
        }
        var finished = false
        defer {
            if !finished {
                interruption.interrupt(signal: SIGTERM)
                _ = done.wait(timeout: .now() + 10)
            }
        }
        var lockError: ImageLock.Error?
        let held = waitUntil(seconds: 5) {
            do throws(ImageLock.Error) { _ = try ImageLock(path: image); return false } catch { lockError = error; return true }
        }
        try #require(held, "flock(1) never took the lock")
        guard case .held(_, let pid?)? = lockError else {
            Issue.record("expected .held with a pid, got \(String(describing: lockError))")
            return
        }
        #expect(pid != getpid())
        #expect(sysfs("/proc/\(pid)/comm") == "flock")
        #expect(lockError?.description.contains("(flock)") == true)

        interruption.interrupt(signal: SIGTERM)
        #expect(done.wait(timeout: .now() + 10) == .success)
        finished = true
        #expect(throws: Never.self) { _ = try ImageLock(path: image) }
    }

    @Test("locking a file that does not exist is a system error, not .held")
    func missingFile() throws {
        let scratch = try Scratch()
        let error = #expect(throws: ImageLock.Error.self) { _ = try ImageLock(path: scratch.file("missing.img")) }
        guard case .system(let e)? = error else {
            Issue.record("expected .system, got \(String(describing: error))")
            return
        }
        #expect(e.errno == ENOENT)
    }
}

/// A Session that owns real kernel objects releases them, proven in sysfs.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct SessionKernelTests {
    @Test("close() detaches the session's loop devices and removes its directory")
    func closeReleasesKernelObjects() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("session.img")
        try writePatternFile(image, size: 1 << 20)
        let session = Session(logger: testLogger)
        defer { session.close() }
        let dir = try TemporaryDirectory(prefix: "session-")
        session.onClose(dir.path) { try dir.remove() }
        let a = try LoopDevice.attach(image, options: .init(tag: "test-session-a"), logger: testLogger)
        session.onClose(a.path) { try a.detach() }
        let b = try LoopDevice.attach(image, options: .init(offset: 4096, tag: "test-session-b"), logger: testLogger)
        session.onClose(b.path) { try b.detach() }
        #expect(session.held == 3)
        #expect(loopAttribute(a.number, "backing_file") == image)
        #expect(loopAttribute(b.number, "backing_file") == image)

        #expect(session.close().isEmpty)
        #expect(try LoopDevice.fileName(ofDevice: a.path) != "imgtool:test-session-a")
        #expect(try LoopDevice.fileName(ofDevice: b.path) != "imgtool:test-session-b")
        #expect(access(dir.path, F_OK) != 0)
        #expect(leftovers() == [])
    }
}
