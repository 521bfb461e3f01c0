import Dispatch
import Foundation
import Glibc
import ImgSystem
import Synchronization
import Testing
import TestSupport

/// Loop devices, checked against what the kernel reports in /sys/block/loopN.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct LoopDeviceTests {
    @Test("attach with offset, size limit and read-only: sysfs shows them, AUTOCLEAR, the tag, the bytes")
    func attachWithSettings() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("pattern.img")
        let content = try writePatternFile(image, size: 4 << 20)
        let offset = 1 << 20 + 3 * 512, limit = 1 << 20
        let tag = "test-settings-\(getpid())"

        let dev = try LoopDevice.attach(image, options: .init(offset: UInt64(offset), sizeLimit: UInt64(limit),
                                                              readOnly: true, tag: tag), logger: testLogger)
        defer { try? dev.detach() }
        let n = dev.number
        #expect(dev.path == "/dev/loop\(n)")
        #expect(loopAttribute(n, "offset") == "\(offset)")
        #expect(loopAttribute(n, "sizelimit") == "\(limit)")
        #expect(loopAttribute(n, "autoclear") == "1")
        #expect(loopAttribute(n, "partscan") == "0")
        #expect(loopAttribute(n, "backing_file") == image)
        #expect(sysfs("/sys/block/loop\(n)/ro") == "1")
        #expect(sysfs("/sys/block/loop\(n)/size") == "\(limit / 512)")
        #expect(try LoopDevice.fileName(ofDevice: dev.path) == "imgtool:\(tag)")
        #expect(dev.tag == "imgtool:\(tag)")

        // The device is the file's bytes from the offset on, up to the limit, and no further.
        let read = try readBytes(dev.path, offset: 0, count: limit + 4096)
        #expect(read.count == limit)
        #expect(read == Array(content[offset..<offset + limit]))

        // Read-only: the kernel refuses writes.
        let fd = open(dev.path, O_WRONLY | O_CLOEXEC)
        if fd >= 0 {
            let junk = [UInt8](repeating: 0xEE, count: 512)
            #expect(pwrite(fd, junk, 512, 0) < 0, "a write to a read-only loop device succeeded")
            close(fd)
        }

        try dev.detach()
        #expect(try LoopDevice.fileName(ofDevice: dev.path) == nil)
        #expect(loopAttribute(n, "backing_file") == nil)
        try dev.detach()  // idempotent
        #expect(leftovers() == [])
    }

    @Test("a read-write device writes through to the backing file at the offset")
    func readWriteReachesBackingFile() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("rw.img")
        try writePatternFile(image, size: 1 << 20)
        let offset = 7 * 512
        let dev = try LoopDevice.attach(image, options: .init(offset: UInt64(offset), tag: "test-rw"), logger: testLogger)
        defer { try? dev.detach() }
        #expect(sysfs("/sys/block/loop\(dev.number)/ro") == "0")
        #expect(loopAttribute(dev.number, "sizelimit") == "0")
        #expect(try BlockDevice.size(dev.path) == UInt64(1 << 20 - offset))

        let fd = open(dev.path, O_RDWR | O_CLOEXEC)
        try #require(fd >= 0)
        let block = [UInt8](repeating: 0xAB, count: 512)
        #expect(pwrite(fd, block, 512, 512) == 512)
        #expect(fsync(fd) == 0)
        close(fd)
        try dev.detach()
        #expect(try readBytes(image, offset: offset + 512, count: 512) == block)
        #expect(try readBytes(image, offset: offset, count: 4) == [0x80, 0x03, 0x00, 0x00])  // untouched: 3584 / 4 = 0x380
        #expect(leftovers() == [])
    }

    @Test("AUTOCLEAR: a LoopDevice dropped without detach() is detached by the kernel")
    func autoclearOnDrop() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("auto.img")
        try writePatternFile(image, size: 1 << 20)
        let tag = "test-autoclear-\(getpid())"
        var number = -1
        do {
            let dev = try LoopDevice.attach(image, options: .init(tag: tag), logger: testLogger)
            number = dev.number
            #expect(loopAttribute(number, "autoclear") == "1")
            #expect(try LoopDevice.fileName(ofDevice: dev.path) == "imgtool:\(tag)")
        }
        defer { forceRelease(loop: number, tag: "imgtool:\(tag)") }
        let path = "/dev/loop\(number)"
        let gone = waitUntil(seconds: 3) {
            (try? LoopDevice.fileName(ofDevice: path)) != "imgtool:\(tag)" && loopAttribute(number, "backing_file") != image
        }
        #expect(gone, "\(path) is still attached 3 s after its LoopDevice went away")
        #expect(leftovers() == [])
    }

    @Test("two attaches of the same file get two devices")
    func twoAttachesOfOneFile() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("two.img")
        try writePatternFile(image, size: 1 << 20)
        let a = try LoopDevice.attach(image, options: .init(tag: "test-two-a"), logger: testLogger)
        defer { try? a.detach() }
        let b = try LoopDevice.attach(image, options: .init(offset: 512, tag: "test-two-b"), logger: testLogger)
        defer { try? b.detach() }
        #expect(a.number != b.number)
        #expect(a.path != b.path)
        #expect(loopAttribute(a.number, "backing_file") == image)
        #expect(loopAttribute(b.number, "backing_file") == image)
        #expect(loopAttribute(a.number, "offset") == "0")
        #expect(loopAttribute(b.number, "offset") == "512")
        #expect(try LoopDevice.fileName(ofDevice: a.path) == "imgtool:test-two-a")
        #expect(try LoopDevice.fileName(ofDevice: b.path) == "imgtool:test-two-b")
        try a.detach()
        try b.detach()
        #expect(try LoopDevice.fileName(ofDevice: a.path) == nil)
        #expect(try LoopDevice.fileName(ofDevice: b.path) == nil)
        #expect(leftovers() == [])
    }

    @Test("8 threads attach at once (with losetup racing for the same free devices): all succeed, distinct, and detach")
    func concurrentAttaches() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("concurrent.img")
        try writePatternFile(image, size: 1 << 20)
        let ours = 8, contenders = 4
        let results = Mutex<[Int: Result<LoopDevice, LoopDevice.Error>]>([:])
        let foreign = Mutex<[String]>([])
        defer {
            for case .success(let dev) in results.withLock({ Array($0.values) }) { try? dev.detach() }
            for path in foreign.withLock({ $0 }) { _ = try? Subprocess.run(["losetup", "-d", path]) }
        }

        DispatchQueue.concurrentPerform(iterations: ours + contenders) { i in
            if i < ours {
                let r = Result { () throws(LoopDevice.Error) -> LoopDevice in
                    try LoopDevice.attach(image, options: .init(tag: "test-concurrent-\(i)"), logger: testLogger)
                }
                results.withLock { $0[i] = r }
            } else if let r = try? Subprocess.run(["losetup", "--find", "--show", image]), r.succeeded {
                // util-linux does not take the /dev/loop-control lock: a real race for GET_FREE.
                foreign.withLock { $0.append(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
        }

        let all = results.withLock { $0 }
        var devices: [Int: LoopDevice] = [:]
        for i in 0..<ours {
            switch all[i] {
            case .success(let dev)?: devices[i] = dev
            case .failure(let e)?: Issue.record("attach \(i) failed: \(e)")
            case nil: Issue.record("attach \(i) did not run")
            }
        }
        try #require(devices.count == ours)
        let numbers = Set(devices.values.map(\.number))
        #expect(numbers.count == ours, "two attaches got the same device: \(devices.values.map(\.path).sorted())")
        #expect(Set(foreign.withLock { $0 }).isDisjoint(with: devices.values.map(\.path)))
        for (i, dev) in devices {
            #expect(try LoopDevice.fileName(ofDevice: dev.path) == "imgtool:test-concurrent-\(i)")
            #expect(loopAttribute(dev.number, "backing_file") == image)
            #expect(loopAttribute(dev.number, "autoclear") == "1")
        }

        let list = Array(devices)
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: list.count) { k in
            do { try list[k].value.detach() } catch { failures.withLock { $0.append("\(list[k].value.path): \(error)") } }
        }
        #expect(failures.withLock { $0 } == [])
        for (i, dev) in devices {
            // Another process may already have taken the freed device; ours must not be on it.
            #expect(try LoopDevice.fileName(ofDevice: dev.path) != "imgtool:test-concurrent-\(i)")
        }
        #expect(leftovers() == [])
    }

    @Test("partitionScan: partitionScanEnabled says what the kernel says")
    func partitionScanFlag() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--size-mib", "8"])
        let scanning = try LoopDevice.attach(image, options: .init(partitionScan: true, tag: "test-partscan"), logger: testLogger)
        defer { try? scanning.detach() }
        let plain = try LoopDevice.attach(image, options: .init(tag: "test-nopartscan"), logger: testLogger)
        defer { try? plain.detach() }
        let kernelSays = try #require(loopAttribute(scanning.number, "partscan"))
        #expect(scanning.partitionScanEnabled == (kernelSays == "1"))
        #expect(loopAttribute(plain.number, "partscan") == "0")
        #expect(!plain.partitionScanEnabled)
        try scanning.detach()
        try plain.detach()
        dropStalePartitions(scanning.path)  // from the scan, where the kernel parses tables
        #expect(leftovers() == [])
    }

    /// "Cleanup verifies by asking the kernel, never by trusting an exit code": a retried detach()
    /// must not report success while the kernel still has the device bound.
    @Test("detach() while another opener holds the device: stillAttached, again on retry, until it lets go")
    func detachWhileHeldOpen() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("held.img")
        try writePatternFile(image, size: 1 << 20)
        let tag = "test-held-\(getpid())"
        let dev = try LoopDevice.attach(image, options: .init(tag: tag), logger: testLogger)
        let number = dev.number
        var opener = open(dev.path, O_RDONLY | O_CLOEXEC)
        defer {
            if opener >= 0 { close(opener) }
            try? dev.detach()
            forceRelease(loop: number, tag: "imgtool:\(tag)")
        }
        try #require(opener >= 0)

        let first = #expect(throws: LoopDevice.Error.self) { try dev.detach() }
        if case .stillAttached(let device)? = first {
            #expect(device == dev.path)
        } else {
            Issue.record("expected .stillAttached, got \(String(describing: first))")
        }
        #expect(loopAttribute(number, "backing_file") == image, "premise: the other opener keeps it bound")
        let retry = #expect(throws: LoopDevice.Error.self, "a second detach() reported success while the kernel still has \(dev.path) bound") {
            try dev.detach()
        }
        if let retry, case .stillAttached = retry {} else if retry != nil {
            Issue.record("expected .stillAttached on retry, got \(String(describing: retry))")
        }

        // AUTOCLEAR finishes the job at the last close.
        close(opener)
        opener = -1
        #expect(waitUntil(seconds: 3) { loopAttribute(number, "backing_file") == nil })
        try dev.detach()
        #expect(try LoopDevice.fileName(ofDevice: dev.path) != "imgtool:\(tag)")
        #expect(leftovers() == [])
    }

    @Test("a tag longer than lo_file_name is truncated to 63 bytes, and the device still detaches")
    func longTag() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("tag.img")
        try writePatternFile(image, size: 1 << 20)
        let dev = try LoopDevice.attach(image, options: .init(tag: String(repeating: "t", count: 100)), logger: testLogger)
        defer { try? dev.detach() }
        let stored = try #require(try LoopDevice.fileName(ofDevice: dev.path))
        #expect(stored == "imgtool:" + String(repeating: "t", count: 55))
        #expect(stored == dev.tag)
        try dev.detach()
        #expect(try LoopDevice.fileName(ofDevice: dev.path) == nil)
        #expect(leftovers() == [])
    }

    @Test("attaching a file that does not exist fails with the path in the error, and attaches nothing")
    func missingBackingFile() throws {
        let scratch = try Scratch()
        let missing = scratch.file("missing.img")
        let error = #expect(throws: LoopDevice.Error.self) {
            try LoopDevice.attach(missing, options: .init(tag: "test-missing"), logger: testLogger)
        }
        guard case .system(let e)? = error else { Issue.record("expected a system error, got \(String(describing: error))"); return }
        #expect(e.errno == ENOENT)
        #expect(e.path == missing)
        #expect(leftovers() == [])
    }

    @Test("BlockDevice.size is the backing size, less the offset, or the size limit")
    func blockDeviceSize() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = scratch.file("size.img")
        try writePatternFile(image, size: 3 << 20)
        let whole = try LoopDevice.attach(image, options: .init(tag: "test-size-whole"), logger: testLogger)
        defer { try? whole.detach() }
        let shifted = try LoopDevice.attach(image, options: .init(offset: 1 << 20, tag: "test-size-offset"), logger: testLogger)
        defer { try? shifted.detach() }
        let limited = try LoopDevice.attach(image, options: .init(offset: 4096, sizeLimit: 1 << 19, tag: "test-size-limit"),
                                            logger: testLogger)
        defer { try? limited.detach() }
        for (dev, expected) in [(whole, 3 << 20), (shifted, 2 << 20), (limited, 1 << 19)] {
            #expect(try BlockDevice.size(dev.path) == UInt64(expected))
            #expect(sysfs("/sys/block/loop\(dev.number)/size") == "\(expected / 512)")
        }
        // Not a block device: the ioctl is refused, and the error names the path.
        let error = #expect(throws: SystemError.self) { try BlockDevice.size(image) }
        #expect(error?.errno == ENOTTY)
        #expect(error?.path == image)
        try whole.detach(); try shifted.detach(); try limited.detach()
        #expect(leftovers() == [])
    }
}
