import Glibc
import ImgSystem

/// The distribution's tools `Create` runs, checked before anything is made, and how it runs them.
enum CreateTools {
    /// Each tool the layout's formats need, with the Debian package that has it.
    static func require(for layout: DiskLayout) throws(CreateError) {
        var needed: [(tool: String, package: String)] = []
        let formats = Set(layout.partitions.compactMap(\.format))
        if formats.contains(where: \.isExt) { needed.append(("mke2fs", "e2fsprogs")) }
        if formats.contains(.vfat) { needed += [("mkfs.fat", "dosfstools"), ("mcopy", "mtools"), ("mmd", "mtools")] }
        if formats.contains(.swap) { needed.append(("mkswap", "util-linux")) }
        for (tool, package) in needed where Subprocess.find(tool) == nil {
            throw .toolMissing(tool: tool, package: package)
        }
    }

    /// Runs `arguments` with `environment` added, dying with imgtool; a failure names `step`
    /// and carries the tool's own message.
    static func run(_ arguments: [String], environment: [String] = [], step: String,
                    interruption: Interruption) throws(CreateError) {
        let result: Subprocess.Result
        do {
            result = try Subprocess.run(["setpriv", "--pdeathsig", "KILL", "--", "env"] + environment + arguments,
                                        interruption: interruption)
        } catch {
            throw .failed(step: step, detail: error.description)
        }
        if let signal = interruption.signal { throw .interrupted(signal: signal) }
        guard result.succeeded else {
            let message = result.stderr.split(separator: "\n").last.map(String.init) ?? "exit status \(result.status)"
            throw .failed(step: step, detail: "\(arguments[0]) failed (exit status \(result.status)): \(message)")
        }
    }
}
