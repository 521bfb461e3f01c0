import Glibc
import ImgSystem
@testable import ImgVM
import Testing
import TestSupport

/// IsolatedVM's parts that need no VM: the guest protocol's encoding, kernel ordering, the cache and
/// the saved VMs' bookkeeping (`VMSnapshot`, built from a cache and values alone).
@Suite struct IsolatedVMPartsTests {
    @Test("the command file, sourced by sh, gives back the arguments exactly")
    func commandFile() throws {
        let scratch = try Scratch()
        let tricky = ["it's", "a b", "line\nbreak", "$HOME", "back\\slash", "", "*", "'", "\"`x`\""]
        let file = scratch.file("command")
        try writeFile(file, GuestProtocol.commandFile(tricky, deadline: 7.2))
        let r = try run(["/bin/sh", "-c", ". \"$1\"; printf '[%s]' \"$@\"; printf '%s' \"$deadline\" >&2", "sh", file])
        #expect(r.stdout == tricky.map { "[\($0)]" }.joined())
        #expect(r.stderr == "8")  // rounded up: the guest never gives up before the host
        let message = GuestProtocol.commandMessage(tricky, deadline: 7.2)
        let file2 = GuestProtocol.commandFile(tricky, deadline: 7.2)
        #expect(message == Array("\(file2.count)\n".utf8) + file2)
    }

    @Test("the exit status is read from the status port, and its absence is nil")
    func exitStatus() {
        func status(_ text: String?) -> Int32? {
            GuestProtocol.exitStatus(text.map { [GuestProtocol.statusPort: Array($0.utf8)] } ?? [:])
        }
        #expect(status("0\n") == 0)
        #expect(status("137\r\n") == 137)
        #expect(status("") == nil)
        #expect(status(nil) == nil)
        #expect(status("3 x\n") == nil)
    }

    @Test("cloud kernels are ordered like sort -V")
    func kernelOrder() {
        let kernels = ["vmlinuz-6.1.0-9-cloud-amd64", "vmlinuz-6.1.0-10-cloud-amd64", "vmlinuz-5.10.0-28-cloud-amd64",
                       "vmlinuz-6.1.0-10a-cloud-amd64"]
        #expect(kernels.max(by: CloudKernel.versionLess) == "vmlinuz-6.1.0-10a-cloud-amd64")
        #expect(CloudKernel.versionLess("vmlinuz-6.1.0-9-cloud-amd64", "vmlinuz-6.1.0-10-cloud-amd64"))
        #expect(!CloudKernel.versionLess("vmlinuz-6.1.0-10-cloud-amd64", "vmlinuz-6.1.0-9-cloud-amd64"))
    }

    @Test("the cache stores whole files, keys follow a file's changes, stale entries go by prefix")
    func cache() throws {
        let scratch = try Scratch()
        let cache = try #require(VMCache(preparing: scratch.file("a/b/cache")))
        #expect(cache.store(Array("one".utf8), at: cache.path("kvm-1")))
        #expect(cache.store(Array("two".utf8), at: cache.path("kvm-1")))
        #expect(try readFile(cache.path("kvm-1")) == Array("two".utf8))
        #expect(cache.store([], at: cache.path("vmlinux-x")))
        #expect(directoryEntries(cache.directory).sorted() == ["kvm-1", "vmlinux-x"])  // no temp file left

        let file = scratch.file("source")
        try writeFile(file, [1])
        let key = try #require(VMCache.fileKey(file))
        #expect(VMCache.fileKey(file) == key)
        try writeFile(file, [1, 2])
        #expect(VMCache.fileKey(file) != key)
        #expect(VMCache.fileKey(scratch.file("absent")) == nil)

        cache.remove(prefix: "kvm-") { _ in false }
        cache.remove(prefix: "vmlinux-") { $0 == "vmlinux-x" }
        #expect(directoryEntries(cache.directory) == ["kvm-1"])
    }

    @Test("a saved VM is usable only with its state and every file it was made from unchanged")
    func snapshotBookkeeping() throws {
        let scratch = try Scratch()
        let cache = try #require(VMCache(preparing: scratch.file("cache")))
        let kernel = scratch.file("kernel"), source = scratch.file("source")
        try writeFile(kernel, [0])
        try writeFile(source, Array("v1".utf8))
        let configuration = KernelVM.Configuration(kernel: kernel, initrd: .bytes([]), commandLine: "quiet")
        let initramfs = Initramfs(kernelRelease: "6.1.0-test")
        guard let snapshot = VMSnapshot(cache: cache, initramfs: initramfs, initTemplate: "#!/bin/sh", configuration: configuration) else {
            Issue.record("no snapshot for a plain configuration (is qemu-system-x86_64 in PATH?)")
            return
        }
        // Another /init or command line is another VM.
        let other = VMSnapshot(cache: cache, initramfs: initramfs, initTemplate: "#!/bin/sh -x", configuration: configuration)
        #expect(other?.statePath != snapshot.statePath)

        #expect(!snapshot.isUsable())
        #expect(snapshot.prepare(sources: [source]))
        #expect(!snapshot.isUsable())  // the manifest alone is not a saved VM
        try writeFile(snapshot.statePath, [0])
        #expect(snapshot.isUsable())
        try writeFile(source, Array("v2".utf8))
        #expect(!snapshot.isUsable())
        snapshot.removeStale()
        #expect(directoryEntries(cache.directory).filter { $0.hasPrefix(VMSnapshot.prefix) }.sorted()
                == [snapshot.manifestPath, snapshot.statePath].map { String($0.split(separator: "/").last!) }.sorted())
        snapshot.remove()
        #expect(directoryEntries(cache.directory).isEmpty)
    }
}
