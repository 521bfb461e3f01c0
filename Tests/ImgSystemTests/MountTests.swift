import Foundation
import Glibc
@testable import ImgSystem
import Testing
import TestSupport

@Suite struct MountFieldTests {
    @Test("unescapeMountField decodes the kernel's octal escapes and leaves everything else alone")
    func unescape() {
        #expect(Mount.unescapeMountField("/run/imgtool/a\\040b") == "/run/imgtool/a b")
        #expect(Mount.unescapeMountField("tab\\011newline\\012backslash\\134") == "tab\tnewline\nbackslash\\")
        #expect(Mount.unescapeMountField("/plain/path") == "/plain/path")
        #expect(Mount.unescapeMountField("\\040\\040") == "  ")
        #expect(Mount.unescapeMountField("end\\") == "end\\")          // too short for an escape
        #expect(Mount.unescapeMountField("short\\04") == "short\\04")
        #expect(Mount.unescapeMountField("/caf\\303\\251") == "/café")  // UTF-8 bytes, escaped one by one
    }
}

/// A loop device over a make-disk.sh image with its filesystem partition added by BLKPG.
private final class MountableDisk {
    let scratch: Scratch
    let loop: LoopDevice
    let node: String

    init(marker: String) throws {
        scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--size-mib", "16", "--marker", marker])
        let (start, size) = try sfdiskPartition(image, number: 1)
        loop = try LoopDevice.attach(image, options: .init(tag: "test-mount"), logger: testLogger)
        do {
            node = try BlockPartitions.add(disk: loop, number: 1, start: start * 512, length: size * 512, logger: testLogger)
        } catch {
            try? loop.detach()
            throw error
        }
    }

    private var released = false

    /// Idempotent: a second call touches nothing (the device may belong to someone else by then).
    func release() {
        guard !released else { return }
        released = true
        removePartitionsForCleanup(loop, [1])
        try? loop.detach()
        dropStalePartitions(loop.path)
    }
}

/// Mounts of an ext4 partition on a TemporaryDirectory, checked in /proc/self/mountinfo.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct MountTests {
    @Test("mount shows in mountinfo (nosuid,nodev) with the image's files; unmount takes it off, idempotently")
    func mountAndUnmount() throws {
        let disk = try MountableDisk(marker: "IMGTOOL-MOUNT-TEST")
        defer { disk.release() }
        // A space in the path: mountinfo writes it as \040, and Mount must still recognise it.
        let dir = try TemporaryDirectory(prefix: "mount test ")
        defer { try? dir.remove() }
        #expect(dir.path.hasPrefix(TemporaryDirectory.defaultParent + "/mount test "))

        let mount = try Mount(source: disk.node, target: dir.path, filesystemType: "ext4", logger: testLogger)
        defer { try? mount.unmount() }
        let entry = try #require(mountEntry(at: dir.path), "\(dir.path) is not in /proc/self/mountinfo")
        #expect(entry.source == disk.node)
        #expect(entry.filesystemType == "ext4")
        #expect(entry.options.contains("rw"))
        #expect(entry.options.contains("nosuid"))
        #expect(entry.options.contains("nodev"))
        #expect(Mount.mountPoints().contains(dir.path))
        #expect(Mount.isMountPoint(dir.path))
        let cfg = try String(contentsOfFile: dir.path + "/boot/grub/grub.cfg", encoding: .utf8)
        #expect(cfg.contains("echo \"IMGTOOL-MOUNT-TEST\""))

        try mount.unmount()
        #expect(mountEntry(at: dir.path) == nil)
        #expect(!Mount.mountPoints().contains(dir.path))
        #expect(!Mount.isMountPoint(dir.path))
        #expect(access(dir.path + "/boot", F_OK) != 0, "the mount point still shows the filesystem's files")
        try mount.unmount()  // idempotent

        try dir.remove()
        #expect(access(dir.path, F_OK) != 0)
        disk.release()
        #expect(try LoopDevice.fileName(ofDevice: disk.loop.path) == nil)
        #expect(leftovers() == [])
    }

    @Test("unmount while a file under the mount is open retries, then fails naming the pid that holds it; the file stays open")
    func unmountBusy() throws {
        let disk = try MountableDisk(marker: "IMGTOOL-BUSY")
        defer { disk.release() }
        let dir = try TemporaryDirectory(prefix: "busy-")
        defer { try? dir.remove() }
        let mount = try Mount(source: disk.node, target: dir.path, filesystemType: "ext4", readOnly: true, logger: testLogger)
        defer { try? mount.unmount() }
        #expect(mountEntry(at: dir.path)?.options.contains("ro") == true)

        var fd = open(dir.path + "/boot/grub/grub.cfg", O_RDONLY | O_CLOEXEC)
        defer { if fd >= 0 { close(fd) } }  // runs before the unmount above
        try #require(fd >= 0)

        let started = Date()
        let error = #expect(throws: Mount.Error.self) { try mount.unmount() }
        let elapsed = Date().timeIntervalSince(started)
        if case .busy(let target, let users)? = error {
            #expect(target == dir.path)
            #expect(users == [getpid()], "the test process holds the file open")
            #expect(error?.description.contains("pid \(getpid())") == true)
        } else {
            Issue.record("expected Mount.Error.busy naming this process, got \(String(describing: error))")
        }
        #expect(elapsed > 0.2, "unmount gave up after \(elapsed) s without retrying")
        #expect(Mount.isMountPoint(dir.path))
        #expect(mountEntry(at: dir.path) != nil)
        // The open file was not disturbed.
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = read(fd, &buffer, buffer.count)
        #expect(n > 0 && String(decoding: buffer[0..<max(n, 0)], as: UTF8.self).contains("serial"))

        close(fd)
        fd = -1
        try mount.unmount()
        #expect(mountEntry(at: dir.path) == nil)
        try dir.remove()
        disk.release()
        #expect(leftovers() == [])
    }

    @Test("a Mount dropped without unmount() comes off in deinit")
    func deinitUnmounts() throws {
        let disk = try MountableDisk(marker: "IMGTOOL-DEINIT")
        defer { disk.release() }
        let dir = try TemporaryDirectory(prefix: "deinit-")
        defer {
            if Mount.isMountPoint(dir.path) { _ = try? Subprocess.run(["umount", dir.path]) }
            try? dir.remove()
        }
        do {
            let mount = try Mount(source: disk.node, target: dir.path, filesystemType: "ext4", logger: testLogger)
            #expect(mountEntry(at: dir.path)?.source == mount.source)
        }
        #expect(mountEntry(at: dir.path) == nil)
        try dir.remove()
        disk.release()
        #expect(leftovers() == [])
    }

    @Test("mounting with the wrong filesystem type fails with the target in the error, and mounts nothing")
    func wrongType() throws {
        let disk = try MountableDisk(marker: "IMGTOOL-WRONG")
        defer { disk.release() }
        let dir = try TemporaryDirectory(prefix: "wrong-")
        defer { try? dir.remove() }
        let error = #expect(throws: SystemError.self) {
            _ = try Mount(source: disk.node, target: dir.path, filesystemType: "xfs", logger: testLogger)
        }
        #expect(error?.path == dir.path)
        #expect(error?.operation.contains("xfs") == true)
        #expect(mountEntry(at: dir.path) == nil)
        try dir.remove()
        disk.release()
        #expect(leftovers() == [])
    }
}
