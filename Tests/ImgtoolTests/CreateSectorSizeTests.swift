import Foundation
import Glibc
import ImgSystem
import Testing
import TestSupport

/// `create --sector-size 4096`: the table through a loop device with 4096-byte blocks (root), so
/// libparted lays it out in 4 KiB sectors; the filesystems at their byte offsets; GRUB for UEFI,
/// booted under OVMF with 4 KiB sectors. And nothing attached afterwards.
@Suite(.serialized, .disabled(if: kernelTestsBlocked != nil, "\(kernelTestsBlocked ?? "")"))
struct CreateSectorSizeTests {
    let scratch: Scratch
    init() throws { scratch = try Scratch() }

    @Test("a 4096-byte-sector GPT image: 4 KiB table, ESP and ext4 at their offsets, GRUB booted under OVMF")
    func fourKiB() throws {
        let cfg = scratch.file("tree/boot/grub/grub.cfg")
        try makeDirectory(scratch.file("tree"), mode: 0o755)
        try makeDirectory(scratch.file("tree/boot"), mode: 0o755)
        try makeDirectory(scratch.file("tree/boot/grub"), mode: 0o755)
        try writeFile(cfg, Array("serial --unit=0 --speed=115200\nterminal_output serial\necho CREATE-4K-BOOTED\nhalt\n".utf8))
        let image = scratch.file("4k.img")
        let r = try imgtool(["create", "--json", "-q", "--seed", "4k", "--sector-size", "4096", image,
                             "--partition", "type=esp,format=vfat", "--partition", "type=root,format=ext4,copy=\(scratch.file("tree"))",
                             "--bootloader", "uefi"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(leftovers().isEmpty, "\(leftovers())")
        // imgtool's own GPT reader finds the header at byte 4096, and the partitions in 4 KiB sectors.
        let inspect = try imgtool(["inspect", "--json", image])
        #expect(inspect.stdout.contains("\"sectorSize\" : 4096") || inspect.stdout.contains("\"sectorSize\": 4096"), "\(inspect.stdout)")
        // A 257 MiB ESP at 1 MiB (sector 256), then ext4; both where blkid looks for them.
        let esp = try Subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", "-O", "\(1 << 20)", image])
        #expect(esp.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "vfat")
        #expect(r.stdout.contains("\"startSector\" : 256") || r.stdout.contains("\"startSector\": 256"), "\(r.stdout)")
        let fat = try Subprocess.run(["blkid", "-p", "-o", "value", "-s", "BLOCK_SIZE", "-O", "\(1 << 20)", image])
        #expect(fat.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "4096", "FAT with 4 KiB sectors")
        let booted = try boot(image, expect: "CREATE-4K-BOOTED", timeout: 120, firmware: "uefi", sectorSize: 4096)
        #expect(booted.found, "\(booted.console)")
    }

    @Test("without root, 4096-byte sectors are refused before anything is made (exit 69)")
    func refusedUnprivileged() throws {
        try #require(chmod(scratch.path, 0o777) == 0)
        let image = scratch.file("4k.img")
        let r = try imgtool(["create", "--sector-size", "4096", image, "--partition", "type=linux,format=ext4"], user: 65534)
        #expect(r.status == 69 && r.stderr.contains("needs root"), "\(r.status) \(r.stderr)")
        #expect(access(image, F_OK) != 0)
    }
}
