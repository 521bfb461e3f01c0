@testable import ImgFormats
import Testing

/// The framing of an isolated VM's answer: exact bytes through, and a truncated or trailing answer
/// is no answer.
struct ResponseFrameTests {
    @Test("responses are frames: data, then one result or error; anything else is not a response")
    func frames() throws {
        let bytes: [UInt8] = Array(0...255) + Array("result 4\n".utf8)
        let response = ResponseFrame.dataHeader(count: bytes.count) + bytes + ResponseFrame.dataHeader(count: 0)
            + ResponseFrame.result(.bool(true)).encoded
        let (data, end) = try #require(ResponseFrame.decode(response))
        #expect(data.map(Array.init) == [bytes, []] && end == .result(.bool(true)))
        let error = ResponseFrame.error(.object(["case": .string("isolated")])).encoded
        #expect(ResponseFrame.decode(error)?.end == .error(.object(["case": .string("isolated")])))
        // A guest that died mid-answer, sent no end, or wrote after it.
        #expect(ResponseFrame.decode(Array(response.dropLast(3))) == nil)
        #expect(ResponseFrame.decode(ResponseFrame.dataHeader(count: 1) + [7]) == nil)
        #expect(ResponseFrame.decode(error + error) == nil)
        #expect(ResponseFrame.decode([]) == nil)
        #expect(ResponseFrame.decode(Array("{\"result\": true}\n".utf8)) == nil)
        #expect(ResponseFrame.decode(Array("data -1\n".utf8)) == nil)
        #expect(ResponseFrame.decode(Array("data 99999999999999999999999\n".utf8)) == nil)
    }
}
