import ImgKit
import ImgSystem
import Testing

/// The structured request and response of an isolated run, without a VM: what crosses is a value
/// that comes back as the same value (the same case, message and exit code), never text to scrape.
struct IsolatedRequestTests {
    static let errors: [InstallGrubError] = [
        .imageMissing(path: "/i.img"), .notAnImage(path: "/i.img", kind: "a directory"),
        .unreadable(path: "/i.img", reason: "Permission denied"), .empty(path: "/i.img"), .container(path: "/i.qcow2", format: "qcow2"),
        .truncated(path: "/i.img", detail: "the GPT ends past the image"), .noPartitionTable(path: "/i.img", filesystem: "ext4"),
        .noPartitionTable(path: "/i.img", filesystem: nil), .damagedPartitionTable(path: "/i.img", detail: "CRC"),
        .noPostMBRGap(path: "/i.img", firstPartitionStart: 1), .gapTooSmall(path: "/i.img", sectors: 62, needed: 120),
        .noBIOSBootPartition(path: "/i.img"), .unsupportedPartitionTable(path: "/i.img", table: "mac"), .biosBootTooSmall(path: "/i.img", number: 1, sectors: 34, needed: 120),
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
            let back = try #require(InstallGrubError(isolatedJSON: error.isolatedJSON), "\(error)")
            #expect(back.isolatedJSON == error.isolatedJSON)
            #expect(back.description == error.description && back.exitCode == error.exitCode)
        }
    }

    @Test("a kernel-layer failure comes back as .isolation(.guest), with the guest's message and exit code")
    func kernelLayerFailures() throws {
        let busy = InstallGrubError.busy(.held(path: "/i.img", pid: nil))
        let mount = InstallGrubError.mount(.stillMounted(target: "/run/imgtool/mnt-x"))
        for error in [busy, mount] {
            let back = try #require(InstallGrubError(isolatedJSON: error.isolatedJSON))
            guard case .isolation(.guest(let status, let message)) = back else { Issue.record("\(back)"); continue }
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

    @Test("the read-only workflows' requests carry their options")
    func readOnlyRequests() throws {
        func roundTrip(_ workflow: IsolatedRequest.Workflow) throws -> IsolatedRequest.Workflow {
            let request = IsolatedRequest(workflow, logLevel: .error)
            return try #require(IsolatedRequest(json: try JSONValue.parse(request.json.rendered()))).workflow
        }
        guard case .inspect(let i) = try roundTrip(.inspect(.init(image: "/a b.img"))) else { Issue.record("inspect"); return }
        #expect(i.image == "/a b.img" && i.isolation == nil)
        guard case .verify(let v) = try roundTrip(.verify(.init(image: "v.img"))) else { Issue.record("verify"); return }
        #expect(v.image == "v.img")
        guard case .list(let l, let path) = try roundTrip(.list(.init(image: "l.img", partition: 2), path: "/boot")) else {
            Issue.record("list"); return
        }
        #expect(l.image == "l.img" && l.partition == 2 && path == "/boot")
        guard case .read(let r, let file) = try roundTrip(.read(.init(image: "r.img"), path: "/etc/os-release")) else {
            Issue.record("read"); return
        }
        #expect(r.image == "r.img" && r.partition == nil && file == "/etc/os-release")
        // A partition that is not a whole number is not a request.
        #expect(IsolatedRequest(json: .object(["workflow": .string("ls"), "logLevel": .string("info"),
                                               "options": .object(["image": .string("x"), "partition": .string("1"),
                                                                   "path": .string("/")])])) == nil)
    }

    static let fileErrors: [ImageFiles.Error] = [
        .cannotOpen(ImageOpenError(path: "/i.img", problem: .missing)),
        .cannotOpen(ImageOpenError(path: "/i.img", problem: .notAnImage(kind: "a directory"))),
        .cannotOpen(ImageOpenError(path: "/i.img", problem: .unreadable(reason: "Permission denied"))),
        .unreadable(path: "/i.img", reason: "I/O error"), .container(path: "/i.vmdk", format: .vmdk, reason: "a grain table lies past the end of the file"),
        .backingNotOpened(path: "/i.qcow2", backing: "base.qcow2"), .noPartitionTable(path: "/i.img", filesystem: "ext4"),
        .noPartitionTable(path: "/i.img", filesystem: nil), .noSuchPartition(path: "/i.img", number: 9, available: [1, 2]),
        .notExt(path: "/i.img", partition: 1, found: "vfat"), .notExt(path: "/i.img", partition: nil, found: nil),
        .noExtFilesystem(path: "/i.img", found: ["vfat on partition 1"]),
        .unreadableFilesystem(path: "/i.img", partition: 2, filesystem: "FAT32", reason: "the cluster chain loops"),
        .unreadableFilesystem(path: "/i.iso", partition: nil, filesystem: "ISO 9660 (Rock Ridge)", reason: "outside"),
        .ambiguous(path: "/i.img", candidates: ["partition 1 (ext4)", "partition 2 (ext2)"]),
        .damaged(path: "/i.img", partition: 2, reason: "ext2fs_open2"),
        .file(.notFound("/a/b", missing: "/a"), image: "/i.img", partition: 1),
        .file(.notADirectory("/a/b", component: "/a"), image: "/i.img", partition: nil),
        .file(.isADirectory("/boot"), image: "/i.img", partition: 1), .file(.notARegularFile("/dev/null"), image: "/i.img", partition: 1),
        .file(.notASymlink("/etc"), image: "/i.img", partition: 1), .file(.symlinkLoop("/loop"), image: "/i.img", partition: 1),
        .file(.tooLarge("/big", limit: 100), image: "/i.img", partition: 1),
        .file(.library(operation: "ext2fs_read_inode", path: "/x", code: 5, message: "bad"), image: "/i.img", partition: 1),
    ]

    @Test("ls and cat errors, and inspect's and verify's, come back as the same case, message and exit code")
    func readOnlyErrorsRoundTrip() throws {
        for error in Self.fileErrors {
            let back = try #require(ImageFiles.Error(isolatedJSON: try JSONValue.parse(error.isolatedJSON.rendered())), "\(error)")
            #expect(back.isolatedJSON == error.isolatedJSON)
            #expect(back.description == error.description && back.exitCode == error.exitCode, "\(error)")
        }
        for problem in [ImageOpenError.Problem.missing, .notAnImage(kind: "a FIFO"), .unreadable(reason: "EACCES")] {
            let error = ReportError.open(ImageOpenError(path: "/i.img", problem: problem))
            let back = try #require(ReportError(isolatedJSON: error.isolatedJSON))
            guard case .open(let open) = back else { Issue.record("\(back)"); continue }
            #expect(open.problem == problem && back.description == error.description && back.exitCode == 66)
        }
        // An output failure in the guest has no typed form here: its message and code come back.
        let output = ImageFiles.Error.output(path: "/f", SystemError("write", on: "standard output", errno: 32))
        guard case .isolation(.guest(let status, let message))? = ImageFiles.Error(isolatedJSON: output.isolatedJSON) else {
            Issue.record("output"); return
        }
        #expect(status == 1 && message == output.description)
        #expect(ImageFiles.Error(isolatedJSON: .object(["case": .string("notExt"), "path": .string("/i")])) == nil)
    }
}
