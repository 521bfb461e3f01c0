/// Something a parser noticed about an image: the way malformed or unusual input is reported
/// instead of crashing or guessing silently.
public struct Finding: Sendable, Equatable, CustomStringConvertible {
    /// How bad a finding is; the CLI prints it as the message's prefix.
    public enum Severity: String, Sendable {
        /// Unusual but harmless (a hybrid MBR, a backup GPT header not at the last sector).
        case info
        /// Damaged or inconsistent, but a usable table was still read (e.g. from the backup GPT).
        case warning
        /// Part of the table is unusable or points outside the image.
        case error
    }

    /// How bad it is.
    public let severity: Severity
    /// What was found, as a sentence for the user without the severity prefix.
    public let message: String

    /// Makes a finding: `Finding(.warning, "...")`.
    public init(_ severity: Severity, _ message: String) {
        self.severity = severity
        self.message = message
    }

    /// Makes a finding, with labels (the form Codable and embedders' tests use).
    public init(severity: Severity, message: String) {
        self.init(severity, message)
    }

    /// "warning: message", the form the CLI prints.
    public var description: String { "\(severity.rawValue): \(message)" }
}
