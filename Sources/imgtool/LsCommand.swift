import Glibc
import ImgKit
import ImgSystem

let lsCommand = CommandSpec(
    name: "ls",
    abstract: "List a directory of an ext2/3/4 filesystem in a disk image, without mounting it.",
    discussion: """
        Reads the image through libext2fs: no root, no loop device, no mount, and the image is \
        opened read-only. Symbolic links are followed inside the image's filesystem, never on \
        the host. A path that is not a directory is shown by itself.
        """,
    positionals: [
        PositionalSpec(name: "image", optional: false, completion: .file, help: "The disk image (or a bare filesystem image, or a block device)."),
        PositionalSpec(name: "path", optional: true, help: "The path inside the filesystem (default /)."),
    ],
    options: [
        partitionOption,
        .flag("long", short: "l", help: "Long format: mode, owner, group, size, modification time (UTC), name."),
        .flag("json", help: "Print a JSON array of entries."),
    ],
    isolation: .readOnly,
    run: { arguments throws(UsageError) in
        LsCommand(image: arguments.positional(0)!, path: arguments.positional(1) ?? "/",
                  partition: try partition(arguments), long: arguments.flag("long"), json: arguments.flag("json")).run()
    })

/// --partition for ls and cat.
let partitionOption = OptionSpec.option(
    "partition", "<n>",
    help: "The partition holding the filesystem (default: the only ext2/3/4 one, or the whole image if it has no partition table).")

func partition(_ arguments: ParsedArguments) throws(UsageError) -> Int? {
    try arguments.value("partition", as: Int.self, expected: "a partition number")
}

struct LsCommand {
    let image: String
    let path: String
    let partition: Int?
    let long: Bool
    let json: Bool

    func run() -> Int32 {
        let opened: ImageFiles.Opened
        do { opened = try ImageFiles.run(.init(image: image, partition: partition)) } catch { return fail(error) }
        let fs = opened.filesystem
        let entries: [Ext2Filesystem.Entry]
        let directory: String?
        do {
            if try fs.stat(path).kind == .directory {
                entries = try fs.list(path)
                directory = path
            } else {
                let entry = try fs.stat(path, followSymlinks: false)
                entries = [Ext2Filesystem.Entry(name: path, kind: entry.kind, size: entry.size, mode: entry.mode,
                                                inode: entry.inode, modified: entry.modified, uid: entry.uid,
                                                gid: entry.gid)]
                directory = nil
            }
        } catch {
            return fail(ImageFiles.Error.file(error, image: image, partition: opened.location.partition))
        }
        // A link that cannot be read still gets listed; its target is then left out.
        let targets: [String?] = entries.map { entry in
            guard entry.kind == .symlink, long || json else { return nil }
            return try? fs.readLink(directory.map { join($0, entry.name) } ?? path)
        }
        if json {
            printJSON(.array(zip(entries, targets).map { ListedEntry($0, target: $1).json }))
        } else if long {
            printLong(entries, targets: targets)
        } else {
            let lines = entries.map { escaped($0.name) + ($0.kind == .directory && directory != nil ? "/" : "") + "\n" }
            writeAll(1, Array(lines.joined().utf8))
        }
        return 0
    }

    private func printLong(_ entries: [Ext2Filesystem.Entry], targets: [String?]) {
        let sizeWidth = entries.map { String($0.size).count }.max() ?? 0
        let uidWidth = entries.map { String($0.uid).count }.max() ?? 0
        let gidWidth = entries.map { String($0.gid).count }.max() ?? 0
        var out = ""
        for (entry, target) in zip(entries, targets) {
            out += modeString(entry.mode) + " " + padded(entry.uid, uidWidth) + " " + padded(entry.gid, gidWidth)
                + " " + padded(entry.size, sizeWidth) + " " + utcTimestamp(entry.modified) + " " + escaped(entry.name)
            if let target { out += " -> " + escaped(target) }
            out += "\n"
        }
        writeAll(1, Array(out.utf8))
    }

    private func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}

/// One entry of `ls --json`: the inode's fields, and a symbolic link's target.
private struct ListedEntry: JSONRepresentable {
    let entry: Ext2Filesystem.Entry
    let target: String?

    init(_ entry: Ext2Filesystem.Entry, target: String?) {
        self.entry = entry
        self.target = target
    }

    var json: JSONValue {
        .object([
            "name": .string(entry.name), "kind": .string(entry.kind.rawValue), "size": .uint(entry.size),
            "mode": .uint(UInt64(entry.mode)), "uid": .uint(UInt64(entry.uid)), "gid": .uint(UInt64(entry.gid)),
            "inode": .uint(UInt64(entry.inode)), "modified": .int(entry.modified),  // seconds since the epoch
            "target": JSONValue(target),
        ])
    }
}

/// Prints `error`; returns the documented exit code.
func fail(_ error: ImageFiles.Error) -> Int32 {
    printError(error.description)
    return error.exitStatus.rawValue
}

/// `drwxr-xr-x`, as ls -l prints it, with setuid, setgid and sticky bits.
func modeString(_ mode: UInt16) -> String {
    let type: Character
    switch mode_t(mode) & S_IFMT {
    case S_IFREG: type = "-"
    case S_IFDIR: type = "d"
    case S_IFLNK: type = "l"
    case S_IFCHR: type = "c"
    case S_IFBLK: type = "b"
    case S_IFIFO: type = "p"
    case S_IFSOCK: type = "s"
    default: type = "?"
    }
    var s = String(type)
    let special: [(bit: UInt16, set: Character, unset: Character)] = [(0o4000, "s", "S"), (0o2000, "s", "S"), (0o1000, "t", "T")]
    for (i, who) in [(6, 0), (3, 1), (0, 2)].enumerated() {
        let bits = (mode >> UInt16(who.0)) & 7
        s.append(bits & 4 != 0 ? "r" : "-")
        s.append(bits & 2 != 0 ? "w" : "-")
        let execute = bits & 1 != 0
        if mode & special[i].bit != 0 {
            s.append(execute ? special[i].set : special[i].unset)
        } else {
            s.append(execute ? "x" : "-")
        }
    }
    return s
}

/// `2023-11-14T22:13:20Z`; the plain number for a time gmtime cannot represent.
func utcTimestamp(_ seconds: Int64) -> String {
    var t = time_t(seconds)
    var tm = tm()
    guard gmtime_r(&t, &tm) != nil, tm.tm_year + 1900 >= 0, tm.tm_year + 1900 <= 9999 else { return String(seconds) }
    func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    let year = String(tm.tm_year + 1900)
    return String(repeating: "0", count: max(0, 4 - year.count)) + year + "-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T"
        + "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))Z"
}

private func padded(_ value: some BinaryInteger, _ width: Int) -> String {
    let s = String(value)
    return String(repeating: " ", count: max(0, width - s.count)) + s
}

/// A name from the image for a terminal: control characters (which could drive the terminal)
/// and backslashes become escapes, so every name prints as one inert line.
func escaped(_ name: String) -> String {
    var out = ""
    for scalar in name.unicodeScalars {
        switch scalar {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value):
            let hex = String(scalar.value, radix: 16)
            out += "\\x" + (hex.count < 2 ? "0" + hex : hex)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}
