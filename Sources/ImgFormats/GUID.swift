/// A GUID as GPT stores it: 16 bytes in the on-disk "mixed-endian" order, where the first three
/// groups of the text form are little-endian and the last two are big-endian.
public struct GUID: Hashable, Sendable, CustomStringConvertible {
    /// The 16 bytes in on-disk order.
    public let bytes: [UInt8]

    /// Takes 16 bytes in on-disk order; nil for any other count.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        self.bytes = Array(bytes)
    }

    /// Parses the canonical text form "21686148-6449-6E6F-744E-656564454649" (either case,
    /// optionally in braces).
    public init?(string: String) {
        var text = Substring(string)
        if text.first == "{" && text.last == "}" { text = text.dropFirst().dropLast() }
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.count) == [8, 4, 4, 4, 12] else { return nil }
        var canonical: [UInt8] = []  // bytes in text (big-endian) order
        for group in groups {
            var chars = group.makeIterator()
            while let high = chars.next(), let low = chars.next() {
                guard let h = high.hexDigitValue, let l = low.hexDigitValue else { return nil }
                canonical.append(UInt8(h << 4 | l))
            }
        }
        guard canonical.count == 16 else { return nil }
        self.bytes = Self.swapMixedEndian(canonical)
    }

    /// Uppercase canonical text, as sfdisk and sgdisk print it.
    public var description: String {
        let canonical = Self.swapMixedEndian(bytes)
        let digits: [Character] = Array("0123456789ABCDEF")
        var out = ""
        out.reserveCapacity(36)
        for (index, byte) in canonical.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { out.append("-") }
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return out
    }

    /// True for the all-zero GUID, which GPT uses to mark an unused entry.
    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    /// Converts between text order and on-disk order (the operation is its own inverse).
    private static func swapMixedEndian(_ b: [UInt8]) -> [UInt8] {
        [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]] + b[8..<16]
    }

    private init(known string: String) {
        // Only used for the constants below, whose text is fixed and valid.
        self = GUID(string: string)!
    }

    /// The all-zero GUID: an unused GPT entry's type.
    public static let empty = GUID(known: "00000000-0000-0000-0000-000000000000")
    /// GRUB's BIOS boot partition (sgdisk type EF02), where core.img is embedded on GPT disks.
    public static let biosBoot = GUID(known: "21686148-6449-6E6F-744E-656564454649")
    /// EFI system partition (sgdisk EF00).
    public static let efiSystem = GUID(known: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
    /// Linux filesystem data (sgdisk 8300).
    public static let linuxFilesystem = GUID(known: "0FC63DAF-8483-4772-8E79-3D69D8477DE4")
    /// Linux swap (sgdisk 8200).
    public static let linuxSwap = GUID(known: "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F")
    /// Linux LVM physical volume (sgdisk 8E00).
    public static let linuxLVM = GUID(known: "E6D6D379-F507-44C2-A23C-238F2A3DF928")
    /// Microsoft basic data (sgdisk 0700), also used for FAT data partitions.
    public static let microsoftBasicData = GUID(known: "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
}
