import ImgFormats

extension DiskLayout {
    /// Parses a size as repart and the CLI write it: bytes, or a number with K, M, G or T
    /// (powers of 1024; "M", "MiB" and "MB" alike, as repart reads them). nil for anything else.
    public static func parseSize(_ text: String) -> UInt64? {
        var digits = Substring(text.trimmingSpaces)
        for suffix in ["iB", "B"] where digits.count > suffix.count && digits.hasSuffix(suffix) {
            digits = digits.dropLast(suffix.count)
            break
        }
        var shift: UInt64 = 0
        if let last = digits.last, let index = "KMGT".firstIndex(of: Character(last.uppercased())) {
            shift = UInt64(10 * ("KMGT".distance(from: "KMGT".startIndex, to: index) + 1))
            digits = digits.dropLast()
        }
        guard let value = UInt64(digits), value <= UInt64.max >> shift else { return nil }
        return value << shift
    }
}

extension DiskLayout.Partition {
    /// Parses an inline spec: `type=esp,size=256M,format=vfat,copy=DIR-or-TAR[:TARGET],label=L,uuid=U,bootable,logical`.
    /// `origin` names it in messages ("--partition 2").
    public init(spec: String, origin: String) throws(CreateError) {
        var type: PartitionKind?
        var fields: [(key: String, value: String?)] = []
        for item in spec.split(separator: ",", omittingEmptySubsequences: true) {
            let key = String(item.prefix { $0 != "=" })
            let value = item.contains("=") ? String(item.drop { $0 != "=" }.dropFirst()) : nil
            fields.append((key, value))
        }
        for field in fields where field.key == "type" {
            guard let value = field.value, let parsed = PartitionKind(value) else {
                throw .unknownType(origin: origin, type: field.value ?? "")
            }
            type = parsed
        }
        guard let type else { throw .invalidLayout(origin: origin, detail: "no type= (for example type=linux, type=esp or type=83).") }
        self.init(type: type, origin: origin)
        for (key, value) in fields {
            func required() throws(CreateError) -> String {
                guard let value, !value.isEmpty else { throw .invalidLayout(origin: origin, detail: "\(key)= needs a value.") }
                return value
            }
            switch key {
            case "type": break
            case "size":
                let text = try required()
                guard let size = DiskLayout.parseSize(text), size > 0 else {
                    throw .invalidLayout(origin: origin, detail: "size=\(text) is not a size (bytes, or a number with K, M, G or T).")
                }
                sizeMin = size
                sizeMax = size
                weight = 0
            case "format":
                let text = try required()
                guard let format = DiskLayout.Filesystem(rawValue: text) else {
                    throw .invalidLayout(origin: origin, detail: "format=\(text) is not one imgtool makes; give one of \(DiskLayout.Filesystem.allCases.map(\.rawValue).joined(separator: ", ")).")
                }
                self.format = format
            case "copy":
                let text = try required()
                // SOURCE[:TARGET], as repart's CopyFiles=; a source path may itself hold no colon.
                let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
                copies.append(.init(source: parts[0], target: parts.count > 1 ? parts[1] : "/"))
            case "label":
                label = try required()
            case "uuid":
                let text = try required()
                guard let guid = GUID(string: text) else {
                    throw .invalidLayout(origin: origin, detail: "uuid=\(text) is not a UUID (8-4-4-4-12 hex digits).")
                }
                uuid = guid
            case "bootable":
                guard value == nil else { throw .invalidLayout(origin: origin, detail: "bootable is a flag and takes no value.") }
                bootable = true
            case "logical":
                guard value == nil else { throw .invalidLayout(origin: origin, detail: "logical is a flag and takes no value.") }
                logical = true
            default:
                throw .invalidLayout(origin: origin, detail: "unknown key '\(key)'; the keys are type, size, format, copy, label, uuid, bootable and logical.")
            }
        }
    }
}

extension String {
    var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return String(text)
    }
}
