import ImgSystem

/// Where the offline install writes GRUB's files: an ext filesystem through libext2fs
/// (`Ext2Writer`), or a FAT one, the EFI system partition, through mtools (`MtoolsWriter`). Paths
/// are absolute within the filesystem. What is written is root's, directories 0755 and files
/// 0644, as grub-install run by root leaves them.
protocol GrubDirectoryWriter: AnyObject {
    /// Whether anything is at `path`.
    func exists(_ path: String) throws -> Bool
    /// Whether a directory is at `path` (not a link to one).
    func isDirectory(_ path: String) throws -> Bool
    /// `path` and the directories above it, those that are missing.
    func makeDirectory(_ path: String) throws
    /// A file at `path` holding `bytes`, replacing one that is there.
    func write(_ path: String, bytes: [UInt8]) throws
    /// Each of `files` copied from its source to `directory`/its destination.
    func copy(_ files: [GrubFiles.File], into directory: String) throws
    /// Makes everything written part of the filesystem.
    func finish() throws
}

extension Ext2Writer: GrubDirectoryWriter {
    func exists(_ path: String) throws -> Bool { try kind(of: path) != nil }
    func isDirectory(_ path: String) throws -> Bool { try kind(of: path) == .directory }
    func makeDirectory(_ path: String) throws { _ = try makeDirectories(path) }
    func write(_ path: String, bytes: [UInt8]) throws { try writeFile(path, contents: bytes) }
    func copy(_ files: [GrubFiles.File], into directory: String) throws {
        for file in files { try writeFile("\(directory)/\(file.destination)", contents: try readFile(file.source)) }
    }
    func finish() throws { try close() }
}

extension GrubDirectoryWriter {
    /// grub/'s place: at the top of a separate /boot filesystem (which holds `grub/` and no
    /// `boot/`), else /boot/grub; as BootDirectory.prepare decides for a mounted one.
    func grubDirectory() throws -> String {
        try isDirectory("/grub") && !exists("/boot") ? "/grub" : "/boot/grub"
    }
}
