/// What every ImgKit workflow throws: a message for the user that ends with the next step
/// (`description`), and the exit status the imgtool command exits with for it. Catch
/// `any ImgKitError` to report any workflow's failure the way imgtool does.
public protocol ImgKitError: Error, CustomStringConvertible, Sendable {
    /// The kind of failure, one of the documented exit codes.
    var exitStatus: ExitStatus { get }
    /// The process exit code: `exitStatus`, or 128 + N after signal N stopped the work.
    var exitCode: Int32 { get }
}

extension ImgKitError {
    public var exitCode: Int32 { exitStatus.rawValue }
}

extension ImageOpenError: ImgKitError {}
extension ImageFiles.Error: ImgKitError {}
extension InstallGrubError: ImgKitError {}
