/// Why `Inspect.run` or `Verify.run` made no report. Problems inside the image are findings in the
/// report, never errors: only an image that cannot be opened, or an isolated VM that could not
/// run, stops them.
public enum ReportError: ImgKitError {
    /// The image could not be opened.
    case open(ImageOpenError)
    /// The isolated VM (`isolation` in the options) could not run the job.
    case isolation(IsolationFailure)

    public var exitStatus: ExitStatus {
        switch self {
        case .open(let e): return e.exitStatus
        case .isolation(let e): return e.exitStatus
        }
    }

    public var exitCode: Int32 {
        switch self {
        case .open(let e): return e.exitCode
        case .isolation(let e): return e.exitCode
        }
    }

    public var description: String {
        switch self {
        case .open(let e): return e.description
        case .isolation(let e): return e.description
        }
    }
}
