import Glibc
@testable import ImgKit
import ImgSystem
import Testing
import TestSupport

/// Issue 6's guarantees for the device-mapper strategy, which only a kernel with device mapper can
/// run: inside one throwaway VM, install-grub --strategy device-mapper (the debug build, with its
/// fault hook) fails at each acquisition and each release in turn, with its maps straight on the
/// VM's disk and over a loop device on an image file, and is killed with SIGKILL at
/// random points; after each, what is left of ours is checked in the VM (mounts under
/// /run/imgtool, maps in /dev/mapper, loop devices, journals). A last, unfaulted run installs GRUB,
/// and the host boots the image.
enum DeviceMapperFaultsVM {
    static let kills = 40

    static let script = """
        set -u
        img=/dev/vda
        dd if=$img of=/tmp/pristine bs=1M 2>/dev/null
        pristine=$(sha256sum </tmp/pristine | cut -c1-64)
        head_pristine=$(head -c 1048576 /tmp/pristine | sha256sum | cut -c1-64)
        restore() { dd if=/tmp/pristine of=$img bs=1M conv=fsync 2>/dev/null; blockdev --flushbufs $img; }
        left() {
            out=
            grep -q " /run/imgtool/" /proc/mounts && out="$out mounts"
            maps=$(ls /dev/mapper | grep -v '^control$' | tr '\\n' ' ')
            [ -n "$maps" ] && out="$out maps:$maps"
            [ -n "$(losetup -a)" ] && out="$out loops:$(losetup -a | tr '\\n' ' ')"
            [ -n "$(ls /run/imgtool/sessions 2>/dev/null)" ] && out="$out journals"
            [ -n "$(ls /run/imgtool 2>/dev/null | grep -v '^sessions$')" ] && out="$out directories"
            echo "${out:-none}"
        }
        install() { imgtool install-grub --strategy device-mapper "$@" $img; }
        # The maps straight on the VM's disk, then over a loop device on an image file.
        faults() {
            p=$1
            for point in acquire release; do
                k=1
                while [ $k -le 20 ]; do
                    restore
                    IMGTOOL_INJECT_FAULT=$point:$k install >/dev/null 2>/tmp/err
                    st=$?
                    if [ $st = 0 ]; then echo "$p$point.steps: $((k - 1))"; break; fi
                    echo "$p$point.$k.status: $st"
                    echo "$p$point.$k.reported: $(grep -c "injected fault ($point:$k)" /tmp/err)"
                    echo "$p$point.$k.error: $(grep 'imgtool: error' /tmp/err | head -1)"
                    if [ $point = release ]; then
                        echo "$p$point.$k.stale: $(imgtool status --json | grep -c '"live": false')"
                        imgtool cleanup --all >/dev/null 2>/tmp/cleanup; echo "$p$point.$k.cleanup: $?"
                    fi
                    echo "$p$point.$k.left: $(left)"
                    blockdev --flushbufs $img
                    echo "$p$point.$k.unchanged: $([ "$(sha256sum <$img | cut -c1-64)" = $pristine ] && echo yes || echo no)"
                    echo "$p$point.$k.head: $([ "$(head -c 1048576 $img | sha256sum | cut -c1-64)" = $head_pristine ] && echo yes || echo no)"
                    e2fsck -fn "$img?offset=1048576" >/dev/null 2>&1; echo "$p$point.$k.fsck: $?"
                    k=$((k + 1))
                done
            done
        }
        faults ""
        img=/tmp/disk.img
        faults file.
        img=/dev/vda
        # The kills spread over 90% of an unfaulted run's time, in microseconds (/proc/uptime
        # counts centiseconds).
        restore
        read t0 rest </proc/uptime
        install >/dev/null 2>&1
        read t1 rest </proc/uptime
        cs() { echo $(( ${1%.*} * 100 + 1${1#*.} - 100 )); }  # "12.05" -> 1205, never octal
        span=$(( ($(cs $t1) - $(cs $t0)) * 9000 ))
        # A run that ends before its kill shrinks the span to that bound and is tried again, so
        # every counted kill lands while the run is going.
        i=1 midrun=0
        while [ $midrun -lt \(kills) ] && [ $i -le \(2 * kills) ]; do
            restore
            imgtool install-grub --strategy device-mapper $img >/dev/null 2>&1 &
            pid=$!
            delay=$(( $(od -An -N2 -tu2 /dev/urandom) * span / 65535 ))
            usleep $delay
            kill -9 $pid 2>/dev/null
            wait $pid; st=$?
            if [ $st = 137 ]; then
                midrun=$((midrun + 1)); echo "kill.$i.midrun: yes"
            else
                span=$delay; echo "kill.$i.midrun: no, exited $st before $delay us"
            fi
            imgtool cleanup --all >/dev/null 2>&1; echo "kill.$i.cleanup: $?"
            echo "kill.$i.left: $(left)"
            i=$((i + 1))
        done
        echo "kills.attempts: $((i - 1))"
        # A map still open at teardown: a fake grub-install leaves a process holding the disk map.
        mkdir -p /tmp/fakebin
        printf '#!/bin/sh\nsleep 600 </dev/mapper/hda >/dev/null 2>&1 &\n' >/tmp/fakebin/grub-install
        chmod 755 /tmp/fakebin/grub-install
        restore
        PATH=/tmp/fakebin:$PATH imgtool install-grub --disk-name hda $img >/dev/null 2>/tmp/err; echo "busy.status: $?"
        echo "busy.error: $(grep -m1 'device-mapper device hda' /tmp/err)"
        echo "busy.stale: $(imgtool status --json | grep -c '"live": false')"
        for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sleep ] && kill ${p#/proc/}; done
        usleep 200000
        imgtool cleanup --all >/dev/null 2>&1; echo "busy.cleanup: $?"
        echo "busy.left: $(left)"
        restore
        install --disk-name hda >/dev/null 2>/tmp/err; echo "final.status: $?"
        echo "final.left: $(left)"
        """

    static let run: Result<DeviceMapperVM.Run, TestFailure> = {
        do {
            let scratch = try Scratch()
            defer { withExtendedLifetime(scratch) {} }
            _ = try makeDisk(scratch.file("dm.img"), ["--label", "dos", "--size-mib", "32", "--marker", "IMGTOOL-DM-FAULTS"])
            var isolation = Isolation(timeout: 900, executable: imgtoolPath)
            isolation.vm.executables = ["/sbin/e2fsck"]
            isolation.vm.cacheDirectory = scratch.file("cache")
            var options = isolation.vmOptions(for: .installGrub, imgtool: imgtoolPath)
            // Besides what install-grub's VM holds, the script keeps two 32 MiB copies of the image
            // in the guest's RAM-backed /tmp, one behind a loop device with its own page cache; and
            // the tests' imgtool is a dynamic build, whose libraries add 60 MB to the initramfs.
            options.memoryMiB = 768
            let r = try IsolatedVM.run(command: ["sh", "-c", script], image: scratch.file("dm.img"), readOnly: false,
                                       timeout: isolation.timeout, options: options)
            print("device-mapper faults and kills in the VM: \(r.seconds) s wall (\(r.accelerator))")
            let booted = try boot(scratch.file("dm.img"), expect: "IMGTOOL-DM-FAULTS")
            var run = DeviceMapperVM.Run(r)
            run.booted = booted.found
            return .success(run)
        } catch {
            return .failure(TestFailure("the VM run failed: \(error)"))
        }
    }()
}

@Suite(.serialized, .enabled(if: DeviceMapperVM.blocked == nil, "\(DeviceMapperVM.blocked ?? "")"))
struct DeviceMapperFaultsVMTests {
    func run() throws -> DeviceMapperVM.Run { try DeviceMapperFaultsVM.run.get() }

    /// "": the maps straight on the VM's disk; "file.": over a loop device on an image file, which
    /// adds the loop device's acquisition and release.
    @Test("each acquisition fails in turn: reported, nothing left, image intact", arguments: ["", "file."])
    func acquisitions(_ p: String) throws {
        let r = try run()
        let steps = try #require(r["\(p)acquire.steps"].flatMap { Int($0) }, "\(r.context)")
        // (loop,) disk map, partition map, mount directory, mount, grub-install
        print("device-mapper fault steps (\(p.isEmpty ? "on the disk" : "over a loop device")): \(steps) acquisitions, \(r["\(p)release.steps"] ?? "?") releases")
        #expect(steps >= (p.isEmpty ? 5 : 6), "\(r.context)")
        // On the disk no loop device is attached: exactly one step fewer than over the file's.
        if p.isEmpty { #expect(r["file.acquire.steps"].flatMap { Int($0) } == steps + 1, "\(r.context)") }
        for k in 1...max(1, steps) {
            let key = "\(p)acquire.\(k)"
            #expect(r["\(key).status"] == "1", "step \(k): \(r.context)")
            #expect(r["\(key).reported"] == "1", "step \(k): \(r["\(key).error"] ?? "")")
            #expect(r["\(key).left"] == "none", "step \(k)")
            #expect(r["\(key).head"] == "yes", "step \(k) changed the MBR or the gap before grub-install")
            #expect(r["\(key).fsck"] == "0", "step \(k): the filesystem is damaged")
            let beforeMount = !(r["\(key).error"] ?? "").contains(") on mount ") && !(r["\(key).error"] ?? "").contains(") on grub-install")
            if beforeMount { #expect(r["\(key).unchanged"] == "yes", "step \(k) changed the image before the mount") }
        }
    }

    @Test("each release fails in turn: reported, the session stays stale, cleanup releases the rest", arguments: ["", "file."])
    func releases(_ p: String) throws {
        let r = try run()
        let steps = try #require(r["\(p)release.steps"].flatMap { Int($0) }, "\(r.context)")
        #expect(steps >= (p.isEmpty ? 5 : 6), "\(r.context)")
        if p.isEmpty { #expect(r["file.release.steps"].flatMap { Int($0) } == steps + 1, "\(r.context)") }
        for k in 1...max(1, steps) {
            let key = "\(p)release.\(k)"
            #expect(r["\(key).status"] == "1", "release \(k): \(r.context)")
            #expect(r["\(key).stale"] == "1", "release \(k)")
            #expect(r["\(key).cleanup"] == "0", "release \(k)")
            #expect(r["\(key).left"] == "none", "release \(k)")
            #expect(r["\(key).fsck"] == "0", "release \(k)")
        }
    }

    @Test("SIGKILL at random points: cleanup --all leaves nothing; a last run installs an image that boots")
    func kills() throws {
        let r = try run()
        let attempts = try #require(Int(r["kills.attempts"] ?? ""), "\(r.context)")
        var midrun = 0, endedFirst: [String] = []
        for i in 1...attempts {
            #expect(r["kill.\(i).cleanup"] == "0", "kill \(i): \(r.context)")
            #expect(r["kill.\(i).left"] == "none", "kill \(i)")
            let outcome = r["kill.\(i).midrun"] ?? "missing"
            if outcome == "yes" { midrun += 1; continue }
            endedFirst.append(outcome)
            // Only a run that completed narrows the span, so it never falls below a real run's time.
            #expect(outcome.hasPrefix("no, exited 0 "), "kill \(i): \(r.context)")
        }
        print("device-mapper kills: \(midrun) landed mid-run in \(attempts) attempts; runs that ended first: \(endedFirst)")
        #expect(midrun == DeviceMapperFaultsVM.kills, "too few kills landed mid-run: \(endedFirst)")
        #expect(r["final.status"] == "0" && r["final.left"] == "none", "\(r.context)")
        #expect(r.booted == true)
    }

    @Test("a map still open at teardown is reported with who holds it, kept for cleanup, then released")
    func busyMap() throws {
        let r = try run()
        #expect(r["busy.status"] == "1", "\(r.context)")
        let error = r["busy.error"] ?? ""
        #expect(error.contains("hda") && error.contains("sleep"), "\(r.context)")
        #expect(r["busy.stale"] == "1")
        #expect(r["busy.cleanup"] == "0" && r["busy.left"] == "none", "\(r.context)")
    }
}
