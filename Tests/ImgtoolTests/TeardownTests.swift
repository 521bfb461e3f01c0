import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// Teardown when the job fails or is stopped: the error reaches the user, the exit code says what
/// happened, and nothing stays attached or mounted.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct TeardownTests {
    /// The MBR and the post-MBR gap (the first MiB), where grub-install writes boot code.
    func sha256OfHead(_ image: String) throws -> String {
        String(try run(["sh", "-c", "head -c 1048576 \(image) | sha256sum"]).stdout.prefix(64))
    }

    /// Starts imgtool with `path` prepended to PATH; returns the process and its stderr pipe.
    func start(_ arguments: [String], pathPrefix: String) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: imgtoolPath)
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = pathPrefix + ":" + (env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin")
        p.environment = env
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        return (p, err)
    }

    /// Reads stderr until `text` shows up (or EOF), returning what was read.
    func readUntil(_ pipe: Pipe, _ text: String) -> String {
        var seen = ""
        while !seen.contains(text) {
            let data = pipe.fileHandleForReading.availableData
            if data.isEmpty { break }
            seen += String(decoding: data, as: UTF8.self)
        }
        return seen
    }

    @Test("a signal during grub-install stops it, tears everything down and exits 128+N",
          arguments: [(SIGTERM, 1), (SIGINT, 1), (SIGHUP, 1), (SIGTERM, 2)])
    func signalDuringGrubInstall(signal: Int32, times: Int) throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let before = try sha256OfHead(image)
        // The fake grub-install ignores nothing: the SIGTERM imgtool sends its process group ends it.
        let bin = try fakeGrubInstall(scratch, script: "sleep 30")
        let (process, stderr) = try start(["install-grub", image], pathPrefix: bin)
        let seen = readUntil(stderr, "running grub-install")
        #expect(seen.contains("running grub-install"), "stderr: \(seen)")
        let sent = Date()
        for _ in 0..<times { kill(process.processIdentifier, signal) }
        process.waitUntilExit()
        let rest = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(Date().timeIntervalSince(sent) < 10)
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 128 + signal)
        #expect(rest.contains("interrupted by"), "stderr: \(rest)")
        #expect(leftovers() == [])
        // Mounting changed the filesystem's superblock, but no boot code may have been written,
        // and the device.map imgtool wrote for grub-install must be gone again.
        #expect(try sha256OfHead(image) == before, "the MBR and post-MBR gap changed")
        let map = try Subprocess.run(["debugfs", "-R", "stat /boot/grub/device.map", "\(image)?offset=1048576"])
        #expect(map.stderr.contains("File not found"), "device.map left behind: \(map.stdout)")
    }

    @Test("a failing grub-install: its stderr is shown, exit 1, nothing left")
    func grubInstallFails() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt"])
        let bin = try fakeGrubInstall(scratch, script: "echo 'grub-install: error: simulated failure for the test.' >&2; exit 1")
        let (process, stderr) = try start(["install-grub", image], pathPrefix: bin)
        let text = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 1)
        #expect(text.contains("imgtool: error: grub-install failed (exit 1):\ngrub-install: error: simulated failure for the test."), "stderr: \(text)")
        #expect(leftovers() == [])
    }

    @Test("a /boot that is a symbolic link in the image is refused, not followed onto the host")
    func bootSymlinkRefused() throws {
        let scratch = try Scratch()
        let image = scratch.file("disk.img")
        try run(["truncate", "-s", "32M", image])
        try run(["sh", "-c", "echo 'start=2048, type=83' | sfdisk -q \(image)"])
        try run(["mkfs.ext4", "-q", "-F", "-E", "offset=1048576", image, "31744"])
        let target = scratch.file("host-dir")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try run(["debugfs", "-w", "-R", "symlink boot \(target)", "\(image)?offset=1048576"])
        let r = try imgtool(["install-grub", image])
        #expect(r.status == ImgKit.ExitStatus.badImage.rawValue)
        #expect(r.stderr.contains("/boot in the boot filesystem is not a directory"), "stderr: \(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: target) == [])
        #expect(leftovers() == [])
    }

    @Test("the library reports an interruption that came before it started, and acquires nothing")
    func interruptedBeforeStart() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let interruption = Interruption()
        interruption.interrupt(signal: SIGTERM)
        #expect {
            try InstallGrub.run(.init(image: image), logger: .init(label: "test"), interruption: interruption)
        } throws: { error in
            guard case .interrupted(SIGTERM) = error as? InstallGrubError else { return false }
            return (error as! InstallGrubError).exitCode == 143
        }
        #expect(leftovers() == [])
    }
}
