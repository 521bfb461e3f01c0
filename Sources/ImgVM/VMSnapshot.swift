import Glibc
import ImgFormats
import ImgSystem

/// A booted isolated VM saved in the cache (qemu's migration stream, written with QMP migrate),
/// waiting for its command: resuming it takes a fraction of a boot under TCG, where the kernel's
/// boot and /init's module loading took 2 s of a 4 s isolated install-grub.
///
/// It holds everything that went into the VM but the command and the disk's contents: the kernel,
/// the initramfs's files, qemu's configuration. So it is found by a key over what can be known
/// without assembling the initramfs (`key`) and kept only while every file the initramfs was
/// assembled from is unchanged (the manifest beside it lists them with a hash of their keys).
/// The guest loads its disk driver only after the command has arrived, so a resumed VM probes the
/// image it is given, whatever size. About 150 MB for install-grub's VM; one per kind of VM,
/// replaced when its files change.
package struct VMSnapshot {
    package let statePath: String
    let manifestPath: String
    let cache: VMCache

    /// The snapshot for the VM booted with `configuration` from `initramfs`, whose /init is
    /// `initTemplate` but for its paths and module lines (those come from `initramfs`); nil if
    /// `configuration` cannot be saved (it carries fw_cfg files).
    package init?(cache: VMCache, initramfs: Initramfs, initTemplate: String, configuration c: KernelVM.Configuration) {
        guard c.firmwareFiles.isEmpty, let qemu = Subprocess.find(KernelVM.qemuProgram),
              let qemuKey = VMCache.fileKey(qemu), let kernelKey = VMCache.fileKey(c.kernel) else { return nil }
        var description = [
            "format 1", "qemu \(qemuKey)", "kernel \(kernelKey)", "cmdline \(c.commandLine)", "machine \(c.machine.rawValue)",
            "cpu \(c.cpu ?? "")", "memory \(c.memoryMiB)", "accelerator \(c.accelerator.rawValue)",
            "disks \(c.disks.map { $0.readOnly ? "ro" : "rw" })", "out \(c.outputPorts)", "in \(c.inputPorts.map(\.name))",
            "release \(initramfs.kernelRelease)", "busybox \(initramfs.busybox)", "executables \(initramfs.executables)",
            "directories \(initramfs.dataDirectories)", "files \(initramfs.dataFiles)", "modules \(initramfs.modules)",
            "optional \(initramfs.optionalModules)", "deferred \(initramfs.deferredModules)",
            "init \(VMCache.hexHash(initTemplate))",
        ]
        description.append("modules root \(initramfs.modulesRoot)")
        let key = VMCache.hexHash(description.joined(separator: "\n"))
        self.cache = cache
        statePath = cache.path("\(Self.prefix)\(key).state")
        manifestPath = cache.path("\(Self.prefix)\(key).sources")
    }

    package static let prefix = "vm-"
    /// Saved VMs kept at most, the least recently used dropped first: each kind of VM (read-only
    /// commands, install-grub, install-grub with udevadm) of one imgtool has its own.
    static let maxSaved = 3
    /// Files whose change can change what the initramfs holds without changing a file in it.
    static let extraSources = ["/etc/ld.so.cache"]
    /// What a resumed VM gets as its initrd: qemu loads -initrd at start, and the saved guest
    /// already has its files; the kernel must stay (its option ROM is part of the saved machine).
    package static let placeholderInitrd: [UInt8] = { var cpio = CpioWriter(); return cpio.finish() }()

    /// Whether the state is there and every file it was made from is unchanged. Marks it used.
    /// Wraps utimensat(2).
    package func isUsable() -> Bool {
        guard accessible(statePath, R_OK), Self.manifestValid(manifestPath) else { return false }
        bestEffort { utimensat(AT_FDCWD, manifestPath, nil, 0) }  // now: the least recently used goes first
        return true
    }

    /// Writes the manifest for `sources` (before the state, which appears whole by rename), and
    /// drops other snapshots whose files changed. false: nothing can be written here. Wraps unlink(2).
    package func prepare(sources: [String]) -> Bool {
        let paths = sources + Self.extraSources
        guard let hash = Self.hash(paths) else { return false }
        // An older state under this key goes first: with the new manifest it would pass for current.
        bestEffort { unlink(statePath) }
        removeStale()
        return cache.store(Array(([hash] + paths).joined(separator: "\n").utf8), at: manifestPath)
    }

    package func remove() {
        Self.remove(manifest: manifestPath)
    }

    /// Snapshots in the cache whose files have changed (an imgtool, grub or kernel upgrade): they
    /// would never be used again. Also removes states without a manifest, temp files of saves whose
    /// process is gone, and the least recently used states beyond `maxSaved` (counting this one).
    /// Wraps unlink(2).
    func removeStale() {
        let names = cache.names(prefix: Self.prefix)
        var current: [(path: String, used: Int)] = []
        for name in names {
            let path = cache.path(name)
            if name.hasSuffix(".sources") {
                guard path != manifestPath else { continue }
                if Self.manifestValid(path), let st = try? fileStatus(path) {
                    current.append((path, st.st_mtim.tv_sec))
                } else {
                    Self.remove(manifest: path)
                }
            } else if name.hasSuffix(".state") {
                if !names.contains(String(name.dropLast(".state".count)) + ".sources") { bestEffort { unlink(path) } }
            } else if let dash = name.lastIndex(of: "-"), name[..<dash].hasSuffix(".tmp"),
                      let pid = pid_t(name[name.index(after: dash)...]), Self.processGone(pid) {
                bestEffort { unlink(path) }
            }
        }
        for old in current.sorted(by: { $0.used > $1.used }).dropFirst(Self.maxSaved - 1) {
            Self.remove(manifest: old.path)
        }
    }

    /// Removes the manifest at `path` and the state beside it. Wraps unlink(2).
    private static func remove(manifest path: String) {
        bestEffort { unlink(String(path.dropLast(".sources".count)) + ".state") }
        bestEffort { unlink(path) }
    }

    /// Whether no process `pid` exists (ESRCH); one we may not signal still exists. Wraps kill(2).
    private static func processGone(_ pid: pid_t) -> Bool {
        do { try systemCall("kill(0)", on: "process \(pid)") { kill(pid, 0) } } catch { return error.errno == ESRCH }
        return false
    }

    /// A manifest: the hash of its files' keys, then the files, one per line.
    static func manifestValid(_ path: String) -> Bool {
        guard let text = try? readTextFile(path) else { return false }
        let lines = text.split(separator: "\n").map(String.init)
        guard let stored = lines.first, lines.count > 1 else { return false }
        return hash(Array(lines.dropFirst())) == stored
    }

    static func hash(_ paths: [String]) -> String? {
        var keys: [String] = []
        for path in paths {
            guard let key = VMCache.fileKey(path) else { return nil }
            keys.append(key)
        }
        return VMCache.hexHash(keys.joined(separator: "\n"))
    }
}
