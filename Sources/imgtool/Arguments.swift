import Glibc
import ImgKit

// The command line, parsed from a table per command. imgtool is started by scripts, often many
// times, and a reflection-based parser spent more time at start-up than `inspect` spends reading
// the image; this one does no reflection, so it costs next to nothing.

/// `--name VALUE`, `--name=VALUE`, `--flag`, `-x`.
struct OptionSpec: Sendable {
    let long: String
    let short: Character?
    /// nil for a flag; else how help names the value (`<n>`).
    let value: String?
    let repeatable: Bool
    /// What the shell completions offer for the value.
    let completion: ValueCompletion
    let help: String

    static func flag(_ long: String, short: Character? = nil, help: String) -> OptionSpec {
        OptionSpec(long: long, short: short, value: nil, repeatable: false, completion: .none, help: help)
    }

    static func option(_ long: String, _ value: String, repeatable: Bool = false,
                       completion: ValueCompletion = .none, help: String) -> OptionSpec {
        OptionSpec(long: long, short: nil, value: value, repeatable: repeatable, completion: completion, help: help)
    }
}

/// What a shell can offer for a value: the man page and the completions read it from the table,
/// so a new choice reaches them without being written down twice.
enum ValueCompletion: Sendable, Equatable {
    /// Free text (a number, a name): nothing to offer.
    case none
    /// A path on this machine.
    case file
    /// Exactly these words (the option's parser accepts no others).
    case choices([String])
}

struct PositionalSpec: Sendable {
    let name: String
    let optional: Bool
    let completion: ValueCompletion
    let help: String

    init(name: String, optional: Bool, completion: ValueCompletion = .none, help: String) {
        self.name = name
        self.optional = optional
        self.completion = completion
        self.help = help
    }
}

struct CommandSpec: Sendable {
    let name: String
    let abstract: String
    let discussion: String
    let positionals: [PositionalSpec]
    let options: [OptionSpec]
    /// Commands on an image take `--isolate` (with `--kernel` and, where the command has no
    /// `--timeout` of its own, `--timeout`): they then run in a throwaway VM with this purpose.
    let isolation: Isolation.Purpose?
    /// Options that mean something only with `--isolate`.
    let isolationOnly: Set<String>
    /// Runs the command; returns the exit code. Errors other than usage errors are printed by the
    /// command itself.
    let run: @Sendable (ParsedArguments) throws(UsageError) -> Int32
}

/// A command line that does not fit the command's table; exit code 64 (EX_USAGE).
struct UsageError: Error {
    let message: String
}

extension CommandSpec {
    init(name: String, abstract: String, discussion: String, positionals: [PositionalSpec], options: [OptionSpec],
         isolation: Isolation.Purpose? = nil, run: @escaping @Sendable (ParsedArguments) throws(UsageError) -> Int32) {
        self.name = name
        self.abstract = abstract
        self.discussion = discussion
        self.positionals = positionals
        self.isolation = isolation
        self.run = run
        guard isolation != nil else { self.options = options; isolationOnly = []; return }
        var all = options + [
            .flag("isolate", help: "Run inside a throwaway VM (Debian's cloud kernel under qemu) instead of on this machine's kernel; the image is the VM's disk\(isolation == .readOnly ? ", read-only" : ""). Needs no root where qemu runs unprivileged."),
            .option("kernel", "<path>", completion: .file, help: "With --isolate: the VM's kernel (default: the newest /boot/vmlinuz-*-cloud-amd64)."),
        ]
        var only: Set<String> = ["kernel"]
        if !options.contains(where: { $0.long == "timeout" }) {
            only.insert("timeout")
            all.append(.option("timeout", "<seconds>", help: "With --isolate: stop the VM and fail when it has not finished within this (default \(Int(IsolatedVM.defaultTimeout)))."))
        }
        self.options = all
        isolationOnly = only
    }
}

struct ParsedArguments {
    let command: CommandSpec
    /// With `--isolate`: the VM the command's workflow runs in.
    var isolation: Isolation?
    private(set) var positionals: [String] = []
    private var values: [String: [String]] = [:]
    private var flags: [String] = []

    init(_ command: CommandSpec, _ arguments: ArraySlice<String>) throws(UsageError) {
        self.command = command
        var rest = arguments
        var onlyPositionals = false
        while let argument = rest.popFirst() {
            if onlyPositionals || argument == "-" || !argument.hasPrefix("-") {
                positionals.append(argument)
            } else if argument == "--" {
                onlyPositionals = true
            } else if argument.hasPrefix("--") {
                let body = argument.dropFirst(2)
                let name = String(body.prefix { $0 != "=" })
                let inline = body.firstIndex(of: "=").map { String(body[body.index(after: $0)...]) }
                guard let spec = command.options.first(where: { $0.long == name }) else {
                    throw UsageError(message: "unknown option '--\(name)'.")
                }
                try take(spec, inline: inline, from: &rest)
            } else {
                // -v, -l, or several short flags together (-lv).
                for (i, letter) in argument.dropFirst().enumerated() {
                    guard let spec = command.options.first(where: { $0.short == letter }) else {
                        throw UsageError(message: "unknown option '-\(letter)'.")
                    }
                    if spec.value != nil && i != argument.count - 2 {
                        throw UsageError(message: "'-\(letter)' takes a value and must come last in '\(argument)'.")
                    }
                    try take(spec, inline: nil, from: &rest)
                }
            }
        }
        let required = command.positionals.filter { !$0.optional }.count
        if positionals.count < required {
            throw UsageError(message: "missing argument <\(command.positionals[positionals.count].name)>.")
        }
        if positionals.count > command.positionals.count {
            throw UsageError(message: "unexpected argument '\(positionals[command.positionals.count])'.")
        }
    }

    private mutating func take(_ spec: OptionSpec, inline: String?, from rest: inout ArraySlice<String>) throws(UsageError) {
        guard spec.value != nil else {
            if inline != nil { throw UsageError(message: "'--\(spec.long)' takes no value.") }
            if !flags.contains(spec.long) { flags.append(spec.long) }
            return
        }
        guard let value = inline ?? rest.popFirst() else {
            throw UsageError(message: "'--\(spec.long)' needs a value \(spec.value!).")
        }
        if !spec.repeatable && values[spec.long] != nil {
            throw UsageError(message: "'--\(spec.long)' given more than once.")
        }
        values[spec.long, default: []].append(value)
    }

    /// The command line again, without the options in `dropping`: options in table order as
    /// `--name=value` (a value may start with '-'), then `--` and the positionals.
    func forwarded(dropping: Set<String>) -> [String] {
        var out: [String] = []
        for option in command.options where !dropping.contains(option.long) {
            if option.value == nil {
                if flags.contains(option.long) { out.append("--\(option.long)") }
            } else {
                for value in values[option.long] ?? [] { out.append("--\(option.long)=\(value)") }
            }
        }
        return out + ["--"] + positionals
    }

    func flag(_ long: String) -> Bool { flags.contains(long) }

    func value(_ long: String) -> String? { values[long]?.last }

    func values(_ long: String) -> [String] { values[long] ?? [] }

    func positional(_ index: Int) -> String? { index < positionals.count ? positionals[index] : nil }

    /// The option's value as `T`, nil when absent; a value `T` cannot hold is a usage error.
    func value<T: LosslessStringConvertible>(_ long: String, as: T.Type, expected: String) throws(UsageError) -> T? {
        guard let text = value(long) else { return nil }
        guard let parsed = T(text) else {
            throw UsageError(message: "'--\(long)' expects \(expected), not '\(text)'.")
        }
        return parsed
    }
}

/// The whole tool: finds the command, parses, runs, and turns usage errors into exit code 64.
struct CommandLineTool {
    let name: String
    let version: String
    let abstract: String
    let discussion: String
    let commands: [CommandSpec]

    /// What the tool takes instead of a command; documented and completed from here.
    static let globalOptions: [OptionSpec] = [
        .flag("help", short: "h", help: "Show the commands (imgtool help <command> or imgtool <command> --help: a command's options)."),
        .flag("version", help: "Print the version (also: imgtool version)."),
    ]

    func main(_ arguments: [String]) -> Int32 {
        var rest = arguments.dropFirst()
        guard let first = rest.popFirst() else {
            writeAll(2, Array(help().utf8))
            return ExitStatus.usage.rawValue
        }
        if first == "-h" || first == "--help" {
            writeAll(1, Array(help().utf8))
            return 0
        }
        if first == "--version" || first == "version" {
            guard rest.isEmpty else { return usage("'\(first)' takes no arguments.", nil) }
            writeAll(1, Array("\(name) \(version)\n".utf8))
            return 0
        }
        // Hidden: the man page and shell completions, written by `make install` and `make deb`.
        if first == Self.generateCommand { return generate(Array(rest)) }
        // Hidden: what runs inside an isolated VM for a structured request (`IsolatedRequest`).
        if first == IsolatedRequest.command { return serveIsolatedRequest(Array(rest)) }
        if first == "help" {
            guard let name = rest.first else {
                writeAll(1, Array(help().utf8))
                return 0
            }
            guard let command = commands.first(where: { $0.name == name }) else { return usage("unknown command '\(name)'.", nil) }
            writeAll(1, Array(help(command).utf8))
            return 0
        }
        guard let command = commands.first(where: { $0.name == first }) else {
            return usage(first.hasPrefix("-") ? "unknown option '\(first)'." : "unknown command '\(first)'.", nil)
        }
        if rest.prefix(while: { $0 != "--" }).contains(where: { $0 == "-h" || $0 == "--help" }) {
            writeAll(1, Array(help(command).utf8))
            return 0
        }
        do throws(UsageError) {
            var parsed = try ParsedArguments(command, rest)
            if command.isolation != nil {
                if parsed.flag("isolate") {
                    parsed.isolation = try isolation(for: command, parsed)
                } else {
                    for option in command.isolationOnly.sorted() where parsed.value(option) != nil {
                        throw UsageError(message: "'--\(option)' goes with '--isolate'.")
                    }
                }
            }
            return try command.run(parsed)
        } catch {
            return usage(error.message, command)
        }
    }

    private func usage(_ message: String, _ command: CommandSpec?) -> Int32 {
        let hint = command.map { "\(usageLine($0))\nSee '\(name) \($0.name) --help'." } ?? "See '\(name) --help'."
        printError(message + "\n" + hint)
        return ExitStatus.usage.rawValue
    }

    func usageLine(_ command: CommandSpec) -> String {
        var parts = ["Usage: \(name) \(command.name)"]
        for option in command.options {
            let text = "--\(option.long)" + (option.value.map { " \($0)" } ?? "")
            parts.append(option.repeatable ? "[\(text) ...]" : "[\(text)]")
        }
        for p in command.positionals { parts.append(p.optional ? "[<\(p.name)>]" : "<\(p.name)>") }
        return parts.joined(separator: " ")
    }

    func help() -> String {
        var out = "\(name): \(abstract)\n\n" + wrap(discussion, indent: 0) + "\n\nUsage: \(name) <command> [options]\n\nCommands:\n"
        let width = (commands.map(\.name.count).max() ?? 0) + 2
        for c in commands { out += "  " + c.name.padding(to: width) + c.abstract + "\n" }
        return out + "\nSee '\(name) <command> --help' for a command's options; '\(name) --version' prints the version.\n"
    }

    func help(_ command: CommandSpec) -> String {
        var out = "\(name) \(command.name): \(command.abstract)\n\n"
        if !command.discussion.isEmpty { out += wrap(command.discussion, indent: 0) + "\n\n" }
        out += usageLine(command) + "\n"
        var rows = command.positionals.map { ("<\($0.name)>", $0.help) }
        rows += documentedOptions(command).map { o in
            ((o.short.map { "-\($0), " } ?? "") + "--\(o.long)" + (o.value.map { " \($0)" } ?? ""), o.help)
        }
        let width = min(28, (rows.map(\.0.count).max() ?? 0) + 2)
        out += "\n"
        for (left, text) in rows {
            let head = "  " + (left.count < width ? left.padding(to: width) : left + "\n" + String(repeating: " ", count: width + 2))
            out += head + wrap(text, indent: width + 2).drop { $0 == " " } + "\n"
        }
        return out
    }

    /// Words to lines of at most 80 columns, each indented by `indent`.
    private func wrap(_ text: String, indent: Int) -> String {
        let pad = String(repeating: " ", count: indent)
        var lines: [String] = []
        for paragraph in text.split(separator: "\n", omittingEmptySubsequences: false) {
            var line = pad
            for word in paragraph.split(separator: " ") {
                if line.count > indent && line.count + 1 + word.count > 80 {
                    lines.append(line)
                    line = pad
                }
                line += (line.count > indent ? " " : "") + word
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    func padding(to width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
}
