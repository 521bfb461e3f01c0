import Glibc
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// Every pre-flight refusal: its own message, its documented exit code, an image left byte for
/// byte as it was, and nothing attached or mounted.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct BadInputTests {
    /// Runs install-grub on `image` and checks the refusal.
    func expectRefusal(_ image: String, extra: [String] = [], user: UInt32? = nil, status: ImgKit.ExitStatus,
                       message: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let before = access(image, F_OK) == 0 && isRegularFile(image) ? try sha256(image) : nil
        let r = try imgtool(["install-grub", image] + extra, user: user)
        #expect(r.status == status.rawValue, "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains(message), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains("imgtool: error: "), sourceLocation: sourceLocation)
        #expect(r.output.isEmpty, sourceLocation: sourceLocation)
        if let before { #expect(try sha256(image) == before, "the image changed", sourceLocation: sourceLocation) }
        #expect(leftovers() == [], sourceLocation: sourceLocation)
    }

    @Test func missingPath() throws {
        let scratch = try Scratch()
        try expectRefusal(scratch.file("nope.img"), status: .noInput, message: "nope.img does not exist")
    }

    @Test func directoryAndCharacterDevice() throws {
        let scratch = try Scratch()
        try expectRefusal(scratch.path, status: .noInput, message: "is a directory, not a disk image")
        try expectRefusal("/dev/null", status: .noInput, message: "is a character device, not a disk image")
    }

    @Test func emptyImage() throws {
        let scratch = try Scratch()
        let image = scratch.file("empty.img")
        try run(["touch", image])
        try expectRefusal(image, status: .badImage, message: "is empty (0 bytes)")
    }

    @Test func shorterThanASector() throws {
        let scratch = try Scratch()
        let image = scratch.file("tiny.img")
        try run(["truncate", "-s", "100", image])
        try expectRefusal(image, status: .badImage, message: "is truncated: it has 100 bytes")
    }

    @Test(arguments: ["dos", "gpt"])
    func truncatedImage(label: String) throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", label])
        try run(["truncate", "-s", "32M", image])
        try expectRefusal(image, status: .badImage, message: "is truncated: partition")
    }

    @Test func noPartitionTable() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("bare.img"), ["--label", "none", "--fs", "ext4"])
        try expectRefusal(image, status: .badImage, message: "has a bare ext4 filesystem and no partition table")
        let zeros = scratch.file("zeros.img")
        try run(["truncate", "-s", "8M", zeros])
        try expectRefusal(zeros, status: .badImage, message: "has no partition table")
    }

    @Test func msdosWithoutPostMBRGap() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--first-sector", "1"])
        try expectRefusal(image, status: .badImage, message: "has no post-MBR gap (the first partition starts at sector 1)")
    }

    @Test func msdosGapTooSmall() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--first-sector", "40"])
        try expectRefusal(image, status: .badImage, message: "the post-MBR gap has 39 sectors but GRUB's core.img needs")
    }

    @Test func gptWithoutBIOSBootPartition() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt", "--bios-boot-sectors", "0"])
        try expectRefusal(image, status: .badImage, message: "has a GPT label without a BIOS boot partition")
    }

    @Test func gptBIOSBootPartitionTooSmall() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt", "--bios-boot-sectors", "16"])
        try expectRefusal(image, status: .badImage, message: "BIOS boot partition 1 has 16 sectors but GRUB's core.img needs")
    }

    @Test(arguments: ["dos", "gpt"])
    func noFilesystemForBoot(label: String) throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", label, "--fs", "none"])
        try expectRefusal(image, status: .badImage, message: "has no partition with a filesystem GRUB can read")
    }

    @Test func bootPartitionThatCannotHoldGrub() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "gpt", "--extra-partition"])
        try expectRefusal(image, extra: ["--boot-partition", "9"], status: .badImage, message: "partition 9 cannot hold /boot/grub: there is no such partition")
        try expectRefusal(image, extra: ["--boot-partition", "1"], status: .badImage, message: "partition 1 cannot hold /boot/grub: it is the BIOS boot partition")
        try expectRefusal(image, extra: ["--boot-partition", "3"], status: .badImage, message: "partition 3 cannot hold /boot/grub: it holds no filesystem")
    }

    @Test func bootFilesystemWithoutRoomForGrub() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--size-mib", "4"])
        try expectRefusal(image, status: .badImage, message: "but GRUB's platform files alone take")
    }

    @Test func imageInUseByAnotherImgtool() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let fd = open(image, O_RDONLY)
        defer { close(fd) }
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        try expectRefusal(image, status: .busy, message: "is in use by process \(getpid())")
    }

    /// Without root, a loop strategy is refused; the offline strategy, taken by default, needs write
    /// access to the image and its directory.
    @Test func notRoot() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        chmod(image, 0o644)
        try expectRefusal(image, extra: ["--strategy", "blkpg"], user: 65534, status: .noPermission, message: "install-grub needs root")
        try expectRefusal(image, user: 65534, status: .noPermission, message: "this user may not write the image")
        chmod(image, 0o666)
        try expectRefusal(image, user: 65534, status: .noPermission, message: "this user may not write its directory")
    }

    @Test func unknownStrategyIsAUsageError() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let before = try sha256(image)
        let r = try imgtool(["install-grub", image, "--strategy", "floppy"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("floppy"))
        #expect(try sha256(image) == before)
    }

    @Test func partscanRefusedWhereTheKernelDoesNotParse() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        let r = try imgtool(["install-grub", image, "--strategy", "partscan"])
        if r.status == 0 { return }  // a kernel with partition parsing: nothing to refuse
        #expect(r.status == ImgKit.ExitStatus.unavailable.rawValue)
        #expect(r.stderr.contains("strategy partscan is not available on this machine"))
        #expect(r.stderr.contains("use --strategy blkpg"))
        #expect(leftovers() == [])
    }

    func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }
}
