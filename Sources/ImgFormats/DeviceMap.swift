/// GRUB's device.map: which GRUB drive ("hd0") is which OS device. grub-install reads it from
/// <boot-directory>/grub/device.map; one `(drive) device` pair per line, `#` starts a comment.
public struct DeviceMap: Sendable, Equatable {
    /// One line of device.map: GRUB drive `drive` is OS device `device`.
    public struct Entry: Sendable, Equatable {
        /// The GRUB drive name without parentheses, such as "hd0".
        public let drive: String   // without parentheses: "hd0"
        /// The OS device path, such as "/dev/loop3".
        public let device: String  // "/dev/loop3"
        /// Makes an entry; neither value is checked.
        public init(drive: String, device: String) {
            self.drive = drive
            self.device = device
        }
    }

    /// A line of device.map text that is not a comment, not blank and not `(drive) device`.
    public struct ParseError: Error, CustomStringConvertible, Sendable {
        /// The line's number, from 1.
        public let line: Int
        /// The offending line as it was read.
        public let text: String
        public var description: String { "device.map line \(line) is not `(drive) device`: \(text)" }
    }

    /// The map's lines, in file order.
    public var entries: [Entry]

    /// A map of `entries`, in that order.
    public init(_ entries: [Entry]) { self.entries = entries }

    /// A map that makes `device` GRUB's first hard disk.
    public static func firstHardDisk(_ device: String) -> DeviceMap {
        DeviceMap([Entry(drive: "hd0", device: device)])
    }

    /// The map as device.map text: one `(drive) device` line per entry, each ending in a newline.
    public var text: String {
        entries.map { "(\($0.drive)) \($0.device)\n" }.joined()
    }

    /// Parses device.map text. Devices may not contain whitespace (GRUB splits on it too).
    public init(parsing text: String) throws(ParseError) {
        var entries: [Entry] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.drop(while: { $0 == " " || $0 == "\t" })
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard line.first == "(", let close = line.firstIndex(of: ")") else {
                throw ParseError(line: index + 1, text: String(raw))
            }
            let drive = line[line.index(after: line.startIndex)..<close]
            let device = line[line.index(after: close)...].split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard !drive.isEmpty, device.count == 1 else { throw ParseError(line: index + 1, text: String(raw)) }
            entries.append(Entry(drive: String(drive), device: String(device[0])))
        }
        self.entries = entries
    }
}
