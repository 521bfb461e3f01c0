import Glibc
import ImgSystem
import Logging

/// Whether an isolated VM runs under KVM or TCG. KVM is used only after a trial boot under it ran
/// a command: /dev/kvm can exist and open fine and still not run a Linux guest (on the CI machine
/// qemu aborts on an MSR with -cpu host and hangs with qemu64). The verdict is cached per host
/// kernel, qemu binary and guest kernel; without a cache there is no trial, and TCG it is.
package enum KVMTrial {
    /// A working KVM boots the VM and runs `true` well within this.
    static let timeout = 10.0
    /// Verdicts in the cache: kvm-KEY, holding "usable" or "unusable".
    static let verdictPrefix = "kvm-"

    /// The accelerator for `requested`; nil (automatic) takes the cached verdict, or a trial boot
    /// of `configuration` (no disk, the command `true`, the initramfs `archive`) under KVM. Wraps uname(2).
    package static func choose(_ requested: KernelVM.Accelerator?, configuration: KernelVM.Configuration,
                               archive: () throws(IsolatedVM.Error) -> [UInt8], kernel: String, cache: VMCache?,
                               interruption: Interruption?, logger: Logger) throws(IsolatedVM.Error) -> KernelVM.Accelerator {
        if let requested { return requested }
        guard KernelVM.kvmDeviceAvailable(), let cache, let qemu = Subprocess.find(KernelVM.qemuProgram),
              let qemuKey = VMCache.fileKey(qemu), let kernelKey = VMCache.fileKey(kernel) else { return .tcg }
        var u = utsname()
        bestEffort { uname(&u) }  // it fails only on a bad pointer
        let host = withUnsafeBytes(of: u.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let verdictPath = cache.path(verdictPrefix + VMCache.hexHash(host + qemuKey + kernelKey))
        let verdict = String(decoding: (try? readFile(verdictPath)) ?? [], as: UTF8.self)
        if verdict.hasPrefix("usable") { return .kvm }
        if verdict.hasPrefix("unusable") { return .tcg }

        var trial = configuration
        trial.accelerator = .kvm
        trial.disks = []
        trial.initrd = .bytes(try archive())
        trial.inputPorts = [(GuestProtocol.commandPort,
                             GuestProtocol.commandMessage(["true"], deadline: timeout + GuestProtocol.guestGrace))]
        let started = monotonicNow()
        var usable = false
        var why = ""
        do {
            let outcome = try KernelVM.run(trial, timeout: timeout, interruption: interruption)
            usable = GuestProtocol.exitStatus(outcome.ports) == 0
            if !usable { why = "\(outcome.ending), console: \(outcome.consoleTail(5))" }
        } catch KernelVM.Error.interrupted(let signal) {
            throw .interrupted(signal: signal)
        } catch {
            why = "\(error)"
        }
        logger.debug("KVM trial", metadata: ["usable": "\(usable)", "seconds": "\(monotonicNow() - started)", "why": "\(why)"])
        _ = cache.store(Array((usable ? "usable\n" : "unusable\n").utf8), at: verdictPath)
        return usable ? .kvm : .tcg
    }
}
