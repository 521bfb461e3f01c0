import Glibc
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// The CLI's `--json` documents, pinned byte for byte against Tests/Goldens/cli-json: scripts parse
/// them, so a refactoring of the reports behind them must not move a key, a type or a space. Only
/// what differs between runs is replaced before comparing: the scratch path, loop device numbers,
/// session ids, pids, random directory suffixes and timings. `IMGTOOL_UPDATE_GOLDENS=1` rewrites
/// the files instead (then review the diff: that is a change of the CLI's interface).
@Suite(.serialized)
struct CLIJSONPinTests {
    let scratch: Scratch
    init() throws { scratch = try Scratch() }

    /// The command's stdout, with run-specific values replaced, compared with the golden file.
    func expectPinned(_ name: String, _ arguments: [String], status: Int32 = 0,
                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try imgtool(arguments)
        #expect(r.status == status, "\(arguments): exit \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        let actual = normalized(r.stdout)
        let path = "\(repositoryRoot)/Tests/Goldens/cli-json/\(name).json"
        if getenv("IMGTOOL_UPDATE_GOLDENS") != nil {
            try writeFile(path, Array(actual.utf8))
            return
        }
        let golden = String(decoding: try readFile(path), as: UTF8.self)
        #expect(actual == golden, "imgtool \(arguments.joined(separator: " ")) printed JSON that differs from \(path)",
                sourceLocation: sourceLocation)
    }

    func normalized(_ text: String) -> String {
        var s = text.replacing(scratch.path, with: "SCRATCH")
        for (pattern, replacement) in [
            (#"/dev/loop[0-9]+"#, "/dev/loopN"),
            (#""seconds": [0-9.e-]+"#, #""seconds": 0"#),
            (#""grubInstallVersion": "[^"]*""#, #""grubInstallVersion": "GRUB-VERSION""#),
            (#"mnt-[0-9a-f]{8}-[A-Za-z0-9]{6}"#, "mnt-SESSION-RANDOM"),
            (#"[0-9a-f]{8}\.journal"#, "SESSION.journal"),
            (#""id": "[0-9a-f]{8}""#, #""id": "SESSION""#),
            (#"session [0-9a-f]{8}"#, "session SESSION"),
            (#"IMGTOOL-[0-9a-f]{8}"#, "IMGTOOL-SESSION"),
            (#"imgtool-[0-9a-f]{8}"#, "imgtool-SESSION"),
            (#""pid": [0-9]+"#, #""pid": 0"#),
        ] {
            s = s.replacing(try! Regex(pattern), with: replacement)
        }
        return s
    }

    @Test("inspect --json: GPT with a BIOS boot partition, dos with a logical partition, a bare filesystem")
    func inspect() throws {
        let gpt = try makeDisk(scratch.file("gpt.img"), ["--label", "gpt", "--fs", "ext4", "--marker", "PIN"])
        try expectPinned("inspect-gpt", ["inspect", "--json", gpt])
        let dos = try makeDisk(scratch.file("dos.img"), ["--label", "dos", "--fs", "ext2", "--logical", "--extra-partition"])
        try expectPinned("inspect-dos-logical", ["inspect", "--json", dos])
        let bare = try makeDisk(scratch.file("bare.img"), ["--label", "none", "--fs", "ext3", "--size-mib", "16"])
        try expectPinned("inspect-bare", ["inspect", "--json", bare])
        try expectPinned("ls-gpt", ["ls", "--json", gpt, "--partition", "2", "/boot/grub"])
    }

    @Test("verify --json before and after install-grub --json", .disabled(if: kernelTestsBlocked != nil, "\(kernelTestsBlocked ?? "")"))
    func installAndVerify() throws {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--fs", "ext4", "--marker", "PIN"])
        try expectPinned("verify-unbootable", ["verify", "--json", image], status: 1)
        try expectPinned("install-grub", ["install-grub", "--json", "--strategy", "blkpg", image])
        try expectPinned("verify-grub", ["verify", "--json", image])
    }

    @Test("status --json and cleanup --json for a session killed in grub-install",
          .disabled(if: kernelTestsBlocked != nil, "\(kernelTestsBlocked ?? "")"))
    func statusAndCleanup() throws {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--fs", "ext4"])
        let bin = try fakeGrubInstall(scratch, script: "touch \(scratch.file("started")); exec sleep 600")
        // timeout(1) kills imgtool well after it reached the fake grub-install, which never ends.
        let killed = try Subprocess.run(["env", "PATH=\(bin):/usr/sbin:/usr/bin:/sbin:/bin", "timeout", "-s", "KILL", "5",
                                         imgtoolPath, "install-grub", "-q", "--strategy", "blkpg", image])
        #expect(killed.status == 128 + SIGKILL && access(scratch.file("started"), F_OK) == 0,
                "not killed in grub-install: exit \(killed.status), \(killed.stderr)")
        try expectPinned("status-stale", ["status", "--json"])
        try expectPinned("cleanup-all", ["cleanup", "--all", "--json"])
        #expect(leftovers().isEmpty, "\(leftovers())")
    }

    @Test("create --json with a seed: the same GUIDs, UUIDs and placements on every run and machine")
    func create() throws {
        let tree = scratch.file("tree")
        try makeDirectory(tree, mode: 0o755)
        try makeDirectory(tree + "/etc", mode: 0o755)
        try writeFile(tree + "/etc/hostname", Array("pinned\n".utf8))
        try expectPinned("create-gpt", ["create", "--json", "-q", "--seed", "pin", scratch.file("gpt.img"),
                                        "--partition", "type=esp,size=40M,format=vfat",
                                        "--partition", "type=root,format=ext4,copy=\(tree),label=root",
                                        "--partition", "type=swap,size=8M,format=swap"])
        try expectPinned("create-mbr", ["create", "--json", "-q", "--seed", "pin", "--table", "mbr", "--size", "64M",
                                        scratch.file("mbr.img"), "--partition", "type=linux,size=24M,format=ext2,bootable",
                                        "--partition", "type=83,format=ext4,logical,label=data"])
    }
}
