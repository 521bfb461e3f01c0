import Glibc
import ImgFormats
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// kpartx's partition maps, computed: checked against `kpartx -l -s` on TestImages' disks (it needs a
/// loop device, not device mapper) and against kpartx's source where -l does not show it (UUIDs,
/// logical partitions' absolute start, sector sizes other than 512).
@Suite(.serialized)
struct DeviceMapperLayoutTests {
    @Test("names and UUIDs as kpartx makes them: 'p' only after a digit, part<N>-<disk UUID>")
    func namesAndUUIDs() {
        #expect(DeviceMapperLayout.partitionName(disk: "hda", number: 1) == "hda1")
        #expect(DeviceMapperLayout.partitionName(disk: "loop0", number: 5) == "loop0p5")
        #expect(DeviceMapperLayout.partitionName(disk: "imgtool-disk-2", number: 12) == "imgtool-disk-2p12")
        #expect(DeviceMapperLayout.partitionUUID(disk: "imgtool-0badf00d", number: 5) == "part5-imgtool-0badf00d")
    }

    @Test("a dos table with logicals: container as 2 sectors, logicals over the disk at their absolute start")
    func dosByHand() throws {
        let table = PartitionTable(kind: .dos, sectorSize: 512, identifier: "0x494d4754", partitions: [
            Partition(number: 1, kind: .primary, startSector: 2048, sectorCount: 2048, mbrType: 0x83),
            Partition(number: 2, kind: .extended, startSector: 4096, sectorCount: 126976, mbrType: 0x05),
            Partition(number: 5, kind: .logical, startSector: 6144, sectorCount: 108544, mbrType: 0x83),
            Partition(number: 6, kind: .logical, startSector: 116736, sectorCount: 14336, mbrType: 0x83),
        ], findings: [])
        let disk = DeviceMapper.DeviceNumber(major: 253, minor: 0)
        let maps = try DeviceMapperLayout.partitionMaps(
            table: table, diskName: DeviceMapper.Name("hda"), diskUUID: DeviceMapper.UUID("imgtool-s1-disk"), disk: disk)
        #expect(maps.map(\.name.value) == ["hda1", "hda2", "hda5", "hda6"])
        #expect(maps.map(\.uuid.value) == ["part1-imgtool-s1-disk", "part2-imgtool-s1-disk", "part5-imgtool-s1-disk",
                                           "part6-imgtool-s1-disk"])
        #expect(maps.map(\.target.description) == ["0 2048 linear 253:0 2048", "0 2 linear 253:0 4096",
                                                   "0 108544 linear 253:0 6144", "0 14336 linear 253:0 116736"])
    }

    @Test("4096-byte sectors: positions in 512-byte units, the container as one sector")
    func largeSectors() throws {
        let table = PartitionTable(kind: .dos, sectorSize: 4096, identifier: "0x1", partitions: [
            Partition(number: 1, kind: .extended, startSector: 256, sectorCount: 1000, mbrType: 0x0f),
            Partition(number: 5, kind: .logical, startSector: 512, sectorCount: 100, mbrType: 0x83),
        ], findings: [])
        let maps = try DeviceMapperLayout.partitionMaps(
            table: table, diskName: DeviceMapper.Name("d"), diskUUID: DeviceMapper.UUID("u"),
            disk: DeviceMapper.DeviceNumber(major: 7, minor: 1))
        #expect(maps.map(\.target.description) == ["0 8 linear 7:1 2048", "0 800 linear 7:1 4096"])
    }

    @Test("names and UUIDs that would pass the kernel's limits are refused")
    func limits() throws {
        let table = PartitionTable(kind: .gpt, sectorSize: 512, identifier: "X", partitions: [
            Partition(number: 10, kind: .gpt, startSector: 2048, sectorCount: 8),
        ], findings: [])
        let disk = DeviceMapper.DeviceNumber(major: 7, minor: 0)
        #expect(throws: DeviceMapper.Error.self) {  // 126 + "10" = 128 bytes
            try DeviceMapperLayout.partitionMaps(table: table, diskName: DeviceMapper.Name(String(repeating: "n", count: 126)),
                                                 diskUUID: DeviceMapper.UUID("u"), disk: disk)
        }
        #expect(throws: DeviceMapper.Error.self) {  // "part10-" + 122 = 129 bytes
            try DeviceMapperLayout.partitionMaps(table: table, diskName: DeviceMapper.Name("n"),
                                                 diskUUID: DeviceMapper.UUID(String(repeating: "u", count: 122)), disk: disk)
        }
        _ = try DeviceMapperLayout.partitionMaps(table: table, diskName: DeviceMapper.Name(String(repeating: "n", count: 125)),
                                                 diskUUID: DeviceMapper.UUID(String(repeating: "u", count: 121)), disk: disk)
    }

    @Test("the same maps as kpartx -l -s on TestImages' disks",
          .enabled(if: kernelTestsBlocked == nil && commandExists("kpartx"), "needs root, loop devices and kpartx"),
          arguments: [
              ["--label", "dos", "--logical", "--extra-partition", "--fs", "none"],
              ["--label", "dos", "--logical", "--tool", "parted", "--fs", "none"],
              ["--label", "dos", "--extra-partition", "--fs", "none"],
              ["--label", "gpt", "--extra-partition", "--fs", "none"],
              ["--label", "gpt", "--bios-boot-sectors", "0", "--fs", "none"],
          ])
    func matchesKpartx(_ arguments: [String]) throws {
        let scratch = try Scratch()
        defer { withExtendedLifetime(scratch) {} }
        let image = try makeDisk(scratch.file("kpartx.img"), arguments)
        let table = try #require(try PartitionTable.read(from: FileByteSource(path: image)))

        // kpartx -l attaches the image to a free loop device, prints, and detaches it again.
        let listed = try run(["kpartx", "-l", "-s", image]).stdout
        let lines = try listed.split(separator: "\n").map { line in
            // "loop0p1 : 0 2048 /dev/loop0 2048"
            let f = line.split(separator: " ")
            guard f.count == 6, f[1] == ":", f[2] == "0", let length = UInt64(f[3]), let start = UInt64(f[5]) else {
                throw TestFailure("unexpected kpartx line: \(line)")
            }
            return (name: String(f[0]), length: length, device: String(f[4]), start: start)
        }
        let loop = try #require(lines.first { !$0.device.hasPrefix("/dev/dm-") }?.device, "\(listed)")
        let loopName = String(loop.dropFirst("/dev/".count))
        let loopNumber = try #require(DeviceMapper.DeviceNumber(blockDevice: loop))

        let maps = try DeviceMapperLayout.partitionMaps(
            table: table, diskName: DeviceMapper.Name(loopName), diskUUID: DeviceMapper.UUID("imgtool-test"), disk: loopNumber)
        #expect(Set(maps.map(\.name.value)) == Set(lines.map(\.name)), "kpartx: \(listed)")
        // kpartx -l prints a logical partition over "/dev/dm-K", K being its container's position
        // among the maps listed before the logicals, at a start relative to the container;
        // kpartx -a maps it over the disk at container start + that.
        let direct = lines.filter { !$0.device.hasPrefix("/dev/dm-") }
        for line in lines {
            let map = try #require(maps.first { $0.name.value == line.name })
            #expect(map.target.length == line.length, "\(line.name)")
            var start = line.start
            if line.device.hasPrefix("/dev/dm-") {
                let k = try #require(Int(line.device.dropFirst("/dev/dm-".count)))
                let container = try #require(maps.first { $0.name.value == direct[k].name })
                #expect(container.kind == .extended)
                #expect(map.kind == .logical && map.number >= 5)
                start += UInt64(container.target.params.split(separator: " ")[1])!
            } else {
                #expect(line.device == loop)
            }
            #expect(map.target.params == "\(loopNumber) \(start)", "\(line.name)")
            #expect(map.target.type == "linear" && map.target.start == 0)
        }
    }
}
