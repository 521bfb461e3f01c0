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
    static let user = Offline.user

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
        let directory = try Offline.userDirectory(scratch)
        let image = try Offline.makeUserDisk(directory + "/disk.img", c.layout + ["--marker", c.marker])
        let json = try Offline.install(image)
        #expect(json["strategy"] as? String == "offline" && json["target"] as? String == "i386-pc")
        #expect(try listDirectory(directory) == ["disk.img"], "nothing but the image is left in its directory")
        let st = try fileStatus(image)
        #expect(st.st_uid == Self.user && st.st_mode & 0o777 == 0o644, "the image keeps its owner and mode")
        #expect(leftovers() == [])

        let fs = try Offline.partition(image, c.bootPartition, to: scratch.file("boot.fs"))
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
        let directory = try Offline.userDirectory(scratch)
        let marker = "IMGTOOL-OFFLINE-SEPARATE-BOOT"
        let image = try makeSeparateBootDisk(directory + "/disk.img", marker: marker)
        let offset = "\(image)?offset=1048576"
        try run(["chown", "\(Self.user):\(Self.user)", image])
        _ = try Offline.install(image)
        #expect(try run(["debugfs", "-R", "ls /grub/i386-pc/normal.mod", offset]).stderr.contains("File not found") == false)
        #expect(try run(["debugfs", "-R", "ls /boot", offset]).stderr.contains("File not found"), "nothing is made under /boot")
        #expect(try boot(image, expect: marker).found)
    }

    /// A hybrid install, so that a kill can land in the ext /boot's writes and in the ESP's.
    @Test("SIGKILL at 30 random points of an offline hybrid install: the image is as it was or finished, never half, and nothing is left beside it")
    func randomKills() throws {
        let scratch = try Scratch()
        let directory = try Offline.userDirectory(scratch)
        let marker = "IMGTOOL-OFFLINE-KILLS"
        let pristine = scratch.file("pristine.img")
        try run(["\(repositoryRoot)/TestImages/make-esp-disk.sh", pristine, "--bios-boot", "--marker", marker])
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
            let fsck = try Subprocess.run(["e2fsck", "-fn", try Offline.partition(image, 3, to: scratch.file("boot.fs"))])
            #expect(fsck.status == 0, "attempt \(attempt): \(fsck.stdout)")
            let fat = try Subprocess.run(["fsck.fat", "-n", try Offline.partition(image, 2, to: scratch.file("esp.fs"))])
            #expect(fat.status == 0, "attempt \(attempt): \(fat.stdout)")
            #expect(try imgtool(["install-grub", image, "-q"], user: Self.user).status == 0, "rerun \(attempt)")
            if (untouched + finished) % 10 == 0 {
                #expect(try boot(image, expect: marker).found, "SeaBIOS boot after attempt \(attempt)")
                #expect(try boot(image, expect: marker, firmware: "uefi").found, "OVMF boot after attempt \(attempt)")
            }
        }
        #expect(failed.isEmpty, "runs that ended by themselves but failed: \(failed)")
        print("offline random kills: \(killed) landed in \(attempts) attempts; image untouched after \(untouched), finished after \(finished)")
        #expect(killed == 30, "only \(killed) of \(attempts) kills landed before the run ended")
    }

    @Test("each step of an offline hybrid install fails in turn (injected faults, then SIGKILL): the image is unchanged and nothing is left beside it")
    func faultsAndKillsAtEachStep() throws {
        let scratch = try Scratch()
        let directory = try Offline.userDirectory(scratch)
        let pristine = scratch.file("pristine.img")
        try run(["\(repositoryRoot)/TestImages/make-esp-disk.sh", pristine, "--label", "dos"])
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
            // GRUB's files, the ESP, the replacement.
            #expect(steps == 3, "\(steps) \(mode) steps")
        }
    }

    /// exFAT is one GRUB reads but the offline strategy cannot write (libext2fs and mtools write
    /// ext and FAT).
    @Test("offline refusals: a /boot neither ext nor FAT is refused with exit 69 and the way out; nothing changes")
    func refusals() throws {
        let scratch = try Scratch()
        let directory = try Offline.userDirectory(scratch)
        let image = directory + "/exfat.img", filesystem = scratch.file("exfat.fs")
        try run(["truncate", "-s", "32M", image])
        try run(["sh", "-c", "echo 'start=2048, type=83' | sfdisk -q \"$1\"", "sh", image])
        try run(["truncate", "-s", "\(32 * 1024 * 1024 - 1024 * 1024)", filesystem])
        try run(["mkfs.exfat", filesystem])
        try run(["dd", "status=none", "conv=notrunc", "if=\(filesystem)", "of=\(image)", "bs=1M", "seek=1"])
        try Offline.giveToUser(image)
        let before = try sha256(image)
        let r = try imgtool(["install-grub", image], user: Self.user)
        #expect(r.status == ExitStatus.unavailable.rawValue && r.stderr.contains("is exfat") && r.stderr.contains("ext2, ext3, ext4 or FAT only")
                && r.stderr.contains("run as root for a loop strategy"), "\(r.stderr)")
        #expect(try sha256(image) == before && (try listDirectory(directory)) == ["exfat.img"])
    }
}
