/// A linear LVM logical volume read through its segments, wherever its extents lie: each segment
/// is a run of the volume's bytes on one physical volume found on the disk. What device mapper's
/// linear targets would present, for volumes that are not one run of extents (grown after another
/// volume took the extents behind them, or spread over several physical volumes).
public struct LogicalVolumeSource: ByteSource {
    /// One run: `length` bytes of the volume from `volumeOffset` lie at `diskOffset` of the disk.
    public struct Run: Sendable, Equatable {
        /// Where the run starts in the volume, in bytes.
        public let volumeOffset: UInt64
        /// Where it starts on the disk, in bytes.
        public let diskOffset: UInt64
        /// Its length in bytes.
        public let length: UInt64
    }

    /// The disk the physical volumes are on.
    public let disk: any ByteSource
    /// The runs, in volume order, covering the volume without gaps.
    public let runs: [Run]
    public let size: UInt64

    /// The volume `volume` of a group with extents of `extentSize` bytes, whose physical volumes
    /// named in the metadata ("pv0") lie where `physicalVolumes` says: the disk offset of the PV
    /// and of its first extent. Nil when a segment is not linear, lies on a physical volume that
    /// is not on this disk or outside it, or the segments leave a gap.
    public init?(volume: LVMPhysicalVolume.LogicalVolume, extentSize: UInt64,
                 physicalVolumes: [String: (offset: UInt64, extentStart: UInt64)], disk: any ByteSource) {
        guard extentSize > 0, !volume.segments.isEmpty else { return nil }
        var runs: [Run] = []
        var next: UInt64 = 0
        for segment in volume.segments.sorted(by: { $0.startExtent < $1.startExtent }) {
            guard segment.startExtent == next, let name = segment.physicalVolume, let pe = segment.physicalExtent,
                  let pv = physicalVolumes[name] else { return nil }
            let (volumeOffset, o1) = segment.startExtent.multipliedReportingOverflow(by: extentSize)
            let (length, o2) = segment.extentCount.multipliedReportingOverflow(by: extentSize)
            let (inPV, o3) = pe.multipliedReportingOverflow(by: extentSize)
            let (extents, o4) = pv.offset.addingReportingOverflow(pv.extentStart)
            let (diskOffset, o5) = extents.addingReportingOverflow(inPV)
            let (end, o6) = diskOffset.addingReportingOverflow(length)
            let (nextExtent, o7) = segment.startExtent.addingReportingOverflow(segment.extentCount)
            guard !(o1 || o2 || o3 || o4 || o5 || o6 || o7), length > 0, end <= disk.size else { return nil }
            runs.append(Run(volumeOffset: volumeOffset, diskOffset: diskOffset, length: length))
            next = nextExtent
        }
        self.disk = disk
        self.runs = runs
        size = runs.last.map { $0.volumeOffset + $0.length } ?? 0
    }

    /// Reads across runs as the volume's bytes.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(max(count, 0)))
        guard count >= 0, !overflow, end <= size else {
            throw ByteSourceError("read of \(count) bytes at \(offset) from a logical volume of \(size) bytes runs past its end")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        var position = offset
        // The first run holding `offset`: runs are sorted and contiguous.
        var index = runs.partitioningIndex { $0.volumeOffset + $0.length <= position }
        while position < end, index < runs.count {
            let run = runs[index]
            let within = position - run.volumeOffset
            let take = min(end - position, run.length - within)
            bytes += try disk.read(at: run.diskOffset + within, count: Int(take))
            position += take
            index += 1
        }
        return bytes
    }
}

extension Array {
    /// The first index whose element does not satisfy `belongs` (which holds for a prefix).
    func partitioningIndex(where belongs: (Element) -> Bool) -> Int {
        var low = 0, high = count
        while low < high {
            let mid = (low + high) / 2
            if belongs(self[mid]) { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
