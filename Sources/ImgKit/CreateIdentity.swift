import Glibc
import ImgFormats

/// Every identifier and time `Create` records, derived from one seed so that the same seed and
/// inputs give the same image bytes: disk and partition GUIDs, filesystem UUIDs, ext hash seeds,
/// FAT serials, the MBR signature. The seed is `--seed`, else SOURCE_DATE_EPOCH, else random.
struct CreateIdentity {
    let seed: [UInt8]
    /// What mkfs records as "now" and what made directories carry: SOURCE_DATE_EPOCH; 1980-01-01
    /// with a seed alone, so the image is still the same bytes (not 0: e2fsprogs reads a fake time
    /// of 0 as none and writes the clock into the superblock; and FAT's clock starts in 1980);
    /// else the present.
    let time: Int64
    /// SOURCE_DATE_EPOCH: input files' times later than this are recorded as this.
    let clamp: Int64?
    /// The layout's logical sector size, which every sector number here counts in.
    let sectorSize: Int

    init(seed: String?, sourceDateEpoch: Int64?, sectorSize: Int = 512) {
        self.sectorSize = sectorSize
        if let seed {
            self.seed = Array(seed.utf8)
        } else if let sourceDateEpoch {
            self.seed = Array("SOURCE_DATE_EPOCH=\(sourceDateEpoch)".utf8)
        } else {
            var generator = SystemRandomNumberGenerator()
            self.seed = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        }
        time = sourceDateEpoch ?? (seed != nil ? Self.seedOnlyTime : Int64(Glibc.time(nil)))
        clamp = sourceDateEpoch
    }

    /// The time of an image made with --seed and no SOURCE_DATE_EPOCH: 1980-01-01 00:00:00 UTC.
    static let seedOnlyTime: Int64 = 315_532_800

    /// 16 bytes for `purpose`, as a version-4 UUID (RFC 4122 variant), in GPT's on-disk order.
    func uuid(_ purpose: String) -> GUID {
        var bytes = Array(SHA256.hash(seed + [0] + Array(purpose.utf8)).prefix(16))
        bytes[6] = bytes[6] & 0x0F | 0x40
        bytes[8] = bytes[8] & 0x3F | 0x80
        // The text form's bytes; GUID stores the first three groups little-endian.
        return GUID(string: Self.text(bytes))!
    }

    var diskGUID: GUID { uuid("disk") }
    var mbrSignature: UInt32 {
        let bytes = SHA256.hash(seed + [0] + Array("mbr signature".utf8))
        return UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
    }

    /// The partition's UUID= or one from the seed; the filesystem's UUID is the same, as repart makes it.
    func partitionUUID(_ partition: DiskLayout.Partition, index: Int) -> GUID {
        partition.uuid ?? uuid("partition \(index + 1)")
    }

    func hashSeed(index: Int) -> GUID { uuid("ext hash seed \(index + 1)") }

    /// A FAT volume serial: the UUID's first 32 bits, as they read in its text form.
    func fatSerial(_ partition: DiskLayout.Partition, index: Int) -> UInt32 {
        UInt32(String(partitionUUID(partition, index: index).description.prefix(8)), radix: 16)!
    }

    static func text(_ bytes: [UInt8]) -> String {
        let hex = bytes.map { String($0, radix: 16, uppercase: true).count == 1 ? "0" + String($0, radix: 16, uppercase: true) : String($0, radix: 16, uppercase: true) }.joined()
        let chars = Array(hex)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(chars[$0]) }.joined(separator: "-")
    }
}
