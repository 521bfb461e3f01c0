/// What the host and the guest's /init say to each other, and the /init that says it (busybox sh,
/// generated into the initramfs by `Initramfs`).
///
/// The command line arrives on the virtio-serial port imgtool.command (its length, a newline, then
/// a `set -- 'a' 'b'` file /init sources), filled before qemu starts or, when the VM is being saved
/// (`VMSnapshot`), right after; so /init and the initramfs do not depend on it. Results come back on
/// three virtio-serial ports, each captured by qemu into its own file: imgtool.stdout and
/// imgtool.stderr are the command's stdout and stderr as they are (no tty, no line discipline:
/// byte-exact, binary included); imgtool.status gets the exit status as decimal text, written only
/// after the command ended and both its outputs are closed. A guest's blocking write to a port
/// returns only once qemu has taken the data, so when the status arrives the outputs are complete;
/// a missing status means the command never finished, whatever the outputs hold. The serial console
/// (ttyS0) carries the kernel's warnings and /init's progress lines ("imgtool-vm: ...").
package enum GuestProtocol {
    /// The guest → host ports.
    package static let stdoutPort = "imgtool.stdout", stderrPort = "imgtool.stderr", statusPort = "imgtool.status"
    /// The host → guest port that carries the command.
    package static let commandPort = "imgtool.command"
    package static let outputPorts = [stdoutPort, stderrPort, statusPort]
    /// Modules every VM loads at boot, besides the machine's virtio transport.
    package static let baseModules = ["virtio_console"]
    /// Modules loaded once the command has arrived: the disk driver, so that a VM resumed from a
    /// saved state probes the disk it has now, not the one it was saved with.
    package static let diskModules = ["virtio_blk"]
    /// What /init prints when it waits for the command: a VM is saved at that point.
    package static let waitingMarker = "imgtool-vm: waiting for the command"
    /// What /init prints just before it runs the command.
    package static let runningMarker = "imgtool-vm: running command"

    /// The command's exit status from what came back on the ports; nil if it never arrived.
    package static func exitStatus(_ ports: [String: [UInt8]]) -> Int32? {
        var text = Substring(String(decoding: ports[statusPort] ?? [], as: UTF8.self))
        // isNewline: "\r\n" is one Character.
        while let last = text.last, last.isNewline || last == " " { text = text.dropLast() }
        return Int32(text)
    }

    /// The guest kernel's command line, `arguments` appended.
    package static func kernelCommandLine(_ arguments: [String]) -> String {
        // quiet: every console byte is an emulated UART write; panic=-1: a panic ends qemu (-no-reboot)
        // at once; random.trust_cpu: the RNG is ready at boot (RDRAND), so getrandom() does not stall;
        // cryptomgr.notests: the crypto self-tests take about 0.4 s under TCG; acpi=off: ACPI's
        // initialisation took 0.55 s of a 1.9 s boot (PCI is found through configuration space
        // and reboot resets through the keyboard controller without it); initcall_blacklist: the
        // slowest initcalls left, 0.3 s together, none of which the guest uses (kprobe tracing,
        // TCP congestion control, a KDF self-test).
        (["console=ttyS0", "panic=-1", "quiet", "random.trust_cpu=on", "cryptomgr.notests", "acpi=off",
          "initcall_blacklist=init_kprobe_trace,cubictcp_register,crypto_kdf108_init"] + arguments)
            .joined(separator: " ")
    }

    /// The command file: the positional parameters, and the guest's own deadline.
    package static func commandFile(_ command: [String], deadline: Double) -> [UInt8] {
        Array(("set -- " + command.map(shellQuote).joined(separator: " ") + "\ndeadline=\(Int(deadline.rounded(.up)))\n").utf8)
    }

    /// What the command port carries: the command file's length in bytes, a newline, the file.
    package static func commandMessage(_ command: [String], deadline: Double) -> [UInt8] {
        let file = commandFile(command, deadline: deadline)
        return Array("\(file.count)\n".utf8) + file
    }

    /// Where /init puts the command file.
    package static let commandPath = "/imgtool-command"

    /// The guest powers itself off this long after the host's timeout, so that a qemu whose parent
    /// died (SIGKILL leaves no chance to kill it) does not run on for ever.
    package static let guestGrace = 10.0

    /// Single-quoted for sh: safe for any bytes but NUL.
    package static func shellQuote(_ s: String) -> String {
        "'" + s.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }

    /// The generated /init (busybox sh). `moduleLoading` runs at boot, `deferredModuleLoading` once
    /// the command has arrived.
    package static func initScript(path: String, libraryPath: String, moduleLoading: [String], deferredModuleLoading: [String],
                           busybox: String = "/bin/busybox") -> String {
        let bb = shellQuote(busybox)
        return """
        #!\(busybox) sh
        # Generated by imgtool (IsolatedVM). Reads the command from the virtio-serial port
        # \(commandPort), runs it with its stdout and stderr on the ports \(stdoutPort) and
        # \(stderrPort), then writes its exit status to \(statusPort), last, and powers off.
        export PATH=\(shellQuote(path))
        export LD_LIBRARY_PATH=\(shellQuote(libraryPath))
        export HOME=/root IMGTOOL_ISOLATED=1
        bb=\(bb)
        $bb mount -t devtmpfs devtmpfs /dev
        $bb mount -t proc proc /proc
        $bb mount -t sysfs sysfs /sys
        exec </dev/null >/dev/console 2>&1
        say() { echo "imgtool-vm: $*"; }
        off() { $bb sync; $bb reboot -f; while :; do $bb sleep 1; done; }
        say "init started"
        \(moduleLoading.joined(separator: "\n"))
        # Port names arrive from the host shortly after virtio_console binds.
        out= err= st= in= n=0
        while :; do
            for p in /sys/class/virtio-ports/*; do
                name=
                read -r name < "$p/name" 2>/dev/null
                case "$name" in
                    \(stdoutPort)) out=/dev/${p##*/} ;;
                    \(stderrPort)) err=/dev/${p##*/} ;;
                    \(statusPort)) st=/dev/${p##*/} ;;
                    \(commandPort)) in=/dev/${p##*/} ;;
                esac
            done
            [ -n "$out" ] && [ -n "$err" ] && [ -n "$st" ] && [ -n "$in" ] && [ -e "$out" ] && [ -e "$err" ] && [ -e "$st" ] && [ -e "$in" ] && break
            n=$((n + 1))
            if [ $n -ge 2000 ]; then say "the output ports did not appear"; off; fi
            $bb usleep 5000
        done
        # A saved VM is saved here, and resumes here with another command waiting.
        say "waiting for the command"
        exec 3<"$in"
        len=
        read -r len <&3
        case "$len" in ''|*[!0-9]*) say "the command port sent no length"; off ;; esac
        $bb head -c "$len" <&3 >\(commandPath)
        exec 3<&-
        \(deferredModuleLoading.joined(separator: "\n"))
        # devtmpfs makes the disks' nodes just after the driver's probe.
        w=0
        for s in /sys/block/vd* /sys/block/vd*/vd*; do
            [ -e "$s" ] || continue
            while [ ! -e "/dev/${s##*/}" ] && [ $w -lt 3000 ]; do w=$((w + 1)); $bb usleep 1000; done
        done
        deadline=
        . \(commandPath)
        cd /
        # Counted in one-second sleeps: a resumed VM's clock catches up with the time since its
        # state was saved, and one sleep across that jump must not end the whole wait.
        if [ -n "$deadline" ]; then
            ( t=0; while [ $t -lt "$deadline" ]; do $bb sleep 1; t=$((t + 1)); done
              say "the guest's deadline of $deadline s passed"; off ) &
        fi
        say "running command"
        ( exec "$@" ) <"/dev/null" >"$out" 2>"$err"
        status=$?
        $bb sync
        echo "$status" >"$st"
        say "command exited with status $status"
        off

        """
    }
}
