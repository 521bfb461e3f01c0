import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// Containers read as the disks they hold: every conversion of a test image (by qemu-img, and by
/// ewfacquire for E01) gives the raw image's answers from inspect, verify, ls and cat, except
/// for the container's own fields. Writing to one stays refused; the files a container names are
/// opened only as the user allows.
@Suite(.serialized)
struct ContainerTests {
    typealias JSON = [String: Any]

    /// How each container is made from a raw image: qemu-img's driver and options, or ewfacquire.
    /// VHDs keep the raw size exactly (force_size): without it qemu-img rounds a VHD up to a CHS
    /// geometry, which is a different disk (a GPT's backup header is then no longer at the end).
    static let conversions: [(name: String, driver: String?, options: [String])] = [
        ("v2.qcow2", "qcow2", ["-o", "compat=0.10"]),
        ("zlib.qcow2", "qcow2", ["-c"]),
        ("zstd.qcow2", "qcow2", ["-c", "-o", "compression_type=zstd"]),
        ("sparse.vmdk", "vmdk", []),
        ("stream.vmdk", "vmdk", ["-o", "subformat=streamOptimized"]),
        ("flat.vmdk", "vmdk", ["-o", "subformat=monolithicFlat"]),
        ("split.vmdk", "vmdk", ["-o", "subformat=twoGbMaxExtentSparse"]),
        ("dynamic.vhd", "vpc", ["-o", "force_size=on"]),
        ("fixed.vhd", "vpc", ["-o", "subformat=fixed,force_size=on"]),
        ("disk.vhdx", "vhdx", []),
        ("fast.E01", nil, ["-c", "fast"]),
        // Uncompressed in 16 MiB segments: a 64 MiB image spans E01 to E05.
        ("segments.E01", nil, ["-c", "none", "-S", "16MiB"]),
    ]

    /// `raw` converted to every container in `conversions`, next to it.
    static func convert(_ raw: String, in scratch: Scratch, prefix: String = "") throws -> [String] {
        try conversions.map { c in
            let out = scratch.file(prefix + c.name)
            if let driver = c.driver {
                try run(["qemu-img", "convert", "-f", "raw", "-O", driver] + c.options + [raw, out])
            } else {
                // ewfacquire names the segments TARGET.E01, .E02, ...
                try run(["ewfacquire", "-u", "-q"] + c.options + ["-t", String(out.dropLast(4)), raw])
            }
            return out
        }
    }

    /// A command's outcome with the image's own path and the container's fields taken out, so the
    /// raw image's and a container's compare as equal when they say the same about the disk.
    func outcome(_ arguments: [String], image: String) throws -> String {
        let r = try imgtool(arguments + [image])
        var text = r.stdout
        if arguments.contains("--json"), let object = try? JSONSerialization.jsonObject(with: Data(r.output)) as? JSON {
            var trimmed = object
            trimmed["container"] = nil
            text = String(decoding: try JSONSerialization.data(withJSONObject: trimmed, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]),
                          as: UTF8.self)
        } else {
            // The human report's container line is the container's own.
            text = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("container: ") }.joined(separator: "\n")
        }
        return "exit \(r.status)\n\(text)\n\(r.stderr)".replacingOccurrences(of: image, with: "IMAGE")
    }

    func expectSameAnswers(raw: String, containers: [String], commands: [[String]],
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
        for command in commands {
            let reference = try outcome(command, image: raw)
            for container in containers {
                let theirs = try outcome(command, image: container)
                #expect(theirs == reference, "\(command.joined(separator: " ")) on \(container)", sourceLocation: sourceLocation)
            }
        }
    }

    @Test("a Debian-like system (dos, ext2 /boot, ext4 root): inspect, ls and cat through every container")
    func osTree() throws {
        let scratch = try Scratch()
        let raw = scratch.file("os.img")
        try run(["\(repositoryRoot)/TestImages/make-os-tree.sh", raw])
        let containers = try Self.convert(raw, in: scratch)
        try expectSameAnswers(raw: raw, containers: containers, commands: [
            ["inspect", "--json"], ["inspect"], ["verify", "--json"],
            ["ls", "--json", "--partition", "2", "/etc"], ["ls", "-l", "--partition", "1", "/"],
        ])
        // cat: the same bytes, and the container's report names it with qemu-img's facts.
        for container in containers {
            let cat = try imgtool(["cat", "--partition", "2", container, "/etc/os-release"])
            #expect(cat.status == 0 && cat.stdout.contains("ID=debian"), "\(container): \(cat.stderr)")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(try imgtool(["inspect", "--json", container]).output)) as? JSON)
            let facts = try #require(report["container"] as? JSON, "\(container)")
            #expect(facts["virtualSize"] as? Int == 64 << 20, "\(container): \(facts)")
            #expect((report["os"] as? JSON)?["id"] as? String == "debian", "\(container)")
        }
    }

    @Test("a UEFI disk (GPT, FAT16 ESP with GRUB) and a grub-mkrescue hybrid ISO: verify and inspect through every container")
    func bootableImages() throws {
        let scratch = try Scratch()
        let efi = scratch.file("efi.img")
        try run(["\(repositoryRoot)/TestImages/make-efi-disk.sh", efi])
        let tree = scratch.file("tree")
        try run(["mkdir", "-p", tree + "/boot/grub"])
        try "set timeout=30\nmenuentry 'Rescue' { true }\n".write(toFile: tree + "/boot/grub/grub.cfg", atomically: true, encoding: .utf8)
        let rescue = scratch.file("rescue.img")
        try run(["grub-mkrescue", "-o", rescue, tree])
        for (raw, prefix) in [(efi, "efi-"), (rescue, "rescue-")] {
            let containers = try Self.convert(raw, in: scratch, prefix: prefix)
            try expectSameAnswers(raw: raw, containers: containers, commands: [["inspect", "--json"], ["verify", "--json"]])
        }
        // ls reads the ESP's FAT and the hybrid's ISO 9660 volume through the container too.
        try expectSameAnswers(raw: efi, containers: [scratch.file("efi-zstd.qcow2"), scratch.file("efi-disk.vhdx")],
                              commands: [["ls", "--json", "--partition", "1", "/EFI/BOOT"]])
        try expectSameAnswers(raw: rescue, containers: [scratch.file("rescue-stream.vmdk"), scratch.file("rescue-fast.E01")],
                              commands: [["ls", "--json", "/boot/grub"]])

        // verify --boot boots a container through qemu's own driver, named: the menu, as from the raw
        // image, under SeaBIOS and OVMF (the ISO is a hybrid). Only the UEFI path's verdict comes from
        // the boot: imgtool does not resolve the EFI image's prefix ()/boot/grub.
        func outcome(_ image: String) throws -> [String] {
            let r = try imgtool(["verify", "--boot", "--json", image])
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, "\(r.stderr)")
            let disagreements = bootDisagreements(json)
            #expect(disagreements.count == 1 && disagreements[0].hasPrefix("the static checks said cannot tell, but booting under OVMF"),
                    "\(image): \(disagreements)")
            return (json["boots"] as? [JSON] ?? []).map { "\($0["firmware"] as? String ?? "?") \($0["outcome"] as? String ?? "?")" }
        }
        let booted = try outcome(rescue)
        #expect(booted == ["bios grubMenu", "efi grubMenu"])
        #expect(try outcome(scratch.file("rescue-zlib.qcow2")) == booted)
        #expect(try outcome(scratch.file("rescue-disk.vhdx")) == booted)
        // qemu has no E01 driver: refused with the way to a raw copy.
        let ewf = try imgtool(["verify", "--boot", scratch.file("rescue-fast.E01")])
        #expect(ewf.status == 2 && ewf.stderr.contains("ewfexport"), "\(ewf.stderr)")
    }

    @Test("a backing file is read only with --backing; without it, a finding says what was not read")
    func backingFiles() throws {
        let scratch = try Scratch()
        let raw = scratch.file("os.img")
        try run(["\(repositoryRoot)/TestImages/make-os-tree.sh", raw])
        try run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, scratch.file("base.qcow2")])
        let overlay = scratch.file("overlay.qcow2")
        // A relative name, resolved next to the overlay as qemu resolves it.
        try run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay])

        let alone = try #require(try JSONSerialization.jsonObject(with: Data(try imgtool(["inspect", "--json", overlay]).output)) as? JSON)
        #expect((alone["container"] as? JSON)?["backingFile"] as? String == "base.qcow2")
        #expect((alone["findings"] as? [JSON] ?? []).contains { ($0["message"] as? String)?.contains("--backing") == true })
        #expect((alone["partitionTable"] as? JSON)?["partitions"] as? [JSON] == nil
            || ((alone["partitionTable"] as? JSON)?["partitions"] as? [JSON])?.isEmpty == true, "nothing of the base is read")
        let ls = try imgtool(["ls", "--partition", "2", overlay, "/etc"])
        #expect(ls.status == ExitStatus.usage.rawValue && ls.stderr.contains("--backing"), "\(ls.stderr)")

        try expectSameAnswers(raw: raw, containers: [overlay], commands: [
            ["inspect", "--json", "--backing"], ["ls", "--json", "--backing", "--partition", "2", "/etc"],
        ])
        let cat = try imgtool(["cat", "--backing", "--partition", "2", overlay, "/etc/hostname"])
        #expect(cat.status == 0 && cat.stdout == "testhost\n", "\(cat.stderr)")

        // A loop of backing files ends at the depth limit, as a finding.
        try run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "loop-b.qcow2", "-F", "qcow2", scratch.file("loop-a.qcow2"), "64M"])
        try run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "loop-a.qcow2", "-F", "qcow2", scratch.file("loop-b.qcow2"), "64M"])
        let looped = try imgtool(["inspect", "--json", "--backing", scratch.file("loop-a.qcow2")])
        #expect(looped.status == 0 && looped.stdout.contains("deep"), "\(looped.stdout)")
    }

    @Test("what a container names is opened only as allowed: /etc/shadow as a backing file, an extent outside its directory")
    func namedFilesStayClosed() throws {
        let scratch = try Scratch()
        let shadow = scratch.file("shadow.qcow2")
        try run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", shadow, "64M"])
        let r = try imgtool(["inspect", "--json", shadow])
        #expect(r.status == 0 && !r.stdout.contains("root:"), "nothing of the backing file is read")
        #expect(r.stdout.contains("/etc/shadow") && r.stdout.contains("--backing"))

        try run(["mkdir", scratch.file("vm")])
        try run(["truncate", "-s", "64M", scratch.file("outside.img")])
        let descriptor = scratch.file("vm/disk.vmdk")
        try """
            # Disk DescriptorFile
            version=1
            CID=fffffffe
            parentCID=ffffffff
            createType="monolithicFlat"
            RW 131072 FLAT "../outside.img" 0
            """.write(toFile: descriptor, atomically: true, encoding: .utf8)
        let escaped = try imgtool(["inspect", "--json", descriptor])
        #expect(escaped.status == 0 && escaped.stdout.contains("only files in its own directory"), "\(escaped.stdout)")
        let ls = try imgtool(["ls", descriptor])
        #expect(ls.status == ExitStatus.badImage.rawValue && ls.stderr.contains("own directory"), "\(ls.stderr)")
    }

    @Test("an encrypted qcow2 is described, not read; install-grub refuses every container and changes nothing")
    func encryptedAndWriting() throws {
        let scratch = try Scratch()
        // crypt_method 1 (AES), as an old encrypted image has it, set in a qemu-img image's header:
        // qemu-img's LUKS encryption times its key derivation, which fails on a loaded machine.
        let encrypted = scratch.file("enc.qcow2")
        try run(["qemu-img", "create", "-q", "-f", "qcow2", encrypted, "64M"])
        try run(["sh", "-c", "printf '\\000\\000\\000\\001' | dd of=\"$1\" bs=1 seek=32 conv=notrunc status=none", "sh", encrypted])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(try imgtool(["inspect", "--json", encrypted]).output)) as? JSON)
        #expect((report["container"] as? JSON)?["encrypted"] as? Bool == true)
        #expect((report["findings"] as? [JSON] ?? []).contains { ($0["severity"] as? String) == "error" })
        #expect(try imgtool(["verify", encrypted]).status == 2)
        #expect(try imgtool(["ls", encrypted]).status == ExitStatus.badImage.rawValue)

        let raw = try makeDisk(scratch.file("disk.img"), ["--label", "gpt"])
        for (name, driver) in [("disk.qcow2", "qcow2"), ("disk.vmdk", "vmdk")] {
            let image = scratch.file(name)
            try run(["qemu-img", "convert", "-f", "raw", "-O", driver, raw, image])
            let before = try sha256(image)
            let install = try imgtool(["install-grub", image])
            #expect(install.status == ExitStatus.badImage.rawValue && install.stderr.contains("--isolate"), "\(install.stderr)")
            #expect(try sha256(image) == before)
        }
    }

    /// The inspect benchmark's layout grown to 1 TiB (BIOS boot, ESP, a 64 MiB ext4, the rest) as
    /// a qcow2: the same report as the raw image, from a file of a few MiB.
    @Test("a 1 TiB qcow2 is inspected as its raw image is")
    func terabyte() throws {
        let scratch = try Scratch()
        let raw = scratch.file("big.img")
        try run(["truncate", "-s", "1T", raw])
        try run(["sgdisk", "-U", "494D4754-0000-4000-8000-000000000000", "-n", "1:2048:+1M", "-t", "1:ef02",
                 "-n", "2:0:+512M", "-t", "2:ef00", "-n", "3:0:+64M", "-t", "3:8300", "-n", "4:0:0", "-t", "4:8300", raw])
        let start = 2048 + 2048 + 512 * 2048
        try run(["env", "E2FSPROGS_FAKE_TIME=1700000000", "mkfs.ext4", "-q", "-F", "-E", "offset=\(start * 512)", raw, "65536"])
        let qcow2 = scratch.file("big.qcow2")
        try run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2])
        try expectSameAnswers(raw: raw, containers: [qcow2], commands: [["inspect", "--json"]])
    }
}
