import Glibc
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// DeviceMapper on a kernel that has device mapper: the host's has none, so DeviceMapperProbe runs
/// its scenarios inside IsolatedVM's throwaway VM (Debian's cloud kernel, dm_mod and loop) and these
/// tests check what it printed. Two boots: one without udevd (libdm makes the nodes) with a
/// TestImages disk as /dev/vda, one with udevd and device mapper's rules (udev cookies).
enum DeviceMapperVM {
    /// The probe built alongside the tests.
    static var probePath: String? {
        for dir in [".build/debug", ".build/x86_64-unknown-linux-gnu/debug"] {
            let p = "\(repositoryRoot)/\(dir)/DeviceMapperProbe"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }

    /// Why the VM tests cannot run here, or nil.
    static let blocked: String? = {
        if let reason = isolatedVMBlocked { return reason }
        if probePath == nil { return "needs DeviceMapperProbe (swift build --build-tests)" }
        return nil
    }()

    struct Run: Sendable {
        let lines: [String: String]
        let stdout: String
        let stderr: String
        let status: Int32
        let seconds: Double
        /// Whether the image booted afterwards, for runs that check that.
        var booted: Bool?
        subscript(_ key: String) -> String? { lines[key] }

        init(_ r: IsolatedVM.Result) {
            stdout = String(decoding: r.stdout, as: UTF8.self)
            stderr = String(decoding: r.stderr, as: UTF8.self)
            status = r.status
            seconds = r.seconds
            var lines: [String: String] = [:]
            for line in stdout.split(separator: "\n") {
                // "scenario.key: value"; the key has no ':'.
                guard let colon = line.firstIndex(of: ":") else { continue }
                lines[String(line[..<colon])] = String(line[line.index(after: colon)...].dropFirst())
            }
            self.lines = lines
        }
        /// For failure messages: all the probe said (libdevmapper's log is on stderr).
        var context: String { "status \(status); stdout:\n\(stdout)\nstderr:\n\(stderr)" }
    }

    /// One VM for the whole suite: booting takes seconds under TCG.
    static let run: Result<Run, TestFailure> = {
        do {
            let scratch = try Scratch()
            defer { withExtendedLifetime(scratch) {} }
            let image = try makeDisk(scratch.file("dm.img"), ["--label", "dos", "--logical", "--extra-partition",
                                                              "--fs", "ext4", "--size-mib", "16"])
            var options = IsolatedVM.Options()
            options.modules = ["dm_mod", "loop"]
            options.cacheDirectory = scratch.file("cache")
            let r = try IsolatedVM.run(command: [probePath!, "linear", "bad-table", "busy", "partitions"],
                                       image: image, readOnly: true, timeout: 180, options: options)
            print("DeviceMapperProbe in the VM: \(r.seconds) s wall, \(r.vmSeconds) s in qemu (\(r.accelerator))")
            return .success(Run(r))
        } catch {
            return .failure(TestFailure("the VM run failed: \(error)"))
        }
    }()
}

extension DeviceMapperVM {
    /// What the udev VM takes from the host (packages udev and dmsetup), or nil when all is there.
    static let udevBlocked: String? = {
        for file in ["/bin/udevadm", "/sbin/dmsetup", "/lib/udev/rules.d/55-dm.rules", "/lib/udev/rules.d/95-dm-notify.rules"]
        where access(file, R_OK) != 0 {
            return "needs \(file) (packages udev and dmsetup)"
        }
        return nil
    }()

    /// A second VM with udevd running (systemd-udevd, the host's udev rules, dmsetup for
    /// 95-dm-notify.rules' `dmsetup udevcomplete`): the cookie path.
    static let udevRun: Result<Run, TestFailure> = {
        do {
            var options = IsolatedVM.Options()
            options.modules = ["dm_mod", "loop"]
            options.executables = [probePath!, "/bin/udevadm", "/sbin/dmsetup"]
            options.dataDirectories = ["/lib/udev/rules.d"]
            let scratch = try Scratch()
            defer { withExtendedLifetime(scratch) {} }
            options.cacheDirectory = scratch.file("cache")
            // udevadm is udevd when called systemd-udevd.
            // The probe's path is $0, not spliced into the script: a clone's path may hold spaces.
            let script = "ln -s /bin/udevadm /tmp/systemd-udevd && /tmp/systemd-udevd --daemon && \"$0\" udev"
            let r = try IsolatedVM.run(command: ["sh", "-c", script, probePath!], timeout: 180, options: options)
            return .success(Run(r))
        } catch {
            return .failure(TestFailure("the VM run failed: \(error)"))
        }
    }()
}

@Suite(.serialized, .enabled(if: DeviceMapperVM.blocked == nil, "\(DeviceMapperVM.blocked ?? "")"))
struct DeviceMapperVMTests {
    @Test("every scenario ran to its end")
    func ranEverything() throws {
        let r = try DeviceMapperVM.run.get()
        #expect(r.status == 0, "\(r.context)")
        for scenario in ["linear", "bad-table", "busy", "partitions"] {
            #expect(r["\(scenario).error"] == nil, "\(scenario): \(r["\(scenario).error"] ?? "")")
        }
    }

    @Test("a linear map over a loop device: its table reads back, the bytes are the parent's, remove leaves nothing")
    func linear() throws {
        let r = try DeviceMapperVM.run.get()
        let parent = try #require(r["linear.parent"], "\(r.context)")
        #expect(r["linear.table"] == "0 2048 linear \(parent) 1000")
        #expect(r["linear.status"] == "0 2048 linear")
        #expect(r["linear.uuid"] == "imgtool-test-linear-uuid")
        #expect(r["linear.open-count"] == "0")
        #expect(r["linear.read-only"] == "false")
        #expect(r["linear.live-table"] == "true")
        let device = try #require(r["linear.device"])
        #expect(r["linear.list"]?.split(separator: " ").contains("imgtool-test-linear=\(device)"[...]) == true, "\(r["linear.list"] ?? "")")
        #expect(r["linear.sector0"] == "\(1000 % 251)")
        #expect(r["linear.sector2047"] == "\(3047 % 251)")
        #expect(r["linear.past-end"] == "0")
        #expect(r["linear.ro.read-only"] == "true")
        #expect(r["linear.ro.uuid"] == "none")
        #expect(r["linear.ro.sysfs-ro"] == "1")
        #expect(r["linear.ro.after"] == "removed")  // withDevice removed it
        #expect(r["linear.create-again"]?.hasPrefix("A device-mapper device named imgtool-test-linear already exists") == true,
                "\(r["linear.create-again"] ?? "")")
        #expect(r["linear.after.info"] == "none")
        #expect(r["linear.after.list"] == "")
        #expect(r["linear.remove-again"]?.hasPrefix("There is no device-mapper device named imgtool-test-linear") == true)
    }

    @Test("without udevd libdevmapper makes and removes the /dev/mapper nodes itself")
    func nodesWithoutUdev() throws {
        let r = try DeviceMapperVM.run.get()
        #expect(r["linear.udev"] == "absent")
        let device = try #require(r["linear.device"], "\(r.context)")
        #expect(r["linear.node"] == "block \(device)")
        #expect(r["linear.after.node"] == "absent")
    }

    @Test("a table the kernel refuses leaves no device behind", arguments: ["garbage", "overlap", "past-end", "unknown-type"])
    func badTable(_ what: String) throws {
        let r = try DeviceMapperVM.run.get()
        let create = try #require(r["bad-table.\(what).create"], "\(r.context)")
        #expect(create.hasPrefix("device-mapper could not create imgtool-test-bad with its table"), "\(create)")
        #expect(create.contains("(libdevmapper: device-mapper: reload ioctl on imgtool-test-bad"), "\(create)")
        #expect(create.hasSuffix("No device was left behind."), "\(create)")
        #expect(r["bad-table.\(what).info"] == "none")
        #expect(r["bad-table.\(what).node"] == "absent")
        #expect(r["bad-table.\(what).listed"] == "false")
    }

    @Test("remove refuses while the map is open, naming who holds it, and succeeds after close")
    func busy() throws {
        let r = try DeviceMapperVM.run.get()
        #expect(r["busy.opened"] == "true", "\(r.context)")
        #expect(r["busy.open-count"] == "1")
        let refused = try #require(r["busy.remove-while-open"])
        #expect(refused.hasPrefix("device-mapper device imgtool-test-busy is open (open count 1), so it cannot be removed: held by this process ("),
                "\(refused)")
        #expect(refused.contains("DeviceMapperPr"), "\(refused)")  // comm is cut at 15 characters
        #expect(r["busy.still-there"] == "true")
        let stacked = try #require(r["busy.remove-while-stacked"])
        #expect(stacked.contains("held by device-mapper device imgtool-test-busy-upper (dm-"), "\(stacked)")
        #expect(r["busy.after-close"] == "removed")
    }

    @Test("kpartx's partition maps over a disk map read as the partitions")
    func partitions() throws {
        let r = try DeviceMapperVM.run.get()
        for (name, number) in [("hda1", 1), ("hda2", 2), ("hda5", 5), ("hda6", 6)] {
            let line = try #require(r["partitions.\(name)"], "\(r.context)")
            #expect(line.hasPrefix("uuid=part\(number)-imgtool-test-disk table=0 "), "\(line)")
            #expect(r["partitions.\(name).same-bytes"] == "true")
        }
        // Over the disk map, dm-0, whose major the kernel picks when dm_mod loads.
        let hda2 = r["partitions.hda2"] ?? ""
        let target = hda2.split(separator: " ").suffix(4).map(String.init)
        #expect(target.count == 4 && target[0] == "2" && target[1] == "linear" && target[2].hasSuffix(":0")
                && Int(target[2].dropLast(2)) != nil && target[3] == "4096", "\(hda2)")
        #expect(r["partitions.hda5.ext-magic"] == "true")  // --logical: the boot filesystem is in 5
        #expect(r["partitions.left"] == "")
    }

    @Test("with udevd: cookies, and udev's /dev/mapper symlinks exist when create returns and are gone after remove",
          .enabled(if: DeviceMapperVM.udevBlocked == nil, "\(DeviceMapperVM.udevBlocked ?? "")"))
    func withUdev() throws {
        let r = try DeviceMapperVM.udevRun.get()
        #expect(r.status == 0, "\(r.context)")
        #expect(r["udev.control"] == "present", "\(r.context)")
        let device = try #require(r["udev.device"], "\(r.context)")
        let minor = device.split(separator: ":").last ?? ""
        #expect(r["udev.node"] == "symlink ../dm-\(minor)", "\(r.context)")
        #expect(r["udev.dev-node"] == "block \(device)")
        #expect(r["udev.sector1"] == "1")
        #expect(r["udev.after.node"] == "absent", "\(r.context)")
        #expect(r["udev.after.info"] == "none")
        // libdm's trace: the create and the remove each carried a cookie that udev's rules completed.
        #expect(r.stderr.contains("assigned to CREATE task"), "\(r.context)")
        #expect(r.stderr.contains("assigned to REMOVE task"))
        #expect(!r.stderr.contains("udev did not confirm"))
    }
}
