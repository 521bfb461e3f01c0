import Glibc
import ImgKit
import ImgSystem

let lsCommand = CommandSpec(
    name: "ls",
    abstract: "List a directory of an ext2/3/4, FAT12/16/32 or ISO 9660 filesystem in a disk image, without mounting it.",
    discussion: """
        Reads ext2/3/4 through libext2fs, FAT (VFAT long names) and ISO 9660 (Rock Ridge, else \
        Joliet, else the plain names as Linux shows them) itself: no root, no loop device, no \
        mount, and the image is opened read-only. Symbolic links are followed inside the image's \
        filesystem, never on the host. A path that is not a directory is shown by itself. \
        Without --partition: an ISO 9660 volume spanning the image (a hybrid ISO) is read as a CD \
        drive reads it, else a bare filesystem, else the only ext2/3/4 partition, else the only \
        FAT or ISO 9660 partition. FAT has no owners or modes: they show as Linux's vfat shows \
        them by default (0755, 0555 when read-only, owner 0), times as UTC.
        """,
    positionals: [
        PositionalSpec(name: "image", optional: false, completion: .file, help: "The disk image (or a bare filesystem image, or a block device)."),
        PositionalSpec(name: "path", optional: true, help: "The path inside the filesystem (default /)."),
    ],
    options: [
        partitionOption, logicalVolumeOption, backingOption,
        .flag("long", short: "l", help: "Long format: mode, owner, group, size, modification time (UTC), name."),
        .flag("json", help: "Print a JSON array of entries."),
    ],
    isolation: .readOnly,
    run: { arguments throws(UsageError) in
        LsCommand(image: arguments.positional(0)!, path: arguments.positional(1) ?? "/",
                  partition: try partition(arguments), logicalVolume: arguments.value("lv"), long: arguments.flag("long"),
                  json: arguments.flag("json"), backing: arguments.flag("backing"),
                  isolation: arguments.isolation).run()
    })

/// --backing for inspect, verify, ls and cat.
let backingOption = OptionSpec.flag(
    "backing",
    help: "Also read the backing file (or parent) a qcow2, VMDK, VHD or VHDX image names. Off by default: an image can name any file, /etc/shadow or /dev/sda included.")

/// --partition for ls and cat.
let partitionOption = OptionSpec.option(
    "partition", "<n>",
    help: "The partition holding the filesystem (default: a whole-image ISO 9660 volume, the whole image if it has no partition table, the only ext2/3/4 partition, else the only FAT or ISO 9660 one).")

/// --lv for ls and cat.
let logicalVolumeOption = OptionSpec.option(
    "lv", "<vg/lv>", help: "The LVM logical volume holding the filesystem, as VG/LV (with --partition: on that partition's physical volume).")

func partition(_ arguments: ParsedArguments) throws(UsageError) -> Int? {
    try arguments.value("partition", as: Int.self, expected: "a partition number")
}

struct LsCommand {
    let image: String
    let path: String
    let partition: Int?
    let logicalVolume: String?
    let long: Bool
    let json: Bool
    let backing: Bool
    let isolation: Isolation?

    func run() -> Int32 {
        let listing: ImageFiles.Listing
        do {
            listing = try withSignalsStopping(isolation) { isolation throws(ImageFiles.Error) in
                try ImageFiles.list(.init(image: image, partition: partition, logicalVolume: logicalVolume, isolation: isolation,
                                          backingFiles: backing), path: path,
                                    logger: makeLogger(label: "imgtool.ls", verbose: false, quiet: true))
            }
        } catch {
            return fail(error)
        }
        if json {
            printJSON(.array(listing.entries.map(\.json)))
        } else if long {
            printLong(listing.entries)
        } else {
            let lines = listing.entries.map { escaped($0.file.name) + ($0.file.kind == .directory && listing.isDirectory ? "/" : "") + "\n" }
            writeAll(1, Array(lines.joined().utf8))
        }
        return 0
    }

    private func printLong(_ listed: [ImageFiles.Listing.Entry]) {
        let entries = listed.map(\.file)
        let sizeWidth = entries.map { String($0.size).count }.max() ?? 0
        let uidWidth = entries.map { String($0.uid).count }.max() ?? 0
        let gidWidth = entries.map { String($0.gid).count }.max() ?? 0
        var out = ""
        for (entry, target) in zip(entries, listed.map(\.target)) {
            out += modeString(entry.mode) + " " + padded(entry.uid, uidWidth) + " " + padded(entry.gid, gidWidth)
                + " " + padded(entry.size, sizeWidth) + " " + utcTimestamp(entry.modified) + " " + escaped(entry.name)
            if let target { out += " -> " + escaped(target) }
            out += "\n"
        }
        writeAll(1, Array(out.utf8))
    }
}

/// Prints `error`; returns the documented exit code.
func fail(_ error: ImageFiles.Error) -> Int32 {
    printError(error.description)
    return error.exitCode
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
