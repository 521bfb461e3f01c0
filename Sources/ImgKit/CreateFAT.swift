import Glibc
import ImgSystem

/// Fills a new FAT filesystem from trees with mtools: directories by one mmd(1) in tree order,
/// files by one mcopy(1) per directory from a directory tree, or one per file (from a memory
/// file) from an archive. Names in sorted order, so FAT's allocation is the same on every run.
/// FAT keeps no owners, modes, links or devices: a tree with a symbolic link, a device or a
/// socket is refused rather than copied without it.
struct CreateFAT {
    let image: String
    let offset: UInt64
    let time: Int64
    let interruption: Interruption

    private var drive: String { "\(image)@@\(offset)" }

    func fill(_ partition: DiskLayout.Partition, sources: [TreeSource]) throws(CreateError) {
        var made: Set<String> = ["/"]
        for (copy, source) in zip(partition.copies, sources) {
            try copyTree(source, into: copy.target, made: &made, origin: partition.origin)
        }
        try makeDirectories(partition.makeDirectories, made: &made, origin: partition.origin)
    }

    private func copyTree(_ source: TreeSource, into target: String, made: inout Set<String>, origin: String) throws(CreateError) {
        let step = "filling \(origin) from \(source.path)"
        do {
            let reader = try source.makeReader()
            var directories: [String] = []
            // Directory trees: files by their own paths, batched per directory.
            var batches: [String: [String]] = [:], batchOrder: [String] = []
            var staged: [String: MemoryFile] = [:]
            while let entry = try reader.next() {
                let path = Self.join(target, entry.path)
                switch entry.kind {
                case .directory:
                    directories.append(path)
                case .regularFile, .hardLink:
                    let parent = Self.parent(of: path)
                    if source.format == .directory {
                        let sourcePath = source.path + "/" + (entry.kind == .regularFile ? entry.path : Self.linkTarget(entry))
                        if Self.baseName(sourcePath) == Self.baseName(path) {
                            if batches[parent] == nil { batchOrder.append(parent) }
                            batches[parent, default: []].append(sourcePath)
                            continue
                        }
                    }
                    try makeDirectories(directories, made: &made, origin: origin)
                    directories = []
                    if source.format == .directory {
                        // A hard link under another name: FAT has no links, so a copy of its file.
                        let sourcePath = source.path + "/" + Self.linkTarget(entry)
                        try mtools(["mcopy", "-o", "-i", drive, sourcePath, "::" + path], step: step)
                        continue
                    }
                    // From an archive: the contents into a memory file, copied under its name; a
                    // hard link is a copy of the earlier file's.
                    let file: MemoryFile
                    if case .hardLink = entry.kind {
                        guard let earlier = staged[Self.join(target, Self.linkTarget(entry))] else {
                            throw CreateError.invalidLayout(origin: origin, detail: "\(source.path) holds \(entry.path), a hard link to \(Self.linkTarget(entry)), which is not a file before it in the archive.")
                        }
                        file = earlier
                    } else {
                        file = try MemoryFile(name: "fat-file")
                        var buffer = [UInt8](repeating: 0, count: 1 << 16)
                        while true {
                            let count = try buffer.withUnsafeMutableBytes { raw throws(TreeSource.Error) in try reader.read(into: raw) }
                            if count == 0 { break }
                            try writeFully(file.file.fd, Array(buffer[0..<count]), path: file.path)
                        }
                    }
                    staged[path] = file
                    try mtools(["mcopy", "-o", "-i", drive, file.path, "::" + path], step: step)
                default:
                    throw CreateError.invalidLayout(origin: origin, detail: "\(source.path) holds \(entry.path.isEmpty ? "/" : entry.path), a \(Self.kindName(entry.kind)), which FAT cannot store; remove it from the tree or use an ext filesystem.")
                }
            }
            try makeDirectories(directories, made: &made, origin: origin)
            for parent in batchOrder {
                try mtools(["mcopy", "-o", "-i", drive] + batches[parent]! + ["::" + (parent == "/" ? "/" : parent + "/")], step: step)
            }
        } catch let error as CreateError {
            throw error
        } catch {
            throw .failed(step: step, detail: "\(error)")
        }
    }

    private func makeDirectories(_ paths: [String], made: inout Set<String>, origin: String) throws(CreateError) {
        var missing: [String] = []
        for path in paths {
            var above = ""
            for component in path.split(separator: "/") {
                above += "/\(component)"
                if made.insert(above).inserted { missing.append(above) }
            }
        }
        if !missing.isEmpty { try mtools(["mmd", "-i", drive] + missing.map { "::" + $0 }, step: "mmd (\(origin))") }
    }

    /// mtools with the image's time as its now (FAT's clock starts in 1980).
    private func mtools(_ arguments: [String], step: String) throws(CreateError) {
        try CreateTools.run(arguments, environment: ["MTOOLS_SKIP_CHECK=1", "SOURCE_DATE_EPOCH=\(max(time, 315_532_800))"],
                            step: step, interruption: interruption)
    }

    static func join(_ directory: String, _ path: String) -> String {
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        return path.isEmpty ? (base.isEmpty ? "/" : base) : base + "/" + path
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    static func baseName(_ path: String) -> Substring { path[path.index(after: path.lastIndex(of: "/") ?? path.startIndex)...] }

    static func linkTarget(_ entry: TreeEntry) -> String {
        if case .hardLink(let target) = entry.kind { return target }
        return entry.path
    }

    static func kindName(_ kind: TreeEntry.Kind) -> String {
        switch kind {
        case .symbolicLink: return "symbolic link"
        case .characterDevice: return "character device"
        case .blockDevice: return "block device"
        case .fifo: return "fifo"
        case .socket: return "socket"
        case .directory: return "directory"
        case .regularFile, .hardLink: return "file"
        }
    }
}
