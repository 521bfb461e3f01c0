import Glibc
import ImgFormats
import ImgSystem

/// repart.d definitions (`imgtool create --definitions DIR`) read as systemd-repart 252 reads them:
/// one partition per `*.conf` file, in file-name order, from its `[Partition]` section. Only the
/// keys that describe an image are supported; every other key is refused by name, never ignored.
public enum RepartDefinitions {
    /// repart's minimum for a partition without SizeMinBytes= (DEFAULT_MIN_SIZE, 10 MiB).
    public static let defaultMinimum: UInt64 = 10 << 20

    /// Reads every `*.conf` file in `directory`, sorted by file name as repart sorts them, and
    /// gives partitions without Label= repart's default label. CopyFiles= sources resolve under
    /// `root` (repart's `--root`) and must be directories.
    public static func load(directory: String, root: String?) throws(CreateError) -> [DiskLayout.Partition] {
        let names: [String]
        do {
            names = try listDirectory(directory)
        } catch {
            throw .inputMissing(path: directory, reason: "cannot read the definitions directory (\(error.description))")
        }
        // As conf_files_list: regular files (links followed) named *.conf, hidden ones skipped,
        // masked ones (empty, or a link to /dev/null) skipped; strcmp order of the names.
        var files: [String] = []
        for name in names where name.hasSuffix(".conf") && !name.hasPrefix(".") {
            var info = stat()
            let path = directory + "/" + name
            guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size > 0 else { continue }
            files.append(name)
        }
        files.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        guard !files.isEmpty else {
            throw .inputMissing(path: directory, reason: "no definitions: the directory holds no non-empty *.conf file; write one per partition ([Partition] Type=...)")
        }
        var partitions: [DiskLayout.Partition] = []
        for name in files {
            let text: String
            do {
                text = try readTextFile(directory + "/" + name)
            } catch {
                throw .inputMissing(path: directory + "/" + name, reason: error.description)
            }
            let partition = try parse(text: text, name: name, root: root)
            for copy in partition.copies {
                var info = stat()
                guard stat(copy.source, &info) == 0 else {
                    throw .inputMissing(path: copy.source, reason: "\(name): CopyFiles= source: \(String(cString: strerror(errno)))")
                }
                // repart copies a single file as a file; imgtool would read it as a tar archive.
                guard info.st_mode & S_IFMT == S_IFDIR else {
                    throw .invalidLayout(origin: name, detail: "CopyFiles= source \(copy.source) is not a directory; imgtool create copies directories only. Put the file in a directory and copy that.")
                }
            }
            partitions.append(partition)
        }
        assignDefaultLabels(&partitions)
        return partitions
    }

    /// Parses one definition file; `name` (its file name) becomes the partition's origin. Pure: the
    /// file system is not touched (`load` checks the CopyFiles= sources). The label stays nil when
    /// Label= is absent: repart's default depends on the other files (`load` assigns it).
    public static func parse(text: String, name: String, root: String?) throws(CreateError) -> DiskLayout.Partition {
        var type: PartitionKind?
        var label: String?
        var uuid: GUID?
        var sizeMin: UInt64?
        var sizeMax: UInt64?
        var weight: UInt32 = 1000
        var format: DiskLayout.Filesystem?
        var copies: [DiskLayout.Copy] = []
        var makeDirectories: [String] = []
        var minimize = false
        var flags: UInt64 = 0
        // NoAuto= (63), ReadOnly= (60), GrowFileSystem= (59) override their bits of Flags=.
        var flagOverrides: [Int: Bool] = [:]

        for (line, key, value) in try assignments(text: text, name: name) {
            let origin = "\(name):\(line)"
            switch key {
            case "Type":
                type = try partitionKind(value, origin: origin)
            case "Label":
                if value.isEmpty { label = nil; break }
                let expanded = try expandSpecifiers(value, key: key, origin: origin)
                guard expanded.utf16.count <= 36 else {
                    throw .invalidLayout(origin: origin, detail: "Label=\(expanded) is \(expanded.utf16.count) UTF-16 characters; GPT holds 36. Shorten it.")
                }
                label = expanded
            case "UUID":
                if value.isEmpty { uuid = nil; break }
                if value == "null" {
                    throw .invalidLayout(origin: origin, detail: "UUID=null (all zeroes) is not supported: imgtool create gives every partition a unique GUID. Give a UUID, or leave UUID= out for one derived from the seed.")
                }
                guard let guid = GUID(string: value) ?? guidWithoutDashes(value), !guid.isZero else {
                    throw .invalidLayout(origin: origin, detail: "UUID=\(value) is not a UUID (8-4-4-4-12 hex digits).")
                }
                uuid = guid
            case "SizeMinBytes", "SizeMaxBytes":
                guard let bytes = DiskLayout.parseSize(value) else {
                    throw .invalidLayout(origin: origin, detail: "\(key)=\(value) is not a size: give bytes, or a whole number with K, M, G or T (powers of 1024).")
                }
                // As repart.d(5) says: the minimum rounds up, the maximum down, to 4096. (252
                // itself rounds the other way round, a bug later versions fixed.)
                if key == "SizeMinBytes" {
                    sizeMin = (bytes + 4095) / 4096 * 4096
                } else {
                    sizeMax = bytes / 4096 * 4096
                }
            case "Weight":
                guard let number = UInt32(value), number <= 1_000_000 else {
                    throw .invalidLayout(origin: origin, detail: "Weight=\(value) is not a whole number from 0 to 1000000.")
                }
                weight = number
            case "Format":
                if value.isEmpty { format = nil; break }
                guard let filesystem = DiskLayout.Filesystem(rawValue: value) else {
                    throw .invalidLayout(origin: origin, detail: "Format=\(value) is not a filesystem imgtool create makes; it makes \(DiskLayout.Filesystem.allCases.map(\.rawValue).joined(separator: ", ")). Use one of those, or make this partition with systemd-repart.")
                }
                format = filesystem
            case "CopyFiles":
                if value.isEmpty { copies = []; break }
                copies.append(try copy(value, root: root, origin: origin))
            case "MakeDirectories":
                if value.isEmpty { makeDirectories = []; break }
                for word in value.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                    let path = try expandSpecifiers(String(word), key: key, origin: origin)
                    makeDirectories.append(try absolutePath(path, key: key, origin: origin))
                }
            case "Minimize":
                // repart 253's values (252 has no Minimize=): off, best, guess, or a boolean (true: best).
                if value == "best" || value == "guess" {
                    minimize = true
                } else if let on = boolean(value) {
                    minimize = on
                } else {
                    throw .invalidLayout(origin: origin, detail: "Minimize=\(value) is not one of off, best, guess, yes or no.")
                }
            case "Flags":
                guard let number = flagsValue(value) else {
                    throw .invalidLayout(origin: origin, detail: "Flags=\(value) is not a 64-bit number (decimal, 0x hexadecimal or 0b binary).")
                }
                flags = number
            case "NoAuto", "ReadOnly", "GrowFileSystem":
                guard let on = boolean(value) else {
                    throw .invalidLayout(origin: origin, detail: "\(key)=\(value) is not a boolean (yes or no).")
                }
                flagOverrides[key == "NoAuto" ? 63 : key == "ReadOnly" ? 60 : 59] = on
            case "Priority":
                // Priority <= 0 (the default) is never dropped, so it changes nothing; a positive
                // one asks repart to drop the partition when space runs out, which imgtool does not.
                guard let number = Int32(value) else {
                    throw .invalidLayout(origin: origin, detail: "Priority=\(value) is not a whole number.")
                }
                if number > 0 { throw .unsupportedKey(origin: name, key: key) }
            default:
                throw .unsupportedKey(origin: name, key: key)
            }
        }
        guard let type else {
            throw .invalidLayout(origin: name, detail: "no Type= in [Partition]; give one, for example Type=root, Type=esp or Type=linux-generic.")
        }
        // repart 252 formats ext4 where files are to be copied or made and Format= is not given.
        if format == nil, !copies.isEmpty || !makeDirectories.isEmpty { format = .ext4 }
        // GrowFileSystem= defaults to on for the types the Discoverable Partitions Specification
        // gives the flag to (repart 252 sets bit 59 on them, observed).
        if flagOverrides[59] == nil, growFileSystemTypes.contains(type.gpt?.description ?? "") {
            flagOverrides[59] = true
        }
        for (bit, on) in flagOverrides {
            if on { flags |= 1 << UInt64(bit) } else { flags &= ~(1 << UInt64(bit)) }
        }
        // repart raises a maximum below its implicit 10 MiB minimum to that minimum (a partition
        // with only SizeMaxBytes=4M is made 10 MiB).
        let minimum = sizeMin ?? defaultMinimum
        if sizeMin == nil, let high = sizeMax, high < minimum { sizeMax = minimum }
        return DiskLayout.Partition(
            type: type, label: label, uuid: uuid, sizeMin: minimum, sizeMax: sizeMax, weight: weight,
            format: format, copies: copies, makeDirectories: makeDirectories, minimize: minimize,
            attributes: flags, origin: name)
    }

    // MARK: - conf-parser

    /// The `[Partition]` assignments in order, as systemd's conf-parser reads an ini file: comments
    /// (# and ;) and blank lines skipped, a trailing backslash joins the next line (comment lines
    /// within are skipped, the backslash becomes a space), key and value trimmed. Keys are
    /// case-sensitive. What systemd would warn about and skip is an error here.
    static func assignments(text: String, name: String) throws(CreateError) -> [(line: Int, key: String, value: String)] {
        var result: [(line: Int, key: String, value: String)] = []
        var section: String?
        var continuation: String?
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        for (index, raw) in lines.enumerated() {
            let number = index + 1
            var line = raw.hasSuffix("\r") ? String(raw.dropLast()) : raw
            if number == 1, line.hasPrefix("\u{FEFF}") { line.removeFirst() }
            let stripped = line.trimmingWhitespace
            if let first = stripped.first, first == "#" || first == ";" { continue }
            var joined = (continuation ?? "") + line
            // An odd number of trailing backslashes continues the line; "\\" is an escaped one.
            let trailing = joined.reversed().prefix { $0 == "\\" }.count
            if trailing % 2 == 1 {
                joined.removeLast()
                continuation = joined + " "
                if number < lines.count { continue }
            }
            continuation = nil
            let content = joined.trimmingWhitespace
            if content.isEmpty { continue }
            let origin = "\(name):\(number)"
            if content.hasPrefix("[") {
                guard content.hasSuffix("]"), content.count > 2 else {
                    throw .invalidLayout(origin: origin, detail: "'\(content)' is not a section header.")
                }
                let header = String(content.dropFirst().dropLast())
                guard header == "Partition" else {
                    throw .invalidLayout(origin: origin, detail: "section [\(header)]: repart.d definitions have a [Partition] section only; remove it.")
                }
                section = header
                continue
            }
            guard section != nil else {
                throw .invalidLayout(origin: origin, detail: "'\(content)' comes before [Partition]; put it in the [Partition] section.")
            }
            guard let equals = content.firstIndex(of: "=") else {
                throw .invalidLayout(origin: origin, detail: "'\(content)' is not a Key=Value assignment.")
            }
            let key = String(content[..<equals]).trimmingWhitespace
            guard !key.isEmpty else {
                throw .invalidLayout(origin: origin, detail: "'\(content)' has no key before '='.")
            }
            result.append((number, key, String(content[content.index(after: equals)...]).trimmingWhitespace))
        }
        return result
    }

    // MARK: - values

    /// repart 252's type names for an x86-64 host, each with the canonical name it resolves to
    /// (the one it prints, and its default label) and its GUID.
    static let typeNames: [String: (canonical: String, gpt: String)] = {
        let table: [(String, String)] = [
            ("esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            ("xbootldr", "BC13C2FF-59E6-4262-A352-B275FD6F7172"),
            ("swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
            ("home", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915"),
            ("srv", "3B8F8425-20E0-4F3B-907F-1A25A76F98E8"),
            ("var", "4D21B016-B534-45C2-A9FB-5C16E091FD2D"),
            ("tmp", "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1"),
            ("user-home", "773B2ABC-2A99-4398-8BF5-03BAAC40D02B"),
            ("linux-generic", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            ("root-x86-64", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
            ("root-x86", "44479540-F297-41B2-9AF7-D131D5F0458A"),
            ("usr-x86-64", "8484680C-9521-48C6-9C11-B0720656F69E"),
            ("usr-x86", "75250D76-8CC6-458E-BD66-BD47CC81A812"),
        ]
        var names = Dictionary(uniqueKeysWithValues: table.map { ($0.0, (canonical: $0.0, gpt: $0.1)) })
        for (alias, canonical) in [("root", "root-x86-64"), ("root-secondary", "root-x86"),
                                   ("usr", "usr-x86-64"), ("usr-secondary", "usr-x86")] {
            names[alias] = names[canonical]
        }
        return names
    }()

    /// The types repart 252 sets GrowFileSystem (bit 59) on by default: root, usr, home, srv, var,
    /// tmp and xbootldr (not esp, swap, user-home or linux-generic).
    static let growFileSystemTypes: Set<String> = Set(
        ["root-x86-64", "root-x86", "usr-x86-64", "usr-x86", "home", "srv", "var", "tmp", "xbootldr"]
            .compactMap { typeNames[$0].flatMap { GUID(string: $0.gpt)?.description } })

    /// repart's name (case-sensitive, as repart reads it) or a GUID. The kind takes imgtool's name
    /// where imgtool knows the type, so its MBR byte comes along.
    static func partitionKind(_ value: String, origin: String) throws(CreateError) -> PartitionKind {
        if let known = typeNames[value] {
            return PartitionKind(known.canonical) ?? PartitionKind(known.gpt)!
        }
        if let guid = GUID(string: value) ?? guidWithoutDashes(value) {
            if let known = typeNames.values.first(where: { GUID(string: $0.gpt) == guid }), let kind = PartitionKind(known.canonical) {
                return kind
            }
            return PartitionKind(guid.description)!
        }
        if value.contains("-verity") {
            throw .invalidLayout(origin: origin, detail: "Type=\(value) is a dm-verity partition, whose contents imgtool create does not compute. Make this image with systemd-repart (Verity=).")
        }
        if value.hasPrefix("root-") || value.hasPrefix("usr-") {
            throw .invalidLayout(origin: origin, detail: "Type=\(value): imgtool knows the x86-64 and x86 root and usr types by name; give this architecture's type GUID instead.")
        }
        if PartitionKind.names[value] != nil {
            let guid = PartitionKind(value)?.gpt.map { " (\($0))" } ?? ""
            throw .invalidLayout(origin: origin, detail: "Type=\(value) is imgtool's name, not repart's; write its GUID\(guid) so that systemd-repart reads the file too.")
        }
        throw .unknownType(origin: origin, type: value)
    }

    /// `SOURCE[:TARGET]`, both absolute; TARGET defaults to SOURCE, as in repart. SOURCE resolves
    /// under `root` when one is given.
    static func copy(_ value: String, root: String?, origin: String) throws(CreateError) -> DiskLayout.Copy {
        let parts = value.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let source = try absolutePath(try expandSpecifiers(parts[0], key: "CopyFiles", origin: origin), key: "CopyFiles", origin: origin)
        let target = parts.count > 1
            ? try absolutePath(try expandSpecifiers(parts[1], key: "CopyFiles", origin: origin), key: "CopyFiles", origin: origin)
            : source
        guard let root, !root.isEmpty else { return DiskLayout.Copy(source: source, target: target) }
        var base = root
        while base.count > 1, base.hasSuffix("/") { base.removeLast() }
        let resolved = source == "/" ? base : (base == "/" ? source : base + source)
        return DiskLayout.Copy(source: resolved, target: target)
    }

    /// An absolute path with "//" and "/./" collapsed and no "..", as repart's path_simplify_and_warn.
    static func absolutePath(_ path: String, key: String, origin: String) throws(CreateError) -> String {
        guard path.hasPrefix("/") else {
            throw .invalidLayout(origin: origin, detail: "\(key)= path '\(path)' is not absolute; start it with / (CopyFiles= sources resolve under --root).")
        }
        let components = path.split(separator: "/").filter { $0 != "." }
        guard !components.contains("..") else {
            throw .invalidLayout(origin: origin, detail: "\(key)= path '\(path)' contains '..'; write it without.")
        }
        return "/" + components.joined(separator: "/")
    }

    /// "%%" becomes "%"; the other specifiers expand to the building host's values (its
    /// architecture, machine ID, os-release), which an image should not depend on: refused.
    static func expandSpecifiers(_ value: String, key: String, origin: String) throws(CreateError) -> String {
        var out = ""
        var iterator = value.makeIterator()
        while let character = iterator.next() {
            guard character == "%" else { out.append(character); continue }
            guard let next = iterator.next() else {
                throw .invalidLayout(origin: origin, detail: "\(key)=\(value) ends in a lone %; write %% for a percent sign.")
            }
            guard next == "%" else {
                throw .invalidLayout(origin: origin, detail: "\(key)=\(value): the specifier %\(next) expands to the building host's values, which imgtool create does not use; write the value itself (%% for a percent sign).")
            }
            out.append("%")
        }
        return out
    }

    /// systemd's parse_boolean.
    static func boolean(_ value: String) -> Bool? {
        switch value.lowercased() {
        case "1", "yes", "y", "true", "t", "on": return true
        case "0", "no", "n", "false", "f", "off": return false
        default: return nil
        }
    }

    /// Decimal, 0x hexadecimal or 0b binary. A leading zero (octal to strtoull) is refused rather
    /// than guessed.
    static func flagsValue(_ value: String) -> UInt64? {
        let lowered = value.lowercased()
        if lowered.hasPrefix("0x") { return UInt64(lowered.dropFirst(2), radix: 16) }
        if lowered.hasPrefix("0b") { return UInt64(lowered.dropFirst(2), radix: 2) }
        guard lowered == "0" || !lowered.hasPrefix("0") else { return nil }
        return UInt64(lowered)
    }

    /// 32 hex digits without dashes, which repart's sd_id128_from_string also reads.
    static func guidWithoutDashes(_ value: String) -> GUID? {
        guard value.count == 32, value.allSatisfy(\.isHexDigit) else { return nil }
        let c = Array(value)
        let groups = [c[0..<8], c[8..<12], c[12..<16], c[16..<20], c[20..<32]].map { String($0) }
        return GUID(string: groups.joined(separator: "-"))
    }

    /// repart's default label for a partition without Label=: its type's name (the GUID for a type
    /// without one), then "-2", "-3"... until no earlier partition has it. Later partitions'
    /// labels do not count: repart 252 gives 20-b.conf "esp-2" even when 3-c.conf has Label=esp-2.
    static func assignDefaultLabels(_ partitions: inout [DiskLayout.Partition]) {
        var used: Set<String> = []
        for index in partitions.indices {
            if let label = partitions[index].label { used.insert(label); continue }
            let gpt = partitions[index].type.gpt
            let prefix = typeNames.values.first { GUID(string: $0.gpt) == gpt }?.canonical
                ?? gpt?.description.lowercased() ?? partitions[index].type.name
            var label = prefix
            var counter = 2
            while used.contains(label) {
                label = "\(prefix)-\(counter)"
                counter += 1
            }
            used.insert(label)
            partitions[index].label = label
        }
    }
}

extension String {
    /// Without leading and trailing spaces, tabs and carriage returns (conf-parser's WHITESPACE).
    var trimmingWhitespace: String {
        let space: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }
        var text = Substring(self)
        while let first = text.first, space(first) { text = text.dropFirst() }
        while let last = text.last, space(last) { text = text.dropLast() }
        return String(text)
    }
}
