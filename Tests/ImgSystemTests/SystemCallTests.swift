import Foundation
import Glibc
@testable import ImgSystem
import Synchronization
import Testing

/// The choke point for system calls: EINTR retried, errno taken from the call that failed.
@Suite struct SystemCallTests {
    @Test("a read interrupted by a signal handler without SA_RESTART is retried until data arrives")
    func retriesEINTR() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { fds.forEach(closeDescriptor) }
        // A handler that does nothing, installed without SA_RESTART: a blocking read it
        // interrupts fails with EINTR instead of being restarted by the kernel.
        var action = sigaction(), old = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        #expect(sigaction(SIGUSR2, &action, &old) == 0)
        defer { sigaction(SIGUSR2, &old, nil) }

        // The read runs on a thread of its own with SIGUSR2 unblocked (the test's threads block
        // signals). It is signalled until it has entered read twice, so read failed with EINTR at
        // least once, then the byte it waits for is written.
        let state = ReaderState()
        let readEnd = fds[0]
        Thread.detachNewThread {
            var unblock = sigset_t()
            sigemptyset(&unblock)
            sigaddset(&unblock, SIGUSR2)
            pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
            state.thread.store(UInt(pthread_self()), ordering: .releasing)
            var byte: UInt8 = 0
            let n = try? systemCall("read", on: "a pipe") { () -> Int in
                state.calls.add(1, ordering: .releasing)
                return read(readEnd, &byte, 1)
            }
            state.result.withLock { $0 = n.map { ($0, byte) } }
            state.done.signal()
        }
        let deadline = monotonicNow() + 10
        while state.thread.load(ordering: .acquiring) == 0 { usleep(1_000) }
        let reader = pthread_t(state.thread.load(ordering: .acquiring))
        while state.calls.load(ordering: .acquiring) < 2 && monotonicNow() < deadline {
            pthread_kill(reader, SIGUSR2)
            usleep(10_000)
        }
        var byte: UInt8 = 42
        #expect(write(fds[1], &byte, 1) == 1)
        state.done.wait()  // no signal may arrive once the old disposition is back
        let result = state.result.withLock { $0 }
        #expect(result?.0 == 1 && result?.1 == 42)
        #expect(state.calls.load(ordering: .acquiring) >= 2)
    }

    @Test("errno is the failed call's, even when the failure test changes it afterwards")
    func capturesErrnoAtOnce() {
        let missing = "/nonexistent-\(getpid())"
        #expect(throws: SystemError("opendir", on: missing, errno: ENOENT)) {
            try systemCall("opendir", on: missing, failed: { (dir: OpaquePointer?) in
                errno = ENOTTY
                return dir == nil
            }) { opendir(missing) }
        }
        let error = #expect(throws: SystemError.self) { try systemCall("lseek", on: "a pipe") { lseek(-1, 0, SEEK_SET) } }
        #expect(error == SystemError("lseek", on: "a pipe", errno: EBADF))
        #expect(error?.description == "lseek on a pipe: Bad file descriptor")
    }

    @Test("the variants return the call's result on success")
    func returnsResults() throws {
        let dir = try systemCall("opendir", on: "/", failed: { $0 == nil }) { opendir("/") }
        #expect(dir != nil)
        if let dir { _ = closedir(dir) }
        #expect(try systemCall("getpid", on: "-") { getpid() } == getpid())
    }

    @Test("readFully reads across short reads up to the end of the file, and at an offset")
    func readsFully() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { closeDescriptor(fds[0]) }
        let writeEnd = fds[1]
        Thread.detachNewThread {
            // Three writes, so the reader sees short reads, then the end.
            for chunk in ["ab", "cd", "e"] {
                try? writeFully(writeEnd, Array(chunk.utf8), path: "a pipe")
                usleep(20_000)
            }
            closeDescriptor(writeEnd)
        }
        var buffer = [UInt8](repeating: 0, count: 8)
        let n = try buffer.withUnsafeMutableBytes { try readFully(fds[0], into: $0, path: "a pipe") }
        #expect(n == 5 && Array(buffer[..<n]) == Array("abcde".utf8))

        let file = try FileHandle(path: "/proc/self/exe", flags: O_RDONLY)
        var magic = [UInt8](repeating: 0, count: 4)
        #expect(try magic.withUnsafeMutableBytes { try readFully(file.fd, into: $0, at: 1, path: file.path) } == 4)
        #expect(magic == Array("ELF".utf8) + [2])  // 64-bit
    }
}

private final class ReaderState: Sendable {
    let thread = Atomic<UInt>(0)
    let calls = Atomic(0)
    let result = Mutex<(Int, UInt8)?>(nil)
    let done = DispatchSemaphore(value: 0)
}
