import Foundation
import ImgFormats
import ImgSystem
import Testing
import TestSupport

/// GrubBIOSSetup against the real thing: two copies of one image, GRUB installed into A by
/// grub-install (through `imgtool install-grub` and loop devices), and into B by grub-mkimage plus
/// GrubBIOSSetup's bytes written with plain file I/O. Sector 0 and the whole embedding area must be
/// identical; with A's boot partition copied over, B must equal A and boot.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct GrubBIOSSetupDifferentialTests {
    static let grubDirectory = "/usr/lib/grub/i386-pc"

    /// The usual 1 MiB areas, where twice core.img fits, and areas smaller than that (but larger
    /// than core.img), where the area's size caps the embedding.
    static let layouts: [[String]] = [
        ["--label", "dos"], ["--label", "gpt"],
        ["--label", "dos", "--first-sector", "80"], ["--label", "gpt", "--bios-boot-sectors", "70"],
    ]

    @Test("offline placement equals grub-install's, and boots", arguments: layouts)
    func matchesGrubInstall(layout: [String]) throws {
        let scratch = try Scratch()
        let marker = "IMGTOOL-BIOS-SETUP-" + layout.filter { !$0.hasPrefix("--") }.joined(separator: "-").uppercased()
        let a = try makeDisk(scratch.file("a.img"), layout + ["--marker", marker])
        let b = scratch.file("b.img")
        try run(["cp", "--sparse=always", a, b])

        let installed = try imgtool(["install-grub", a])
        #expect(installed.status == 0, "stderr: \(installed.stderr)")
        #expect(leftovers() == [])

        // What grub-install chose, read back from A: core.img's modules (in image order, which
        // grub-mkimage reproduces) and prefix.
        let sourceA = try FileByteSource(path: a)
        let sector0A = try sourceA.read(at: 0, count: 512)
        let chosen = try GrubCoreDecoder.decode(sourceA, bootSector: sector0A)
        let prefix = try #require(chosen.prefix)
        #expect(chosen.config == nil, "grub-install embedded a config; grub-mkimage would need -c")
        let corePath = scratch.file("core.img")
        try run(["grub-mkimage", "-O", "i386-pc", "-d", Self.grubDirectory, "-p", prefix, "-o", corePath] + chosen.modules)
        let core = try readFile(corePath)
        // grub-install builds core.img the same way and leaves its copy in /boot/grub/i386-pc.
        let leftCore = try imgtool(["cat", a, "/boot/grub/i386-pc/core.img"])
        #expect(leftCore.status == 0, "stderr: \(leftCore.stderr)")
        #expect(leftCore.output == core, "grub-mkimage's core.img differs from the one grub-install left in /boot/grub/i386-pc")

        // B: GrubBIOSSetup's bytes, written with plain file I/O.
        let sourceB = try FileByteSource(path: b)
        let table = try #require(try PartitionTable.read(from: sourceB))
        let area = try EmbeddingArea.find(in: table).get()
        let placement = try GrubBIOSSetup.place(
            bootImage: try readFile(Self.grubDirectory + "/boot.img"), coreImage: core, area: area, disk: sourceB)
        let handle = try #require(FileHandle(forUpdatingAtPath: b))
        for write in placement.writes {
            try handle.seek(toOffset: write.offset)
            try handle.write(contentsOf: write.bytes)
        }
        try handle.close()

        let after = try FileByteSource(path: b)
        #expect(try after.read(at: 0, count: 512) == sector0A, "sector 0")
        let areaBytes = (offset: area.startSector * 512, count: Int(area.sectorCount) * 512)
        let areaA = try sourceA.read(at: areaBytes.offset, count: areaBytes.count)
        let areaB = try after.read(at: areaBytes.offset, count: areaBytes.count)
        let differing = stride(from: 0, to: areaBytes.count, by: 512).filter { areaA[$0..<$0 + 512] != areaB[$0..<$0 + 512] }
        #expect(differing.isEmpty, "embedding area sectors that differ: \(differing.prefix(8).map { area.startSector + UInt64($0 / 512) })")
        // grub-bios-setup wrote as many sectors as GrubBIOSSetup did: twice core.img, or the area.
        #expect(chosen.sectors == UInt64(placement.sectors.count))
        #expect(placement.sectors.count == min(2 * ((core.count + 511) / 512), Int(area.sectorCount)))
        #expect(placement.redundancyBytes > 0)

        // The boot partition (the one that is not the BIOS boot partition) copied from A: grub-install
        // changed nothing else, so B is A, and it boots.
        let boot = try #require(table.partitions.first { $0.typeGUID != .biosBoot })
        try run(["dd", "if=\(a)", "of=\(b)", "bs=512", "skip=\(boot.startSector)", "seek=\(boot.startSector)",
                 "count=\(boot.sectorCount)", "conv=notrunc,sparse", "status=none"])
        #expect(try sha256(b) == (try sha256(a)), "B differs from A outside sector 0 and the embedding area")
        let booted = try TestSupport.boot(b, expect: marker)
        #expect(booted.found, "GRUB did not print \(marker); console:\n\(booted.console)")
    }
}
