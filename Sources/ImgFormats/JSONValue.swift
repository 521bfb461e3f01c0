/// A JSON document as the reports print it: every key present (absent values are `null`), keys
/// sorted, two-space indentation. Reports build one directly rather than through Encodable,
/// whose generic containers cost more at start-up than `imgtool inspect` spends on the image.
public enum JSONValue: Sendable, Equatable {
    /// JSON null; also what an absent (nil) value prints as.
    case null
    /// true or false.
    case bool(Bool)
    /// A signed integer.
    case int(Int64)
    /// An unsigned integer; used for values that may exceed Int64.max (sizes, sectors).
    case uint(UInt64)
    /// A number with a fraction or an exponent.
    case double(Double)
    /// A string, escaped when rendered.
    case string(String)
    /// An array, in order.
    case array([JSONValue])
    /// An object; rendered with its keys sorted.
    case object([String: JSONValue])

    /// `.string`, or `.null` for nil.
    public init(_ value: String?) { self = value.map { .string($0) } ?? .null }
    /// `.int`, or `.null` for nil.
    public init(_ value: Int?) { self = value.map { .int(Int64($0)) } ?? .null }
    /// `.uint`, or `.null` for nil.
    public init(_ value: UInt64?) { self = value.map { .uint($0) } ?? .null }
    /// `.bool`.
    public init(_ value: Bool) { self = .bool(value) }
    /// An array of `.string`s.
    public init(_ values: [String]) { self = .array(values.map { .string($0) }) }

    /// The document as text, without a final newline.
    public func rendered() -> String {
        var out = ""
        write(to: &out, indent: "")
        return out
    }

    private func write(to out: inout String, indent: String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let n): out += String(n)
        case .uint(let n): out += String(n)
        case .double(let d):
            // Integral values print without ".0"; JSON has no NaN or infinity.
            if !d.isFinite { out += "null" } else if d == d.rounded() && abs(d) < 1e15 { out += String(Int64(d)) } else { out += String(d) }
        case .string(let s): JSONValue.writeString(s, to: &out)
        case .array(let items):
            guard !items.isEmpty else { out += "[]"; return }
            out += "[\n"
            for (i, item) in items.enumerated() {
                out += indent + "  "
                item.write(to: &out, indent: indent + "  ")
                out += i == items.count - 1 ? "\n" : ",\n"
            }
            out += indent + "]"
        case .object(let members):
            guard !members.isEmpty else { out += "{}"; return }
            out += "{\n"
            let keys = members.keys.sorted()
            for (i, key) in keys.enumerated() {
                out += indent + "  "
                JSONValue.writeString(key, to: &out)
                out += ": "
                members[key]!.write(to: &out, indent: indent + "  ")
                out += i == keys.count - 1 ? "\n" : ",\n"
            }
            out += indent + "}"
        }
    }

    private static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

/// For library users who encode or decode reports with their own coders: the same document.
extension JSONValue: Codable {
    private struct Key: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Reads any JSON value; numbers become `int` when they fit an Int64, else `uint` or `double`.
    public init(from decoder: any Decoder) throws {
        if let object = try? decoder.container(keyedBy: Key.self) {
            var members: [String: JSONValue] = [:]
            for key in object.allKeys { members[key.stringValue] = try object.decode(JSONValue.self, forKey: key) }
            self = .object(members)
        } else if var array = try? decoder.unkeyedContainer() {
            var items: [JSONValue] = []
            while !array.isAtEnd { items.append(try array.decode(JSONValue.self)) }
            self = .array(items)
        } else {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() { self = .null }
            else if let b = try? c.decode(Bool.self) { self = .bool(b) }
            else if let n = try? c.decode(Int64.self) { self = .int(n) }
            else if let n = try? c.decode(UInt64.self) { self = .uint(n) }
            else if let d = try? c.decode(Double.self) { self = .double(d) }
            else { self = .string(try c.decode(String.self)) }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .array(let items):
            var c = encoder.unkeyedContainer()
            for item in items { try c.encode(item) }
        case .object(let members):
            var c = encoder.container(keyedBy: Key.self)
            for (key, value) in members { try c.encode(value, forKey: Key(stringValue: key)) }
        default:
            var c = encoder.singleValueContainer()
            switch self {
            case .bool(let b): try c.encode(b)
            case .int(let n): try c.encode(n)
            case .uint(let n): try c.encode(n)
            case .double(let d): try c.encode(d)
            case .string(let s): try c.encode(s)
            default: try c.encodeNil()
            }
        }
    }
}

/// A type that reports as JSON.
public protocol JSONRepresentable {
    /// The value as a JSON document; the CLI prints `json.rendered()` for --json.
    var json: JSONValue { get }
}
