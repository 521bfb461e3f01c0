import Foundation
import ImgSystem
import Testing
import TestSupport

/// What the offline strategy's tests share: an unprivileged user (uid 65534, who can reach no
/// loop device) with a directory and images of its own, and ways to read a result without
/// mounting it.
enum Offline {
    typealias JSON = [String: Any]
    static let user: UInt32 = 65534

    /// A directory that `user` owns, inside `scratch`.
    static func userDirectory(_ scratch: Scratch) throws -> String {
        let directory = scratch.file("nobody")
        try run(["install", "-d", "-o", "\(user)", "-g", "\(user)", directory])
        return directory
    }

    /// TestImages/`script` (make-disk.sh, make-esp-disk.sh) with `arguments` at `path`, owned by `user`.
    static func makeUserDisk(_ path: String, _ arguments: [String], script: String = "make-disk.sh") throws -> String {
        try run(["\(repositoryRoot)/TestImages/\(script)", path] + arguments)
        try giveToUser(path)
        return path
    }

    /// `path` owned by `user` and its group, as a file the user made would be.
    static func giveToUser(_ path: String) throws {
        try run(["chown", "\(user):\(user)", path])
    }

    /// install-grub as `user`, its JSON result.
    static func install(_ image: String, _ extra: [String] = []) throws -> JSON {
        let r = try imgtool(["install-grub", image, "--json"] + extra, user: user)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? JSON, "\(r.stderr)")
    }

    /// Partition `number`'s offset and length in bytes, as sfdisk reads the table; for a disk with
    /// 4096-byte logical sectors, which sfdisk cannot read from a file, as imgtool inspect does.
    static func range(_ image: String, _ number: Int, sectorSize: Int = 512) throws -> (offset: Int, length: Int) {
        let partitions: [JSON]?
        if sectorSize == 512 {
            let dump = try JSONSerialization.jsonObject(with: Data(try run(["sfdisk", "--json", image]).output)) as? JSON
            partitions = (dump?["partitiontable"] as? JSON)?["partitions"] as? [JSON]
        } else {
            let report = try JSONSerialization.jsonObject(with: Data(try imgtool(["inspect", "--json", image]).output)) as? JSON
            partitions = (report?["partitionTable"] as? JSON)?["partitions"] as? [JSON]
        }
        let p = try #require(partitions?.first { ($0["node"] as? String)?.hasSuffix("\(number)") == true || $0["number"] as? Int == number })
        return (try #require(p["start"] as? Int) * sectorSize, try #require(p["size"] as? Int) * sectorSize)
    }

    /// Partition `number` copied out to `out`, for e2fsck, fsck.fat, debugfs and mtools.
    @discardableResult
    static func partition(_ image: String, _ number: Int, to out: String, sectorSize: Int = 512) throws -> String {
        let (offset, length) = try range(image, number, sectorSize: sectorSize)
        try run(["dd", "status=none", "if=\(image)", "of=\(out)", "bs=64K", "iflag=skip_bytes,count_bytes",
                 "skip=\(offset)", "count=\(length)"])
        return out
    }

    /// `path` of an ext filesystem image copied out by debugfs (which keeps modes and owners)
    /// into `into`, which it makes; returns the copy.
    static func extTree(_ filesystem: String, _ path: String, into: String) throws -> String {
        try run(["mkdir", into])
        try run(["debugfs", "-R", "rdump \(path) \(into)", filesystem])
        return into + "/" + path.split(separator: "/").last!
    }

    /// `path` of a FAT filesystem image copied out by mtools into `into`, which it makes.
    static func fatTree(_ filesystem: String, _ path: String, into: String) throws -> String {
        try run(["mkdir", into])
        try run(["env", "MTOOLS_SKIP_CHECK=1", "mcopy", "-s", "-i", filesystem, "::\(path)", into + "/"])
        return into + "/" + path.split(separator: "/").last!
    }

    /// A tree's names, types and sizes, one line each, sorted; with modes and owners when `owners`.
    static func listing(_ tree: String, owners: Bool = true) throws -> String {
        try run(["sh", "-c", "cd \"$1\" && find . -printf '\(owners ? "%P %y %m %U:%G %s" : "%P %y %s")\\n' | sort", "sh", tree]).stdout
    }
}
