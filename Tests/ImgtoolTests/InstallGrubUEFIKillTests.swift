import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// SIGKILL during UEFI and hybrid installs, the ESP write included: whatever the kill leaves is
/// released by `imgtool cleanup` or by the next install-grub on the image, the ESP is then a FAT
/// that `fsck.fat -n` accepts (byte for byte as before, unless the write had finished), and a
/// rerun boots.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct InstallGrubUEFIKillTests {
    typealias JSON = [String: Any]
    let layout = InstallGrubUEFITests()

    /// What a kill left, by the session's own account: the kinds of what it holds.
    func staleHolds() throws -> Set<String> {
        let r = try imgtool(["status", "--json"])
        let sessions = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? [JSON], "\(r.stderr)")
        return Set(sessions.flatMap { ($0["holds"] as? [JSON] ?? []).compactMap { $0["kind"] as? String } })
    }

    /// Releases what a killed run left: by `imgtool cleanup`, or by the next install-grub, made
    /// to fail at its first step so that what it restored can be looked at.
    func recover(byCleanup: Bool, _ image: String) throws {
        if byCleanup {
            let r = try imgtool(["cleanup", "--all"])
            #expect(r.status == 0, "\(r.stderr)")
        } else {
            let r = try Subprocess.run(["env", "IMGTOOL_INJECT_FAULT=acquire:1", imgtoolPath, "install-grub", image])
            #expect(r.stderr.contains("injected fault (acquire:1)"), "\(r.stderr)")
        }
        #expect(leftovers() == [])
        #expect(try staleHolds().isEmpty)
    }

    @Test("SIGKILL at each step of a hybrid install: the next install or cleanup undoes a half-written ESP; a rerun boots both firmwares")
    func killAtEachStep() throws {
        let scratch = try Scratch()
        let marker = "IMGTOOL-UEFI-KILL-STEPS"
        let pristine = try layout.makeESPDisk(scratch.file("pristine.img"), ["--bios-boot", "--marker", marker])
        let pristineESP = try sha256(try Offline.partition(pristine, 2, to: scratch.file("pristine-esp.img")))
        let image = scratch.file("disk.img")
        var killed = 0, undoLeft = 0
        for k in 1...40 {
            try run(["cp", "--sparse=always", pristine, image])
            let r = try Subprocess.run(["env", "IMGTOOL_INJECT_FAULT=kill:\(k)", imgtoolPath, "install-grub", image, "-q"])
            if r.succeeded { break }
            #expect(r.status == 128 + SIGKILL, "kill \(k): \(r.stderr)")
            killed += 1
            if try staleHolds().contains("undo") { undoLeft += 1 }
            try recover(byCleanup: k % 2 == 1, image)
            // Nothing but the ESP write touches the ESP, and it is undone unless it finished.
            let esp = try Offline.partition(image, 2, to: scratch.file("esp.img"))
            #expect(try sha256(esp) == pristineESP, "kill \(k): the ESP is not as it was")
            #expect(try Subprocess.run(["fsck.fat", "-n", esp]).status == 0, "kill \(k)")
        }
        print("hybrid install killed at each of its \(killed) steps; \(undoLeft) left an ESP write to undo")
        // Not vacuous: kills landed at every step, and some while the ESP was being written.
        #expect(killed >= 12 && killed < 40 && undoLeft >= 1, "\(killed) steps, \(undoLeft) with an ESP write to undo")
        #expect(try boot(image, expect: marker, firmware: "uefi").found)
        #expect(try boot(image, expect: marker).found)
    }

    @Test("SIGKILL at 30 random points of a UEFI install: the ESP is clean and either untouched or complete; a rerun boots")
    func randomKills() throws {
        let scratch = try Scratch()
        let marker = "IMGTOOL-UEFI-KILL-RANDOM"
        let pristine = try layout.makeESPDisk(scratch.file("pristine.img"), ["--marker", marker])
        let pristineESP = try sha256(try Offline.partition(pristine, 1, to: scratch.file("pristine-esp.img")))
        let image = scratch.file("disk.img")
        // GRUB's image as a finished run leaves it, and the run's time here, to spread the kills over.
        var duration = TimeInterval.infinity
        for _ in 0..<3 {
            try run(["cp", "--sparse=always", pristine, image])
            let started = Date()
            #expect(try imgtool(["install-grub", image, "-q"]).status == 0)
            duration = min(duration, Date().timeIntervalSince(started))
        }
        let loader = try grubImage(try Offline.partition(image, 1, to: scratch.file("done-esp.img")))

        var untouched = 0, complete = 0
        let (killedMidway, attempts, failed) = try killAtRandomPoints(wanted: 30, maxAttempts: 60, duration: duration, start: {
            try run(["cp", "--sparse=always", pristine, image])
            return try SessionsTests().startInstall(image)
        }, afterKill: { attempt in
            try recover(byCleanup: attempt % 2 == 0, image)
            let esp = try Offline.partition(image, 1, to: scratch.file("esp.img"))
            #expect(try Subprocess.run(["fsck.fat", "-n", esp]).status == 0, "attempt \(attempt): the ESP is damaged")
            if try sha256(esp) == pristineESP { untouched += 1 } else {
                #expect(try grubImage(esp) == loader, "attempt \(attempt): the ESP was changed, but GRUB's image is not the finished one")
                complete += 1
            }
            #expect(try imgtool(["install-grub", image, "-q"]).status == 0, "rerun \(attempt)")
            if (untouched + complete) % 10 == 0 { #expect(try boot(image, expect: marker, firmware: "uefi").found, "boot after attempt \(attempt)") }
        })
        #expect(failed.isEmpty, "runs that ended by themselves but failed: \(failed)")
        print("UEFI random kills: \(killedMidway) landed in \(attempts) attempts; ESP untouched after \(untouched), complete after \(complete)")
        #expect(killedMidway == 30, "only \(killedMidway) of \(attempts) kills landed before the run ended")
    }

    /// BOOTX64.EFI's bytes from the FAT filesystem in `esp`.
    func grubImage(_ esp: String) throws -> [UInt8] {
        let r = try Subprocess.run(["env", "MTOOLS_SKIP_CHECK=1", "mtype", "-i", esp, "::/EFI/BOOT/BOOTX64.EFI"])
        #expect(r.succeeded, "\(r.stderr)")
        return r.output
    }
}
