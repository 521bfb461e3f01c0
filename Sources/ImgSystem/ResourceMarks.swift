/// The marks imgtool's kernel resources carry, so that `imgtool status` and `cleanup` recognise a
/// session's loop devices, mounts, directories and device-mapper maps even when its journal is
/// lost. Whoever makes a resource and whoever looks for one both use these, and nothing else.
/// A session id is 8 lowercase hex digits.
package enum ResourceMarks {
    /// Where imgtool keeps its mount directories and session journals.
    package static let runDirectory = "/run/imgtool"

    // MARK: Loop devices

    /// The prefix of `lo_file_name` that marks a loop device as imgtool's: "imgtool:<tag>".
    package static let loopTagPrefix = "imgtool:"

    /// The tag of a session's loop device; `suffix` tells apart several of one session
    /// ("0a1b2c3d:p1" for the offset strategy's partition loop).
    package static func loopTag(session: String, suffix: String? = nil) -> String {
        session + (suffix.map { ":" + $0 } ?? "")
    }

    /// "imgtool:0a1b2c3d" or "imgtool:0a1b2c3d:p1" (a whole `lo_file_name`) -> "0a1b2c3d". Any
    /// non-empty tag counts: a loop device marked as imgtool's is released by `cleanup`, whoever
    /// chose the tag.
    package static func sessionID(loopFileName name: String) -> String? {
        guard name.hasPrefix(loopTagPrefix) else { return nil }
        let id = name.dropFirst(loopTagPrefix.count).prefix { $0 != ":" }
        return id.isEmpty ? nil : String(id)
    }

    // MARK: Mount directories

    /// The start of a session's mount directory names under `runDirectory`; mkdtemp adds six
    /// random characters: "mnt-0a1b2c3d-Xy12Zq".
    package static func mountDirectoryPrefix(session: String) -> String { "mnt-\(session)-" }

    /// "mnt-0a1b2c3d-Xy12Zq" and "mnt-0a1b2c3d-esp-Xy12Zq" (the ESP's staging area) -> "0a1b2c3d".
    package static func sessionID(mountDirectory name: String) -> String? {
        let parts = name.split(separator: "-", maxSplits: 2)
        guard parts.count == 3, parts[0] == "mnt", isSessionID(parts[1]) else { return nil }
        return String(parts[1])
    }

    // MARK: Device-mapper maps

    /// imgtool's device-mapper disks have UUIDs starting with this and the session's id
    /// (kpartx-style partition maps put "part<N>-" before it). "mpath-" because grub-probe follows
    /// a linear map down to the device under it (it takes the map for a partition of that device)
    /// unless the map's UUID starts with "LVM-" or "mpath-" (grub_util_get_dm_node_linear_info in
    /// GRUB's getroot.c): without it grub-install finds no GRUB drive for the disk map.
    package static let deviceMapperUUIDPrefix = "mpath-IMGTOOL-"

    /// "mpath-IMGTOOL-0a1b2c3d-disk".
    package static func deviceMapperDiskUUID(session: String) -> String {
        deviceMapperUUIDPrefix + session + "-disk"
    }

    /// The disk map's default name, "imgtool-0a1b2c3d": unique per run (`--disk-name` overrides it).
    package static func deviceMapperDiskName(session: String) -> String { "imgtool-\(session)" }

    /// Whether `uuid` is a disk map's, not a partition map's.
    package static func isDeviceMapperDisk(uuid: String) -> Bool { uuid.hasPrefix(deviceMapperUUIDPrefix) }

    /// "mpath-IMGTOOL-0a1b2c3d-disk" or kpartx's "part1-mpath-IMGTOOL-0a1b2c3d-disk" -> "0a1b2c3d".
    package static func sessionID(deviceMapperUUID uuid: String) -> String? {
        var rest = Substring(uuid)
        if rest.hasPrefix("part"), let dash = rest.firstIndex(of: "-"),
           rest[rest.index(rest.startIndex, offsetBy: 4)..<dash].allSatisfy(\.isASCII) {
            rest = rest[rest.index(after: dash)...]
        }
        guard rest.hasPrefix(deviceMapperUUIDPrefix) else { return nil }
        let id = rest.dropFirst(deviceMapperUUIDPrefix.count).prefix { $0 != "-" }
        return isSessionID(id) ? String(id) : nil
    }

    /// Whether `s` has the form of a session id: eight hex digits.
    package static func isSessionID(_ s: Substring) -> Bool { s.count == 8 && s.allSatisfy(\.isHexDigit) }
}
