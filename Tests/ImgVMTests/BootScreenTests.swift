import ImgSystem
import ImgVM
import Testing
import TestSupport

/// Screen decoding, terminal replay and classification on bytes and strings: no root, no qemu.
@Suite struct BootScreenTests {
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
        let screen = BootScreen.decodeTextBuffer(buffer([frame, [0x18, 0x20, 0x19, 0x1B, 0x0A, 0x0D, 0x00, 0x20]]))
        #expect(screen.count == 25)
        #expect(screen[0] == " ┌──┐")
        #expect(screen[1] == "↑ ↓←◙♪")  // the trailing NUL and space are trimmed
        #expect(screen[2] == "")
        let all = BootScreen.decodeTextBuffer(buffer([Array(0...79), Array(80...159), Array(160...239), Array(240...255)]))
        #expect(all.joined().unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F })
        #expect(all[0].count == 80 && all[1].count == 80 && all[2].count == 80)
    }

    @Test("a buffer of the wrong size is a blank screen, random bytes never crash")
    func distrusts() {
        #expect(BootScreen.decodeTextBuffer([0x41, 7]) == Array(repeating: "", count: 25))
        #expect(BootScreen.decodeTextBuffer([]) == Array(repeating: "", count: 25))
        for seed in 1...20 as ClosedRange<UInt64> {
            let screen = BootScreen.decodeTextBuffer(pseudoRandomBytes(count: 4000, seed: seed))
            #expect(screen.count == 25)
            _ = BootScreen.classify(screen: screen)
        }
        #expect(BootScreen.classify(screen: []) == nil)
        #expect(BootScreen.classify(screen: ["┌", "└┘", "┐"]) == nil)
        #expect(BootScreen.classify(screen: [" ┌──┐", " │*A", " └──┘"]) == nil)
    }

    @Test("GRUB's menu, prompts, errors and SeaBIOS's give-up are told apart")
    func classifies() {
        let menu = ["", "  GNU GRUB  version 2.06", " ┌────────────┐", " │*Alpha      │", " │ Beta ↓     │",
                    " │            │", " └────────────┘", "   Use the ↑ and ↓ keys"]
        #expect(BootScreen.classify(screen: menu)?.outcome == .grubMenu)
        #expect(BootScreen.classify(screen: menu)?.menuEntries == ["Alpha", "Beta"])
        #expect(BootScreen.classify(screen: ["GNU GRUB", "", "grub> ls"])?.outcome == .grubPrompt)
        let rescue = BootScreen.classify(screen: ["error: file `/boot/grub/i386-pc/normal.mod' not found.",
                                                "Entering rescue mode...", "grub rescue> "])
        #expect(rescue?.outcome == .grubRescue)
        #expect(rescue?.message == "error: file `/boot/grub/i386-pc/normal.mod' not found.")
        #expect(BootScreen.classify(screen: ["error: no such device: x.", "", "Press any key to continue..."])?.outcome == .grubError)
        let seabios = BootScreen.classify(screen: ["SeaBIOS", "Boot failed: not a bootable disk", "",
                                                 "No bootable device.  Retrying in 60 seconds."])
        #expect(seabios?.outcome == .noBootableDevice)
        #expect(seabios?.message == "No bootable device.  Retrying in 60 seconds.")
        #expect(BootScreen.classify(screen: ["SeaBIOS (version 1.16)", "Booting from Hard Disk..."]) == nil)
        // OVMF enforcing Secure Boot, as its serial console shows an unsigned loader refused.
        let refused = BootScreen.classify(screen: [
            "BdsDxe: failed to load Boot0001 \"UEFI QEMU HARDDISK QM00001 \" from PciRoot(0x0)/Pci(0x1F,0x2): Access Denied",
            "BdsDxe: failed to start Boot0002 \"EFI Internal Shell\" from Fv(7CB8BDC9): Security Viola", "tion",
            "BdsDxe: No bootable option or device was found.", "BdsDxe: Press any key to enter the Boot Manager Menu."])
        #expect(refused?.outcome == .noBootableDevice && refused?.message?.contains("Secure Boot refused") == true)
        let empty = BootScreen.classify(screen: ["BdsDxe: No bootable option or device was found."])
        #expect(empty?.outcome == .noBootableDevice && empty?.message == "BdsDxe: No bootable option or device was found.")
    }

    /// A screen captured from a real boot by TestImages/capture-screens.sh.
    func captured(_ name: String) throws -> [UInt8] {
        try readFile("\(repositoryRoot)/TestImages/screens/\(name)")
    }

    /// Debian's signed GRUB searches for installer media before its grub.cfg and reports the
    /// miss; a slow boot can sit on that line, which is not where it stops.
    @Test("the signed GRUB's search for installer media is not an error it stops at; an error after it is")
    func signedGrubSearch() {
        let searching = ["Welcome to GRUB!", "", "error: no such device: /.disk/info.", "error: no such device: /.disk/mini-info."]
        #expect(BootScreen.classify(screen: searching) == nil)
        let failed = BootScreen.classify(screen: searching + ["error: file `/boot/grub/x86_64-efi/normal.mod' not found."])
        #expect(failed?.outcome == .grubError && failed?.message == "error: file `/boot/grub/x86_64-efi/normal.mod' not found.")
    }

    @Test("captured: SeaBIOS's VGA screen with nothing to boot")
    func capturedSeaBIOS() throws {
        let screen = BootScreen.decodeTextBuffer(try captured("seabios-no-bootable-device.vga"))
        #expect(screen[0].hasPrefix("SeaBIOS (version "))
        let c = BootScreen.classify(screen: screen)
        #expect(c?.outcome == .noBootableDevice, "\(screen)")
        #expect(c?.message?.hasPrefix("No bootable device") == true)
    }

    @Test("captured: OVMF's serial console falling back to its shell")
    func capturedOVMFShell() throws {
        let screen = BootScreen.renderTerminal(try captured("ovmf-shell.serial"))
        // The countdown is redrawn in place (cursor addressing to row 7), not appended.
        #expect(screen.filter { $0.hasPrefix("Press ESC in") } == ["Press ESC in 1 seconds to skip startup.nsh or any other key to continue."])
        #expect(screen[7] == "Shell>", "\(screen.prefix(10))")
        let c = BootScreen.classify(screen: screen)
        #expect(c?.outcome == .noBootableDevice)
        #expect(c?.message == "UEFI firmware found nothing to boot and started its shell")
    }

    @Test("captured: GRUB's EFI menu through OVMF's serial console")
    func capturedGrubEFIMenu() throws {
        let screen = BootScreen.renderTerminal(try captured("grub-efi-menu.serial"))
        let c = BootScreen.classify(screen: screen)
        #expect(c?.outcome == .grubMenu, "\(screen.joined(separator: "\n"))")
        #expect(c?.menuEntries == ["Alpha", "Beta"])
        // The countdown line is rewritten in place: only its last value is on the screen.
        #expect(screen.filter { $0.contains("executed automatically") }.count == 1)
    }

    @Test("terminal replay: cursor addressing, moves, erases and scrolling; colours leave no trace")
    func replaysTerminal() {
        func render(_ s: String) -> [String] { BootScreen.renderTerminal(Array(s.utf8)) }
        let esc = "\u{1B}["
        let placed = render("\(esc)3;5Hthree\(esc)1;1Hone\(esc)1mbold\(esc)0m\r\nnext")
        #expect(placed.count == 50)
        #expect(Array(placed.prefix(3)) == ["onebold", "next", "    three"])
        // Up, forward, back, then erase to the end of the line (K) and the whole screen (2J).
        #expect(render("abcdef\(esc)3D\(esc)K")[0] == "abc")
        #expect(render("abc\r\nxyz\(esc)A\(esc)2DQ")[0] == "aQc")
        #expect(render("gone\(esc)2Jkept")[0] == "    kept")
        #expect(render("abc\u{08}\u{08}Z")[0] == "aZc")
        // Past the last row the grid scrolls: the first lines are gone, the last one is at the bottom.
        let long = render((1...60).map { "line \($0)" }.joined(separator: "\r\n"))
        #expect(long.first == "line 11" && long.last == "line 60")
        // A line longer than the grid wraps.
        let wide = render(String(repeating: "x", count: 170))
        #expect(wide[0].count == 160 && wide[1] == "xxxxxxxxxx")
    }

    @Test("terminal replay distrusts its bytes: truncated sequences, huge parameters, random bytes")
    func replayDistrusts() {
        for bytes: [UInt8] in [[0x1B], [0x1B, 0x5B], [0x1B, 0x5B, 0x39, 0x39], Array("\u{1B}[99999999;99999999H*".utf8),
                               Array("\u{1B}[99999A\u{1B}[99999D*".utf8)] {
            #expect(BootScreen.renderTerminal(bytes).count == 50)
        }
        #expect(BootScreen.renderTerminal(Array("\u{1B}[99999999;99999999H*".utf8))[49].hasSuffix("*"))
        for seed in 1...20 as ClosedRange<UInt64> {
            let screen = BootScreen.renderTerminal(pseudoRandomBytes(count: 8192, seed: seed))
            #expect(screen.count == 50)
            #expect(screen.joined().unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F })
            _ = BootScreen.classify(screen: screen)
        }
    }
}
