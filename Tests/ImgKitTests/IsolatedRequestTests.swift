import ImgKit
import ImgSystem
import Testing

/// The structured request and response of an isolated run, without a VM: what crosses is a value
/// that comes back as the same value (the same case, message and exit code), never text to scrape.
struct IsolatedRequestTests {
    static let errors: [InstallGrubError] = [
        .imageMissing(path: "/i.img"), .notAnImage(path: "/i.img", kind: "a directory"),
        .unreadable(path: "/i.img", reason: "Permission denied"), .empty(path: "/i.img"),
        .truncated(path: "/i.img", detail: "the GPT ends past the image"), .noPartitionTable(path: "/i.img", filesystem: "ext4"),
        .noPartitionTable(path: "/i.img", filesystem: nil), .damagedPartitionTable(path: "/i.img", detail: "CRC"),
        .noPostMBRGap(path: "/i.img", firstPartitionStart: 1), .gapTooSmall(path: "/i.img", sectors: 62, needed: 120),
        .noBIOSBootPartition(path: "/i.img"), .biosBootTooSmall(path: "/i.img", number: 1, sectors: 34, needed: 120),
        .noBootFilesystem(path: "/i.img", found: ["swap on partition 2"]),
        .bootPartitionInvalid(path: "/i.img", number: 2, reason: "/grub is a symbolic link"),
        .ambiguousBootPartition(path: "/i.img", candidates: [1, 2]),
        .bootFilesystemFull(path: "/i.img", number: 1, free: 1024, needed: 8 << 20), .notRoot(path: "/i.img"),
        .toolMissing(tool: "grub-install", package: "grub2-common"),
        .strategyUnavailable(.deviceMapper, reason: "no /dev/mapper/control"),
        .noStrategyWorked(path: "/i.img", reasons: ["a", "b"]), .bootPartitionInUse(device: "/dev/vda1", holders: ["pid 1"]),
        .sessionJournal(SystemError("open", on: "/run/imgtool/sessions/x", errno: 13)),
        .system(SystemError("fsync", on: "/i.img", errno: 5)),
        .grubToolFailed(tool: "grub-install", status: 1, stderr: "error: no such device"), .interrupted(signal: 15),
    ]

    @Test("every error with a payload comes back as the same case, message and exit code")
    func errorsRoundTrip() throws {
        for error in Self.errors {
            let back = try #require(InstallGrubError(json: error.json), "\(error)")
            #expect(back.json == error.json)
            #expect(back.description == error.description && back.exitCode == error.exitCode)
        }
    }

    @Test("a kernel-layer failure comes back as .isolated, with the guest's message and exit code")
    func kernelLayerFailures() throws {
        let busy = InstallGrubError.busy(.held(path: "/i.img", pid: nil))
        let mount = InstallGrubError.mount(.stillMounted(target: "/run/imgtool/mnt-x"))
        for error in [busy, mount] {
            let back = try #require(InstallGrubError(json: error.json))
            guard case .isolated(let status, let message) = back else { Issue.record("\(back)"); continue }
            #expect(status == error.exitCode && message == error.description)
            #expect(back.exitCode == error.exitCode && back.exitStatus == error.exitStatus)
        }
    }

    @Test("a request carries the options (not the isolation) and the log level")
    func request() throws {
        let options = InstallGrub.Options(image: "/i.img", strategy: .deviceMapper, diskName: "hda", bootPartition: 2,
                                          modules: ["lvm", "xfs"], showGrubOutput: true, isolation: Isolation())
        let request = IsolatedRequest(.installGrub(options), logLevel: .debug)
        let back = try #require(IsolatedRequest(json: try JSONValue.parse(request.json.rendered())))
        guard case .installGrub(let o) = back.workflow else { Issue.record("\(back.workflow)"); return }
        #expect(o.image == "/i.img" && o.strategy == .deviceMapper && o.diskName == "hda" && o.bootPartition == 2)
        #expect(o.modules == ["lvm", "xfs"] && o.showGrubOutput && o.isolation == nil)
        #expect(back.logLevel == .debug)
        #expect(IsolatedRequest(json: .object(["workflow": .string("rm -rf")])) == nil)
    }
}
