import Foundation
import Glibc
import ImgSystem
import Testing
import TestSupport

@Suite struct BlockPartitionNamingTests {
    @Test("nodePath: a disk name ending in a digit gets 'p' before the number")
    func nodePathNaming() {
        #expect(BlockPartitions.nodePath(disk: "/dev/loop0", number: 1) == "/dev/loop0p1")
        #expect(BlockPartitions.nodePath(disk: "/dev/loop12", number: 5) == "/dev/loop12p5")
        #expect(BlockPartitions.nodePath(disk: "/dev/nvme0n1", number: 2) == "/dev/nvme0n1p2")
        #expect(BlockPartitions.nodePath(disk: "/dev/sda", number: 1) == "/dev/sda1")
        #expect(BlockPartitions.nodePath(disk: "/dev/vdb", number: 12) == "/dev/vdb12")
        #expect(BlockPartitions.nodePath(disk: "loop0", number: 1) == "loop0p1")
        #expect(BlockPartitions.nodePath(disk: "sda", number: 1) == "sda1")
    }

    @Test("kernelPartitions of a disk that does not exist is empty")
    func kernelPartitionsOfNothing() {
        #expect(BlockPartitions.kernelPartitions(disk: "/dev/imgtool-no-such-disk") == [])
    }
}

/// BLKPG partitions on loop devices over images from make-disk.sh, checked in /sys/block/loopN/loopNpM.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct BlockPartitionsTests {
    @Test("add and remove every partition of the table", arguments: ["dos", "gpt"])
    func addAndRemove(label: String) throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = try makeDisk(scratch.file("disk.img"), ["--label", label, "--size-mib", "16"])
        let numbers = label == "dos" ? [1] : [1, 2]  // gpt: BIOS boot partition, then the filesystem
        let dev = try LoopDevice.attach(image, options: .init(tag: "test-blkpg-\(label)"), logger: testLogger)
        defer {
            removePartitionsForCleanup(dev, numbers)
            try? dev.detach()
            dropStalePartitions(dev.path)
        }
        let name = deviceName(dev.path)

        var nodes: [Int: String] = [:]
        for n in numbers {
            let (start, size) = try sfdiskPartition(image, number: n)
            let node = try BlockPartitions.add(disk: dev, number: n, start: start * 512, length: size * 512, logger: testLogger)
            nodes[n] = node
            #expect(node == "\(dev.path)p\(n)")
            let sys = "/sys/block/\(name)/\(name)p\(n)"
            #expect(sysfs("\(sys)/partition") == "\(n)")
            #expect(sysfs("\(sys)/start") == "\(start)")
            #expect(sysfs("\(sys)/size") == "\(size)")
            let devNumber = try #require(blockNode(node), "\(node) is not a block device node")
            #expect(sysfs("\(sys)/dev") == "\(devNumber.major):\(devNumber.minor)")
            #expect(try BlockDevice.size(node) == size * 512)
        }
        #expect(BlockPartitions.kernelPartitions(disk: dev.path) == numbers)
        #expect(sysfsPartitions(dev.path) == numbers)

        // The node reads the filesystem that make-disk.sh put in the last partition.
        let fsNode = try #require(nodes[numbers.last!])
        let fd = open(fsNode, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        let probe = try FilesystemProbe.probe(fd: fd, path: fsNode, offset: 0, length: 0)
        close(fd)
        #expect(probe?.type == "ext4")
        #expect(probe?.uuid == "494d4754-0000-4000-8000-0000000000f5")

        for n in numbers {
            try BlockPartitions.remove(disk: dev, number: n, logger: testLogger)
            let node = nodes[n]!
            #expect(waitUntil(seconds: 2) { blockNode(node) == nil }, "\(node) still exists after BLKPG_DEL_PARTITION")
            #expect(sysfs("/sys/block/\(name)/\(name)p\(n)/start") == nil)
        }
        #expect(BlockPartitions.kernelPartitions(disk: dev.path) == [])
        #expect(sysfsPartitions(dev.path) == [])
        // Removing a partition that is not there is ENXIO in the kernel, and fine here.
        try BlockPartitions.remove(disk: dev, number: 1, logger: testLogger)
        try BlockPartitions.remove(disk: dev, number: 7, logger: testLogger)
        try dev.detach()
        #expect(leftovers() == [])
    }

    @Test("an overlapping partition is refused with EBUSY and the first one is untouched")
    func overlapRefused() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--size-mib", "8"])
        let dev = try LoopDevice.attach(image, options: .init(tag: "test-blkpg-overlap"), logger: testLogger)
        defer {
            removePartitionsForCleanup(dev, [1, 2])
            try? dev.detach()
            dropStalePartitions(dev.path)
        }
        try BlockPartitions.add(disk: dev, number: 1, start: 1 << 20, length: 4 << 20, logger: testLogger)
        let error = #expect(throws: SystemError.self) {
            try BlockPartitions.add(disk: dev, number: 2, start: 2 << 20, length: 1 << 20, logger: testLogger)
        }
        #expect(error?.errno == EBUSY)
        #expect(error?.path == dev.path)
        #expect(sysfsPartitions(dev.path) == [1])
        #expect(blockNode("\(dev.path)p2") == nil)
        try BlockPartitions.remove(disk: dev, number: 1, logger: testLogger)
        try dev.detach()
        #expect(leftovers() == [])
    }

    /// The kernel does not drop BLKPG partitions when a loop device without LO_FLAGS_PARTSCAN is
    /// cleared: they stay on the unbound device, pointing into whatever it is bound to next.
    @Test("detach leaves no partitions behind on the loop device")
    func detachDropsPartitions() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos", "--size-mib", "8"])
        let (start, size) = try sfdiskPartition(image, number: 1)
        let dev = try LoopDevice.attach(image, options: .init(tag: "test-blkpg-detach"), logger: testLogger)
        defer {
            try? dev.detach()
            dropStalePartitions(dev.path)
        }
        let node = try BlockPartitions.add(disk: dev, number: 1, start: start * 512, length: size * 512, logger: testLogger)
        #expect(blockNode(node) != nil)
        try dev.detach()
        #expect(try LoopDevice.fileName(ofDevice: dev.path) == nil)
        #expect(sysfsPartitions(dev.path) == [], "\(dev.path) was detached but the kernel still has its partitions")
        #expect(blockNode(node) == nil, "\(node) outlived the detach of \(dev.path)")
        dropStalePartitions(dev.path)
        #expect(leftovers() == [])
    }

    /// A device left with partitions (by a crash under AUTOCLEAR, or by another tool) must not be
    /// handed out with them: BLKPG_ADD of partition 1 would fail with EBUSY, and the stale nodes would
    /// read the new image at the old geometry. systemd's loop-util.c removes them for this reason.
    @Test("attach does not hand out a device that still has an earlier user's partitions")
    func attachClearsStalePartitions() throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let first = try makeDisk(scratch.file("first.img"), ["--label", "dos", "--size-mib", "8"])
        let second = try makeDisk(scratch.file("second.img"), ["--label", "dos", "--size-mib", "16"])

        // Leave a partition on a free device, the way a crashed run would: attach, add, detach.
        let stale = try run(["losetup", "--find", "--show", first]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { dropStalePartitions(stale) }
        do {
            defer { _ = try? Subprocess.run(["losetup", "-d", stale]) }
            try run(["addpart", stale, "1", "2048", "4096"])
        }
        #expect(waitUntil(seconds: 2) { loopAttribute(Int(stale.dropFirst("/dev/loop".count)) ?? -1, "backing_file") == nil })

        let dev = try LoopDevice.attach(second, options: .init(tag: "test-blkpg-stale"), logger: testLogger)
        defer {
            removePartitionsForCleanup(dev, [1])
            try? dev.detach()
            dropStalePartitions(dev.path)
        }
        // LOOP_CTL_GET_FREE hands out the lowest free device; unless another process took it in
        // between, that is the one just left behind.
        #expect(dev.path == stale)
        #expect(sysfsPartitions(dev.path) == [], "\(dev.path) came with partitions from an earlier user")
        let (start, size) = try sfdiskPartition(second, number: 1)
        #expect(throws: Never.self) {
            try BlockPartitions.add(disk: dev, number: 1, start: start * 512, length: size * 512, logger: testLogger)
        }
        #expect(sysfs("/sys/block/\(deviceName(dev.path))/\(deviceName(dev.path))p1/size") == "\(size)")
        try? BlockPartitions.remove(disk: dev, number: 1, logger: testLogger)
        try dev.detach()
        dropStalePartitions(dev.path)
        #expect(leftovers() == [])
    }
}
