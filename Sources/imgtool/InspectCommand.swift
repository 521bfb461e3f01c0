import ImgKit
import Logging

let inspectCommand = CommandSpec(
    name: "inspect",
    abstract: "Show what a disk image holds: partitions, filesystems, boot code, OS. Read-only, no root.",
    discussion: "Opens the image read-only; attaches and mounts nothing. Problems found in the image are listed as findings; the exit code is 0 whenever a report could be made.",
    positionals: [PositionalSpec(name: "image", optional: false, completion: .file, help: "The raw disk image (or block device).")],
    options: [
        .flag("json", help: "Print the report as JSON on stdout."),
        .flag("verbose", short: "v", help: "More detail on stderr."),
        backingOption,
    ],
    isolation: .readOnly,
    run: {
        InspectCommand(image: $0.positional(0)!, json: $0.flag("json"), verbose: $0.flag("verbose"), backing: $0.flag("backing"),
                       isolation: $0.isolation).run()
    })

struct InspectCommand {
    let image: String
    let json: Bool
    let verbose: Bool
    let backing: Bool
    let isolation: Isolation?

    func run() -> Int32 {
        let logger = makeLogger(label: "imgtool.inspect", verbose: verbose, quiet: !verbose)
        let report: InspectReport
        do {
            report = try withSignalsStopping(isolation) { isolation throws(ReportError) in
                try Inspect.run(.init(image: image, isolation: isolation, backingFiles: backing), logger: logger)
            }
        } catch {
            printError(error.description)
            return error.exitCode
        }
        if json { printJSON(report.json) } else { writeAll(1, Array(render(report).utf8)) }
        return 0
    }

    /// fdisk -l, blkid and file(1) in one screen.
    func render(_ r: InspectReport) -> String {
        var out = "\(r.image): \(humanSize(r.size)) (\(r.size) bytes), \(r.sectorSize)-byte sectors\n"
        if let c = r.container {
            let parts = [c.version.map { "version \($0)" }, c.variant, c.virtualSize.map { "\(humanSize($0)) virtual disk" },
                         c.clusterSize.map { "\(humanSize($0)) clusters" }, c.compression.map { "\($0) compression" },
                         c.backingFile.map { "backing file \($0)" }, c.encrypted ? "encrypted" : nil].compactMap { $0 }
            out += "container: \(c.format.rawValue)" + (parts.isEmpty ? "" : ", " + parts.joined(separator: ", ")) + "\n"
        }
        let t = r.partitionTable
        switch (t.type, t.parsed) {
        case (nil, _): out += "partition table: none\n"
        case (let type?, true):
            out += "partition table: \(type), id \(t.id ?? "-")"
                + (t.untrusted ? " (UNTRUSTED: no copy of its entries passes its checksum)" : "") + "\n"
        case (let type?, false): out += "partition table: \(type) (not parsed by imgtool)\n"
        }
        out += "boot code: \(r.bootCode.description)\n"
        if !t.partitions.isEmpty {
            var rows = [["#", "boot", "start", "end", "sectors", "size", "type", "filesystem"]]
            for p in t.partitions {
                let fs = p.filesystem.map { f in
                    [f.type.description, f.label.map { "\"\($0)\"" }, f.uuid].compactMap { $0 }.joined(separator: " ")
                } ?? ""
                rows.append(["\(p.number)", p.bootable ? "*" : "", "\(p.start)", "\(p.start + p.size - (p.size > 0 ? 1 : 0))",
                             "\(p.size)", humanSize(p.size * UInt64(r.sectorSize)),
                             p.typeName.map { "\($0) (\(p.type))" } ?? p.type.description, fs])
            }
            out += table(rows)
        }
        if !t.unallocated.isEmpty {
            out += "unallocated: " + t.unallocated.map { "\($0.start)-\($0.start + $0.count - 1) (\(humanSize($0.count * UInt64(r.sectorSize))))" }.joined(separator: ", ") + "\n"
        }
        if let fs = r.filesystem {
            out += "filesystem (whole image): \(fs.type)\(fs.label.map { " \"\($0)\"" } ?? "")\(fs.uuid.map { " \($0)" } ?? "")\n"
        }
        for g in r.volumeGroups {
            out += "lvm: volume group \(g.name), logical volumes " + g.logicalVolumes.map { lv in
                "\(lv.name) (\(humanSize(lv.size))\(lv.filesystem.map { ", \($0.type)" } ?? ""))"
            }.joined(separator: ", ") + "\n"
        }
        for e in r.encryptedVolumes {
            out += "luks: \(e.partition.map { "partition \($0)" } ?? "the whole image"), LUKS\(e.header.version) "
                + "\(e.header.cipher ?? "cipher unknown"), key slots \(e.header.keySlots.map(String.init).joined(separator: " ")), UUID \(e.header.uuid)\n"
        }
        if let os = r.os {
            var line = "os: \(os.prettyName ?? os.id ?? "unknown")"
            if let root = os.rootPartition { line += ", root on partition \(root)" }
            if let host = os.hostname { line += ", hostname \(host)" }
            if !os.kernels.isEmpty { line += ", kernels \(os.kernels.joined(separator: " "))" }
            out += line + "\n"
        }
        for f in r.findings { out += "\(f.severity): \(f.message)\n" }
        return out
    }

    func table(_ rows: [[String]]) -> String {
        let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                return i == row.count - 1 ? cell : (i >= 2 && i <= 5 ? pad + cell : cell + pad)
            }.joined(separator: "  ").trimmingTrailingSpaces()
        }.joined(separator: "\n") + "\n"
    }
}

/// 64 MiB, 1.5 GiB: binary units, one decimal where it matters.
func humanSize(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    let rounded = (value * 10).rounded() / 10
    return rounded == rounded.rounded() ? "\(Int(rounded)) \(units[unit])" : "\(rounded) \(units[unit])"
}

extension String {
    func trimmingTrailingSpaces() -> String {
        String(self[..<(lastIndex(where: { $0 != " " }).map { index(after: $0) } ?? startIndex)])
    }
}
