import Foundation
import Glibc
import ImgSystem
import Synchronization

/// The repository's top directory, found from this file's path.
public let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/TestSupport/TestSupport.swift
    return parts.joined(separator: "/")
}()

public var isRoot: Bool { geteuid() == 0 }

public func commandExists(_ name: String) -> Bool { Subprocess.find(name) != nil }

/// Why a kernel test cannot run here, or nil if it can. CI installs everything, so only a
/// non-root developer run should ever see a reason.
public let kernelTestsBlocked: String? = {
    if !isRoot { return "needs root (loop devices, mounts)" }
    if access("/dev/loop-control", R_OK | W_OK) != 0 { return "needs /dev/loop-control" }
    return nil
}()

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A scratch directory for one test, removed with everything in it when released; refuses to
/// remove anything while a mount sits below it.
public final class Scratch: @unchecked Sendable {
    public let path: String
    private let directory: TemporaryDirectory

    public init() throws {
        directory = try TemporaryDirectory(parent: "/tmp", prefix: "imgtool-test-")
        path = directory.path
        chmod(path, 0o755)  // so the non-root tests can reach images in here
    }

    public func file(_ name: String) -> String { "\(path)/\(name)" }

    deinit {
        guard !Mount.mountPoints().contains(where: { $0.hasPrefix(path + "/") || $0 == path }) else { return }
        _ = try? Subprocess.run(["rm", "-rf", "--one-file-system", path])
    }
}

/// Runs a command and fails with its stderr when it fails.
@discardableResult
public func run(_ arguments: [String]) throws -> Subprocess.Result {
    let r = try Subprocess.run(arguments)
    guard r.succeeded else {
        throw TestFailure("\(arguments.joined(separator: " ")) failed (\(r.status)): \(r.stderr)")
    }
    return r
}

/// TestImages/make-disk.sh OUT ARGS...; returns OUT.
@discardableResult
public func makeDisk(_ out: String, _ arguments: [String]) throws -> String {
    try run(["\(repositoryRoot)/TestImages/make-disk.sh", out] + arguments)
    return out
}

/// The findings of a `verify --boot --json` document that say the boot overruled the static
/// verdict: each is a bug in verify's static checks, so every boot test expects none.
public func bootDisagreements(_ verifyJSON: [String: Any]) -> [String] {
    let efi = verifyJSON["efi"] as? [String: Any]
    let findings = (verifyJSON["problems"] as? [[String: Any]] ?? []) + (efi?["problems"] as? [[String: Any]] ?? [])
    return findings.compactMap { $0["message"] as? String }.filter { $0.contains("the verdict follows the boot") }
}

/// Boots `image` under qemu (TCG, copy-on-write) and returns what GRUB printed on the serial
/// console, and whether `expect` appeared. Every image the suite boots is also a test of verify:
/// when `expect` appears (GRUB read its grub.cfg), verify's static verdict must be "bootable";
/// if it disagrees, `found` is false and the console says why, so the test fails.
public func boot(_ image: String, expect: String, timeout: Int = 60, firmware: String = "bios",
                 sectorSize: Int = 512) throws -> (found: Bool, console: String) {
    let r = try Subprocess.run(["\(repositoryRoot)/TestImages/boot.sh", image, "--timeout", "\(timeout)",
                                "--expect", expect, "--firmware", firmware, "--sector-size", "\(sectorSize)"])
    guard r.succeeded else { return (false, r.stdout + r.stderr) }
    let verdict = try imgtool(["verify", image])
    guard verdict.status == 0 else {
        return (false, r.stdout + r.stderr + "\nThe image booted to \(expect), but verify's static verdict disagrees (exit \(verdict.status)):\n\(verdict.stdout)\(verdict.stderr)")
    }
    return (true, r.stdout + r.stderr)
}

/// The imgtool executable built alongside the tests (IMGTOOL overrides).
public var imgtoolPath: String {
    if let p = getenv("IMGTOOL") { return String(cString: p) }
    for config in ["debug", "release"] {
        let p = "\(repositoryRoot)/.build/\(config)/imgtool"
        if access(p, X_OK) == 0 { return p }
    }
    return "\(repositoryRoot)/.build/debug/imgtool"
}

/// A 48 MiB dos image at `image` whose one partition holds a separate /boot filesystem (ext4):
/// grub/ at its top with a grub.cfg that prints `marker` on the serial console, and no boot/.
/// Made with sfdisk, mkfs.ext4 and debugfs, without mounting.
@discardableResult
public func makeSeparateBootDisk(_ image: String, marker: String) throws -> String {
    let offset = "\(image)?offset=1048576"
    try run(["truncate", "-s", "48M", image])
    try run(["sh", "-c", "echo 'start=2048, type=83' | sfdisk -q '\(image)'"])
    try run(["mkfs.ext4", "-q", "-F", "-E", "offset=1048576", image, "48128"])
    let cfg = image + ".grub.cfg"
    try writeFile(cfg, Array("serial --unit=0 --speed=115200\nterminal_output serial\necho \(marker)\nhalt\n".utf8))
    defer { unlink(cfg) }
    try run(["debugfs", "-w", "-R", "mkdir /grub", offset])
    try run(["debugfs", "-w", "-R", "write \(cfg) /grub/grub.cfg", offset])
    return image
}

/// Runs imgtool with `arguments`; `user` runs it as that uid/gid via setpriv.
public func imgtool(_ arguments: [String], user: UInt32? = nil) throws -> Subprocess.Result {
    guard let user else { return try Subprocess.run([imgtoolPath] + arguments) }
    return try Subprocess.run(asUser(user) + [try imgtoolPath(reachableBy: user)] + arguments)
}

/// setpriv's prefix that runs a command as `user` (uid and gid), without supplementary groups.
public func asUser(_ user: UInt32) -> [String] {
    ["setpriv", "--reuid=\(user)", "--regid=\(user)", "--clear-groups", "--"]
}

/// `imgtoolPath`, or where `user` can run it: a clone in a directory others cannot enter (a
/// fresh `mktemp -d`, /root) hides the built executable from them, so it is copied once per test
/// process into a world-readable directory, removed when the process exits.
public func imgtoolPath(reachableBy user: UInt32) throws -> String {
    try reachablePaths.withLock { paths throws -> String in
        if let path = paths[user] { return path }
        let check = try Subprocess.run(asUser(user) + ["test", "-x", imgtoolPath, "-a", "-r", imgtoolPath])
        let path = check.succeeded ? imgtoolPath : try paths.values.first { $0 != imgtoolPath } ?? reachableCopy()
        paths[user] = path
        return path
    }
}

/// A copy of imgtool in a world-readable directory, kept for the process's life.
private func reachableCopy() throws -> String {
    let directory = try TemporaryDirectory(parent: "/tmp", prefix: "imgtool-test-exe-")
    reachableCopyDirectory = directory
    atexit { if let dir = reachableCopyDirectory?.path { _ = try? Subprocess.run(["rm", "-rf", dir]) } }
    chmod(directory.path, 0o755)
    try run(["install", "-m", "0755", imgtoolPath, directory.path + "/imgtool"])
    return directory.path + "/imgtool"
}

/// Per user: the imgtool that user can run, decided once (each check spawns setpriv).
private let reachablePaths = Mutex<[UInt32: String]>([:])
/// The copy's directory, kept for the process's life and removed by the exit handler, which can
/// capture nothing.
nonisolated(unsafe) private var reachableCopyDirectory: TemporaryDirectory?

public func sha256(_ path: String) throws -> String {
    String(try run(["sha256sum", path]).stdout.prefix(64))
}

/// What imgtool left behind that it should not have: loop devices carrying its tag, mounts and
/// directories under /run/imgtool.
public func leftovers() -> [String] {
    var found: [String] = []
    for name in directoryEntries("/sys/block") where name.hasPrefix("loop") && Int(name.dropFirst(4)) != nil {
        if let tag = try? LoopDevice.fileName(ofDevice: "/dev/\(name)"), tag.hasPrefix(ResourceMarks.loopTagPrefix) {
            found.append("loop device /dev/\(name) (\(tag))")
        }
    }
    found += Mount.mountPoints().filter { $0.hasPrefix(TemporaryDirectory.defaultParent + "/") }.map { "mount \($0)" }
    for name in directoryEntries(TemporaryDirectory.defaultParent) {
        // The journal directory itself stays; a journal in it is a session that did not end cleanly.
        let path = "\(TemporaryDirectory.defaultParent)/\(name)"
        if path == SessionJournal.directory {
            found += directoryEntries(path).map { "session journal \(path)/\($0)" }
        } else {
            found.append("directory \(path)")
        }
    }
    return found
}

/// A directory holding a fake grub-install running `script` (sh), to put first in PATH.
public func fakeGrubInstall(_ scratch: Scratch, script: String) throws -> String {
    let dir = scratch.file("bin")
    if mkdir(dir, 0o755) != 0 && errno != EEXIST { throw TestFailure("mkdir \(dir): \(String(cString: strerror(errno)))") }
    try writeFile("\(dir)/grub-install", Array("#!/bin/sh\n\(script)\n".utf8), mode: 0o755)
    return dir
}

/// SIGKILL at random points of runs: starts a run with `start`, kills it after a random delay in
/// the first 95% of `duration` (the fastest warm run's time), and calls `afterKill` with the
/// attempt's number for each run the kill caught mid-way. A run that ends first narrows the span
/// to that delay and does not count, so every counted kill hit a run still going. Stops after
/// `wanted` kills or `maxAttempts` runs; returns both counts and the runs that ended first as
/// failures (a run that ended by itself but failed).
public func killAtRandomPoints(wanted: Int, maxAttempts: Int, duration: Double, start: () throws -> Process,
                               afterKill: (Int) throws -> Void) throws -> (killed: Int, attempts: Int, failedRuns: [Int]) {
    var generator = SystemRandomNumberGenerator()
    var span = duration, killed = 0, attempts = 0, failedRuns: [Int] = []
    while killed < wanted && attempts < maxAttempts {
        attempts += 1
        let process = try start()
        let delay = Double.random(in: 0...(0.95 * span), using: &generator)
        usleep(UInt32(delay * 1_000_000))
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        guard process.terminationReason == .uncaughtSignal else {
            if process.terminationStatus != 0 { failedRuns.append(attempts) }
            span = delay
            continue
        }
        killed += 1
        try afterKill(attempts)
    }
    return (killed, attempts, failedRuns)
}
