/// GRUB's device.map: which GRUB drive ("hd0") is which OS device. grub-install reads it from
/// <boot-directory>/grub/device.map; one `(drive) device` pair per line, `#` starts a comment.
public struct DeviceMap: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public let drive: String   // without parentheses: "hd0"
        public let device: String  // "/dev/loop3"
        public init(drive: String, device: String) {
            self.drive = drive
            self.device = device
        }
    }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let line: Int
        public let text: String
        public var description: String { "device.map line \(line) is not `(drive) device`: \(text)" }
    }

    public var entries: [Entry]

    public init(_ entries: [Entry]) { self.entries = entries }

    /// A map that makes `device` GRUB's first hard disk.
    public static func firstHardDisk(_ device: String) -> DeviceMap {
        DeviceMap([Entry(drive: "hd0", device: device)])
    }

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
