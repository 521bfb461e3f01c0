import Foundation
import Glibc
@testable import ImgKit
import ImgSystem
import Testing
import TestSupport

/// `--isolate`: the command runs in a throwaway VM (Debian's cloud kernel under qemu), which has
/// the device mapper and partition parsing this host's kernel lacks. install-grub there, offline
/// by default (into a working copy the host renames over the image), with the classic
/// device-mapper recipe, with partscan and on the VM's block device, leaves an image that boots;
/// inspect, verify, ls and cat print what a local run prints; failures are reported with the VM's
/// console; nothing of ours is left on the host.
@Suite(.serialized, .enabled(if: isolatedVMBlocked ?? kernelTestsBlocked == nil, "\(isolatedVMBlocked ?? kernelTestsBlocked ?? "")"))
final class IsolateTests {
    let scratch: Scratch

    init() throws {
        scratch = try Scratch()
    }

    deinit {
        #expect(leftovers() == [], "after the test")
        #expect(IsolatedVMTests.leftovers() == [], "after the test")
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let label: String
        let arguments: [String]
        var testDescription: String { "\(label) \(arguments.joined(separator: " "))" }
    }

    @Test("install-grub --isolate leaves an image that boots, with device mapper and with partscan", arguments: [
        Case(label: "dos", arguments: ["--strategy", "device-mapper"]),
        Case(label: "gpt", arguments: ["--strategy", "device-mapper"]),
        Case(label: "dos", arguments: ["--disk-name", "hda"]),
        Case(label: "dos", arguments: ["--strategy", "partscan"]),
        Case(label: "gpt", arguments: ["--strategy", "block-device"]),
        Case(label: "gpt", arguments: []),
        Case(label: "dos", arguments: []),
    ])
    func installsAndBoots(_ c: Case) throws {
        let marker = "IMGTOOL-ISOLATED-\(c.label)-\(c.arguments.last ?? "auto")".uppercased()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", c.label, "--marker", marker])
        let r = try imgtool(["install-grub", "--isolate", "--json"] + c.arguments + [image])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let json = try JSONValue.parse(r.output)
        let result = try #require(InstallGrub.Result(json: json), "\(r.stdout)")
        // The report names the host's path, not the VM's disk.
        #expect(result.image == image)
        // make-disk.sh's GPT layout has a BIOS boot partition first.
        let bootNumber = c.label == "gpt" ? 2 : 1
        #expect(result.bootPartition.number == bootNumber)
        // By default the VM installs offline: nothing attached, no grub-install.
        let expected = c.arguments.isEmpty ? "offline" : c.arguments.last == "device-mapper" || c.arguments.first == "--disk-name"
            ? "device-mapper" : c.arguments.last!
        #expect(result.strategy.rawValue == expected)
        if expected == "offline" {
            #expect(result.diskDevice == image && result.bootPartition.device == "partition \(bootNumber) of \(image)")
            #expect(r.stderr.contains("nothing was attached or mounted"), "\(r.stderr)")
        } else if expected == "block-device" {
            #expect(result.diskDevice == "/dev/vda" && result.bootPartition.device == "/dev/vda\(bootNumber)")
        } else if expected == "device-mapper" {
            let disk = c.arguments.first == "--disk-name" ? "hda" : try #require(result.diskDevice.split(separator: "/").last.map(String.init))
            #expect(result.diskDevice == "/dev/mapper/\(disk)")
            #expect(result.bootPartition.device == "/dev/mapper/\(DeviceMapperLayout.partitionName(disk: disk, number: bootNumber))")
            if c.arguments.first != "--disk-name" { #expect(disk.hasPrefix("imgtool-")) }
        } else {
            #expect(result.bootPartition.device == result.diskDevice + "p\(bootNumber)")
        }
        if expected != "offline" { #expect(r.stderr.contains("nothing left attached"), "\(r.stderr)") }
        let booted = try boot(image, expect: marker)
        #expect(booted.found, "GRUB did not print \(marker); console:\n\(booted.console)")
    }

    /// The VM's kernel has no more vfat than it needs: the ESP is written the same way as here
    /// (grub-install into a tmpfs named after the ESP, mtools into the partition).
    @Test("install-grub --isolate on a hybrid image (BIOS boot partition + ESP): boots from SeaBIOS and from OVMF",
          arguments: ["offline", "block-device"])
    func hybrid(_ strategy: String) throws {
        let marker = "IMGTOOL-ISOLATED-HYBRID"
        let image = scratch.file("hybrid-\(strategy).img")
        try run(["\(repositoryRoot)/TestImages/make-esp-disk.sh", image, "--bios-boot", "--marker", marker])
        let r = try imgtool(["install-grub", "--isolate", "--json"] + (strategy == "offline" ? [] : ["--strategy", strategy]) + [image])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? [String: Any])
        #expect(json["firmware"] as? String == "hybrid" && json["strategy"] as? String == strategy)
        #expect(try boot(image, expect: marker, firmware: "uefi").found)
        #expect(try boot(image, expect: marker).found)
    }

    /// A block device given to --isolate is the VM's disk itself: the guest writes it in place,
    /// offline (no working copy: there is no file to rename over it).
    @Test("install-grub --isolate on a host block device installs offline in place and boots")
    func blockDevice() throws {
        let marker = "IMGTOOL-ISOLATED-BLOCK"
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt", "--marker", marker])
        let loop = try LoopDevice.attach(image, logger: .init(label: "test"))
        let r: Subprocess.Result
        do {
            r = try imgtool(["install-grub", "--isolate", "--json", loop.path])
            try loop.detach()
        } catch {
            try? loop.detach()
            throw error
        }
        #expect(r.status == 0, "\(r.stderr)")
        let result = try #require(InstallGrub.Result(json: try JSONValue.parse(r.output)), "\(r.stdout)")
        #expect(result.strategy == .offline && result.image == loop.path)
        #expect(r.stderr.contains("is a block device: writing it in place"), "\(r.stderr)")
        #expect(try boot(image, expect: marker).found)
    }

    @Test("the library's InstallGrub.Options.isolation gives the typed result and boots")
    func libraryIsolation() throws {
        let marker = "IMGTOOL-ISOLATED-LIBRARY"
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt", "--marker", marker])
        let isolation = Isolation(executable: imgtoolPath)
        let result = try InstallGrub.run(.init(image: image, strategy: .deviceMapper, diskName: "sda", isolation: isolation),
                                         logger: .init(label: "test"))
        #expect(result.image == image && result.strategy == .deviceMapper && result.diskDevice == "/dev/mapper/sda")
        #expect(result.bootPartition.device == "/dev/mapper/sda2", "GPT: BIOS boot partition 1, /boot on 2")
        #expect(try boot(image, expect: marker).found)

        // A failure inside comes back as the local run's error and exit code.
        let bare = scratch.file("bare.img")
        try run(["truncate", "-s", "8M", bare])
        do {
            _ = try InstallGrub.run(.init(image: bare, isolation: isolation), logger: .init(label: "test"))
            Issue.record("an image without a partition table was accepted")
        } catch {
            #expect(error.exitCode == ExitStatus.badImage.rawValue, "\(error)")
            #expect(error.description.contains("no partition table"), "\(error)")
        }
    }

    @Test("isolated inspect, verify, ls and cat print exactly what local runs print")
    func sameAsLocal() throws {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt", "--marker", "IMGTOOL-SAME"])
        #expect(try imgtool(["install-grub", "-q", image]).status == 0)
        // A relative path, from the image's directory: the VM starts in the same directory.
        let commands: [[String]] = [
            ["inspect", "--json", "disk.img"], ["inspect", "disk.img"], ["verify", "--json", "disk.img"],
            ["verify", "disk.img"], ["ls", "-l", "disk.img", "/boot/grub"], ["cat", "disk.img", "/boot/grub/grub.cfg"],
            ["cat", "disk.img", "/no/such/file"], ["ls", "--partition", "9", "disk.img"],
            ["ls", "--json", "disk.img", "/boot/grub/i386-pc"], ["cat", "disk.img", "/boot/grub/i386-pc/core.img"],
            ["cat", "disk.img", "/boot/grub"], ["inspect", "missing.img"], ["verify", "missing.img"],
        ]
        for command in commands {
            let local = try Subprocess.run(["sh", "-c", "cd \"$1\" && shift && exec \"$@\"", "sh", scratch.path, imgtoolPath] + command)
            let isolated = try Subprocess.run(["sh", "-c", "cd \"$1\" && shift && exec \"$@\"", "sh", scratch.path, imgtoolPath]
                                              + [command[0], "--isolate"] + command.dropFirst())
            #expect(isolated.status == local.status, "\(command): \(isolated.stderr)")
            #expect(isolated.stdout == local.stdout, "\(command)")
            #expect(isolated.stderr == local.stderr, "\(command)")
        }
        // They ran in the VM, not here: only an isolated run reports its VM.
        let verbose = try imgtool(["inspect", "--isolate", "--verbose", image])
        #expect(verbose.status == 0 && verbose.stderr.contains("isolated VM finished"), "\(verbose.stderr)")
        // Read-only: the isolated runs changed nothing.
        let before = try sha256(image)
        _ = try imgtool(["inspect", "--isolate", image])
        #expect(try sha256(image) == before)
    }

    @Test("the library's read-only workflows give the same values isolated as local, errors included")
    func libraryReadOnly() throws {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--marker", "IMGTOOL-LIBRARY-READ"])
        #expect(try imgtool(["install-grub", "-q", image]).status == 0)
        let isolation = Isolation(executable: imgtoolPath)
        let logger = Logger(label: "test")
        let inspected = try Inspect.run(.init(image: image, isolation: isolation), logger: logger)
        #expect(try inspected == Inspect.run(.init(image: image), logger: logger))
        let verified = try Verify.run(.init(image: image, isolation: isolation), logger: logger)
        #expect(verified.bootable == true)
        #expect(try verified == Verify.run(.init(image: image), logger: logger))
        let isolated = ImageFiles.Options(image: image, isolation: isolation), local = ImageFiles.Options(image: image)
        let listing = try ImageFiles.list(isolated, path: "/boot/grub")
        #expect(listing.isDirectory && listing.entries.contains { $0.file.name == "grub.cfg" })
        #expect(try listing == ImageFiles.list(local, path: "/boot/grub"))
        func read(_ options: ImageFiles.Options, _ path: String) throws -> [UInt8] {
            var bytes: [UInt8] = []
            try ImageFiles.read(options, path: path) { bytes += $0 }
            return bytes
        }
        let core = try read(isolated, "/boot/grub/i386-pc/core.img")
        #expect(core.count > 20_000)
        #expect(try core == read(local, "/boot/grub/i386-pc/core.img"))
        do {
            _ = try ImageFiles.list(.init(image: image, partition: 9, isolation: isolation), path: "/")
            Issue.record("partition 9 was listed")
        } catch {
            guard case .noSuchPartition(let path, 9, [1]) = error else { Issue.record("\(error)"); return }
            #expect(path == image)
        }
        do {
            _ = try Inspect.run(.init(image: scratch.file("missing.img"), isolation: isolation), logger: logger)
            Issue.record("a missing image was inspected")
        } catch {
            guard case .open(let open) = error else { Issue.record("\(error)"); return }
            #expect(open.problem == .missing)
        }
        // ImageFiles.run opens a filesystem here; it refuses to pretend to do that in a VM.
        #expect(throws: ImageFiles.Error.self) { try ImageFiles.run(isolated) }
    }

    /// Containers go to qemu with their format named, never probed, and only when they name no
    /// other file: inside the VM the guest sees the virtual disk, so inspect reads it and
    /// install-grub installs into it through qemu's own driver.
    @Test("qcow2 and VMDK through --isolate: inspect reads inside, install-grub installs, the image boots; a backing file is refused")
    func containers() throws {
        let marker = "IMGTOOL-QCOW2"
        let raw = try makeDisk(scratch.file("disk.img"), ["--label", "gpt", "--marker", marker])
        let qcow2 = scratch.file("disk.qcow2"), vmdk = scratch.file("disk.vmdk")
        try run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2])
        try run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, vmdk])
        let local = try #require(try JSONSerialization.jsonObject(with: Data(try imgtool(["inspect", "--json", raw]).output)) as? [String: Any])
        for image in [qcow2, vmdk] {
            let r = try imgtool(["inspect", "--isolate", "--json", image])
            let report = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? [String: Any], "\(r.stderr)")
            #expect(NSDictionary(dictionary: report["partitionTable"] as? [String: Any] ?? [:])
                    == NSDictionary(dictionary: local["partitionTable"] as? [String: Any] ?? [:]), "\(image)")
            #expect((report["container"] as? [String: Any])?["format"] as? String == (image == qcow2 ? "qcow2" : "vmdk"))
        }
        #expect(try imgtool(["install-grub", "-q", "--isolate", qcow2]).status == 0)
        let installed = scratch.file("installed.img")
        try run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow2, installed])
        #expect(try boot(installed, expect: marker).found)

        let overlay = scratch.file("overlay.qcow2")
        try run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", overlay])
        let before = try sha256(overlay)
        let refused = try imgtool(["install-grub", "--isolate", overlay])
        #expect(refused.status == ExitStatus.badImage.rawValue && refused.stderr.contains("backing file"), "\(refused.stderr)")
        #expect(try sha256(overlay) == before)
    }

    @Test("errors: no device mapper here suggests --isolate; a missing kernel or qemu names its package")
    func errors() throws {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let before = try sha256(image)
        if (try? DeviceMapper.checkAvailable(logger: .init(label: "test"))) == nil {
            let r = try imgtool(["install-grub", "--strategy", "device-mapper", image])
            #expect(r.status == ExitStatus.unavailable.rawValue)
            #expect(r.stderr.contains("--isolate"), "\(r.stderr)")
        }
        let kernel = try imgtool(["install-grub", "--isolate", "--kernel", "/nonexistent/vmlinuz", image])
        #expect(kernel.status == ExitStatus.unavailable.rawValue)
        #expect(kernel.stderr.contains("linux-image-cloud-amd64"), "\(kernel.stderr)")

        let noQemu = try Subprocess.run(["env", "PATH=/nonexistent", imgtoolPath, "inspect", "--isolate", image])
        #expect(noQemu.status == ExitStatus.unavailable.rawValue)
        #expect(noQemu.stderr.contains("qemu-system-x86"), "\(noQemu.stderr)")

        let misplaced = try imgtool(["inspect", "--kernel", "/boot/vmlinuz", image])
        #expect(misplaced.status == ExitStatus.usage.rawValue && misplaced.stderr.contains("--isolate"), "\(misplaced.stderr)")
        let both = try imgtool(["install-grub", "--strategy", "blkpg", "--disk-name", "hda", image])
        #expect(both.status == ExitStatus.usage.rawValue, "\(both.stderr)")
        #expect(try sha256(image) == before)
    }

    @Test("a VM that does not finish within --timeout is killed and reported with its console; the image is as it was",
          arguments: ["offline", "block-device"])
    func timeout(_ strategy: String) throws {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let before = try sha256(image)
        // A resumed VM can finish a whole install within a second, so the guest's grub-mkimage or
        // grub-install (taken from the host's PATH) is one that never finishes.
        let tool = strategy == "offline" ? "grub-mkimage" : "grub-install"
        let bin = scratch.file("bin")
        try run(["mkdir", "-p", bin])
        try "#!/bin/sh\nexec sleep 60\n".write(toFile: "\(bin)/\(tool)", atomically: true, encoding: .utf8)
        chmod("\(bin)/\(tool)", 0o755)
        let path = bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let started = monotonicNow()
        let r = try Subprocess.run(["env", "PATH=\(path)", imgtoolPath, "install-grub", "--isolate", "--timeout", "1",
                                    "--strategy", strategy, image])
        #expect(monotonicNow() - started < 15)
        #expect(r.status == ExitStatus.failure.rawValue)
        #expect(r.stderr.contains("within 1 s and was killed. Its console ended with:"), "\(r.stderr)")
        // Offline, the VM wrote into a copy that was dropped. On its block device a resumed VM can
        // reach grub-install's first write within the second (it did on a loaded machine): there
        // a timeout promises no more than a kill.
        if strategy == "offline" { #expect(try sha256(image) == before) }
        #expect(try run(["sh", "-c", "ls -A \"$1\" | grep -c imgtool || true", "sh", scratch.path]).stdout == "0\n")
        #expect(IsolatedVMTests.leftovers().isEmpty, "\(IsolatedVMTests.leftovers())")
    }

    /// What keeps the image whole is the host's working copy, not the guest: here the guest's
    /// install fails at the ESP, after GRUB's files went into the ext4 /boot on its disk, and the
    /// guest syncs that disk before it powers off. Written in place, the image would now hold half
    /// an install.
    @Test("an offline install that fails in the VM after writing /boot leaves the image byte for byte as it was")
    func failureAfterWrites() throws {
        let image = scratch.file("hybrid.img")
        try run(["\(repositoryRoot)/TestImages/make-esp-disk.sh", image, "--bios-boot"])
        let before = try sha256(image)
        let bin = scratch.file("bin")
        try run(["mkdir", "-p", bin])
        try "#!/bin/sh\necho 'mcopy: injected failure' >&2\nexit 1\n".write(toFile: bin + "/mcopy", atomically: true, encoding: .utf8)
        chmod(bin + "/mcopy", 0o755)
        let path = bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let r = try Subprocess.run(["env", "PATH=\(path)", imgtoolPath, "install-grub", "--isolate", "-v", image])
        #expect(r.status == ExitStatus.failure.rawValue, "\(r.stderr)")
        // It got as far as the ESP: GRUB's files were already written into /boot.
        #expect(r.stderr.contains("wrote GRUB's i386-pc and x86_64-efi files") && r.stderr.contains("injected failure"), "\(r.stderr)")
        #expect(try sha256(image) == before)
        #expect(try run(["sh", "-c", "ls -A \"$1\" | grep -c imgtool || true", "sh", scratch.path]).stdout == "0\n")
    }

    @Test("SIGINT stops the VM at once: exit 130, nothing left, image unchanged")
    func interrupt() throws {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let before = try sha256(image)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: imgtoolPath)
        p.arguments = ["install-grub", "--isolate", image]
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Early enough that the VM (resumed or booting) has not started the install, which
        // writes at about 1 s at the soonest.
        usleep(300_000)
        let sent = monotonicNow()
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(monotonicNow() - sent < 5)
        #expect(p.terminationStatus == 130)
        #expect(try sha256(image) == before)
    }

    @Test("runs unprivileged: no root needed where qemu runs as a user")
    func unprivileged() throws {
        let nobody: UInt32 = 65534
        chmod(scratch.path, 0o755)
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--marker", "IMGTOOL-UNPRIVILEGED"])
        #expect(chown(image, nobody, nobody) == 0)
        let r = try imgtool(["install-grub", "--isolate", "--strategy", "device-mapper", image], user: nobody)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try boot(image, expect: "IMGTOOL-UNPRIVILEGED").found)

        // Offline, the copy goes beside the image: a directory the user cannot write is refused
        // before anything runs, naming the way out; one it can write works.
        let again = try makeDisk(scratch.file("again.img"), ["--label", "dos", "--marker", "IMGTOOL-UNPRIVILEGED-OFFLINE"])
        #expect(chown(again, nobody, nobody) == 0)
        let before = try sha256(again)
        let refused = try imgtool(["install-grub", "--isolate", again], user: nobody)
        #expect(refused.status == ExitStatus.noPermission.rawValue, "\(refused.stderr)")
        #expect(refused.stderr.contains("its directory") && refused.stderr.contains("--strategy block-device"), "\(refused.stderr)")
        #expect(try sha256(again) == before)
        let owned = scratch.file("nobody")
        try run(["mkdir", owned])
        #expect(chown(owned, nobody, nobody) == 0)
        try run(["mv", again, owned + "/again.img"])
        var st = stat()
        #expect(stat(owned + "/again.img", &st) == 0)
        let mode = st.st_mode
        let offline = try imgtool(["install-grub", "--isolate", "--json", owned + "/again.img"], user: nobody)
        #expect(offline.status == 0, "\(offline.stderr)")
        #expect(InstallGrub.Result(json: try JSONValue.parse(offline.output))?.strategy == .offline, "\(offline.stdout)")
        // The copy that replaced it kept its owner and mode.
        #expect(stat(owned + "/again.img", &st) == 0 && st.st_uid == nobody && st.st_mode == mode)
        #expect(try boot(owned + "/again.img", expect: "IMGTOOL-UNPRIVILEGED-OFFLINE").found)
    }
}
