import Foundation
import Glibc
import ImgSystem
import ImgVM
import Testing
import TestSupport

/// Screen decoding and classification on bytes: no root, no qemu.
@Suite struct QemuBootTestsOnBytes {
    /// An 80x25 text buffer with `rows` written from the top, attribute 0x07.
    func buffer(_ rows: [[UInt8]]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 4000)
        for (r, row) in rows.enumerated() {
            for (c, ch) in row.prefix(80).enumerated() { bytes[(r * 80 + c) * 2] = ch; bytes[(r * 80 + c) * 2 + 1] = 7 }
        }
        return bytes
    }

    @Test("CP437 box drawing and arrows decode; control bytes become glyphs, never controls")
    func decodes() {
        let frame: [UInt8] = [0x20, 0xDA, 0xC4, 0xC4, 0xBF]
        let screen = QemuBoot.decodeTextBuffer(buffer([frame, [0x18, 0x20, 0x19, 0x1B, 0x0A, 0x0D, 0x00, 0x20]]))
        #expect(screen.count == 25)
        #expect(screen[0] == " ┌──┐")
        #expect(screen[1] == "↑ ↓←◙♪")  // the trailing NUL and space are trimmed
        #expect(screen[2] == "")
        let all = QemuBoot.decodeTextBuffer(buffer([Array(0...79), Array(80...159), Array(160...239), Array(240...255)]))
        #expect(all.joined().unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F })
        #expect(all[0].count == 80 && all[1].count == 80 && all[2].count == 80)
    }

    @Test("a buffer of the wrong size is a blank screen, random bytes never crash")
    func distrusts() {
        #expect(QemuBoot.decodeTextBuffer([0x41, 7]) == Array(repeating: "", count: 25))
        #expect(QemuBoot.decodeTextBuffer([]) == Array(repeating: "", count: 25))
        for seed in 1...20 as ClosedRange<UInt64> {
            let screen = QemuBoot.decodeTextBuffer(pseudoRandomBytes(count: 4000, seed: seed))
            #expect(screen.count == 25)
            _ = QemuBoot.classify(screen: screen)
        }
        #expect(QemuBoot.classify(screen: []) == nil)
        #expect(QemuBoot.classify(screen: ["┌", "└┘", "┐"]) == nil)
        #expect(QemuBoot.classify(screen: [" ┌──┐", " │*A", " └──┘"]) == nil)
    }

    @Test("GRUB's menu, prompts, errors and SeaBIOS's give-up are told apart")
    func classifies() {
        let menu = ["", "  GNU GRUB  version 2.06", " ┌────────────┐", " │*Alpha      │", " │ Beta ↓     │",
                    " │            │", " └────────────┘", "   Use the ↑ and ↓ keys"]
        #expect(QemuBoot.classify(screen: menu)?.outcome == .grubMenu)
        #expect(QemuBoot.classify(screen: menu)?.menuEntries == ["Alpha", "Beta"])
        #expect(QemuBoot.classify(screen: ["GNU GRUB", "", "grub> ls"])?.outcome == .grubPrompt)
        let rescue = QemuBoot.classify(screen: ["error: file `/boot/grub/i386-pc/normal.mod' not found.",
                                                "Entering rescue mode...", "grub rescue> "])
        #expect(rescue?.outcome == .grubRescue)
        #expect(rescue?.message == "error: file `/boot/grub/i386-pc/normal.mod' not found.")
        #expect(QemuBoot.classify(screen: ["error: no such device: x.", "", "Press any key to continue..."])?.outcome == .grubError)
        let seabios = QemuBoot.classify(screen: ["SeaBIOS", "Boot failed: not a bootable disk", "",
                                                 "No bootable device.  Retrying in 60 seconds."])
        #expect(seabios?.outcome == .noBootableDevice)
        #expect(seabios?.message == "No bootable device.  Retrying in 60 seconds.")
        #expect(QemuBoot.classify(screen: ["SeaBIOS (version 1.16)", "Booting from Hard Disk..."]) == nil)
    }

    @Test("a missing qemu is reported with the Debian package to install")
    func missingQemuMessage() {
        #expect(QemuBoot.Error.qemuMissing.description.contains("qemu-system-x86"))
    }
}

/// Real boots under qemu (TCG) of images built with grub-install directly, not imgtool's code.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil && commandExists("qemu-system-x86_64")
                               && commandExists("grub-install"), "needs root, qemu-system-x86 and grub-pc-bin"))
struct QemuBootTests {
    static let timeout = 15.0

    /// make-disk.sh (dos, ext2), then GRUB by the offset-loop recipe; `customise` sees the mounted
    /// filesystem before it comes off.
    func grubImage(_ scratch: Scratch, _ name: String, customise: (String) throws -> Void) throws -> String {
        let image = try makeDisk(scratch.file(name), ["--label", "dos", "--fs", "ext2"])
        let table = try run(["sfdisk", "-d", image]).stdout
        guard let line = table.split(separator: "\n").first(where: { $0.contains("start=") }),
              let start = field(line, "start"), let size = field(line, "size") else {
            throw TestFailure("no partition in sfdisk -d output: \(table)")
        }
        let disk = try run(["losetup", "-f", "--show", image]).stdout.trimmingNewline
        defer { _ = try? Subprocess.run(["losetup", "-d", disk]) }
        let part = try run(["losetup", "-f", "--show", "-o", "\(start * 512)", "--sizelimit", "\(size * 512)", image])
            .stdout.trimmingNewline
        defer { _ = try? Subprocess.run(["losetup", "-d", part]) }
        let mnt = scratch.file("\(name).mnt")
        mkdir(mnt, 0o700)
        try run(["mount", part, mnt])
        defer { _ = try? Subprocess.run(["umount", mnt]) }
        try run(["grub-install", "--target=i386-pc", "--modules=part_msdos ext2", "--boot-directory=\(mnt)/boot", disk])
        try customise(mnt)
        return image
    }

    func field(_ line: Substring, _ name: String) -> UInt64? {
        guard let r = line.range(of: "\(name)=") else { return nil }
        return UInt64(line[r.upperBound...].drop(while: { $0 == " " }).prefix(while: { $0.isNumber }))
    }

    /// observe(), checking that the image is unchanged and that neither qemu nor its temp dir remains.
    func observe(_ image: String, timeout: Double = Self.timeout,
                 interruption: Interruption? = nil) throws -> BootObservation {
        let before = try sha256(image)
        let dirs = temporaryDirs()
        defer {
            #expect((try? sha256(image)) == before, "the image changed")
            #expect(qemuProcesses(for: image).isEmpty, "qemu is still running")
            #expect(temporaryDirs() == dirs, "a temp dir was left behind")
        }
        return try QemuBoot.observe(image: image, timeout: timeout, interruption: interruption)
    }

    func temporaryDirs() -> Set<String> {
        let parent = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var found: Set<String> = []
        guard let d = opendir(parent.isEmpty ? "/tmp" : parent) else { return found }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasPrefix(QemuBoot.temporaryPrefix) { found.insert(name) }
        }
        closedir(d)
        return found
    }

    /// Processes whose command line names qemu and `image`.
    func qemuProcesses(for image: String) -> [String] {
        var found: [String] = []
        guard let d = opendir("/proc") else { return found }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard Int(name) != nil, let bytes = try? readFile("/proc/\(name)/cmdline") else { continue }
            let cmdline = String(decoding: bytes.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            if cmdline.contains("qemu-system") && cmdline.contains(image) { found.append("\(name): \(cmdline)") }
        }
        closedir(d)
        return found
    }

    @Test("a two-entry menu with a 30 s timeout is seen as grubMenu with both titles")
    func menu() throws {
        let scratch = try Scratch()
        let image = try grubImage(scratch, "menu.img") { mnt in
            try writeFile("\(mnt)/boot/grub/grub.cfg", Array("""
                set timeout=30
                menuentry "Alpha" { true }
                menuentry "Beta" { true }

                """.utf8))
        }
        let seen = try observe(image)
        #expect(seen.outcome == .grubMenu, "\(seen.screen.joined(separator: "\n"))")
        #expect(seen.menuEntries == ["Alpha", "Beta"])
        #expect(seen.screen.count == 25)
        #expect(seen.screen.contains { $0.contains("GNU GRUB") })
        #expect(seen.seconds < Self.timeout)
    }

    @Test("without grub.cfg GRUB stops at the grub> prompt")
    func prompt() throws {
        let scratch = try Scratch()
        let image = try grubImage(scratch, "prompt.img") { _ in }
        let seen = try observe(image)
        #expect(seen.outcome == .grubPrompt, "\(seen.screen.joined(separator: "\n"))")
        #expect(seen.seconds < Self.timeout)
    }

    @Test("without /boot/grub/i386-pc (no normal.mod) GRUB falls to grub rescue>")
    func rescue() throws {
        let scratch = try Scratch()
        let image = try grubImage(scratch, "rescue.img") { mnt in
            try run(["rm", "-rf", "\(mnt)/boot/grub/i386-pc"])
        }
        let seen = try observe(image)
        #expect(seen.outcome == .grubRescue, "\(seen.screen.joined(separator: "\n"))")
        #expect(seen.message?.contains("normal.mod") == true, "\(seen.message ?? "no message")")
    }

    @Test("an entry that fails to load its kernel shows GRUB's error line")
    func error() throws {
        let scratch = try Scratch()
        let image = try grubImage(scratch, "error.img") { mnt in
            try writeFile("\(mnt)/boot/grub/grub.cfg", Array("""
                set timeout=0
                menuentry "Broken" { linux /no-such-kernel }

                """.utf8))
        }
        let seen = try observe(image)
        #expect(seen.outcome == .grubError, "\(seen.screen.joined(separator: "\n"))")
        #expect(seen.message?.contains("no-such-kernel") == true, "\(seen.message ?? "no message")")
    }

    @Test("a zeroed image makes SeaBIOS give up: noBootableDevice")
    func zeroed() throws {
        let scratch = try Scratch()
        let image = scratch.file("zero.img")
        try run(["truncate", "-s", "16M", image])
        let seen = try observe(image)
        #expect(seen.outcome == .noBootableDevice, "\(seen.screen.joined(separator: "\n"))")
        #expect(seen.message?.hasPrefix("No bootable device") == true)
    }

    @Test("a boot sector that spins without printing is a timeout, with SeaBIOS's screen")
    func spins() throws {
        let scratch = try Scratch()
        let image = scratch.file("spin.img")
        var sector = [UInt8](repeating: 0, count: 1 << 20)
        sector[0] = 0xEB; sector[1] = 0xFE  // jmp $
        sector[510] = 0x55; sector[511] = 0xAA
        try writeFile(image, sector)
        let seen = try observe(image, timeout: 2)
        #expect(seen.outcome == .timeout, "\(seen.screen.joined(separator: "\n"))")
        #expect(seen.seconds >= 2 && seen.seconds < 5)
        #expect(seen.screen.contains { $0.contains("Booting from Hard Disk") })
        #expect(seen.message == nil && seen.menuEntries.isEmpty)
    }

    @Test("an interruption that already came stops qemu at once and cleans up")
    func interrupted() throws {
        let scratch = try Scratch()
        let image = scratch.file("zero.img")
        try run(["truncate", "-s", "16M", image])
        let interruption = Interruption()
        interruption.interrupt(signal: SIGTERM)
        #expect(throws: QemuBoot.Error.interrupted(signal: SIGTERM)) { try observe(image, interruption: interruption) }
    }

    @Test("an unreadable image is an error naming it, before qemu starts")
    func missingImage() throws {
        let scratch = try Scratch()
        let error = #expect(throws: QemuBoot.Error.self) {
            try QemuBoot.observe(image: scratch.file("absent.img"), timeout: Self.timeout)
        }
        #expect(error?.description.contains("absent.img") == true)
    }
}

private extension String {
    var trimmingNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}
