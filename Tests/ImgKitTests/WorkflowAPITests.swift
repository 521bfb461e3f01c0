import Foundation
import Glibc
import ImgKit
import Testing
import TestSupport

/// The workflows as an embedder calls them (`import ImgKit` alone), and their reports as values:
/// what `run` returns equals what the CLI's JSON decodes to, so the two faces cannot drift apart.
@Suite(.serialized)
struct WorkflowAPITests {
    let scratch: Scratch
    let logger = Logger(label: "test")
    init() throws { scratch = try Scratch() }

    /// Decodes the CLI's --json output with Foundation's decoder, as an embedder would.
    func decodeCLI<T: Decodable>(_ type: T.Type, _ arguments: [String], status: Int32 = 0) throws -> T {
        let r = try imgtool(arguments)
        #expect(r.status == status, "\(arguments): \(r.stderr)")
        return try JSONDecoder().decode(T.self, from: Data(r.output))
    }

    @Test("Inspect.run: the table, partitions, filesystems and boot code as values, equal to the CLI's JSON")
    func inspect() throws {
        let image = try makeDisk(scratch.file("gpt.img"), ["--label", "gpt", "--fs", "ext4", "--extra-partition"])
        let report = try Inspect.run(.init(image: image), logger: logger)
        #expect(report.partitionTable.type == .gpt)
        #expect(report.partitionTable.parsed)
        let parts = report.partitionTable.partitions
        #expect(parts.map(\.number) == [1, 2, 3])
        #expect(parts[0].type == .gpt(GUID(string: "21686148-6449-6E6F-744E-656564454649")!))
        #expect(parts[0].typeName == "BIOS boot")
        #expect(parts[1].start == 4096)
        #expect(parts[1].filesystem?.type == .ext4)
        #expect(parts[1].filesystem?.uuid == "494d4754-0000-4000-8000-0000000000f5")
        #expect(parts[2].filesystem == nil)
        #expect(report.bootCode.kind == .none)
        #expect(report.findings.allSatisfy { $0.severity != .error })
        #expect(try decodeCLI(InspectReport.self, ["inspect", "--json", image]) == report)

        let bare = try makeDisk(scratch.file("bare.img"), ["--label", "none", "--fs", "ext2", "--size-mib", "8"])
        let bareReport = try Inspect.run(.init(image: bare), logger: logger)
        #expect(bareReport.partitionTable.type == nil && !bareReport.partitionTable.parsed)
        #expect(bareReport.filesystem?.type == .ext2)
        #expect(try decodeCLI(InspectReport.self, ["inspect", "--json", bare]) == bareReport)
    }

    @Test("errors are ImgKitError values with the CLI's exit status")
    func errors() throws {
        do {
            _ = try Inspect.run(.init(image: scratch.file("missing.img")), logger: logger)
            Issue.record("a missing image was inspected")
        } catch {
            let any: any ImgKitError = error
            #expect(any.exitStatus == .noInput && any.exitCode == 66)
            guard case .open(let open) = error else { Issue.record("\(error)"); return }
            #expect(open.problem == .missing)
        }
        let empty = scratch.file("empty.img")
        #expect(FileManager.default.createFile(atPath: empty, contents: Data()))
        do {
            _ = try InstallPlan.run(.init(image: empty), logger: logger)
            Issue.record("an empty image passed the pre-flight checks")
        } catch {
            guard case .empty(let path) = error else { Issue.record("\(error)"); return }
            #expect(path == empty)
            #expect(error.exitCode == ExitStatus.badImage.rawValue)
            #expect(error.description.hasSuffix("Partition it and make a filesystem for /boot first."))
        }
    }

    @Test("InstallGrub.run, then Verify.run: the result and the verdict as values; the image boots",
          .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
    func installAndVerify() throws {
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--fs", "ext4", "--marker", "IMGTOOL-API"])
        let before = try Verify.run(.init(image: image), logger: logger)
        #expect(before.bootable == false && before.bootCode.kind == .none)
        #expect(before.problems.first?.severity == .error)
        #expect(try decodeCLI(VerifyReport.self, ["verify", "--json", image], status: 1) == before)

        let result = try InstallGrub.run(.init(image: image, strategy: .blkpg), logger: logger)
        #expect(result.strategy == .blkpg && result.target == .i386PC)
        #expect(result.bootPartition.number == 1 && result.bootPartition.filesystem == .ext4)
        let encoded = try JSONEncoder().encode(result)
        #expect(try JSONDecoder().decode(InstallGrub.Result.self, from: encoded) == result)

        let after = try Verify.run(.init(image: image), logger: logger)
        #expect(after.bootable == true && after.bootCode.kind == .grub2)
        #expect(after.grub?.modules.contains("part_msdos") == true)
        #expect(after.grub?.prefix == "(,msdos1)/boot/grub")
        #expect(try decodeCLI(VerifyReport.self, ["verify", "--json", image]) == after)
        #expect(try boot(image, expect: "IMGTOOL-API").found)
        #expect(leftovers().isEmpty, "\(leftovers())")
    }

    @Test("Status.run and Cleanup.run with nothing to do; their values decode from the CLI's JSON",
          .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
    func statusAndCleanup() throws {
        #expect(Status.run(logger: logger).filter { !$0.live }.isEmpty)
        let result = Cleanup.run(.init(), logger: logger)
        #expect(result == Cleanup.Result())
        #expect(try decodeCLI(Cleanup.Result.self, ["cleanup", "--all", "--json"]) == result)
        #expect(try decodeCLI([SessionStatus].self, ["status", "--json"]).filter { !$0.live }.isEmpty)
    }

    @Test("InstallGrub.run in an isolated VM: the Interruption passed to run stops it (exit 130), nothing is left",
          .enabled(if: isolatedVMBlocked == nil && kernelTestsBlocked == nil, "\(isolatedVMBlocked ?? kernelTestsBlocked ?? "")"))
    func isolatedInterruption() throws {
        let image = try makeDisk(scratch.file("vm.img"), ["--label", "dos", "--fs", "ext4"])
        let interruption = Interruption()
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) { interruption.interrupt(signal: SIGINT) }
        let started = Date()
        do {
            _ = try InstallGrub.run(.init(image: image, isolation: Isolation(executable: imgtoolPath)), logger: logger,
                                    interruption: interruption)
            Issue.record("the isolated install was not stopped")
        } catch {
            #expect(error.exitCode == 128 + SIGINT, "\(error)")
        }
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(IsolatedVMTests.leftovers().isEmpty, "\(IsolatedVMTests.leftovers())")
    }
}
