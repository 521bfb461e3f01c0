import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// install-grub's offline strategy, run as an unprivileged user (uid 65534, who can reach no loop
/// device): it is taken by default, the result boots, it equals grub-install's byte for byte where
/// grub-install's result does not depend on the time, and a kill leaves the image as it was.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct OfflineInstallTests {
    typealias JSON = [String: Any]
    static let user: UInt32 = 65534

    /// A directory that `user` owns, inside `scratch`.
    func userDirectory(_ scratch: Scratch) throws -> String {
        let directory = scratch.file("nobody")
        try run(["install", "-d", "-o", "\(Self.user)", "-g", "\(Self.user)", directory])
        return directory
    }

    /// make-disk.sh's image at `path`, owned by `user`.
    func makeUserDisk(_ path: String, _ arguments: [String]) throws -> String {
        _ = try makeDisk(path, arguments)
        try run(["chown", "\(Self.user):\(Self.user)", path])
        return path
    }

    /// install-grub as `user`, its JSON result.
    func installOffline(_ image: String, _ extra: [String] = []) throws -> JSON {
        let r = try imgtool(["install-grub", image, "--json"] + extra, user: Self.user)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, "\(r.stderr)")
    }

    /// The filesystem of partition `number`, copied out for e2fsck and debugfs.
    func partition(_ image: String, _ number: Int, to out: String) throws -> String {
        let dump = try run(["sfdisk", "--json", image]).stdout
        let table = try #require((try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? JSON)?["partitiontable"] as? JSON)
        let p = try #require((table["partitions"] as? [JSON])?.first { ($0["node"] as? String)?.hasSuffix("\(number)") == true })
        try run(["dd", "status=none", "if=\(image)", "of=\(out)", "bs=512", "skip=\(try #require(p["start"] as? Int))",
                 "count=\(try #require(p["size"] as? Int))"])
        return out
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let layout: [String]
        let bootPartition: Int
        var testDescription: String { layout.joined(separator: " ") }
        var marker: String { "IMGTOOL-OFFLINE-" + layout.joined().filter { $0.isLetter || $0.isNumber }.uppercased() }
    }

    static let layouts: [Case] = ["dos", "gpt"].flatMap { label in
        ["ext2", "ext3", "ext4"].map { Case(layout: ["--label", label, "--fs", $0], bootPartition: label == "gpt" ? 2 : 1) }
    } + [Case(layout: ["--label", "dos", "--logical"], bootPartition: 5)]

    @Test("as uid 65534, with no loop device to be had, install-grub takes the offline strategy; the image boots, verify agrees, e2fsck is clean",
          arguments: layouts)
    func bootsWithoutRoot(_ c: Case) throws {
        let scratch = try Scratch()
        let directory = try userDirectory(scratch)
        let image = try makeUserDisk(directory + "/disk.img", c.layout + ["--marker", c.marker])
        let json = try installOffline(image)
        #expect(json["strategy"] as? String == "offline" && json["target"] as? String == "i386-pc")
        #expect(try listDirectory(directory) == ["disk.img"], "nothing but the image is left in its directory")
        let st = try fileStatus(image)
        #expect(st.st_uid == Self.user && st.st_mode & 0o777 == 0o644, "the image keeps its owner and mode")
        #expect(leftovers() == [])

        let fs = try partition(image, c.bootPartition, to: scratch.file("boot.fs"))
        let fsck = try Subprocess.run(["e2fsck", "-fn", fs])
        #expect(fsck.status == 0, "\(fsck.stdout)\(fsck.stderr)")
        let stat = try run(["debugfs", "-R", "stat /boot/grub/i386-pc/normal.mod", fs]).stdout
        #expect(stat.contains("User:     0") && stat.contains("Mode:  0644"), "GRUB's files are root's, as grub-install leaves them: \(stat)")

        let verify = try imgtool(["verify", image], user: Self.user)
        #expect(verify.status == 0 && verify.stdout.contains("bootable"), "\(verify.stdout)\(verify.stderr)")
        let booted = try boot(image, expect: c.marker)
        #expect(booted.found, "GRUB did not print \(c.marker); console:\n\(booted.console)")
    }

    @Test("a separate /boot filesystem (grub/ at its top) gets GRUB there offline, and boots")
    func separateBoot() throws {
        let scratch = try Scratch()
        let directory = try userDirectory(scratch)
        let marker = "IMGTOOL-OFFLINE-SEPARATE-BOOT"
        let image = try makeSeparateBootDisk(directory + "/disk.img", marker: marker)
        let offset = "\(image)?offset=1048576"
        try run(["chown", "\(Self.user):\(Self.user)", image])
        _ = try installOffline(image)
        #expect(try run(["debugfs", "-R", "ls /grub/i386-pc/normal.mod", offset]).stderr.contains("File not found") == false)
        #expect(try run(["debugfs", "-R", "ls /boot", offset]).stderr.contains("File not found"), "nothing is made under /boot")
        #expect(try boot(image, expect: marker).found)
    }

    /// grub-install's result (through loop devices, as root) against the offline one (as 65534)
    /// on copies of one image: sector 0, the sectors core.img was embedded in, and /boot/grub's
    /// names, modes, owners, sizes and contents are the same. ["separate-boot"] is a separate /boot
    /// filesystem, grub/ at its top.
    @Test("the offline result equals grub-install's: sector 0, the embedding, and /boot/grub file for file",
          arguments: [["--label", "dos"], ["--label", "gpt"], ["--label", "dos", "--fs", "ext2"], ["--label", "gpt", "--fs", "ext3"],
                      ["separate-boot"]])
    func equalsGrubInstall(_ layout: [String]) throws {
        let scratch = try Scratch()
        let directory = try userDirectory(scratch)
        let separateBoot = layout == ["separate-boot"]
        let pristine = separateBoot ? try makeSeparateBootDisk(scratch.file("pristine.img"), marker: "SEPARATE")
                                    : try makeDisk(scratch.file("pristine.img"), layout)
        let byGrubInstall = scratch.file("grub-install.img"), offline = directory + "/offline.img"
        try run(["cp", "--sparse=always", pristine, byGrubInstall])
        try run(["cp", "--sparse=always", pristine, offline])
        try run(["chown", "\(Self.user):\(Self.user)", offline])
        #expect(try imgtool(["install-grub", byGrubInstall, "--strategy", "blkpg"]).status == 0)
        _ = try installOffline(offline)

        // Sector 0 and everything before the first partition: the post-MBR gap, or on GPT the
        // header, the entries and the BIOS boot partition (partition 1 of make-disk.sh's gpt).
        let gpt = layout.contains("gpt")
        let embedded = gpt ? 4096 : 2048
        func head(_ image: String) throws -> [UInt8] { Array(readFileBytes(image, limit: embedded * 512)) }
        let (a, b) = (try head(byGrubInstall), try head(offline))
        #expect(a.count == embedded * 512 && b.count == a.count)
        let differing = Set(zip(a, b).enumerated().filter { $0.element.0 != $0.element.1 }.map { $0.offset / 512 })
        #expect(differing.isEmpty, "sectors that differ: \(differing.sorted())")

        // /boot/grub, dumped by debugfs (which keeps modes and owners) and compared.
        let bootNumber = gpt ? 2 : 1
        var trees: [String] = []
        for (name, image) in [("grub-install", byGrubInstall), ("offline", offline)] {
            let fs = try partition(image, bootNumber, to: scratch.file("\(name).fs"))
            let tree = scratch.file("\(name)-tree")
            try run(["mkdir", tree])
            try run(["debugfs", "-R", "rdump \(separateBoot ? "/grub" : "/boot/grub") \(tree)", fs])
            trees.append(tree + "/grub")
        }
        func listing(_ tree: String) throws -> String {
            try run(["sh", "-c", "cd '\(tree)' && find . -printf '%P %y %m %U:%G %s\\n' | sort"]).stdout
        }
        let (expected, got) = (try listing(trees[0]), try listing(trees[1]))
        #expect(expected.split(separator: "\n").count > 300)
        #expect(got == expected, "\(Set(got.split(separator: "\n")).symmetricDifference(expected.split(separator: "\n")))")
        let diff = try Subprocess.run(["diff", "-r", trees[0], trees[1]])
        #expect(diff.status == 0, "contents differ: \(diff.stdout)")
    }

    @Test("SIGKILL at 30 random points of an offline install: the image is as it was or finished, never half, and nothing is left beside it")
    func randomKills() throws {
        let scratch = try Scratch()
        let directory = try userDirectory(scratch)
        let marker = "IMGTOOL-OFFLINE-KILLS"
        let pristine = try makeDisk(scratch.file("pristine.img"), ["--label", "gpt", "--marker", marker])
        let before = try sha256(pristine)
        let image = directory + "/disk.img"
        let executable = try imgtoolPath(reachableBy: Self.user)
        func start() throws -> Process {
            try run(["cp", "--sparse=always", pristine, image])
            try run(["chown", "\(Self.user):\(Self.user)", image])
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = Array(asUser(Self.user).dropFirst()) + [executable, "install-grub", image, "-q"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            return p
        }
        var duration = TimeInterval.infinity
        for _ in 0..<3 {
            let started = Date()
            let p = try start()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
            duration = min(duration, Date().timeIntervalSince(started))
        }
        var untouched = 0, finished = 0
        let (killed, attempts, failed) = try killAtRandomPoints(wanted: 30, maxAttempts: 80, duration: duration, start: start) { attempt in
            #expect(try listDirectory(directory) == ["disk.img"], "attempt \(attempt): something was left beside the image")
            if try sha256(image) == before {
                untouched += 1
            } else {
                finished += 1
                let verify = try imgtool(["verify", image])
                #expect(verify.status == 0, "attempt \(attempt): the image changed but is not bootable: \(verify.stdout)")
            }
            let fsck = try Subprocess.run(["e2fsck", "-fn", try partition(image, 2, to: scratch.file("boot.fs"))])
            #expect(fsck.status == 0, "attempt \(attempt): \(fsck.stdout)")
            #expect(try imgtool(["install-grub", image, "-q"], user: Self.user).status == 0, "rerun \(attempt)")
            if (untouched + finished) % 10 == 0 { #expect(try boot(image, expect: marker).found, "boot after attempt \(attempt)") }
        }
        #expect(failed.isEmpty, "runs that ended by themselves but failed: \(failed)")
        print("offline random kills: \(killed) landed in \(attempts) attempts; image untouched after \(untouched), finished after \(finished)")
        #expect(killed == 30, "only \(killed) of \(attempts) kills landed before the run ended")
    }

    @Test("each offline step fails in turn (injected faults, then SIGKILL): the image is unchanged and nothing is left beside it")
    func faultsAndKillsAtEachStep() throws {
        let scratch = try Scratch()
        let directory = try userDirectory(scratch)
        let pristine = try makeDisk(scratch.file("pristine.img"), ["--label", "dos"])
        let before = try sha256(pristine)
        let image = directory + "/disk.img"
        for mode in ["acquire", "kill"] {
            var steps = 0
            for k in 1...10 {
                try run(["cp", "--sparse=always", pristine, image])
                try run(["chown", "\(Self.user):\(Self.user)", image])
                let r = try Subprocess.run(asUser(Self.user) + ["env", "IMGTOOL_INJECT_FAULT=\(mode):\(k)", try imgtoolPath(reachableBy: Self.user),
                                                               "install-grub", image])
                if r.succeeded { break }
                steps = k
                #expect(mode == "kill" ? r.status == 128 + SIGKILL : r.stderr.contains("injected fault (\(mode):\(k))"), "\(mode) \(k): \(r.stderr)")
                #expect(try sha256(image) == before, "\(mode) \(k): the image changed")
                #expect(try listDirectory(directory) == ["disk.img"], "\(mode) \(k)")
            }
            #expect(steps >= 2 && steps < 10, "\(steps) \(mode) steps")
        }
    }

    @Test("offline refusals: UEFI is not installed offline yet; a loop strategy without root is refused; nothing changes")
    func refusals() throws {
        let scratch = try Scratch()
        let directory = try userDirectory(scratch)
        let esp = directory + "/esp.img"
        try run(["\(repositoryRoot)/TestImages/make-esp-disk.sh", esp])
        try run(["chown", "\(Self.user):\(Self.user)", esp])
        let before = try sha256(esp)
        let r = try imgtool(["install-grub", esp], user: Self.user)
        #expect(r.status == ExitStatus.unavailable.rawValue && r.stderr.contains("BIOS only so far"), "\(r.stderr)")
        #expect(try sha256(esp) == before && (try listDirectory(directory)) == ["esp.img"])
    }
}
