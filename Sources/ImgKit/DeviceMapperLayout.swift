import ImgFormats
import ImgSystem

/// The partition maps `kpartx -a` makes for a device-mapper disk, computed from the partition
/// table without touching the kernel: what the device-mapper strategy creates so that grub-probe
/// and friends recognise the maps as partitions of the disk map (they go by the UUID prefix).
///
/// Matches multipath-tools' kpartx (0.9.4, kpartx.c, dos.c, gpt.c, devmapper.c):
/// - names: the disk's name, then "p" if it ends in a digit (`loop0` -> `loop0p1`, `hda` ->
///   `hda1`), then the partition number;
/// - UUIDs: `part<number>-<disk UUID>`;
/// - one linear target per partition, `0 <sectors> linear <disk major:minor> <start>`, in 512-byte
///   sectors, over the disk kpartx was run on (the disk map itself), logical partitions included:
///   `kpartx -a` maps those over the disk at their absolute start too (only `kpartx -l` prints
///   them relative to the container, as `/dev/dm-N`);
/// - an extended container mapped as 2 sectors (1 KiB, "for LILO"), or one sector where sectors
///   are larger than 512 bytes;
/// - logical partitions numbered from 5, primaries and GPT entries by slot, empty ones skipped.
///
/// Where the two can differ: kpartx numbers every non-link entry of an EBR, so an EBR whose first
/// entry is empty uses up a number in kpartx but not in `PartitionTable` (which numbers as the
/// kernel does), and kpartx reads the logicals of every extended container while `PartitionTable`
/// reads only the first's. fdisk, sfdisk and parted write neither.
package enum DeviceMapperLayout {
    /// One partition map.
    package struct PartitionMap: Sendable, Equatable {
        /// The partition number in the table (1-4 primaries and the container, 5... logicals; GPT
        /// entry index + 1).
        package let number: Int
        package let kind: Partition.Kind
        package let name: DeviceMapper.Name
        package let uuid: DeviceMapper.UUID
        package let target: DeviceMapper.Target
    }

    /// kpartx's name for partition `number` of the disk named `disk`.
    package static func partitionName(disk: String, number: Int) -> String {
        let delimiter = disk.last.map { $0.isASCII && $0.isNumber } == true ? "p" : ""
        return "\(disk)\(delimiter)\(number)"
    }

    /// kpartx's UUID for partition `number` of a disk whose UUID is `disk`.
    package static func partitionUUID(disk: String, number: Int) -> String {
        "part\(number)-\(disk)"
    }

    /// The maps for each partition of `table`, a table read from the disk map `diskName` (UUID
    /// `diskUUID`, device number `disk`), in the order kpartx creates them: by number, the
    /// extended container as 2 sectors, logicals after the primaries. Throws when a name or UUID
    /// would exceed the kernel's limits (kpartx fails there too).
    package static func partitionMaps(table: PartitionTable, diskName: DeviceMapper.Name,
                                     diskUUID: DeviceMapper.UUID,
                                     disk: DeviceMapper.DeviceNumber) throws(DeviceMapper.Error) -> [PartitionMap] {
        // Device-mapper tables count 512-byte sectors whatever the disk's sector size.
        let multiplier = UInt64(max(table.sectorSize, 512) / 512)
        let ordered = table.partitions.filter { $0.kind != .logical } + table.partitions.filter { $0.kind == .logical }
        var maps: [PartitionMap] = []
        for p in ordered where p.sectorCount > 0 {
            let name = try DeviceMapper.Name(partitionName(disk: diskName.value, number: p.number))
            let uuid = try DeviceMapper.UUID(partitionUUID(disk: diskUUID.value, number: p.number))
            let (start, startOverflow) = p.startSector.multipliedReportingOverflow(by: multiplier)
            let (count, countOverflow) = p.sectorCount.multipliedReportingOverflow(by: multiplier)
            guard !startOverflow, !countOverflow else {
                throw .invalidTable(device: name.value, reason: "partition \(p.number) lies beyond 2^64 sectors")
            }
            let length = p.kind == .extended ? (multiplier == 1 ? 2 : multiplier) : count
            maps.append(PartitionMap(number: p.number, kind: p.kind, name: name, uuid: uuid,
                                     target: .linear(length: length, device: disk, offset: start)))
        }
        return maps
    }
}
