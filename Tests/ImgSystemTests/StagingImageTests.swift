import Glibc
@testable import ImgSystem
import Testing
import TestSupport

/// The file `create` builds a new image in: unnamed until commit gives it the target's name.
struct StagingImageTests {
    /// Makes a staging file in `directory` holding `text` and returns it.
    func staged(_ directory: String, _ text: String) throws -> StagingImage {
        let staging = try StagingImage(directory: directory, name: "new.img")
        try writeStaged(staging, text)
        return staging
    }

    @Test("nothing is named until commit; commit names the file, refuses an existing target without overwrite and replaces it with")
    func unnamedUntilCommit() throws {
        let scratch = try Scratch()
        let target = scratch.file("new.img")
        let first = try staged(scratch.path, "first")
        #expect(first.path.hasPrefix("/proc/\(getpid())/fd/"))
        #expect(try listDirectory(scratch.path) == [])
        try first.commit(to: target, overwrite: false)
        #expect(try listDirectory(scratch.path) == ["new.img"])
        #expect(try readTextFile(target) == "first")
        var mask = umask(0)
        umask(mask)
        mask = 0o666 & ~mask
        #expect(try fileStatus(target).st_mode & 0o7777 == mask, "the mode a new file gets under the umask")

        let second = try staged(scratch.path, "second")
        do {
            try second.commit(to: target, overwrite: false)
            Issue.record("an existing target was replaced without overwrite")
        } catch {
            #expect(error.errno == EEXIST)
        }
        #expect(try readTextFile(target) == "first", "an existing target is left alone")
        try second.commit(to: target, overwrite: true)
        #expect(try readTextFile(target) == "second")
        #expect(try listDirectory(scratch.path) == ["new.img"], "no hidden name is left from the rename")

        let third = try staged(scratch.path, "third")
        third.discard()
        #expect(try listDirectory(scratch.path) == ["new.img"])
        #expect(try readTextFile(target) == "second")
    }

    @Test("in a directory that does not exist: an error naming the directory")
    func missingDirectory() throws {
        let scratch = try Scratch()
        #expect { try StagingImage(directory: scratch.file("absent"), name: "x.img") } throws: { error in
            "\(error)".contains(scratch.file("absent")) && (error as? SystemError)?.errno == ENOENT
        }
    }
}

/// Where the filesystem has no O_TMPFILE (FAT, some FUSE and network filesystems; none this
/// kernel mounts), the staging file has a hidden name instead.
struct StagingImageFallbackTests {
    @Test("a hidden .NAME.imgtool-XXXXXX file, renamed at commit (refusing an existing target without overwrite), unlinked by discard")
    func hiddenName() throws {
        let scratch = try Scratch()
        let target = scratch.file("new.img")
        let first = try StagingImage(directory: scratch.path, name: "new.img", unnamed: false)
        #expect(first.path.hasPrefix(scratch.path + "/.new.img.imgtool-"))
        #expect(try listDirectory(scratch.path).count == 1)
        try first.commit(to: target, overwrite: false)
        #expect(try listDirectory(scratch.path) == ["new.img"])

        let second = try StagingImage(directory: scratch.path, name: "new.img", unnamed: false)
        try writeStaged(second, "second")
        do {
            try second.commit(to: target, overwrite: false)
            Issue.record("an existing target was replaced without overwrite")
        } catch {
            #expect(error.errno == EEXIST)
        }
        #expect(try readTextFile(target) == "")
        try second.commit(to: target, overwrite: true)
        #expect(try readTextFile(target) == "second")
        #expect(try listDirectory(scratch.path) == ["new.img"])

        let third = try StagingImage(directory: scratch.path, name: "new.img", unnamed: false)
        #expect(try listDirectory(scratch.path).count == 2)
        third.discard()
        #expect(try listDirectory(scratch.path) == ["new.img"])
    }
}

/// Writes `text` at the start of `staging`'s file.
func writeStaged(_ staging: StagingImage, _ text: String) throws {
    let file = try FileHandle(path: staging.path, flags: O_WRONLY)
    try writeFully(file.fd, Array(text.utf8), at: 0, path: staging.path)
}
