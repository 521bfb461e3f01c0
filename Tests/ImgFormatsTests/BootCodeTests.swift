import Foundation
import Testing

@testable import ImgFormats

/// Boot code identification on the real loader files Debian ships, and on sectors built byte by
/// byte from the documented layouts where no file exists (GRUB legacy, Microsoft).
@Suite("Boot code")
struct BootCodeTests {
    static let grubDir = "/usr/lib/grub/i386-pc"
    static let syslinuxDir = "/usr/lib/syslinux/mbr"
    static let isolinuxDir = "/usr/lib/ISOLINUX"
    static var grubInstalled: Bool { FileManager.default.fileExists(atPath: "\(grubDir)/boot.img") }
    static var syslinuxInstalled: Bool {
        FileManager.default.fileExists(atPath: "\(syslinuxDir)/mbr.bin")
            && FileManager.default.fileExists(atPath: "\(isolinuxDir)/isohdpfx.bin")
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        let source = try FileByteSource(path: path)
        return try source.read(at: 0, count: Int(source.size))
    }

    /// `code` at the start of a 512-byte sector that also carries a disk signature, one partition
    /// and 55AA, the way an installer leaves sector 0 of a partitioned disk.
    static func installed(_ code: [UInt8]) -> [UInt8] {
        var image = ImageBuilder(sectors: 1)
        image.put(Array(code.prefix(BootCode.codeAreaSize)), at: 0)
        image.setDiskSignature(0x494D_4754)
        image.setMBREntry(slot: 0, bootable: true, type: 0x83, start: 2048, count: 8192)
        return image.bytes
    }

    // MARK: GRUB 2

    @Test(.enabled(if: grubInstalled, "needs GRUB's i386-pc boot.img (Debian package grub-pc-bin)"))
    func grub2BootImgAsShipped() throws {
        let code = BootCode.identify(sector0: try Self.readFile("\(Self.grubDir)/boot.img"))
        #expect(code.kind == .grub2)
        #expect(code.description == "GRUB 2 boot.img (core.img at sector 1, boot drive from BIOS)")
        #expect(code.details == ["image": "boot.img", "coreImageSector": "1", "bootDrive": "bios", "driveCheck": "shipped"])
    }

    /// What grub-setup writes for a GPT disk whose BIOS boot partition starts at 2048: the old
    /// sector's BPB and partition table kept, the kernel sector set, the drive check nopped out.
    @Test(.enabled(if: grubInstalled, "needs GRUB's i386-pc boot.img (Debian package grub-pc-bin)"))
    func grub2AsGrubSetupPatchesIt() throws {
        var sector = Self.installed(try Self.readFile("\(Self.grubDir)/boot.img"))
        var rng = SeededGenerator(seed: 0xB0_0715)
        for offset in 0x03..<0x5A { sector[offset] = UInt8.random(in: 0...255, using: &rng) }  // copied BPB
        ImageBuilder.store(2048, width: 8, at: 0x5C, in: &sector)
        sector[0x66] = 0x90
        sector[0x67] = 0x90
        let code = BootCode.identify(sector0: sector)
        #expect(code.kind == .grub2)
        #expect(code.description == "GRUB 2 boot.img (core.img at sector 2048, boot drive from BIOS)")
        #expect(code.details == ["image": "boot.img", "coreImageSector": "2048", "bootDrive": "bios", "driveCheck": "patched"])

        // A fixed boot drive and a kernel sector beyond 32 bits (the field is a u64).
        sector[0x64] = 0x80
        ImageBuilder.store(0x1_0000_0800, width: 8, at: 0x5C, in: &sector)
        let fixed = BootCode.identify(sector0: sector)
        #expect(fixed.description == "GRUB 2 boot.img (core.img at sector 4294969344, boot drive 0x80)")
        #expect(fixed.details["bootDrive"] == "0x80")
        #expect(fixed.details["coreImageSector"] == "4294969344")

        sector[0x66] = 0xEB
        sector[0x67] = 0x06
        #expect(BootCode.identify(sector0: sector).details["driveCheck"] == "unrecognized (eb 06)")
    }

    @Test(.enabled(if: grubInstalled, "needs GRUB's i386-pc boot_hybrid.img (Debian package grub-pc-bin)"))
    func grub2HybridKeepsKernelSectorAt0x1B0() throws {
        var sector = try Self.readFile("\(Self.grubDir)/boot_hybrid.img")
        let shipped = BootCode.identify(sector0: sector)
        #expect(shipped.kind == .grub2)
        #expect(shipped.details["image"] == "boot_hybrid.img")
        #expect(shipped.details["coreImageSector"] == "1")

        ImageBuilder.store(4096, width: 8, at: 0x1B0, in: &sector)
        #expect(BootCode.identify(sector0: sector).description == "GRUB 2 boot_hybrid.img (core.img at sector 4096, boot drive from BIOS)")
    }

    /// The messages move between builds; the identification must not depend on where they are.
    @Test(.enabled(if: grubInstalled, "needs GRUB's i386-pc boot.img (Debian package grub-pc-bin)"))
    func grub2MessagesMayMove() throws {
        var sector = try Self.readFile("\(Self.grubDir)/boot.img")
        let messages = Array(sector[0x180..<0x1A3])
        sector.replaceSubrange(0x180..<0x1A3, with: [UInt8](repeating: 0x90, count: messages.count))
        sector.replaceSubrange(0x100..<0x100 + messages.count, with: messages)
        #expect(BootCode.identify(sector0: sector).kind == .grub2)
    }

    // MARK: GRUB legacy

    /// A GRUB 0.97 stage1 from the layout in stage1/stage1.h: jump EB 48 90 to 0x4A, the stage1
    /// parameters at 0x3E.., code, the messages without CR LF, then the partition table area.
    static func legacyStage1(stage2Sector: UInt32 = 1, bootDrive: UInt8 = 0xFF) -> [UInt8] {
        var sector = [UInt8](repeating: 0, count: 512)
        sector.replaceSubrange(0..<3, with: [0xEB, 0x48, 0x90])
        sector[0x3E] = 3  // COMPAT_VERSION_MAJOR
        sector[0x3F] = 2  // COMPAT_VERSION_MINOR
        sector[0x40] = bootDrive
        sector[0x41] = 0  // force LBA off
        ImageBuilder.store(0x8000, width: 2, at: 0x42, in: &sector)
        ImageBuilder.store(UInt64(stage2Sector), width: 4, at: 0x44, in: &sector)
        ImageBuilder.store(0x0800, width: 2, at: 0x48, in: &sector)
        sector.replaceSubrange(0x4A..<0x52, with: [0xFA, 0xEB, 0x03, 0x31, 0xC0, 0x8E, 0xD8, 0x8E])  // cli; jmp; xor ax,ax ...
        let messages = Array("GRUB \0Geom\0Hard Disk\0Read\0 Error\0".utf8)
        sector.replaceSubrange(0x17B..<0x17B + messages.count, with: messages)
        sector[510] = 0x55
        sector[511] = 0xAA
        return sector
    }

    @Test func grubLegacyStage1() {
        let code = BootCode.identify(sector0: Self.installed(Self.legacyStage1()))
        #expect(code.kind == .grubLegacy)
        #expect(code.description == "GRUB legacy stage1 (version 3.2), stage2 at sector 1, boot drive from BIOS")
        #expect(code.details == ["version": "3.2", "stage2Sector": "1", "bootDrive": "bios"])

        let other = BootCode.identify(sector0: Self.legacyStage1(stage2Sector: 0x0012_3456, bootDrive: 0x80))
        #expect(other.details == ["version": "3.2", "stage2Sector": "1193046", "bootDrive": "0x80"])
    }

    @Test func grubLegacyWithOddVersionIsStillNamed() {
        var sector = Self.legacyStage1()
        sector[0x3F] = 1
        let code = BootCode.identify(sector0: sector)
        #expect(code.kind == .grubLegacy)
        #expect(code.details["version"] == "3.1")
        #expect(code.description.contains("unexpected version 3.1"))
    }

    /// GRUB 2's messages without its jump are not GRUB 2, and not GRUB legacy either (the final
    /// message ends in CR LF).
    @Test func grubMessagesWithoutJumpAreUnknown() {
        var sector = [UInt8](repeating: 0x90, count: 512)
        let messages = Array("GRUB \0Geom\0Hard Disk\0Read\0 Error\r\n\0".utf8)
        sector.replaceSubrange(0x180..<0x180 + messages.count, with: messages)
        #expect(BootCode.identify(sector0: sector).kind == .unknown)
    }

    // MARK: SYSLINUX

    @Test(
        .enabled(if: syslinuxInstalled, "needs Debian's syslinux-common and isolinux (apt-get install syslinux-common isolinux)"),
        arguments: [
            ("\(syslinuxDir)/mbr.bin", "mbr.bin", "SYSLINUX MBR (mbr.bin)"),
            ("\(syslinuxDir)/extra/mbr_c.bin", "mbr.bin", "SYSLINUX MBR (mbr.bin)"),
            ("\(syslinuxDir)/extra/mbr_f.bin", "mbr.bin", "SYSLINUX MBR (mbr.bin)"),
            ("\(syslinuxDir)/gptmbr.bin", "gptmbr.bin", "SYSLINUX GPT MBR (gptmbr.bin)"),
            ("\(syslinuxDir)/extra/gptmbr_c.bin", "gptmbr.bin", "SYSLINUX GPT MBR (gptmbr.bin)"),
            ("\(syslinuxDir)/altmbr.bin", "altmbr.bin", "SYSLINUX alternate MBR (altmbr.bin, partition number not set)"),
            ("\(syslinuxDir)/extra/altmbr_f.bin", "altmbr.bin", "SYSLINUX alternate MBR (altmbr.bin, partition number not set)"),
            ("\(isolinuxDir)/isohdpfx.bin", "isohdpfx.bin", "isohybrid MBR (isohdpfx.bin)"),
            ("\(isolinuxDir)/extra/isohdpfx_c.bin", "isohdpfx.bin", "isohybrid MBR (isohdpfx.bin)"),
            ("\(isolinuxDir)/isohdppx.bin", "isohdppx.bin", "isohybrid MBR (isohdppx.bin)"),
        ])
    func syslinux(path: String, image: String, description: String) throws {
        let code = BootCode.identify(sector0: Self.installed(try Self.readFile(path)))
        #expect(code.kind == .syslinux)
        #expect(code.details["image"] == image)
        #expect(code.description == description)
    }

    /// altmbr.bin boots the partition whose number is written at byte 439 after the code.
    @Test(.enabled(if: syslinuxInstalled, "needs Debian's syslinux-common (apt-get install syslinux-common)"))
    func syslinuxAltMBRPartitionByte() throws {
        var sector = Self.installed(try Self.readFile("\(Self.syslinuxDir)/altmbr.bin"))
        sector[439] = 5
        let code = BootCode.identify(sector0: sector)
        #expect(code.description == "SYSLINUX alternate MBR (altmbr.bin, boots partition 5)")
        #expect(code.details == ["image": "altmbr.bin", "partition": "5"])
    }

    // MARK: Microsoft

    /// The Windows 7 MBR's layout: the documented prologue, code, the three messages (English at
    /// 0x163, 0x17B and 0x19A), and their offsets' low bytes at 0x1B5..0x1B7.
    static func microsoftMBR(messages: [[UInt8]] = ["Invalid partition table", "Error loading operating system", "Missing operating system"].map { Array($0.utf8) }) -> [UInt8] {
        var sector = [UInt8](repeating: 0, count: 512)
        let code: [UInt8] = [0x33, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C, 0x8E, 0xC0, 0x8E, 0xD8, 0xBE, 0x00, 0x7C, 0xBF, 0x00, 0x06]
        sector.replaceSubrange(0..<code.count, with: code)
        // English messages start at 0x163; longer localized ones start earlier, ending before the table.
        var offset = min(0x163, 0x1B5 - messages.map { $0.count + 1 }.reduce(0, +))
        for (index, message) in messages.enumerated() {
            sector.replaceSubrange(offset..<offset + message.count, with: message)
            sector[0x1B5 + index] = UInt8(offset - 0x100)
            offset += message.count + 1
        }
        return installed(sector)
    }

    @Test func microsoftMBR() {
        let code = BootCode.identify(sector0: Self.microsoftMBR())
        #expect(code.kind == .microsoft)
        #expect(code.description == "Microsoft MBR")
        #expect(code.details == ["messages": "english"])
    }

    /// MS-DOS and Windows 9x MBRs start with a CLI before the same prologue.
    @Test func msdosMBRWithLeadingCLI() {
        var sector = Self.microsoftMBR()
        sector.replaceSubrange(0..<8, with: [0xFA, 0x33, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C])
        #expect(BootCode.identify(sector0: sector).kind == .microsoft)
    }

    /// A German Windows MBR: code-page 437 text ("Ungültige", ü = 0x81) found through the table.
    @Test func microsoftLocalizedMessages() {
        let german = [
            Array("Ung".utf8) + [0x81] + Array("ltige Partitionstabelle".utf8),
            Array("Fehler beim Laden des Betriebssystems".utf8),
            Array("Betriebssystem nicht vorhanden".utf8),
        ]
        let code = BootCode.identify(sector0: Self.microsoftMBR(messages: german))
        #expect(code.kind == .microsoft)
        #expect(code.details == ["messages": "localized"])
    }

    /// The prologue is common: without Microsoft's messages or message table it proves nothing.
    @Test func microsoftPrologueAloneIsUnknown() {
        var sector = Self.microsoftMBR()
        for offset in 0x163..<0x1B8 { sector[offset] = 0 }
        #expect(BootCode.identify(sector0: sector).kind == .unknown)
    }

    /// SYSLINUX's messages resemble Microsoft's ("Missing operating system."); its prologue does not.
    @Test(.enabled(if: syslinuxInstalled, "needs Debian's syslinux-common (apt-get install syslinux-common)"))
    func syslinuxIsNotMicrosoft() throws {
        let mbr = try Self.readFile("\(Self.syslinuxDir)/mbr.bin")
        #expect(BootCode.microsoft(Self.installed(mbr)) == nil)
    }

    // MARK: nothing, unknown, short

    @Test func zeroedCodeArea() {
        #expect(BootCode.identify(sector0: [UInt8](repeating: 0, count: 512)) == BootCode(kind: .none, description: "zeroed boot code"))
        // A protective MBR as sgdisk writes it: partition table and 55AA, no code.
        var image = ImageBuilder(sectors: 1)
        image.setMBREntry(slot: 0, type: 0xEE, start: 1, count: 0xFFFF_FFFF)
        #expect(BootCode.identify(sector0: image.bytes).kind == .none)
    }

    @Test func randomBytesAreUnknownWithHash() throws {
        var rng = SeededGenerator(seed: 0x5EC7_0A00)
        let sector = (0..<512).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let code = BootCode.identify(sector0: sector)
        #expect(code.kind == .unknown)
        let digest = try #require(code.details["sha256"])
        #expect(digest == SHA256.hexDigest(sector[0..<440]))
        #expect(digest.count == 64 && digest.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(code.description == "unknown boot code (sha256 \(digest.prefix(16))…)")
    }

    /// The hash covers only the code area: a different partition table is the same boot code.
    @Test func unknownHashIgnoresPartitionTable() {
        var sector = [UInt8](repeating: 0xCC, count: 512)
        let first = BootCode.identify(sector0: sector)
        sector[446] = 0x80
        sector[450] = 0x83
        #expect(BootCode.identify(sector0: sector) == first)
    }

    @Test(arguments: [0, 1, 440, 511])
    func shortInput(count: Int) {
        let code = BootCode.identify(sector0: [UInt8](repeating: 0, count: count))
        #expect(code.kind == .unknown)
        #expect(code.description == "sector 0 has only \(count) bytes, not 512; boot code not identified")
        #expect(code.details.isEmpty)
    }

    /// A 4096-byte sector (or more of the image) is fine; only the first 512 bytes count.
    @Test func longerInputUsesFirstSector() {
        let sector = Self.legacyStage1() + [UInt8](repeating: 0xAB, count: 3584)
        #expect(BootCode.identify(sector0: sector).kind == .grubLegacy)
    }

    /// Damaged copies of every known sector must give a value, never trap (the fuzzer goes further).
    @Test func mutatedSectorsNeverTrap() throws {
        var seeds = [Self.legacyStage1(), Self.microsoftMBR(), Self.microsoftMBR(messages: [[0x41], [0x42], [0x43]])]
        if Self.grubInstalled { seeds.append(try Self.readFile("\(Self.grubDir)/boot.img")) }
        if Self.syslinuxInstalled { seeds.append(Self.installed(try Self.readFile("\(Self.syslinuxDir)/gptmbr.bin"))) }
        var rng = SeededGenerator(seed: 0xF022)
        var kinds: Set<BootCode.Kind> = []
        for _ in 0..<3000 {
            var sector = seeds.randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 1...8, using: &rng) {
                let index = Int.random(in: 0..<sector.count, using: &rng)
                sector[index] = [0, 0xFF, 0x90, UInt8.random(in: 0...255, using: &rng)].randomElement(using: &rng)!
            }
            kinds.insert(BootCode.identify(sector0: sector).kind)
        }
        #expect(kinds.contains(.unknown) && kinds.contains(.grubLegacy) && kinds.contains(.microsoft), "\(kinds)")
    }
}

extension ImageBuilder {
    /// Little-endian store into a plain sector buffer, for tests that patch loader files.
    static func store(_ value: UInt64, width: Int, at offset: Int, in bytes: inout [UInt8]) {
        for i in 0..<width { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}
