import Glibc
import ImgFormats
import ImgSystem

/// An image opened for reading as the disk it holds: a raw file or block device as itself, a
/// container (qcow2, VMDK, VHD, VHDX, E01) as its virtual disk, so that every reader works on
/// every container unchanged.
///
/// The files a container names are reached only as `ContainerFiles` allows: a VMDK's extents by
/// relative names inside the image's directory (they are part of the image), a backing file or
/// parent only when the caller allows it (`backing`), since an untrusted image can name
/// /etc/shadow or /dev/sda as its backing file.
struct OpenedImage {
    /// The image path as given.
    let path: String
    /// The file itself.
    let file: FileByteSource
    /// The container the file is; nil for a raw image.
    let container: DiskContainer?
    /// The disk: `file` for a raw image, the container's virtual disk, or nil when the container
    /// cannot be read (`problem` says why).
    let disk: (any ByteSource)?
    /// Why the container's disk cannot be read; nil when it can.
    let problem: String?
    /// What the report says about the container beyond its facts (a backing file not opened).
    let findings: [Finding]

    /// The longest chain of backing files followed; deeper is a loop or an attack.
    static let maxBackingDepth = 16

    /// Opens `path`; a container's backing file or parent is opened only when `backing` is true.
    static func open(_ path: String, backing: Bool) throws(ImageOpenError) -> OpenedImage {
        let file = try ImageSource.open(path)
        guard let container = try? DiskContainer.identify(file) else {
            return OpenedImage(path: path, file: file, container: nil, disk: file, problem: nil, findings: [])
        }
        do {
            let (disk, facts) = try virtualDisk(of: file, container: container, path: path, backing: backing, depth: 0)
            var findings: [Finding] = []
            if let name = (disk as? any ContainerDisk)?.backingNotOpened {
                findings.append(Finding(.warning, "\(path) names \(name) as its backing file, which holds the parts of the disk this file does not; it was not opened (an image can name any file), so those parts read as zeros. Pass --backing to read it too."))
            }
            return OpenedImage(path: path, file: file, container: facts, disk: disk, problem: nil, findings: findings)
        } catch {
            return OpenedImage(path: path, file: file, container: container, disk: nil, problem: "\(error)", findings: [])
        }
    }

    /// The virtual disk of `file`, a `container`, and the container's facts as the opened
    /// reader knows them (EWF's size and chunk come from libewf).
    static func virtualDisk(of file: FileByteSource, container: DiskContainer, path: String, backing: Bool,
                            depth: Int) throws -> (any ByteSource, DiskContainer) {
        let openExtent: @Sendable (String) throws -> any ByteSource = { name in try extent(name, of: path) }
        let openBacking: @Sendable (String) throws -> any ByteSource = { name in try backingDisk(name, of: path, depth: depth + 1) }
        let files = ContainerFiles(openExtent: openExtent, openBacking: backing ? openBacking : nil)
        switch container.format {
        case .qcow2: return (try QCOW2Disk(file: file, files: files), container)
        case .vmdk: return (try VMDKDisk(file: file, files: files), container)
        case .vhd: return (try VHDDisk(file: file, files: files), container)
        case .vhdx: return (try VHDXDisk(file: file, files: files), container)
        case .ewf:
            let ewf = try EWFDisk(path: path)
            return (ewf, DiskContainer(format: .ewf, virtualSize: ewf.size, clusterSize: ewf.chunkSize > 0 ? ewf.chunkSize : nil))
        }
    }

    /// A VMDK extent: a relative name inside the descriptor's directory, never an absolute path
    /// or one that climbs out with "..".
    static func extent(_ name: String, of image: String) throws -> any ByteSource {
        let components = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !name.isEmpty, !name.hasPrefix("/"), !components.contains(".."), !components.contains("") else {
            throw ContainerError("\(image) names \(name) as an extent; only files in its own directory are read as extents")
        }
        return try ImageSource.open(join(directory(of: image), name))
    }

    /// A backing file or parent, opened because the caller allowed it: relative names are
    /// relative to the image naming them, as qemu resolves them; a container is opened as its disk.
    static func backingDisk(_ name: String, of image: String, depth: Int) throws -> any ByteSource {
        guard depth <= maxBackingDepth else {
            throw ContainerError("the chain of backing files from \(image) is more than \(maxBackingDepth) deep (a loop?)")
        }
        guard !name.contains(":") || name.hasPrefix("/") || name.hasPrefix(".") else {
            throw ContainerError("\(image) names \(name) as its backing file, which is not a file path (qemu protocols are not followed)")
        }
        let path = name.hasPrefix("/") ? name : join(directory(of: image), name)
        let file = try ImageSource.open(path)
        guard let container = try DiskContainer.identify(file) else { return file }
        return try virtualDisk(of: file, container: container, path: path, backing: true, depth: depth).0
    }

    private static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}
