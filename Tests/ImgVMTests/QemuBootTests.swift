import Foundation
import Glibc
import ImgSystem
import ImgVM
import Testing
import TestSupport

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
        return Set(directoryEntries(parent.isEmpty ? "/tmp" : parent).filter { $0.hasPrefix(QemuBoot.temporaryPrefix) })
    }

    /// Processes whose command line names qemu and `image`.
    func qemuProcesses(for image: String) -> [String] {
        var found: [String] = []
        for name in directoryEntries("/proc") where Int(name) != nil {
            guard let bytes = try? readFile("/proc/\(name)/cmdline") else { continue }
            let cmdline = String(decoding: bytes.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            if cmdline.contains("qemu-system") && cmdline.contains(image) { found.append("\(name): \(cmdline)") }
        }
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

    @Test("a missing qemu is reported with the Debian package to install")
    func missingQemuMessage() {
        #expect(QemuBoot.Error.qemuMissing.description.contains("qemu-system-x86"))
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
