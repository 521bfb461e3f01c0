import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// Crash recovery: a run killed with SIGKILL leaves its journal and its resources; `imgtool status`
/// shows them as stale, `imgtool cleanup` releases them (never a live session's), and a rerun then
/// installs an image that boots.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct SessionsTests {
    typealias JSON = [String: Any]

    /// Starts `imgtool install-grub image` (with `pathPrefix` first in PATH when given).
    func startInstall(_ image: String, pathPrefix: String? = nil, strategy: String? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: imgtoolPath)
        p.arguments = ["install-grub", image, "-q"] + (strategy.map { ["--strategy", $0] } ?? [])
        var env = ProcessInfo.processInfo.environment
        if let pathPrefix { env["PATH"] = pathPrefix + ":" + (env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin") }
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    func status() throws -> [JSON] {
        let r = try imgtool(["status", "--json"])
        return try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? [JSON], "\(r.stderr)")
    }

    /// Waits until a mount of ours shows up (the run reached grub-install's step).
    func waitForMount(timeout: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if Mount.mountPoints().contains(where: { $0.hasPrefix(TemporaryDirectory.defaultParent + "/mnt-") }) { return true }
            usleep(20_000)
        }
        return false
    }

    @Test("SIGKILL during grub-install: status shows the stale session and all it holds; cleanup --all releases it")
    func killedDuringGrubInstall() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt"])
        let process = try startInstall(image, pathPrefix: try fakeGrubInstall(scratch, script: "exec sleep 30"))
        #expect(waitForMount())
        let live = try status()
        #expect(live.count == 1 && live[0]["live"] as? Bool == true && live[0]["pid"] as? Int == Int(process.processIdentifier))
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()

        let stale = try #require(try status().first)
        #expect(stale["live"] as? Bool == false && stale["image"] as? String == image)
        let kinds = Set((stale["holds"] as? [JSON] ?? []).compactMap { $0["kind"] as? String })
        #expect(kinds == ["loop", "partition", "mount", "directory"], "\(stale)")
        #expect(!leftovers().isEmpty)

        let r = try imgtool(["cleanup", "--all"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(leftovers() == [])
        #expect(try status().isEmpty)
        #expect(try imgtool(["install-grub", image, "-q"]).status == 0)
        #expect(leftovers() == [])
        // The device.map the killed run wrote for grub-install (naming its loop device) is gone too.
        let map = try imgtool(["cat", image, "/boot/grub/device.map"])
        #expect(map.status != 0 && map.stderr.contains("does not exist"), "\(map.stdout)\(map.stderr)")
    }

    /// A kill between creating the journal and writing its first line left an empty journal that
    /// cleanup did not recognise (found by the random kills below, at kill 41 of 50).
    @Test("a journal killed before its first line is a stale session that cleanup removes")
    func emptyJournal() throws {
        for dir in [TemporaryDirectory.defaultParent, SessionJournal.directory] { mkdir(dir, 0o700) }
        let path = SessionJournal.directory + "/0badc0de.journal"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        #expect(fd >= 0)
        close(fd)
        let stale = try status().first { $0["id"] as? String == "0badc0de" }
        #expect(stale?["live"] as? Bool == false, "\(String(describing: stale))")
        #expect(try imgtool(["cleanup", "--all"]).status == 0)
        #expect(access(path, F_OK) != 0)
        #expect(leftovers() == [])
    }

    @Test("a live session is never touched: cleanup --all leaves it, and it ends cleanly by itself")
    func liveSessionUntouched() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let process = try startInstall(image, pathPrefix: try fakeGrubInstall(scratch, script: "exec sleep 3"))
        #expect(waitForMount())
        let held = leftovers()
        let r = try imgtool(["cleanup", "--all", "--json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON)
        #expect(r.status == 0 && (json["live"] as? [String])?.count == 1 && (json["released"] as? [String]) == [])
        #expect(leftovers() == held)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(leftovers() == [])
    }

    @Test("a busy mount is reported with the pid holding it and kept; --force detaches it lazily")
    func busyMount() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let process = try startInstall(image, pathPrefix: try fakeGrubInstall(scratch, script: "exec sleep 30"))
        #expect(waitForMount())
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let mountPoint = try #require(Mount.mountPoints().first { $0.hasPrefix(TemporaryDirectory.defaultParent + "/mnt-") })
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/bin/sleep")
        holder.arguments = ["30"]
        holder.currentDirectoryURL = URL(fileURLWithPath: mountPoint)
        try holder.run()
        defer { holder.terminate(); holder.waitUntilExit() }

        let busy = try imgtool(["cleanup", "--all"])
        #expect(busy.status == 1)
        #expect(busy.stderr.contains("held by pid \(holder.processIdentifier)"), "\(busy.stderr)")
        #expect(Mount.isMountPoint(mountPoint))
        let forced = try imgtool(["cleanup", "--all", "--force"])
        #expect(forced.status == 0, "\(forced.stderr)")
        holder.terminate()
        holder.waitUntilExit()
        // A lazily detached mount goes once its last user has; the loop device follows it.
        let deadline = Date().addingTimeInterval(10)
        while !leftovers().isEmpty && Date() < deadline {
            _ = try? imgtool(["cleanup", "--all"])
            usleep(100_000)
        }
        #expect(leftovers() == [])
    }

    @Test("a mount kept busy at teardown: the run names the pid and exits 1, the session stays for cleanup")
    func busyAtTeardown() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        // A grub-install that leaves a process behind with its working directory on the mount.
        let marker = scratch.file("holder.pid")
        let bin = try fakeGrubInstall(scratch, script: """
            for a in "$@"; do case $a in --boot-directory=*) dir=${a#--boot-directory=};; esac; done
            setsid sh -c "cd '$dir' && echo \\$\\$ > '\(marker)' && exec sleep 30" </dev/null >/dev/null 2>&1 &
            while [ ! -s '\(marker)' ]; do sleep 0.05; done
            """)
        let r = try Subprocess.run(["env", "PATH=\(bin):/usr/sbin:/usr/bin:/sbin:/bin", imgtoolPath, "install-grub", image, "-q"])
        let holder = try #require(Int32(try String(contentsOfFile: marker, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { kill(holder, SIGKILL) }
        #expect(r.status == 1)
        #expect(r.stderr.contains("is busy: pid \(holder)") && r.stderr.contains("imgtool cleanup"), "\(r.stderr)")
        let stale = try #require(try status().first)
        #expect(stale["live"] as? Bool == false)
        #expect((stale["holds"] as? [JSON] ?? []).contains { $0["kind"] as? String == "mount" })
        kill(holder, SIGKILL)
        usleep(200_000)
        #expect(try imgtool(["cleanup", "--all"]).status == 0)
        #expect(leftovers() == [])
    }

    /// SIGKILL at 50 points spread over a real install (both strategies this kernel has); after
    /// each, cleanup leaves nothing and a rerun installs an image that boots.
    @Test("SIGKILL at 50 random points: cleanup leaves nothing of ours, and a rerun boots")
    func randomKills() throws {
        let scratch = try Scratch()
        let pristine = try makeDisk(scratch.file("pristine.img"), ["--label", "dos", "--marker", "KILLTEST"])
        // How long each strategy's run takes here, to spread the kills over it: the fastest of three
        // warm runs, started the way the killed runs are.
        let image = scratch.file("disk.img")
        let strategies = ["blkpg", "offset"]
        var duration: [String: TimeInterval] = [:]
        for strategy in strategies {
            for _ in 0..<3 {
                try run(["cp", pristine, image])
                let started = Date()
                let process = try startInstall(image, strategy: strategy)
                process.waitUntilExit()
                #expect(process.terminationStatus == 0)
                duration[strategy] = min(duration[strategy] ?? .infinity, Date().timeIntervalSince(started))
            }
        }
        // A run that ends before its kill shows this machine is faster than measured (or was slowed
        // while measuring: CI once measured 0.71 s for a run that mostly took less): the span shrinks
        // to that run's bound, and the kill is tried again, so all 50 land while the run is going.
        var generator = SystemRandomNumberGenerator()
        var killedMidway = 0, attempts = 0, endedFirst: [String] = []
        while killedMidway < 50 && attempts < 100 {
            let strategy = strategies[killedMidway % 2]
            attempts += 1
            try run(["cp", pristine, image])
            let process = try startInstall(image, strategy: strategy)
            let delay = Double.random(in: 0...(0.9 * duration[strategy]!), using: &generator)
            usleep(UInt32(delay * 1_000_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            if process.terminationReason == .uncaughtSignal {
                killedMidway += 1
            } else {
                // Only a run that completed narrows the span, so it never falls below a real run's time.
                #expect(process.terminationStatus == 0, "attempt \(attempts) ended by itself, but failed")
                endedFirst.append("\(strategy) before \((delay * 1000).rounded()) ms")
                duration[strategy] = delay
            }
            let r = try imgtool(["cleanup", "--all"])
            #expect(r.status == 0, "attempt \(attempts): \(r.stderr)")
            #expect(leftovers() == [], "attempt \(attempts)")
            #expect(try imgtool(["install-grub", image, "-q", "--strategy", strategy]).status == 0, "rerun \(attempts)")
            #expect(try boot(image, expect: "KILLTEST", timeout: 30).found, "boot after attempt \(attempts)")
        }
        print("random kills: 50 wanted mid-run, \(killedMidway) landed in \(attempts) attempts; runs that ended first: \(endedFirst)")
        // Not vacuous: every counted kill hit a run still going.
        #expect(killedMidway == 50, "only \(killedMidway) of \(attempts) kills landed before the run ended: \(endedFirst)")
    }
}

/// Runs side by side: each has its own session, loop devices and mount points; one image, one run.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct ConcurrentRunsTests {
    @Test("8 installs at once on 8 images: all succeed and boot, nothing is left")
    func eightAtOnce() throws {
        let scratch = try Scratch()
        var images: [String] = []
        for i in 0..<8 {
            images.append(try makeDisk(scratch.file("disk\(i).img"), ["--label", i % 2 == 0 ? "dos" : "gpt", "--marker", "PARALLEL\(i)"]))
        }
        let processes = try images.map { image in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: imgtoolPath)
            p.arguments = ["install-grub", image, "-q"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            return p
        }
        for p in processes { p.waitUntilExit() }
        #expect(processes.map(\.terminationStatus) == Array(repeating: 0, count: 8))
        #expect(leftovers() == [])
        for (i, image) in images.enumerated() {
            #expect(try boot(image, expect: "PARALLEL\(i)", timeout: 30).found, "image \(i)")
        }
    }

    @Test("a second run on the same image fails at once, naming the first's process and session")
    func sameImageTwice() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let bin = try fakeGrubInstall(scratch, script: "exec sleep 5")
        let first = Process()
        first.executableURL = URL(fileURLWithPath: imgtoolPath)
        first.arguments = ["install-grub", image, "-q"]
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = bin + ":" + (env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin")
        first.environment = env
        first.standardError = FileHandle.nullDevice
        try first.run()
        defer { first.terminate(); first.waitUntilExit() }
        let deadline = Date().addingTimeInterval(20)
        var session: String?
        while session == nil && Date() < deadline {
            let r = try imgtool(["status", "--json"])
            let list = (try? JSONSerialization.jsonObject(with: Data(r.output)) as? [[String: Any]]) ?? []
            session = list.first { $0["live"] as? Bool == true }?["id"] as? String
            if session == nil { usleep(20_000) }
        }
        let id = try #require(session)
        let started = Date()
        let second = try imgtool(["install-grub", image, "-q"])
        #expect(second.status == 75)
        #expect(second.stderr.contains("process \(first.processIdentifier)") && second.stderr.contains("session \(id)"), "\(second.stderr)")
        #expect(Date().timeIntervalSince(started) < 2, "it must not wait for the first run")
    }
}
