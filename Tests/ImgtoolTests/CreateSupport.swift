import Foundation
import Glibc
import ImgSystem
import Testing
import TestSupport

/// What the `imgtool create` tests share: a directory owned by uid 65534 whose path holds a space,
/// the inputs (a directory tree the user owns, an ESP tree, a tar archive with foreign owners and a
/// device node), and the command run as that user.
final class CreateWorkspace: @unchecked Sendable {
    typealias JSON = [String: Any]
    static let user = Offline.user
    /// What the tree's /boot/grub/grub.cfg prints on the serial console.
    static let marker = "IMGTOOL-CREATE-GRUB-MENU"

    let scratch: Scratch
    /// Owned by `user`; the images go here.
    let directory: String

    init() throws {
        scratch = try Scratch()
        directory = scratch.file("work dir")
        try run(["install", "-d", "-o", "\(Self.user)", "-g", "\(Self.user)", directory])
    }

    func path(_ name: String) -> String { directory + "/" + name }

    /// `imgtool create ARGS` as `user`, without SOURCE_DATE_EPOCH unless `epoch`.
    func create(_ arguments: [String], epoch: Int? = nil) throws -> Subprocess.Result {
        let environment = epoch.map { ["SOURCE_DATE_EPOCH=\($0)"] } ?? ["-u", "SOURCE_DATE_EPOCH"]
        return try Subprocess.run(asUser(Self.user) + ["env"] + environment
                                  + [try imgtoolPath(reachableBy: Self.user), "create"] + arguments)
    }

    /// `create ARGS --json`, which must succeed; its document.
    func createJSON(_ arguments: [String], epoch: Int? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> JSON {
        let r = try create(arguments + ["--json", "-q"], epoch: epoch)
        try #require(r.status == 0, "imgtool create \(arguments.joined(separator: " ")) failed (\(r.status)): \(r.stderr)",
                     sourceLocation: sourceLocation)
        return try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, sourceLocation: sourceLocation)
    }

    /// Hidden staging files (`.NAME.imgtool-*`) in the directory.
    func stagingFiles() -> [String] {
        directoryEntries(directory).filter { $0.hasPrefix(".") && $0.contains(".imgtool-") }
    }

    /// A tree the user made (so create stores it as root's): files, an executable, a symbolic link,
    /// a 300 kB file and /boot/grub/grub.cfg that prints `marker`.
    func userTree(_ name: String = "tree", big: Int = 0) throws -> String {
        let tree = path(name)
        try run(asUser(Self.user) + ["sh", "-c", """
            set -e; T=$1
            mkdir -p "$T/etc" "$T/usr/bin" "$T/boot/grub" "$T/srv/data"
            printf 'hello from the tree\\n' > "$T/etc/hello"
            printf '#!/bin/sh\\necho hi\\n' > "$T/usr/bin/hi"; chmod 755 "$T/usr/bin/hi"
            ln -s ../../etc/hello "$T/usr/bin/hello-link"
            head -c 300000 /dev/zero | tr '\\0' 'x' > "$T/srv/data/blob"
            printf 'serial --unit=0 --speed=115200\\nterminal_input serial\\nterminal_output serial\\necho \(Self.marker)\\nhalt\\n' > "$T/boot/grub/grub.cfg"
            i=0; while [ $i -lt $2 ]; do head -c 1048576 /dev/urandom > "$T/srv/data/big$i"; i=$((i+1)); done
            """, "sh", tree, "\(big)"])
        return tree
    }

    /// A tree for a FAT filesystem (no links): /EFI/test/readme.txt.
    func espTree(_ name: String = "esp tree") throws -> String {
        let tree = path(name)
        try run(asUser(Self.user) + ["sh", "-c", "set -e; mkdir -p \"$1/EFI/test\"; printf 'esp file\\n' > \"$1/EFI/test/readme.txt\"", "sh", tree])
        return tree
    }

    /// A tar archive (made as root) whose entries are 1000:1000, with a character device /dev/null.
    func foreignTar(_ name: String = "owned.tar") throws -> String {
        let source = scratch.file("tar source")
        try run(["sh", "-c", """
            set -e; S=$1
            mkdir -p "$S/dev" "$S/home/user"
            printf 'from the archive\\n' > "$S/home/user/file"
            mknod "$S/dev/null" c 1 3
            chown -R 1000:1000 "$S"
            tar --numeric-owner --sort=name --mtime=@1600000000 -C "$S" -cf "$2" .
            chmod 644 "$2"; rm -rf "$S"
            """, "sh", source, path(name)])
        return path(name)
    }

    /// A *.conf file of a definitions directory (made by the user).
    func definition(_ directory: String, _ name: String, _ lines: [String]) throws {
        try run(asUser(Self.user) + ["sh", "-c", "mkdir -p \"$1\" && printf '%s\\n' \"$@\" | tail -n +3 > \"$1/$2\"", "sh", directory, name,
                                     "[Partition]"] + lines)
    }
}

/// Reading the made images with the tools a user has.
enum CreateRead {
    typealias JSON = [String: Any]

    static func json(_ arguments: [String]) throws -> JSON {
        try #require(try JSONSerialization.jsonObject(with: Data(try run(arguments).output)) as? JSON)
    }

    /// sfdisk --json's partitions, and the table.
    static func sfdisk(_ image: String) throws -> (table: JSON, partitions: [JSON]) {
        let table = try #require(try json(["sfdisk", "--json", image])["partitiontable"] as? JSON)
        return (table, table["partitions"] as? [JSON] ?? [])
    }

    /// parted -m's partition lines, by number: [start, end, size, filesystem, name, flags].
    static func parted(_ image: String) throws -> [Int: [String]] {
        var lines: [Int: [String]] = [:]
        for line in try run(["parted", "-s", "-m", image, "unit", "s", "print"]).stdout.split(separator: "\n") {
            let fields = line.hasSuffix(";") ? line.dropLast().split(separator: ":", omittingEmptySubsequences: false).map(String.init)
                                             : []
            if fields.count >= 7, let number = Int(fields[0]) { lines[number] = Array(fields[1...]) }
        }
        return lines
    }

    /// sgdisk -i N: type GUID, unique GUID, attribute flags, name.
    static func sgdisk(_ image: String, _ number: Int) throws -> (type: String, unique: String, attributes: UInt64, name: String) {
        let out = try run(["sgdisk", "-i", "\(number)", image]).stdout
        func field(_ prefix: String) -> String {
            out.split(separator: "\n").first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) } ?? ""
        }
        let name = field("Partition name: ")
        return (String(field("Partition GUID code: ").prefix(36)), field("Partition unique GUID: "),
                UInt64(field("Attribute flags: "), radix: 16) ?? .max,
                name.count >= 2 ? String(name.dropFirst().dropLast()) : name)
    }

    /// blkid -p at a partition's byte offset: TYPE, UUID, LABEL...
    static func blkid(_ image: String, offset: Int) throws -> [String: String] {
        var tags: [String: String] = [:]
        for line in try run(["blkid", "-p", "-O", "\(offset)", "-o", "export", image]).stdout.split(separator: "\n") {
            if let eq = line.firstIndex(of: "=") { tags[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
        }
        return tags
    }
}
