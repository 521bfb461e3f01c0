import ImgKit
import ImgSystem

let statusCommand = CommandSpec(
    name: "status",
    abstract: "List imgtool sessions, live and stale, and what each holds (loop devices, partitions, mounts, directories).",
    discussion: """
        A session is live while its process runs (it holds a lock on its journal under /run/imgtool/sessions). \
        A stale one was killed or crashed; `imgtool cleanup` releases what it left. Resources are found both \
        from journals and from the marks imgtool puts on them in the kernel (loop device names imgtool:<session>, \
        mount points /run/imgtool/mnt-<session>-*), so they are found even when a journal is lost.
        """,
    positionals: [],
    options: [.flag("json", help: "Print the sessions as JSON on stdout.")],
    run: { arguments throws(UsageError) in
        let sessions = Status.run(logger: makeLogger(label: "imgtool.status", verbose: false, quiet: true))
        if arguments.flag("json") {
            printJSON(.array(sessions.map(\.json)))
        } else if sessions.isEmpty {
            writeAll(1, Array("no imgtool sessions\n".utf8))
        } else {
            var out = ""
            for s in sessions {
                out += "session \(s.id): \(s.live ? "live" : "stale")"
                if let pid = s.pid { out += ", pid \(pid)" }
                if let image = s.image { out += ", image \(image)" }
                out += s.holds.isEmpty ? ", holds nothing\n" : "\n"
                for r in s.holds { out += "  \(r)\n" }
            }
            writeAll(1, Array(out.utf8))
        }
        return 0
    })

let cleanupCommand = CommandSpec(
    name: "cleanup",
    abstract: "Release what stale imgtool sessions left behind: mounts, partitions, loop devices, directories. Needs root.",
    discussion: """
        Only stale sessions are touched, never a live one. A mount that stays busy is reported with the pids \
        holding it and left in place (and in the journal) unless --force detaches it lazily. Exit 0 when \
        everything asked for was released, 1 when something remains.
        """,
    positionals: [],
    options: [
        .option("session", "<id>", help: "Only this session (see imgtool status)."),
        .flag("all", help: "Every stale session."),
        .flag("force", help: "Detach busy mounts lazily (umount -l) instead of leaving them."),
        .flag("json", help: "Print what was released and what was not as JSON."),
    ],
    run: { arguments throws(UsageError) in
        let id = arguments.value("session")
        guard (id != nil) != arguments.flag("all") else {
            throw UsageError(message: "give either --session ID or --all.")
        }
        let logger = makeLogger(label: "imgtool.cleanup", verbose: false, quiet: false)
        let result = Cleanup.run(.init(session: id, force: arguments.flag("force")), logger: logger)
        if arguments.flag("json") {
            printJSON(result.json)
        } else {
            var out = result.released.map { "released \($0)\n" }.joined()
            out += result.live.map { "left alone: session \($0) is live\n" }.joined()
            out += result.pending.map { "pending: \($0) (in use under a lazily detached mount; run cleanup again once its users are gone)\n" }.joined()
            if out.isEmpty && result.failed.isEmpty { out = "nothing to clean up\n" }
            writeAll(1, Array(out.utf8))
            for f in result.failed { printError("could not release \(f.resource): \(f.reason)") }
        }
        return result.failed.isEmpty ? 0 : ExitStatus.failure.rawValue
    })
