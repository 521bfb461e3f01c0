import ImgSystem
import Testing
import TestSupport
@testable import imgtool

/// imgtool(1) and the bash, zsh and fish completions are written from the argument table
/// (`imgtool __generate`). These tests hold each of them against every command and option of
/// that table, so an option added to a command cannot be missing from any of them.
struct GeneratedDocsTests {
    let tool = Imgtool.tool

    /// What the parser takes for `command`, and -h/--help, which the tool answers for every command.
    func options(_ command: CommandSpec) -> [OptionSpec] {
        command.options + [.flag("help", short: "h", help: "")]
    }

    func words(_ option: OptionSpec) -> [String] {
        (option.short.map { ["-\($0)"] } ?? []) + ["--\(option.long)"]
    }

    /// The text from the line `start` to the next line that begins with one of `ends`.
    func section(_ text: String, start: String, ends: [String]) throws -> Substring {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let first = try #require(lines.firstIndex { $0 == start }, "no line '\(start)'")
        let end = lines[(first + 1)...].firstIndex { line in ends.contains { line.hasPrefix($0) } } ?? lines.endIndex
        return Substring(lines[first..<end].joined(separator: "\n"))
    }

    @Test("the man page has a section for each command naming its arguments and every option, with the choices")
    func manPage() throws {
        let page = tool.manPage()
        // roff writes an option's dashes as minus signs (a word's hyphens stay hyphens).
        func roff(_ name: String) -> String { name.split(separator: "-", omittingEmptySubsequences: false).joined(separator: "\\-") }
        for command in tool.commands {
            let text = try section(page, start: ".SS imgtool \(command.name)", ends: [".SS ", ".SH "])
            for p in command.positionals { #expect(text.contains(".I \(p.name)\n"), "\(command.name) <\(p.name)>") }
            for option in options(command) {
                #expect(text.contains("\\fB\\-\\-\(roff(option.long))\\fR"), "\(command.name) --\(option.long)")
                if let short = option.short { #expect(text.contains("\\fB\\-\(short)\\fR, "), "\(command.name) -\(short)") }
                if case .choices(let values) = option.completion {
                    for value in values { #expect(text.contains("\\fB\(value)\\fR"), "--\(option.long) \(value)") }
                }
            }
        }
        let global = try section(page, start: ".SH OPTIONS", ends: [".SH "])
        for option in CommandLineTool.globalOptions { #expect(global.contains("\\fB\\-\\-\(option.long)\\fR")) }
        #expect(page.hasPrefix(".TH IMGTOOL 1 \"\" \"imgtool \(Imgtool.version)\""))
    }

    @Test("groff renders the man page without a warning")
    func manPageRenders() throws {
        let scratch = try Scratch()
        try writeFile(scratch.file("imgtool.1"), Array(tool.manPage().utf8))
        let r = try run(["groff", "-man", "-Tutf8", "-ww", "-z", scratch.file("imgtool.1")])
        #expect(r.stderr.isEmpty, "\(r.stderr)")
    }

    /// COMPREPLY of the generated bash completion for the words typed so far (the last is the
    /// one being completed).
    func bashComplete(_ typed: [String]) throws -> Set<String> {
        let call = #"eval "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _imgtool; printf '%s\n' "${COMPREPLY[@]}""#
        let r = try run(["bash", "-c", call, "bash", tool.bashCompletion()] + typed)
        return Set(r.stdout.split(separator: "\n").map(String.init))
    }

    @Test("bash completes the commands, each command's options and the values the table names")
    func bash() throws {
        let top = Set(tool.commands.map(\.name) + ["help", "version"] + CommandLineTool.globalOptions.flatMap(words))
        #expect(try bashComplete(["imgtool", ""]) == top)
        #expect(try bashComplete(["imgtool", "help", ""]) == Set(tool.commands.map(\.name)))
        for command in tool.commands {
            #expect(try bashComplete(["imgtool", command.name, "-"]) == Set(options(command).flatMap(words)), "\(command.name)")
            for option in command.options {
                guard case .choices(let values) = option.completion else { continue }
                #expect(try bashComplete(["imgtool", command.name, "--\(option.long)", ""]) == Set(values))
                // --option=value: bash splits the word at '='.
                #expect(try bashComplete(["imgtool", command.name, "--\(option.long)", "=", ""]) == Set(values))
            }
        }
        #expect(try bashComplete(["imgtool", "install-grub", "--str"]) == ["--strategy"])
    }

    @Test("bash completes files where the table says a path on this machine goes, and nothing elsewhere")
    func bashFiles() throws {
        let scratch = try Scratch()
        try writeFile(scratch.file("disk.img"), [])
        let typed = scratch.file("dis")
        #expect(try bashComplete(["imgtool", "inspect", typed]) == [scratch.file("disk.img")])
        #expect(try bashComplete(["imgtool", "ls", "--partition", "1", typed]) == [scratch.file("disk.img")])
        #expect(try bashComplete(["imgtool", "inspect", "--kernel", typed]) == [scratch.file("disk.img")])
        // ls's second argument is a path inside the image, --partition's value a number.
        #expect(try bashComplete(["imgtool", "ls", "disk.img", typed]) == [])
        #expect(try bashComplete(["imgtool", "ls", "--partition", typed]) == [])
    }

    @Test("the zsh completion has every command, and each command's options, choices and arguments")
    func zsh() throws {
        let script = tool.zshCompletion()
        #expect(script.hasPrefix("#compdef imgtool\n"))
        for command in tool.commands {
            #expect(script.contains("    '\(command.name):"), "\(command.name) in the command list")
            let text = try section(script, start: "    \(command.name))", ends: ["        ;;"])
            for option in options(command) {
                #expect(zshSpecified(option, in: text), "\(command.name) --\(option.long)")
                if let short = option.short { #expect(text.contains("{-\(short),"), "\(command.name) -\(short)") }
                if case .choices(let values) = option.completion {
                    #expect(text.contains(":(\(values.joined(separator: " ")))'"), "--\(option.long)'s choices")
                }
            }
            for p in command.positionals {
                #expect(text.contains("'\(p.optional ? "::" : ":")\(p.name):\(p.completion == .file ? "_files" : " ")'"), "<\(p.name)>")
            }
        }
        for option in CommandLineTool.globalOptions { #expect(zshSpecified(option, in: Substring(script))) }
    }

    /// `'--json[...'`, `'*--modules=[...'` or `{-v,--verbose}'[...'`: the option's _arguments spec.
    func zshSpecified(_ option: OptionSpec, in text: Substring) -> Bool {
        let many = option.repeatable ? "*" : ""
        let long = "--\(option.long)" + (option.value == nil ? "" : "=")
        return text.contains(option.short == nil ? "'\(many)\(long)[" : "\(many)\(long)}'[")
    }

    @Test("the fish completion has every command, and each command's options and choices")
    func fish() throws {
        let lines = tool.fishCompletion().split(separator: "\n")
        for command in tool.commands {
            #expect(lines.contains { $0.hasPrefix("complete -c imgtool -n __fish_use_subcommand -a \(command.name) -d ") })
            let own = lines.filter { $0.contains("-n '__fish_seen_subcommand_from \(command.name)' ") }
            let longs = own.compactMap { line -> String? in
                guard let range = line.firstRange(of: " -l ") else { return nil }
                return String(line[range.upperBound...].prefix { $0 != " " })
            }
            #expect(longs.sorted() == options(command).map(\.long).sorted(), "\(command.name)")
            for option in command.options {
                guard case .choices(let values) = option.completion else { continue }
                #expect(own.contains { $0.contains("-l \(option.long) -x -a '\(values.joined(separator: " "))'") })
            }
            #expect(own.contains { $0.hasSuffix(" -F") } == command.positionals.contains { $0.completion == .file })
        }
        for option in CommandLineTool.globalOptions {
            #expect(lines.contains { $0.hasPrefix("complete -c imgtool -n __fish_use_subcommand") && $0.contains("-l \(option.long) ") })
        }
    }

    @Test("the executable writes what the table generates, and prints its version; help hides the generator")
    func executable() throws {
        for (kind, text) in [("man", tool.manPage()), ("bash", tool.bashCompletion()),
                             ("zsh", tool.zshCompletion()), ("fish", tool.fishCompletion())] {
            let r = try imgtool(["__generate", kind])
            #expect(r.succeeded && r.stdout == text, "__generate \(kind)")
        }
        #expect(try imgtool(["__generate"]).status == 64)
        #expect(try imgtool(["__generate", "man", "extra"]).status == 64)
        for arguments in [["--version"], ["version"]] {
            let r = try imgtool(arguments)
            #expect(r.succeeded && r.stdout == "imgtool \(Imgtool.version)\n", "\(arguments)")
        }
        #expect(try imgtool(["version", "extra"]).status == 64)
        let help = try imgtool(["--help"]).stdout
        #expect(help.contains("--version") && !help.contains(CommandLineTool.generateCommand))
        // The package's version is this one plus a Debian revision: Debian's upstream-version syntax.
        let version = Imgtool.version
        #expect(version.first?.isNumber == true && version.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || ".+~".contains($0)) })
    }
}
