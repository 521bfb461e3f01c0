/// How a container's reader reaches the other files its image names: a VMDK descriptor's extents,
/// which are part of the image, and a backing file or parent, which is another image. The reader
/// never opens a path itself; ImgKit decides what may be opened and resolves names relative to the
/// image, so a hostile header that names /etc/shadow or /dev/sda reaches nothing by itself.
public struct ContainerFiles: Sendable {
    /// Opens a file that is part of the image (a VMDK extent), by the name the descriptor gives.
    public var openExtent: @Sendable (String) throws -> any ByteSource
    /// Opens a backing file or parent by the name the header gives, as the virtual disk it
    /// presents (a container is opened as one); nil when the user has not allowed it, in which case
    /// the reader reads what the backing file would supply as zeros and says so (`backingNotOpened`).
    public var openBacking: (@Sendable (String) throws -> any ByteSource)?

    /// Files reached through `openExtent` and, when allowed, `openBacking`.
    public init(openExtent: @escaping @Sendable (String) throws -> any ByteSource,
                openBacking: (@Sendable (String) throws -> any ByteSource)? = nil) {
        self.openExtent = openExtent
        self.openBacking = openBacking
    }

    /// No other file: for a self-contained container, and for tests.
    public static let none = ContainerFiles(openExtent: { name in
        throw ContainerError("the image names another file, \(name), and none may be opened here")
    })
}

/// Why a container cannot be read as a disk: a header, a table or a compressed cluster that is
/// malformed, absurd or points outside the file. `description` is the message the user reads.
public struct ContainerError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    /// Makes an error whose message is `description`.
    public init(_ description: String) { self.description = description }
}

/// A container's reader: the virtual disk it presents, and the backing file it was not allowed
/// to open, if any (what the backing file would supply then reads as zeros).
public protocol ContainerDisk: ByteSource {
    /// The backing file or parent the image names and that was not opened; nil when there is
    /// none or it was opened.
    var backingNotOpened: String? { get }
}
