/// The BSD disklabel (`struct disklabel`, <sys/disklabel.h>) in an MBR slice of type 0xA5
/// (FreeBSD), 0xA6 (OpenBSD) or 0xA9 (NetBSD), read as Linux's msdos.c reads it.
///
/// The label sits at the slice's sector 1 (LABELSECTOR 1, LABELOFFSET 0 on x86), little-endian:
/// magic 0x82564557 at 0 and again at 132, checksum u16 at 136 (the XOR of every 16-bit word of
/// the label, through its last partition entry, is 0), partition count u16 at 138, then 16-byte
/// entries from 148: size u32, offset u32, fragment size u32, filesystem type u8. Offsets count from
/// the disk's start, except in a FreeBSD slice whose raw partition "c" starts at 0: there they count
/// from the slice's (the kernel's rule; mmls always reads them from the disk's). The kernel skips
/// unused entries (type 0) and the one that is the whole slice (the raw partition).
enum BSDLabel {
    static let magic: UInt32 = 0x8256_4557
    /// Slice types whose sector 1 may hold a disklabel.
    static let sliceTypes: Set<UInt8> = [0xA5, 0xA6, 0xA9]
    /// NetBSD's MAXPARTITIONS on some ports; FreeBSD has 8 and OpenBSD 16.
    static let maxPartitions = 22
    static let partitionsOffset = 148

    /// The subpartitions in `slice`, numbered from `firstNumber`, and what was wrong; nothing and no
    /// finding when the slice's sector 1 holds no disklabel.
    static func read(slice: Partition, firstNumber: Int, from source: some ByteSource) throws -> ([Partition], [Finding]) {
        let (offset, overflow) = (slice.startSector &+ 1).multipliedReportingOverflow(by: 512)
        guard !overflow, slice.startSector < UInt64.max, let sector = try source.readIfInBounds(at: offset, count: 512),
              sector.le32(0) == magic else { return ([], []) }
        let name = "the BSD disklabel in partition \(slice.number)"
        guard sector.le32(132) == magic else { return ([], [Finding(.error, "\(name) lacks its second magic number; its partitions are not read")]) }
        let count = Int(sector.le16(138))
        guard count <= maxPartitions else {
            return ([], [Finding(.error, "\(name) says it has \(count) partitions, more than \(maxPartitions); they are not read")])
        }
        let end = partitionsOffset + 16 * count
        var xor: UInt16 = 0
        for i in stride(from: 0, to: end, by: 2) { xor ^= sector.le16(i) }
        guard xor == 0 else { return ([], [Finding(.error, "\(name) fails its checksum; its partitions are not read")]) }

        let relative = slice.mbrType == 0xA5 && count > 2 && sector.le32(partitionsOffset + 16 * 2 + 4) == 0
        var partitions: [Partition] = []
        var findings: [Finding] = []
        var number = firstNumber
        for i in 0..<count {
            let base = partitionsOffset + 16 * i
            let size = UInt64(sector.le32(base)), start = UInt64(sector.le32(base + 4)) + (relative ? slice.startSector : 0)
            let type = sector[base + 12]
            guard type != 0, size > 0, !(start == slice.startSector && size == slice.sectorCount) else { continue }
            let letter = Character(UnicodeScalar(UInt8(ascii: "a") + UInt8(i)))
            let partition = Partition(number: number, kind: .bsd, startSector: start, sectorCount: size,
                                      name: String(letter), bsdType: type)
            if partition.startSector < slice.startSector || partition.endSector > slice.endSector {
                findings.append(Finding(.warning, "BSD partition \(letter) (\(number)) of partition \(slice.number) extends outside it"))
            }
            partitions.append(partition)
            number += 1
        }
        return (partitions, findings)
    }
}
