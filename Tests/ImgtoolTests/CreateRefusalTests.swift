import Foundation
import Glibc
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// `imgtool create`'s refusals (message, exit code, nothing at the image's path, no staging file),
/// a signal half-way, and --bootloader's images booted.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct CreateRefusalTests {
    typealias JSON = [String: Any]

    func expectRefusal(_ w: CreateWorkspace, _ arguments: [String], image: String, status: ImgKit.ExitStatus, message: String,
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try w.create([image] + arguments)
        #expect(r.status == status.rawValue, "exit \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains("imgtool: error: ") && r.stderr.contains(message), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.output.isEmpty, sourceLocation: sourceLocation)
        #expect(access(image, F_OK) != 0, "\(image) exists after the refusal", sourceLocation: sourceLocation)
        #expect(w.stagingFiles() == [], "staging files left: \(w.stagingFiles())", sourceLocation: sourceLocation)
    }

    @Test("every refusal names the problem, exits with its code, and leaves nothing at the image's path and no staging file")
    func refusals() throws {
        let w = try CreateWorkspace()
        let tree = try w.userTree(big: 12)
        let image = w.path("new disk.img")
        try expectRefusal(w, ["--partition", "type=linux,size=10M,format=ext4,copy=\(tree)"], image: image, status: .layout,
                          message: "--partition 1: the contents need about")
        try expectRefusal(w, ["--size", "50M", "--partition", "type=linux,size=40M", "--partition", "type=linux,size=20M"], image: image,
                          status: .layout, message: "The partitions need 62 MiB and the disk is 50 MiB")
        try expectRefusal(w, ["--partition", "type=bogus"], image: image, status: .layout, message: "--partition 1: unknown partition type 'bogus'")
        try expectRefusal(w, ["--partition", "type=linux,size=2M,format=btrfs"], image: image, status: .layout, message: "format=btrfs is not one imgtool makes")
        try expectRefusal(w, ["--partition", "type=esp,size=16M,format=vfat"], image: image, status: .layout,
                          message: "an EFI system partition of 16 MiB is too small for FAT32")
        try expectRefusal(w, ["--partition", "type=linux,format=ext4,copy=\(w.path("no such tree"))"], image: image, status: .noInput,
                          message: "no such tree: there is no such file or directory")
        try expectRefusal(w, ["--table", "mbr", "--partition", "type=bios-boot,size=1M"], image: image, status: .layout,
                          message: "an MBR disk has no BIOS boot partition")
        try expectRefusal(w, ["--sector-size", "4096", "--partition", "type=linux,size=2M"], image: image, status: .unavailable,
                          message: "needs root and /dev/loop-control")
        try expectRefusal(w, ["--partition", "type=linux,size=2M"], image: w.path("no dir/x.img"), status: .cannotCreate,
                          message: "Cannot create \(w.path("no dir/x.img")): open(O_TMPFILE) on \(w.path("no dir")): No such file or directory")
        try run(["install", "-d", "-m", "0755", w.path("root's")])
        try expectRefusal(w, ["--partition", "type=linux,size=2M"], image: w.path("root's/x.img"), status: .cannotCreate,
                          message: "Permission denied")
        // BIOS on GPT needs a BIOS boot partition: refused before anything is made.
        try expectRefusal(w, ["--partition", "type=esp,size=64M,format=vfat", "--partition", "type=root,format=ext4", "--bootloader", "hybrid"],
                          image: image, status: .layout, message: "--bootloader hybrid: GRUB for BIOS on a GPT disk embeds its core.img in a BIOS boot partition")

        let definitions = w.path("repart d")
        for (lines, message) in [(["Type=bogus"], "a.conf:2: unknown partition type 'bogus'"),
                                 (["Type=linux-generic", "Encrypt=key-file"], "a.conf: Encrypt= is not supported by imgtool create"),
                                 (["Type=linux-generic", "Format=btrfs"], "a.conf:3: Format=btrfs is not a filesystem imgtool create makes")] {
            try w.definition(definitions, "a.conf", lines)
            try expectRefusal(w, ["--definitions", definitions], image: image, status: .layout, message: message)
        }

        // An existing image: refused and unchanged without --overwrite, replaced with it.
        let existing = w.path("existing.img")
        try run(asUser(CreateWorkspace.user) + ["sh", "-c", "printf 'precious' > \"$1\"", "sh", existing])
        let before = try sha256(existing)
        let r = try w.create([existing, "--partition", "type=linux,size=2M"])
        #expect(r.status == ImgKit.ExitStatus.cannotCreate.rawValue && r.stderr.contains("already exists. Give --overwrite"), "\(r.stderr)")
        #expect(try sha256(existing) == before)
        #expect(w.stagingFiles() == [])
        let replaced = try w.create([existing, "--partition", "type=linux,size=2M", "--overwrite", "-q"])
        #expect(replaced.status == 0, "\(replaced.stderr)")
        #expect(try sha256(existing) != before)
        #expect(try CreateRead.sfdisk(existing).partitions.count == 1)
        #expect(w.stagingFiles() == [])
    }

    @Test("a signal half-way through a create (a 200 MB tree, --bootloader hybrid) leaves nothing in the directory, or a finished image",
          arguments: [SIGTERM, SIGKILL])
    func signalHalfway(signal: Int32) throws {
        let w = try CreateWorkspace()
        let tree = try w.userTree(big: 200)
        let image = w.path("signalled.img")
        let executable = try imgtoolPath(reachableBy: CreateWorkspace.user)
        let name = signal == SIGKILL ? "SIGKILL" : "SIGTERM"
        let before = Set(directoryEntries(w.directory))
        var interrupted = 0, finished = 0
        for delay in [100, 150, 200, 250, 300, 500, 800, 1200] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = Array(asUser(CreateWorkspace.user).dropFirst()) + [
                executable, "create", image, "-q", "--partition", "type=bios-boot,size=1M", "--partition", "type=esp,size=64M,format=vfat",
                "--partition", "type=root,format=ext4,copy=\(tree)", "--bootloader", "hybrid",
            ]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            let started = monotonicNow()
            try p.run()
            usleep(UInt32(delay * 1000))
            kill(p.processIdentifier, signal)
            p.waitUntilExit()
            let seconds = monotonicNow() - started
            if p.terminationReason == .exit && p.terminationStatus == 0 {
                finished += 1
                let verify = try imgtool(["verify", image])
                #expect(verify.status == 0, "finished after \(delay) ms but not bootable: \(verify.stdout)")
                unlink(image)
            } else {
                interrupted += 1
                // SIGTERM is caught and cleaned up after (exit 128+15); SIGKILL cannot be, and the
                // unnamed file it was building goes with the process.
                let expected: (Process.TerminationReason, Int32) = signal == SIGKILL ? (.uncaughtSignal, SIGKILL) : (.exit, 143)
                #expect(p.terminationReason == expected.0 && p.terminationStatus == expected.1,
                        "after \(delay) ms: \(p.terminationReason) \(p.terminationStatus)")
            }
            #expect(Set(directoryEntries(w.directory)) == before, "after \(delay) ms: left \(Set(directoryEntries(w.directory)).subtracting(before))")
            print("\(name) after \(delay) ms: \(p.terminationStatus) in \(String(format: "%.2f", seconds)) s")
        }
        #expect(interrupted > 0, "no \(name) landed while create ran")
        #expect(leftovers() == [])
        print("create \(name): \(interrupted) interrupted, \(finished) finished")
    }

    struct BootCase: CustomTestStringConvertible, Sendable {
        let bootloader: String
        let table: String
        let partitions: [String]
        let firmwares: [String]
        var secureBoot = false
        var testDescription: String { "--bootloader \(bootloader)\(secureBoot ? " --secure-boot" : "") --table \(table)" }
    }

    static let bootCases = [
        BootCase(bootloader: "bios", table: "gpt", partitions: ["type=bios-boot,size=1M", "type=root,format=ext4,copy=TREE"], firmwares: ["bios"]),
        BootCase(bootloader: "bios", table: "mbr", partitions: ["type=linux,format=ext4,copy=TREE,bootable"], firmwares: ["bios"]),
        BootCase(bootloader: "uefi", table: "gpt", partitions: ["type=esp,size=64M,format=vfat", "type=root,format=ext4,copy=TREE"], firmwares: ["uefi"]),
        BootCase(bootloader: "hybrid", table: "gpt", partitions: ["type=bios-boot,size=1M", "type=esp,size=64M,format=vfat", "type=root,format=ext3,copy=TREE"],
                 firmwares: ["bios", "uefi"]),
        BootCase(bootloader: "hybrid", table: "gpt", partitions: ["type=bios-boot,size=1M", "type=esp,size=64M,format=vfat", "type=root,format=ext4,copy=TREE"],
                 firmwares: ["uefi-secure"], secureBoot: true),
    ]

    @Test("--bootloader: verify calls the image bootable, and GRUB reads the tree's grub.cfg under SeaBIOS or OVMF", arguments: bootCases)
    func bootloader(_ c: BootCase) throws {
        let w = try CreateWorkspace()
        let tree = try w.userTree()
        let image = w.path("boot disk.img")
        var started = monotonicNow()
        let json = try w.createJSON([image, "--table", c.table] + c.partitions.flatMap { ["--partition", $0.replacingOccurrences(of: "TREE", with: tree)] }
                                    + ["--bootloader", c.bootloader] + (c.secureBoot ? ["--secure-boot"] : []))
        let createSeconds = monotonicNow() - started
        #expect(json["bootable"] as? Bool == true)
        let grub = json["grub"] as? JSON
        #expect(grub?["firmware"] as? String == c.bootloader && grub?["strategy"] as? String == "offline" && grub?["secureBoot"] as? Bool == c.secureBoot)
        let verify = try CreateRead.json(asUser(CreateWorkspace.user) + [try imgtoolPath(reachableBy: CreateWorkspace.user), "verify", "--json", image])
        #expect(verify["bootable"] as? Bool == true)
        if c.bootloader != "uefi" { #expect((verify["bios"] as? JSON)?["bootable"] as? Bool == true, "\(verify["bios"] ?? "")") }
        if c.bootloader != "bios" { #expect((verify["efi"] as? JSON)?["bootable"] as? Bool == true) }
        var times: [String] = []
        for firmware in c.firmwares {
            started = monotonicNow()
            let booted = try boot(image, expect: CreateWorkspace.marker, firmware: firmware)
            times.append("\(firmware) \(String(format: "%.1f", monotonicNow() - started)) s")
            #expect(booted.found, "\(firmware): GRUB did not print \(CreateWorkspace.marker); console:\n\(booted.console)")
        }
        #expect(leftovers() == [])
        print("\(c.testDescription): create \(String(format: "%.2f", createSeconds)) s, boots: \(times.joined(separator: ", "))")
    }
}
