import ImgFormats

/// Why `Create` refused or failed. `description` is the message a user reads: what is wrong and
/// what to do next. Nothing is left at the image's path after any of them.
public enum CreateError: Error, CustomStringConvertible, Sendable {
    /// A definition or `--partition` spec is malformed; `origin` names where, `detail` what.
    case invalidLayout(origin: String, detail: String)
    /// A key imgtool does not support (it is never ignored silently).
    case unsupportedKey(origin: String, key: String)
    /// A type that is neither a known name, a GUID nor an MBR type byte, or that the table cannot hold.
    case unknownType(origin: String, type: String)
    /// The partitions need more than the disk's size (bytes).
    case exceedsDisk(needed: UInt64, size: UInt64)
    /// An EFI system partition smaller than FAT32's smallest volume.
    case espTooSmall(origin: String, size: UInt64, needed: UInt64)
    /// A partition's contents need more than its size allows (bytes).
    case contentsDoNotFit(origin: String, needed: UInt64, size: UInt64)
    /// An input (CopyFiles= source, --definitions, --root) that does not exist or cannot be read.
    case inputMissing(path: String, reason: String)
    /// The image exists and `overwrite` was not asked for.
    case imageExists(path: String)
    /// The image cannot be created at its path (`reason`: why, and what to do).
    case cannotCreate(path: String, reason: String)
    /// A tool create runs is not installed; `package` is the Debian package that has it.
    case toolMissing(tool: String, package: String)
    /// The sector size cannot be used for this layout here; `reason` says why.
    case sectorSize(Int, reason: String)
    /// A step failed after the checks passed: `step` names it, `detail` is the tool's or library's message.
    case failed(step: String, detail: String)
    /// SIGINT, SIGTERM or SIGHUP stopped the work; the half-made image was removed.
    case interrupted(signal: Int32)

    public var description: String {
        switch self {
        case .invalidLayout(let origin, let detail):
            return "\(origin): \(detail)"
        case .unsupportedKey(let origin, let key):
            return "\(origin): \(key)= is not supported by imgtool create; remove it, or make this partition with systemd-repart."
        case .unknownType(let origin, let type):
            // A definition file is repart's: only its names and GUIDs keep it readable by repart.
            if origin.hasSuffix(".conf") || origin.contains(".conf:") {
                return "\(origin): unknown partition type '\(type)'. Give one of repart's names (\(RepartDefinitions.typeNames.keys.sorted().joined(separator: ", "))) or a type GUID."
            }
            return "\(origin): unknown partition type '\(type)'. Give a name (\(PartitionKind.knownNames.joined(separator: ", "))), a GPT type GUID, or an MBR type in hex (83)."
        case .exceedsDisk(let needed, let size):
            return "The partitions need \(Self.mib(needed)) and the disk is \(Self.mib(size)). Give a bigger --size, or --size auto for the smallest disk that holds them."
        case .espTooSmall(let origin, let size, let needed):
            return "\(origin): an EFI system partition of \(Self.mib(size)) is too small for FAT32, which needs at least \(Self.mib(needed)) (65525 clusters). Give it size=\(needed >> 20)M or more."
        case .contentsDoNotFit(let origin, let needed, let size):
            return "\(origin): the contents need about \(Self.mib(needed)) and the partition can be at most \(Self.mib(size)). Make the partition bigger, leave its size out, or use --size auto."
        case .inputMissing(let path, let reason):
            return "\(path): \(reason). Check the path (CopyFiles= sources resolve under --root)."
        case .imageExists(let path):
            return "\(path) already exists. Give --overwrite to replace it, or another path."
        case .cannotCreate(let path, let reason):
            return "Cannot create \(path): \(reason)."
        case .toolMissing(let tool, let package):
            return "\(tool) is not installed: install Debian's \(package) package."
        case .sectorSize(let size, let reason):
            return "Sector size \(size): \(reason)"
        case .failed(let step, let detail):
            return "\(step): \(detail)"
        case .interrupted(let signal):
            return "Interrupted by signal \(signal); the half-made image was removed."
        }
    }

    /// The documented exit code's kind.
    public var exitStatus: ExitStatus {
        switch self {
        case .invalidLayout, .unsupportedKey, .unknownType, .exceedsDisk, .espTooSmall, .contentsDoNotFit: return .layout
        case .inputMissing: return .noInput
        case .imageExists, .cannotCreate: return .cannotCreate
        case .toolMissing, .sectorSize: return .unavailable
        case .failed, .interrupted: return .failure
        }
    }

    /// The process exit code: `exitStatus`, or 128 + signal after an interruption.
    public var exitCode: Int32 {
        if case .interrupted(let signal) = self { return 128 + signal }
        return exitStatus.rawValue
    }

    static func mib(_ bytes: UInt64) -> String {
        let tenths = (bytes * 10 + (1 << 19)) >> 20
        return bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(tenths / 10).\(tenths % 10) MiB"
    }
}

extension CreateError: ImgKitError {}
