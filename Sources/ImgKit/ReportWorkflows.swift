import Logging

/// What `Inspect` and `Verify` take: the image, and whether to read it in a throwaway VM.
public struct ReportOptions: Sendable {
    /// The image file or block device.
    public var image: String
    /// Read the image inside a throwaway VM instead of on this kernel (`Isolation`): for images
    /// nobody vouches for.
    public var isolation: Isolation?
    /// Read the backing file (or parent) that a container names, and its own, as qemu would.
    /// Off by default: an untrusted image can name any file (/etc/shadow, /dev/sda) as its
    /// backing file; then what it would supply reads as zeros and the report says so.
    public var backingFiles: Bool

    /// Options for `image`, an image file or block device, read here or in `isolation`.
    public init(image: String, isolation: Isolation? = nil, backingFiles: Bool = false) {
        self.image = image
        self.isolation = isolation
        self.backingFiles = backingFiles
    }

    /// The options the VM's imgtool runs with: the same, minus the isolation it is inside.
    var local: ReportOptions { ReportOptions(image: image) }

    /// The report `read` makes here, or the one `workflow` makes in the VM.
    func run<Report>(_ workflow: IsolatedRequest.Workflow, logger: Logger, decode: (JSONValue) -> Report?,
                     read: (String) throws(ImageOpenError) -> Report) throws(ReportError) -> Report {
        if let isolation {
            return try IsolatedRequest(workflow, logLevel: logger.logLevel)
                .send(through: isolation, logger: logger, errors: ReportError.self, decode: decode)
        }
        do { return try read(image) } catch { throw .open(error) }
    }
}

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
