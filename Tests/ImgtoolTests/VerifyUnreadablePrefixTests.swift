import Foundation
import ImgKit
import ImgSystem
import Testing
import TestSupport

/// A prefix on a filesystem GRUB reads but imgtool does not (exFAT here): the verdict is unknown,
/// with what could not be checked, rather than a guess either way.
@Suite(.serialized, .enabled(if: kernelTestsBlocked == nil, "\(kernelTestsBlocked ?? "")"))
struct VerifyUnreadablePrefixTests {
    @Test("core.img with exfat, prefix on an exFAT partition: unknown (exit 2), normal.mod named as unchecked")
    func exfatPrefix() throws {
        let scratch = try Scratch()
        let image = try makeDisk(scratch.file("disk.img"), ["--label", "dos"])
        #expect(try imgtool(["install-grub", image, "-q", "--modules", "exfat"]).status == 0)
        // Replace the ext4 /boot with an empty exFAT of the same size; core.img still names it.
        let offset = try bootPartitionOffset(image)
        let size = UInt64(try run(["stat", "-c", "%s", image]).stdout.trimmingCharacters(in: .whitespacesAndNewlines))! - offset
        let fs = scratch.file("exfat.fs")
        try run(["truncate", "-s", "\(size)", fs])
        try run(["mkfs.exfat", fs])
        try run(["dd", "if=\(fs)", "of=\(image)", "bs=512", "seek=\(offset / 512)", "conv=notrunc,sparse", "status=none"])

        let r = try imgtool(["verify", image, "--json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.output)) as? [String: Any], "\(r.stderr)")
        #expect(r.status == 2 && json["bootable"] is NSNull)
        let messages = (json["problems"] as? [[String: Any]] ?? []).compactMap { $0["message"] as? String }
        #expect(messages.contains { $0.contains("imgtool cannot read exfat") && $0.contains("normal.mod") }, "\(messages)")
        #expect(!messages.contains { $0.contains("lacks") }, "core.img has part_msdos and exfat: \(messages)")
    }
}
