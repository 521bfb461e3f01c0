import Foundation
import Glibc
@testable import ImgKit
import ImgSystem
import ImgVM
import Testing
import TestSupport

/// What `IsolatedVM` needs on the host; nil when all is there (CI installs it: qemu-system-x86,
/// linux-image-cloud-amd64, busybox-static).
let isolatedVMBlocked: String? = {
    if !commandExists("qemu-system-x86_64") { return "needs qemu-system-x86" }
    if access("/bin/busybox", X_OK) != 0 { return "needs busybox-static" }
    let kernels = directoryEntries("/boot").filter { $0.hasPrefix("vmlinuz-") && $0.hasSuffix("-cloud-amd64") }
    return kernels.isEmpty ? "needs linux-image-cloud-amd64" : nil
}()

/// Commands in a throwaway VM (TCG here): exit status and outputs come back exactly, the image is
/// the VM's disk (read-only when asked), imgtool itself runs inside, device mapper is there, and a
/// VM that overruns its timeout or is interrupted is killed without a trace.
@Suite(.serialized, .enabled(if: isolatedVMBlocked == nil, "\(isolatedVMBlocked ?? "")"))
final class IsolatedVMTests {
    let scratch: Scratch
    /// Extracted kernels and the KVM verdict, private to each test so nothing outlives it.
    let options: IsolatedVM.Options

    init() throws {
        scratch = try Scratch()
        var o = IsolatedVM.Options()
        o.cacheDirectory = scratch.file("cache")
        options = o
    }

    deinit {
        #expect(Self.leftovers() == [], "after the test")
    }

    /// qemu processes and temp dirs of IsolatedVM's still around.
    static func leftovers() -> [String] {
        var found: [String] = []
        let tmp = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        for name in directoryEntries(tmp) where name.hasPrefix(KernelVM.temporaryPrefix) {
            found.append("directory \(tmp)/\(name)")
        }
        for name in directoryEntries("/proc") where Int(name) != nil {
            let cmdline = String(decoding: (try? readFile("/proc/\(name)/cmdline")) ?? [], as: UTF8.self)
            if cmdline.contains("qemu-system"), cmdline.contains(KernelVM.temporaryPrefix) { found.append("qemu pid \(name)") }
        }
        return found
    }

    func sh(_ script: String, image: String? = nil, readOnly: Bool = true, timeout: Double = 60,
            options: IsolatedVM.Options? = nil) throws(IsolatedVM.Error) -> IsolatedVM.Result {
        try IsolatedVM.run(command: ["sh", "-c", script], image: image, readOnly: readOnly, timeout: timeout,
                           options: options ?? self.options)
    }

    @Test("exit status, stdout and stderr come back separately and exactly")
    func statusAndOutputs() throws {
        let r = try sh("printf 'to stdout\\n'; printf 'to stderr' >&2; printf 'more\\n'; exit 3")
        #expect(r.status == 3)
        #expect(String(decoding: r.stdout, as: UTF8.self) == "to stdout\nmore\n")
        #expect(String(decoding: r.stderr, as: UTF8.self) == "to stderr")

        let quiet = try IsolatedVM.run(command: ["/bin/true"], options: options)
        #expect(quiet.status == 0 && quiet.stdout.isEmpty && quiet.stderr.isEmpty)
        print("IsolatedVM.run([\"/bin/true\"]): \(quiet.seconds) s wall, \(quiet.vmSeconds) s in qemu (\(quiet.accelerator))")
        // KVM only after a trial says it works; the verdict is kept in the cache (none without /dev/kvm).
        let verdicts = try listDirectory(options.cacheDirectory!).filter { $0.hasPrefix("kvm-") }
        #expect(verdicts.count == (KernelVM.kvmDeviceAvailable() ? 1 : 0))
        if let verdict = verdicts.first {
            let usable = String(decoding: try readFile(options.cacheDirectory! + "/" + verdict), as: UTF8.self) == "usable\n"
            #expect(quiet.accelerator == (usable ? .kvm : .tcg))
        } else {
            #expect(quiet.accelerator == .tcg)
        }

        // Arguments arrive as they were: quotes, spaces, newlines, $ and backslashes untouched.
        let tricky = ["it's", "a b", "line\nbreak", "$HOME", "back\\slash", "", "*"]
        let echo = try IsolatedVM.run(command: ["/bin/busybox", "printf", "[%s]"] + tricky, options: options)
        #expect(String(decoding: echo.stdout, as: UTF8.self) == tricky.map { "[\($0)]" }.joined())

        let missing = try IsolatedVM.run(command: ["no-such-command"], options: options)
        #expect(missing.status == 127)
        #expect(String(decoding: missing.stderr, as: UTF8.self).contains("no-such-command"))

        let killed = try sh("kill -9 $$")
        #expect(killed.status == 137)
    }

    @Test("data directories and extra executables arrive at their host paths, with their libraries")
    func dataAndExecutables() throws {
        let data = scratch.file("data")
        #expect(mkdir(data, 0o755) == 0 && mkdir(data + "/sub", 0o700) == 0)
        try writeFile(data + "/sub/file", Array("payload\n".utf8))
        chmod(data + "/sub/file", 0o640)
        #expect(symlink("sub/file", data + "/link") == 0)
        // coreutils' sha256sum: a dynamic executable that is not busybox's applet.
        let sha256sum = "/usr/bin/sha256sum"
        var o = options
        o.dataDirectories = [data]
        o.executables = [sha256sum]
        let r = try sh("cat \(data)/link; readlink \(data)/link; stat -c %a \(data)/sub \(data)/sub/file; \(sha256sum) \(data)/sub/file",
                       options: o)
        #expect(r.status == 0, "\(String(decoding: r.stderr, as: UTF8.self))")
        let host = try run([sha256sum, data + "/sub/file"]).stdout
        #expect(String(decoding: r.stdout, as: UTF8.self) == "payload\nsub/file\n700\n640\n" + host)
    }

    @Test("binary output is byte-exact: the image read back through stdout and stderr")
    func binaryOutput() throws {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<(4 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        // Runs of every byte value and of zeros too, which a line discipline or a lossy pipe would mangle.
        for i in 0..<4096 { bytes[i] = UInt8(i % 256) }
        for i in 4096..<8192 { bytes[i] = 0 }
        let image = scratch.file("random.img")
        try writeFile(image, bytes)

        let r = try sh("dd if=/dev/vda bs=1M count=3 2>/dev/null; dd if=/dev/vda bs=1M skip=3 >&2 2>/dev/null", image: image)
        #expect(r.status == 0)
        #expect(r.stdout.count == 3 << 20 && r.stdout == Array(bytes[..<(3 << 20)]))
        #expect(r.stderr.count == 1 << 20 && r.stderr == Array(bytes[(3 << 20)...]))
    }

    @Test("read-only means the guest cannot write; read-write writes reach the image")
    func readOnlyAndReadWrite() throws {
        let image = scratch.file("rw.img")
        try writeFile(image, [UInt8](repeating: 0, count: 1 << 20))
        let before = try sha256(image)

        let refused = try sh("cat /sys/block/vda/ro; printf 'XYZ' | dd of=/dev/vda conv=notrunc,fsync 2>/dev/null", image: image)
        #expect(String(decoding: refused.stdout, as: UTF8.self) == "1\n")
        #expect(refused.status != 0)
        #expect(try sha256(image) == before)

        let written = try sh("printf 'XYZ' | dd of=/dev/vda bs=512 seek=1 conv=notrunc,fsync 2>/dev/null", image: image, readOnly: false)
        #expect(written.status == 0)
        let after = try readFile(image)
        #expect(Array(after[512..<515]) == Array("XYZ".utf8))
    }

    /// The debug build of imgtool, with its Swift runtime libraries found by ldd, inspects the image
    /// as /dev/vda and reports what it reports on the host, but for the image's path.
    @Test("imgtool inspect --json inside gives the host's report")
    func inspectInside() throws {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--fs", "ext4"])
        let host = try imgtool(["inspect", "--json", image])
        #expect(host.status == 0, "\(host.stderr)")

        let inside = try IsolatedVM.run(command: [imgtoolPath, "inspect", "--json", "/dev/vda"], image: image,
                                        options: options)
        #expect(inside.status == 0, "\(String(decoding: inside.stderr, as: UTF8.self))")
        print("imgtool inspect --json in the VM: \(inside.seconds) s wall, \(inside.vmSeconds) s in qemu")
        // --isolate must put the host's path back; here the test does.
        let fromVM = String(decoding: inside.stdout, as: UTF8.self)
            .replacingOccurrences(of: "\"/dev/vda\"", with: "\"\(image)\"")
        #expect(fromVM == host.stdout)

        // A fully static imgtool (make build) needs no libraries at all.
        let release = "\(repositoryRoot)/.build/release/imgtool"
        if access(release, X_OK) == 0 {
            let r = try IsolatedVM.run(command: [release, "inspect", "--json", "/dev/vda"], image: image, options: options)
            #expect(r.status == 0)
            #expect(String(decoding: r.stdout, as: UTF8.self).replacingOccurrences(of: "\"/dev/vda\"", with: "\"\(image)\"")
                    == host.stdout)
        }
    }

    @Test("device mapper is there once dm_mod is loaded")
    func deviceMapper() throws {
        var o = options
        o.modules = ["dm_mod", "loop"]
        let r = try sh("test -c /dev/mapper/control && test -c /dev/loop-control && echo ok; grep -c device-mapper /proc/devices",
                       options: o)
        #expect(r.status == 0, "\(String(decoding: r.stderr, as: UTF8.self))")
        #expect(String(decoding: r.stdout, as: UTF8.self) == "ok\n1\n")
    }

    @Test("a command that overruns the timeout is killed and reported with the console")
    func timeout() throws {
        let started = monotonicNow()
        var caught: IsolatedVM.Error?
        do {
            _ = try sh("echo started; sleep 300", timeout: 12)
        } catch {
            caught = error
        }
        guard case .timedOut(let seconds, let commandStarted, let console)? = caught else {
            Issue.record("sleep 300 in a 12 s VM ended with \(String(describing: caught))")
            return
        }
        #expect(seconds == 12)
        #expect(commandStarted, "console: \(console)")
        #expect(console.contains { $0.hasPrefix("imgtool-vm: running command") })
        #expect(caught!.description.contains("The command did not finish within 12 s"))
        #expect(monotonicNow() - started < 20)
        #expect(Self.leftovers() == [])
    }

    /// Should imgtool die by SIGKILL, nobody kills qemu: the guest then powers off by itself at its
    /// deadline (the host's timeout plus a grace). Here the deadline is short and the host waits.
    @Test("an optional module the kernel lacks is left out; a required one is an error")
    func optionalModules() throws {
        var initramfs = Initramfs(kernelRelease: try CloudKernel.release(of: try CloudKernel.newest()))
        initramfs.optionalModules = ["loop", "imgtool_no_such_module"]
        let assembled = try initramfs.assemble()
        #expect(assembled.moduleLoadOrder.contains { $0.contains("/loop.ko") })
        initramfs.modules = ["imgtool_no_such_module"]
        #expect(throws: IsolatedVM.Error.self) { try initramfs.assemble() }
    }

    @Test("the guest powers itself off at its own deadline")
    func guestDeadline() throws {
        let kernel = try CloudKernel.newest()
        var initramfs = Initramfs(kernelRelease: try CloudKernel.release(of: kernel))
        initramfs.modules = ["virtio_pci"] + GuestProtocol.baseModules
        let archive = try initramfs.assemble().archive
        var c = KernelVM.Configuration(kernel: kernel, initrd: .bytes(archive), commandLine: GuestProtocol.kernelCommandLine(options.kernelArguments))
        c.outputPorts = GuestProtocol.outputPorts
        c.inputPorts = [(GuestProtocol.commandPort, GuestProtocol.commandMessage(["sleep", "300"], deadline: 2))]
        let outcome = try KernelVM.run(c, timeout: 60)
        #expect(outcome.ending == .exited(status: 0))
        #expect(outcome.seconds < 30)
        #expect(outcome.consoleTail(5).contains { $0.contains("the guest's deadline of 2 s passed") }, "\(outcome.consoleTail(5))")
        #expect(outcome.ports[GuestProtocol.statusPort] == [])
    }

    @Test("an interruption stops the VM at once")
    func interruption() throws {
        let interruption = Interruption()
        var o = options
        o.interruption = interruption
        let thread = JoinableThread { sleep(2); interruption.interrupt(signal: SIGINT) }
        defer { thread.join() }
        let started = monotonicNow()
        #expect(throws: IsolatedVM.Error.interrupted(signal: SIGINT)) { try self.sh("sleep 300", options: o) }
        #expect(monotonicNow() - started < 10)
        #expect(Self.leftovers() == [])
    }

    @Test("an interruption that ends qemu before the run sees it is still reported as the interruption")
    func interruptionEndsQemuFirst() throws {
        // A qemu that dies the instant the interruption's SIGTERM reaches it, so its exit is
        // usually seen before the interruption is (CI saw it once with the real qemu). PATH is
        // process-wide: this holds because the suite runs serialized, as the whole test run does.
        let bin = scratch.file("bin")
        #expect(mkdir(bin, 0o755) == 0)
        try writeFile("\(bin)/\(KernelVM.qemuProgram)", Array("#!/bin/sh\nexec sleep 300\n".utf8), mode: 0o755)
        let path = String(cString: getenv("PATH"))
        setenv("PATH", "\(bin):\(path)", 1)
        defer { setenv("PATH", path, 1) }
        let c = KernelVM.Configuration(kernel: "/proc/self/exe", initrd: .bytes([]), commandLine: "")
        for attempt in 1...20 {
            let interruption = Interruption()
            let thread = JoinableThread { usleep(UInt32.random(in: 100_000...150_000)); interruption.interrupt(signal: SIGINT) }
            defer { thread.join() }
            #expect(throws: KernelVM.Error.interrupted(signal: SIGINT), "attempt \(attempt)") {
                try KernelVM.run(c, timeout: 30, interruption: interruption)
            }
        }
        #expect(Self.leftovers() == [])
    }

    /// The saved VMs in this test's cache.
    func savedStates() throws -> [String] {
        try listDirectory(options.cacheDirectory!).filter { $0.hasPrefix(VMSnapshot.prefix) && $0.hasSuffix(".state") }
    }

    @Test("the first run saves the booted VM; later runs resume it and see the disk they are given")
    func resumesSavedVM() throws {
        let small = scratch.file("small.img"), large = scratch.file("large.img")
        try writeFile(small, Array("SMALL".utf8) + [UInt8](repeating: 0, count: (8 << 20) - 5))
        try writeFile(large, Array("LARGE".utf8) + [UInt8](repeating: 0, count: (24 << 20) - 5))
        let script = "blockdev --getsize64 /dev/vda; head -c 5 /dev/vda"

        let first = try sh(script, image: small)
        #expect(first.status == 0 && !first.resumed)
        #expect(String(decoding: first.stdout, as: UTF8.self) == "\(8 << 20)\nSMALL")
        let states = try savedStates()
        #expect(states.count == 1)
        var st = stat()
        #expect(stat("\(options.cacheDirectory!)/\(states.first ?? "")", &st) == 0 && st.st_mode & 0o777 == 0o600)

        // Another image, three times the size: the resumed guest probes it only now.
        let second = try sh(script, image: large)
        #expect(second.status == 0 && second.resumed)
        #expect(String(decoding: second.stdout, as: UTF8.self) == "\(24 << 20)\nLARGE")
        let third = try sh(script, image: small)
        #expect(third.resumed && String(decoding: third.stdout, as: UTF8.self) == "\(8 << 20)\nSMALL")
        print("IsolatedVM.run: booted and saved \(first.seconds) s, resumed \(second.seconds) s and \(third.seconds) s")
        #expect(try savedStates() == states)
    }

    @Test("a saved VM qemu cannot resume is replaced by a boot, and saved again")
    func corruptSavedVM() throws {
        #expect(try sh("true").status == 0)
        let states = try savedStates()
        #expect(states.count == 1)
        let path = "\(options.cacheDirectory!)/\(states.first ?? "")"
        #expect(truncate(path, 4096) == 0)

        let booted = try sh("echo ok")
        #expect(booted.status == 0 && !booted.resumed && String(decoding: booted.stdout, as: UTF8.self) == "ok\n")
        let resumed = try sh("echo ok")
        #expect(resumed.status == 0 && resumed.resumed)
    }

    @Test("a changed file in the VM retires its saved state")
    func changedFileRetiresSavedVM() throws {
        let data = scratch.file("data")
        #expect(mkdir(data, 0o755) == 0)
        try writeFile("\(data)/note", Array("one".utf8))
        var o = options
        o.dataDirectories = [data]
        let first = try sh("cat \(data)/note", options: o)
        #expect(String(decoding: first.stdout, as: UTF8.self) == "one" && !first.resumed)

        unlink("\(data)/note")
        try writeFile("\(data)/note", Array("two!".utf8))
        let second = try sh("cat \(data)/note", options: o)
        #expect(String(decoding: second.stdout, as: UTF8.self) == "two!" && !second.resumed)
        // A file added to the directory changes it too.
        try writeFile("\(data)/more", Array("three".utf8))
        let third = try sh("cat \(data)/more", options: o)
        #expect(String(decoding: third.stdout, as: UTF8.self) == "three" && !third.resumed)
        let fourth = try sh("cat \(data)/more", options: o)
        #expect(fourth.resumed)
        #expect(try savedStates().count == 1)
    }

    @Test("at most three saved VMs are kept, the least recently used dropped first")
    func savedVMsAreBounded() throws {
        // Four kinds of VM, each with another data file: four keys.
        var kinds: [IsolatedVM.Options] = []
        for i in 0..<4 {
            let file = scratch.file("kind\(i)")
            try writeFile(file, Array("\(i)".utf8))
            var o = options
            o.dataFiles = [file]
            kinds.append(o)
        }
        // Use times are kept in seconds: a second between uses orders them.
        for i in 0..<3 {
            #expect(try !sh("true", options: kinds[i]).resumed)
            sleep(1)
        }
        #expect(try sh("true", options: kinds[0]).resumed)
        sleep(1)
        // 1 is now the least recently used, and goes when 3 is saved.
        #expect(try !sh("true", options: kinds[3]).resumed)
        #expect(try savedStates().count == 3)
        #expect(try sh("true", options: kinds[0]).resumed)
        #expect(try sh("true", options: kinds[2]).resumed)
        #expect(try sh("true", options: kinds[3]).resumed)
        #expect(try !sh("true", options: kinds[1]).resumed)
    }

    @Test("a resumed VM whose command overruns the timeout is killed and reported")
    func resumedTimeout() throws {
        #expect(try sh("true").status == 0)
        let started = monotonicNow()
        do {
            _ = try sh("echo started; sleep 300", timeout: 8)
            Issue.record("sleep 300 finished in an 8 s VM")
        } catch {
            guard case .timedOut(_, let commandStarted, let console) = error else {
                Issue.record("ended with \(error)")
                return
            }
            #expect(commandStarted)
            // Resumed, not booted: /init said it was waiting before the VM was saved, not since.
            #expect(!console.contains { $0.contains(GuestProtocol.waitingMarker) }, "\(console)")
        }
        #expect(monotonicNow() - started < 15)
        #expect(Self.leftovers() == [])
    }

    @Test("missing pieces are named with the Debian package to install")
    func missingPieces() throws {
        #expect(throws: IsolatedVM.Error.emptyCommand) { try IsolatedVM.run(command: [], options: self.options) }
        do {
            _ = try IsolatedVM.run(command: ["true"], kernel: scratch.file("no-kernel"), options: options)
            Issue.record("a missing kernel was accepted")
        } catch {
            #expect(error.description.contains("linux-image-cloud-amd64"))
        }
        var o = options
        o.busybox = scratch.file("no-busybox")
        #expect(throws: IsolatedVM.Error.busyboxMissing(o.busybox)) { try IsolatedVM.run(command: ["true"], options: o) }
        #expect(IsolatedVM.Error.busyboxMissing("/bin/busybox").description.contains("busybox-static"))
        #expect(IsolatedVM.Error.qemuMissing.description.contains("qemu-system-x86"))
        do {
            _ = try IsolatedVM.run(command: ["true"], image: scratch.file("no-image"), options: options)
            Issue.record("a missing image was accepted")
        } catch {
            #expect(error.description.contains("no-image"))
        }
    }
}

/// A joinable pthread for the interruption test.
final class JoinableThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<JoinableThread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, box)
    }

    func join() { pthread_join(thread, nil) }
}
