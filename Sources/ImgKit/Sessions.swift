import Glibc
import ImgSystem
import Logging

/// An imgtool session as the system shows it (`imgtool status`): from its journal and from the
/// marks its resources carry in the kernel (`ResourceMarks`). A session is live while its journal
/// is locked; otherwise it is stale and `Cleanup` may release what it holds.
public struct SessionStatus: Sendable, Equatable {
    /// Something the kernel holds for a session.
    public struct Resource: Sendable, Equatable, CustomStringConvertible {
        /// What kind of kernel object it is.
        public let kind: SessionJournal.Kind
        /// /dev/loop3, "/dev/loop3 1", /run/imgtool/mnt-0a1b2c3d-Xy12Zq.
        public let name: String

        /// Makes a value, for an embedder's tests.
        public init(kind: SessionJournal.Kind, name: String) {
            self.kind = kind
            self.name = name
        }

        /// "loop device /dev/loop3", "partition /dev/loop3 number 1", "mount /run/imgtool/mnt-...".
        public var description: String {
            switch kind {
            case .loop: return "loop device \(name)"
            case .partition: return "partition \(name.split(separator: " ").joined(separator: " number "))"
            case .deviceMapper: return "device-mapper device \(name)"
            case .mount: return "mount \(name)"
            case .directory: return "directory \(name)"
            case .undo: return "undo file \(name) (blocks to put back into the image)"
            }
        }
    }

    /// The session id, 8 hex digits.
    public let id: String
    /// Whether its process still runs (it holds its journal's lock).
    public let live: Bool
    /// Its process, from the journal.
    public let pid: Int32?
    /// The image it works on, from the journal.
    public let image: String?
    /// The journal's path; nil when only kernel marks remain.
    public let journal: String?
    /// What the kernel holds for it now.
    public let holds: [Resource]

    /// Makes a value, for an embedder's tests.
    public init(id: String, live: Bool, pid: Int32?, image: String?, journal: String?, holds: [Resource]) {
        self.id = id
        self.live = live
        self.pid = pid
        self.image = image
        self.journal = journal
        self.holds = holds
    }
}

/// `imgtool status`: every imgtool session, live or stale, and what each holds.
public enum Status {
    /// Nothing to choose yet: every session is listed.
    public struct Options: Sendable, Equatable {
        /// The only options there are.
        public init() {}
    }

    /// Every session with a journal or with something in the kernel, sorted by id. Needs no root
    /// to read; device-mapper maps are seen only by root.
    public static func run(_ options: Options = .init(), logger: Logger) -> [SessionStatus] {
        let sessions = Sessions.list()
        logger.debug("\(sessions.count) sessions", metadata: ["stale": "\(sessions.filter { !$0.live }.count)"])
        return sessions
    }
}

/// `imgtool cleanup`: releases what stale sessions hold, never a live session's. Needs root.
public enum Cleanup {
    /// Which sessions to clean up, and how hard.
    public struct Options: Sendable, Equatable {
        /// Only this session; nil: every stale session.
        public var session: String?
        /// Detach a mount that stays busy lazily (MNT_DETACH) instead of reporting its holders.
        public var force: Bool

        /// Options for one session (`session`) or every stale one (nil), with or without `force`.
        public init(session: String? = nil, force: Bool = false) {
            self.session = session
            self.force = force
        }
    }

    /// Something that could not be released, and why (for a busy mount: who holds it): the same
    /// value a session's own release reports (`InstallGrubError.cleanupFailed`).
    public typealias Failure = Session.CleanupFailure

    /// What a cleanup did.
    public struct Result: Sendable, Equatable {
        /// What was released, as `SessionStatus.Resource.description` words it, and journals.
        public var released: [String] = []
        /// What could not be released.
        public var failed: [Failure] = []
        /// Sessions left alone because they are live.
        public var live: [String] = []
        /// Still in use behind a lazily detached mount (--force): they go when its last user does,
        /// and a later cleanup finishes the job.
        public var pending: [String] = []

        /// Makes a value, for an embedder's tests; every list defaults to empty.
        public init(released: [String] = [], failed: [Failure] = [], live: [String] = [], pending: [String] = []) {
            self.released = released
            self.failed = failed
            self.live = live
            self.pending = pending
        }
    }

    /// Releases what stale sessions hold (all of them, or only `options.session`), in the order a
    /// session would: mounts, device-mapper maps (partitions before their disk), partitions, loop
    /// devices, undo files (a write killed halfway is undone), directories, then the journal.
    /// With `force`, a mount still busy after retries is detached lazily; without it, the pids
    /// holding it are reported.
    public static func run(_ options: Options, logger: Logger) -> Result {
        Sessions.cleanup(session: options.session, force: options.force, logger: logger)
    }
}

/// How sessions are found and released: their journals (SessionJournal) and the marks their
/// resources carry in the kernel (`ResourceMarks`), so that ours are found even when a journal is
/// lost.
enum Sessions {
    typealias Resource = SessionStatus.Resource

    /// Every session with a journal or with something in the kernel, sorted by id.
    static func list() -> [SessionStatus] {
        let journals = SessionJournal.all()
        let found = kernelResources()
        var ids = Set(journals.map(\.id))
        ids.formUnion(found.keys)
        return ids.sorted().map { id in
            let journal = journals.first { $0.id == id }
            var holds = found[id] ?? []
            // BLKPG partitions leave no mark of their own; the journal says which disk had them.
            for entry in journal?.held ?? [] where entry.kind == .partition {
                // Only on a disk that is unbound now or still ours: a reused loop device's
                // partitions belong to whoever bound it.
                if let p = partition(entry.name), partitionExists(p), !holds.contains(Resource(kind: .partition, name: entry.name)),
                   ((try? LoopDevice.fileName(ofDevice: p.disk)) ?? nil).map({ $0.hasPrefix(LoopDevice.fileName(for: id)) }) ?? true {
                    holds.insert(Resource(kind: .partition, name: entry.name), at: 0)
                }
            }
            // A device-mapper name in the journal counts only while the device carries our UUID:
            // a later device of the same name (--disk-name hda) is somebody else's.
            for entry in journal?.held ?? [] where entry.kind == .deviceMapper {
                let resource = Resource(kind: .deviceMapper, name: entry.name)
                guard !holds.contains(resource), let name = try? DeviceMapper.Name(entry.name) else { continue }
                if let info = (try? DeviceMapper.info(name: name, logger: quiet)) ?? nil {
                    if info.uuid.flatMap({ ResourceMarks.sessionID(deviceMapperUUID: $0.value) }) == id { holds.append(resource) }
                } else if DeviceMapper.isStaleNode(name: name, logger: quiet) {
                    // The device is gone but its node is not (killed between the two).
                    holds.append(resource)
                }
            }
            // An undo file's write did not finish: its old blocks go back into the image.
            for entry in journal?.held ?? [] where entry.kind == .undo && accessible(entry.name) {
                holds.append(Resource(kind: .undo, name: entry.name))
            }
            return SessionStatus(id: id, live: journal?.live ?? false, pid: journal?.pid, image: journal?.image,
                                 journal: journal?.path, holds: holds)
        }
    }

    /// Stale sessions whose image is the file at `path` (the same inode, whatever path names it).
    static func stale(on path: String) -> [SessionStatus] {
        guard let image = try? fileStatus(path) else { return [] }
        return list().filter { session in
            guard !session.live, let other = session.image, let st = try? fileStatus(other) else { return false }
            return st.st_dev == image.st_dev && st.st_ino == image.st_ino
        }
    }

    /// Releases what stale sessions hold (all of them, or only `id`), in the order a session
    /// would: mounts, device-mapper maps (partitions before their disk), partitions, loop devices,
    /// undo files (their old blocks go back into the image), directories, then the journal.
    /// Never touches a live session's resources. With `force`, a mount still busy after retries
    /// is detached lazily (MNT_DETACH); without it, the pids holding it are reported.
    static func cleanup(session id: String?, force: Bool, logger: Logger) -> Cleanup.Result {
        var result = Cleanup.Result()
        for session in list() where id == nil || session.id == id {
            guard !session.live else { result.live.append(session.id); continue }
            // Lock the journal ourselves, so that two cleanups do not race over one session.
            // A journal that cannot be opened (removed meanwhile) is not locked by anyone either.
            var lock: FileHandle?
            if let journal = session.journal, let file = try? FileHandle(path: journal, flags: O_RDONLY) {
                guard (try? systemCall("flock", on: journal, { flock(file.fd, LOCK_EX | LOCK_NB) })) != nil else {
                    result.live.append(session.id)
                    continue
                }
                lock = file
            }
            defer { lock?.close() }
            let before = (result.failed.count, result.pending.count)
            // Undo files after the loop devices: what the dead run wrote through one reaches the
            // image when it goes, and the old blocks must be written over that, not under it.
            let order: [SessionJournal.Kind] = [.mount, .deviceMapper, .partition, .loop, .undo, .directory]
            var lazilyDetached = false
            for kind in order {
                for resource in session.holds where resource.kind == kind {
                    do {
                        if try release(resource, force: force, logger: logger) == .lazily { lazilyDetached = true }
                        result.released.append(resource.description)
                    } catch {
                        // What sits under a lazily detached mount stays busy until its users go.
                        if lazilyDetached { result.pending.append(resource.description) } else {
                            result.failed.append(.init(resource: resource.description, reason: error.description))
                        }
                    }
                }
            }
            if let journal = session.journal, (result.failed.count, result.pending.count) == before {
                bestEffort { unlink(journal) }  // a journal left holds nothing: the next cleanup removes it
                result.released.append("journal \(journal)")
            }
        }
        return result
    }

    struct ReleaseError: Error, CustomStringConvertible {
        let description: String
    }

    enum Released { case now, lazily }

    @discardableResult
    private static func release(_ r: Resource, force: Bool, logger: Logger) throws(ReleaseError) -> Released {
        switch r.kind {
        case .mount:
            // Mounts stacked on one point come off one by one, the top first.
            for _ in 0..<8 {
                guard let mount = Mount.adopt(r.name, logger: logger) else { return .now }
                do throws(Mount.Error) {
                    if try mount.unmount(detachingIfBusy: force) == .detached { return .lazily }
                } catch .stillMounted {
                    continue
                } catch .busy(_, let holders) {
                    throw ReleaseError(description: "umount2: \(String(cString: strerror(EBUSY)))"
                        + (holders.isEmpty ? "" : "; held by pid \(holders.map(String.init).joined(separator: ", ")); stop them, or use --force for a lazy unmount"))
                } catch {
                    throw ReleaseError(description: error.description)
                }
            }
            if Mount.isMountPoint(r.name) { throw ReleaseError(description: "\(r.name) is still mounted after 8 unmounts") }
        case .partition:
            guard let (disk, number) = partition(r.name) else { return .now }
            do { try BlockPartitions.remove(diskPath: disk, number: number, logger: logger) } catch {
                throw ReleaseError(description: error.description)
            }
        case .deviceMapper:
            do throws(DeviceMapper.Error) {
                let name = try DeviceMapper.Name(r.name)
                if (try DeviceMapper.info(name: name, logger: logger)) != nil {
                    try DeviceMapper.remove(name: name, logger: logger)
                }
                try DeviceMapper.removeStaleNode(name: name, logger: logger)
            } catch {
                throw ReleaseError(description: error.description)
            }
        case .loop:
            do {
                try LoopDevice.adopt(r.name, logger: logger)?.detach()
            } catch {
                throw ReleaseError(description: error.description)
            }
        case .undo:
            do { try UndoFile.recover(r.name) } catch { throw ReleaseError(description: error.description) }
        case .directory:
            do throws(SystemError) {
                try systemCall("rmdir", on: r.name) { rmdir(r.name) }
            } catch where error.errno == ENOENT {
            } catch {
                throw ReleaseError(description: "rmdir: \(String(cString: strerror(error.errno)))")
            }
        }
        return .now
    }

    // MARK: What the kernel shows

    /// Resources carrying an imgtool mark, by session id.
    static func kernelResources() -> [String: [Resource]] {
        var found: [String: [Resource]] = [:]
        let parent = TemporaryDirectory.defaultParent + "/"
        for point in Mount.mountPoints() where point.hasPrefix(parent) {
            if let id = ResourceMarks.sessionID(mountDirectory: String(point.dropFirst(parent.count))) {
                found[id, default: []].append(Resource(kind: .mount, name: point))
            }
        }
        for device in loopDevices() {
            guard let tag = try? LoopDevice.fileName(ofDevice: device), let id = ResourceMarks.sessionID(loopFileName: tag) else { continue }
            for number in BlockPartitions.kernelPartitions(disk: device) {
                found[id, default: []].append(Resource(kind: .partition, name: "\(device) \(number)"))
            }
            found[id, default: []].append(Resource(kind: .loop, name: device))
        }
        // Partition maps first: each holds its disk map open. Nothing to do where the kernel has
        // no device mapper.
        if (try? DeviceMapper.checkAvailable(logger: quiet)) != nil {
            var disks: [(String, Resource)] = []
            for entry in (try? DeviceMapper.list(logger: quiet)) ?? [] {
                guard let info = (try? DeviceMapper.info(name: entry.name, logger: quiet)) ?? nil,
                      let uuid = info.uuid?.value, let id = ResourceMarks.sessionID(deviceMapperUUID: uuid) else { continue }
                let resource = Resource(kind: .deviceMapper, name: entry.name.value)
                if ResourceMarks.isDeviceMapperDisk(uuid: uuid) { disks.append((id, resource)) } else {
                    found[id, default: []].append(resource)
                }
            }
            for (id, resource) in disks { found[id, default: []].append(resource) }
        }
        for name in directoryEntries(TemporaryDirectory.defaultParent) {
            if let id = ResourceMarks.sessionID(mountDirectory: name) {
                found[id, default: []].append(Resource(kind: .directory, name: parent + name))
            }
        }
        return found
    }

    /// libdm's log while looking around: nothing a user should see.
    static let quiet = Logger(label: "imgtool.sessions", factory: { _ in SwiftLogNoOpLogHandler() })

    static func loopDevices() -> [String] {
        directoryEntries("/sys/block").filter { $0.hasPrefix("loop") && Int($0.dropFirst(4)) != nil }
            .sorted { Int($0.dropFirst(4))! < Int($1.dropFirst(4))! }.map { "/dev/\($0)" }
    }

    static func partition(_ entry: String) -> (disk: String, number: Int)? {
        let parts = entry.split(separator: " ")
        guard parts.count == 2, let number = Int(parts[1]) else { return nil }
        return (String(parts[0]), number)
    }

    static func partitionExists(_ p: (disk: String, number: Int)) -> Bool {
        BlockPartitions.kernelPartitions(disk: p.disk).contains(p.number)
    }
}
