/// Why a workflow run in a throwaway VM (an `Isolation` in its options) gave no result and no
/// error of its own. Each workflow's error wraps it in its `isolation` case; the workflow's own
/// errors (a missing image, a damaged table) come back from the VM as the same typed values a
/// local run throws.
public enum IsolationFailure: ImgKitError {
    /// The VM could not run the job: no kernel, no qemu, a timeout, an interruption.
    case vm(IsolatedVM.Error)
    /// The job failed in the VM with an error that has no typed form on the host (a failure of the
    /// guest's kernel layer, such as a loop device or mount): its exit code and message.
    case guest(status: Int32, message: String)
    /// The image is a container qemu cannot be given alone (`reason`: it names a backing file or
    /// other extents, which imgtool never opens, or it is encrypted or a format qemu does not read).
    case container(path: String, reason: String)
    /// The VM's imgtool answered with something that is not a response (`output`: how it began),
    /// for `workflow`: a guest that is not this imgtool, or one that crashed mid-answer.
    case unreadableResponse(workflow: String, output: String)

    public var exitStatus: ExitStatus {
        switch self {
        case .vm(let e): return e.exitStatus
        case .guest(let status, _): return ExitStatus(rawValue: status) ?? .failure
        case .container: return .badImage
        case .unreadableResponse: return .failure
        }
    }

    /// `exitStatus`, or 128 + the signal that stopped the VM or the job in it.
    public var exitCode: Int32 {
        switch self {
        case .vm(let e): return e.exitCode
        case .guest(let status, _) where status > 128: return status
        default: return exitStatus.rawValue
        }
    }

    public var description: String {
        switch self {
        case .vm(let e): return e.description
        case .guest(_, let message): return message
        case .container(let path, let reason):
            return "\(path) cannot go into the isolated VM as it is: \(reason). Make a self-contained raw copy you trust (qemu-img convert -O raw) and use that."
        case .unreadableResponse(let workflow, let output):
            return "the isolated VM's \(workflow) gave no response imgtool could read (it began: \(output)). Run with --verbose to see the VM's console, and check that the imgtool run in the VM is this version."
        }
    }
}
