import Glibc
@testable import ImgSystem
import Testing
import TestSupport

/// The journal's format and liveness rule, without the kernel resources it describes.
@Suite(.serialized, .enabled(if: geteuid() == 0, "writes under /run/imgtool, which needs root"))
struct SessionJournalTests {
    @Test("names with spaces, newlines, % and non-ASCII survive; releases cancel acquisitions; liveness follows the lock")
    func roundTrip() throws {
        let image = "/tmp/my disk%20.img\nsecond line ü"
        let journal = try SessionJournal(id: "feedf00d", image: image)
        try journal.acquiring(.init(.loop, "imgtool:feedf00d"))
        try journal.acquiring(.init(.partition, "/dev/loop7 1"))
        try journal.acquiring(.init(.mount, "/run/imgtool/mnt-feedf00d-a b"))
        journal.released(.init(.partition, "/dev/loop7 1"))
        let live = try #require(SessionJournal.read(journal.path))
        #expect(live.id == "feedf00d" && live.image == image && live.pid == getpid() && live.live)
        #expect(live.held == [.init(.loop, "imgtool:feedf00d"), .init(.mount, "/run/imgtool/mnt-feedf00d-a b")])
        // Another process's view: a shared lock cannot be had while the session holds its own.
        #expect(SessionJournal.all().contains { $0.id == "feedf00d" && $0.live })
        journal.finish()
        #expect(SessionJournal.read(journal.path) == nil && access(journal.path, F_OK) != 0)
    }

    @Test("a session that dies without finishing leaves a stale journal; a torn last line is ignored")
    func staleAndTorn() throws {
        var journal: SessionJournal? = try SessionJournal(id: "deadbeef", image: "x.img")
        try journal!.acquiring(.init(.directory, "/run/imgtool/mnt-deadbeef-"))
        let path = journal!.path
        journal = nil  // like a crash: the descriptor closes, the lock goes, the file stays
        defer { unlink(path) }
        let fd = open(path, O_WRONLY | O_APPEND)
        _ = "acquire mount /run/imgtool/mnt-dead".withCString { write(fd, $0, strlen($0)) }  // no newline: torn
        close(fd)
        let stale = try #require(SessionJournal.read(path))
        #expect(!stale.live && stale.held == [.init(.directory, "/run/imgtool/mnt-deadbeef-")])
    }

    @Test("mount directories name their session, the ESP's staging area (mnt-<id>-esp-…) included; others are not ours")
    func mountDirectoryNames() {
        #expect(ResourceMarks.sessionID(mountDirectory: "mnt-0a1b2c3d-Xy12Zq") == "0a1b2c3d")
        #expect(ResourceMarks.sessionID(mountDirectory: "mnt-0a1b2c3d-esp-Xy12Zq") == "0a1b2c3d")
        #expect(ResourceMarks.sessionID(mountDirectory: ResourceMarks.mountDirectoryPrefix(session: "feedf00d") + "esp-abc") == "feedf00d")
        #expect(ResourceMarks.sessionID(mountDirectory: "mnt-nothex12-Xy12Zq") == nil)
        #expect(ResourceMarks.sessionID(mountDirectory: "mnt-0a1b2c3d") == nil)
        #expect(ResourceMarks.sessionID(mountDirectory: "sessions") == nil)
    }
}
