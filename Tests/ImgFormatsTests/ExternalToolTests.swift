import Foundation
import Testing

@testable import ImgFormats

/// Differential tests: util-linux sfdisk and gdisk's sgdisk write real tables into sparse image
/// files, and `sfdisk --json` is the reference reading of them.
@Suite("Against sfdisk and sgdisk")
struct ExternalToolTests {
    /// Finds a tool in PATH or the sbin directories (not always in PATH for non-root users).
    static func tool(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        return dirs.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    struct ToolFailure: Error, CustomStringConvertible {
        let description: String
    }

    /// Runs a tool, feeding `input` on stdin, and returns its stdout; throws on a non-zero exit.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], input: String? = nil) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdout = Pipe()
        let stderr = Pipe()
        let stdin = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        // Outputs are small (well under a pipe buffer), so reading one after the other cannot block.
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ToolFailure(
                description: "\(executable) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): "
                    + String(decoding: err, as: UTF8.self))
        }
        return out
    }

    /// A sparse image file of `bytes` bytes in the temp directory.
    static func sparseImage(bytes: UInt64) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("imgformats-diff-\(UUID().uuidString).img").path
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw ToolFailure(description: "cannot create \(path)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.truncate(atOffset: bytes)
        return path
    }

    struct Reference: Equatable, CustomStringConvertible {
        var number: Int
        var start: UInt64
        var size: UInt64
        var type: String  // dos: hex byte without leading zeros ("83", "5"); gpt: type GUID
        var description: String { "#\(number) \(start)+\(size) \(type)" }
    }

    /// Reads `sfdisk --json` into (label, id, partitions).
    static func sfdiskReference(_ sfdisk: String, image: String) throws -> (String, String, [Reference]) {
        let data = try run(sfdisk, ["--json", image])
        let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let table = try #require(root["partitiontable"] as? [String: Any])
        let label = try #require(table["label"] as? String)
        let id = try #require(table["id"] as? String)
        let partitions = try #require(table["partitions"] as? [[String: Any]])
        let references = try partitions.map { entry in
            let node = try #require(entry["node"] as? String)
            // Nodes are the image path plus the number ("p" first when the path ends in a digit).
            var suffix = node.dropFirst(image.count)
            if suffix.first == "p" { suffix = suffix.dropFirst() }
            return Reference(
                number: try #require(Int(suffix)),
                start: try #require((entry["start"] as? NSNumber)?.uint64Value),
                size: try #require((entry["size"] as? NSNumber)?.uint64Value),
                type: try #require(entry["type"] as? String))
        }
        return (label, id, references)
    }

    @Test(.enabled(if: tool("sfdisk") != nil, "needs util-linux sfdisk"))
    func dosWithLogicalChainMatchesSfdisk() throws {
        let sfdisk = try #require(Self.tool("sfdisk"))
        let image = try Self.sparseImage(bytes: 64 << 20)
        defer { try? FileManager.default.removeItem(atPath: image) }

        // Naming partitions 5 and 6 makes sfdisk put them in the extended partition as logicals.
        let script = """
            label: dos
            label-id: 0x5eed1234
            \(image)1 : start=2048, size=8192, type=83, bootable
            \(image)2 : start=10240, size=81920, type=5
            \(image)3 : start=92160, size=4096, type=c
            \(image)5 : size=16384, type=83
            \(image)6 : size=20480, type=82

            """
        try Self.run(sfdisk, ["--quiet", "--no-reread", "--no-tell-kernel", image], input: script)

        let (label, id, reference) = try Self.sfdiskReference(sfdisk, image: image)
        let table = try #require(try PartitionTable.read(from: FileByteSource(path: image)))
        #expect(label == "dos" && table.kind == .dos)
        #expect(table.identifier == id)
        #expect(table.findings.isEmpty, "\(table.findings)")
        let ours = table.partitions.map {
            Reference(number: $0.number, start: $0.startSector, size: $0.sectorCount, type: String($0.mbrType ?? 0, radix: 16))
        }
        #expect(ours == reference)
        #expect(reference.map(\.number) == [1, 2, 3, 5, 6], "sfdisk made the intended layout")
        #expect(table.partitions.map(\.kind) == [.primary, .extended, .primary, .logical, .logical])
        #expect(table.partitions.map(\.bootable) == [true, false, false, false, false])
    }

    @Test(.enabled(if: tool("sfdisk") != nil && tool("sgdisk") != nil, "needs sfdisk and sgdisk"))
    func gptWithBIOSBootMatchesSfdisk() throws {
        let sfdisk = try #require(Self.tool("sfdisk"))
        let sgdisk = try #require(Self.tool("sgdisk"))
        let image = try Self.sparseImage(bytes: 64 << 20)
        defer { try? FileManager.default.removeItem(atPath: image) }

        try Self.run(sgdisk, [
            "--disk-guid=0E1D2C3B-4A59-6877-8695-A4B3C2D1E0F0",
            "-n", "1:2048:+1M", "-t", "1:EF02", "-c", "1:BIOS boot partition",
            "-u", "1:6B0E5D2A-0000-4000-8000-000000000001",
            "-n", "2:0:+16M", "-t", "2:EF00", "-c", "2:EFI System",
            "-n", "3:0:0", "-t", "3:8300", "-c", "3:root", "-A", "3:set:2",
            image,
        ])

        let (label, id, reference) = try Self.sfdiskReference(sfdisk, image: image)
        let table = try #require(try PartitionTable.read(from: FileByteSource(path: image)))
        #expect(label == "gpt" && table.kind == .gpt)
        #expect(table.identifier == id)
        #expect(table.identifier == "0E1D2C3B-4A59-6877-8695-A4B3C2D1E0F0")
        #expect(table.findings.isEmpty, "\(table.findings)")
        let ours = table.partitions.map {
            Reference(number: $0.number, start: $0.startSector, size: $0.sectorCount, type: $0.typeGUID?.description ?? "")
        }
        #expect(ours == reference)
        #expect(table.partitions.first?.typeGUID == .biosBoot)
        #expect(table.partitions.first?.uuid?.description == "6B0E5D2A-0000-4000-8000-000000000001")
        #expect(table.partitions.map(\.name) == ["BIOS boot partition", "EFI System", "root"])
        #expect(table.partitions.map(\.bootable) == [false, false, true])

        // Names and unique GUIDs as sfdisk reads them.
        let json = try #require(
            try JSONSerialization.jsonObject(with: Self.run(sfdisk, ["--json", image])) as? [String: Any])
        let entries = try #require((json["partitiontable"] as? [String: Any])?["partitions"] as? [[String: Any]])
        #expect(entries.map { $0["name"] as? String } == table.partitions.map(\.name))
        #expect(entries.map { $0["uuid"] as? String } == table.partitions.map { $0.uuid?.description })
    }
}
