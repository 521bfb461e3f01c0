import Foundation
import ImgKit
import Testing

/// The reports' JSON writer against Foundation's parser: what imgtool prints must parse back to
/// the same values, whatever the strings hold.
struct JSONValueTests {
    @Test("strings with quotes, backslashes, control characters and non-ASCII survive a round trip")
    func strings() throws {
        let nasty = ["", "plain", "quote \" and \\ backslash", "tab\tnew\nline\r", "\u{1}\u{1f}\u{7f}", "é ü 日本 🙂", "</script>"]
        let text = JSONValue.object(["list": JSONValue(nasty)]).rendered()
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(parsed["list"] as? [String] == nasty)
    }

    @Test("numbers at their limits, null, booleans, empty and nested containers")
    func values() throws {
        let value = JSONValue.object([
            "u": .uint(UInt64.max), "i": .int(Int64.min), "d": .double(1.5), "whole": .double(30), "nan": .double(.nan),
            "null": .null, "t": .bool(true), "f": .bool(false), "emptyArray": .array([]), "emptyObject": .object([:]),
            "nested": .array([.object(["a": .array([.int(1), .null])])]),
        ])
        let text = value.rendered()
        #expect(text.contains("\"u\": 18446744073709551615") && text.contains("\"i\": -9223372036854775808"))
        #expect(text.contains("\"whole\": 30\n") && text.contains("\"nan\": null,"))
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(parsed["d"] as? Double == 1.5 && parsed["t"] as? Bool == true && parsed["f"] as? Bool == false)
        #expect(parsed["null"] is NSNull && (parsed["emptyArray"] as? [Any])?.isEmpty == true)
        #expect((parsed["emptyObject"] as? [String: Any])?.isEmpty == true)
        let nested = try #require(parsed["nested"] as? [[String: [Any]]])
        #expect(nested[0]["a"]?[0] as? Int == 1 && nested[0]["a"]?[1] is NSNull)
        // Keys come out sorted, so output is stable from run to run.
        let keys = text.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { $0.split(separator: "\"")[1] }
        #expect(keys == keys.sorted())
    }

    @Test("a library user's own Encoder sees the same document")
    func encodable() throws {
        let value = JSONValue.object(["a": .array([.uint(1), .string("x"), .null]), "b": .bool(false)])
        let viaEncoder = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(value)) as? NSDictionary
        let direct = try JSONSerialization.jsonObject(with: Data(value.rendered().utf8)) as? NSDictionary
        #expect(viaEncoder == direct && viaEncoder != nil)
    }
}
