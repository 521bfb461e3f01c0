import ImgKit

/// Prints a report's JSON document on stdout.
func printJSON(_ value: JSONValue) {
    writeAll(1, Array((value.rendered() + "\n").utf8))
}
