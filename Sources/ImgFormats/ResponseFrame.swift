/// What an isolated VM's imgtool prints on stdout in answer to a request: frames, each a header
/// line `<kind> <length>` and `length` bytes. Data frames carry a file's bytes as `cat` reads them;
/// the last frame is the result or the error, a JSON document. Lengths let any bytes through
/// unchanged, and tell a guest that finished its answer from one that died in the middle of it.
/// The guest reads an image nobody vouches for, so its answer is untrusted input: this parser is in
/// the fuzz target.
package enum ResponseFrame: Equatable, Sendable {
    case result(JSONValue)
    case error(JSONValue)

    /// The header of a data frame of `count` bytes, which follow it.
    package static func dataHeader(count: Int) -> [UInt8] { Array("data \(count)\n".utf8) }

    package var encoded: [UInt8] {
        let kind: String, document: JSONValue
        switch self {
        case .result(let d): (kind, document) = ("result", d)
        case .error(let d): (kind, document) = ("error", d)
        }
        let payload = Array(document.rendered().utf8)
        return Array("\(kind) \(payload.count)\n".utf8) + payload
    }

    /// The data frames' bytes and the final frame; nil unless `bytes` is a whole response: frames
    /// back to back, data only before the end, nothing after it.
    package static func decode(_ bytes: [UInt8]) -> (data: [ArraySlice<UInt8>], end: ResponseFrame)? {
        var data: [ArraySlice<UInt8>] = []
        var at = bytes.startIndex
        while at < bytes.endIndex {
            // A header is short; a longer one is not ours.
            guard let newline = bytes[at..<min(bytes.endIndex, at + 32)].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            let header = String(decoding: bytes[at..<newline], as: UTF8.self).split(separator: " ", omittingEmptySubsequences: false)
            guard header.count == 2, let count = Int(header[1]), count >= 0, count <= bytes.endIndex - newline - 1 else { return nil }
            let payload = bytes[(newline + 1)..<(newline + 1 + count)]
            at = payload.endIndex
            switch header[0] {
            case "data": data.append(payload)
            case "result", "error":
                guard at == bytes.endIndex, let document = try? JSONValue.parse(Array(payload)) else { return nil }
                return (data, header[0] == "result" ? .result(document) : .error(document))
            default: return nil
            }
        }
        return nil
    }
}
