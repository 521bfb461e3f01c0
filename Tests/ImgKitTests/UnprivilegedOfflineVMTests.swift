import Foundation
import Glibc
@testable import ImgKit
import ImgSystem
import ImgVM
import Testing
import TestSupport

/// Why the unprivileged install cannot run here, or nil: the throwaway VM's needs, and util-linux's
/// setpriv and unshare, which become the user and prove user namespaces are gone in the guest.
let unprivilegedVMBlocked: String? = isolatedVMBlocked
    ?? (commandExists("setpriv") && commandExists("unshare") ? nil : "needs util-linux (setpriv, unshare)")

/// Issue 15's "unprivileged for real": install-grub as uid 65534 where a container would run it,
/// set up inside a throwaway VM so that the host is left as it is. In the guest, unprivileged user
/// namespaces are switched off (user.max_user_namespaces=0, the guest's stand-in for Docker's
/// default seccomp profile: unshare(CLONE_NEWUSER) fails with ENOSPC here, EPERM there) and the
/// user is shown to have lost them; loop devices are there but not the user's to open; the user
/// owns the image file and its directory on a tmpfs. install-grub then chooses the offline
/// strategy by itself. Back on the host, the image boots GRUB, and everything under /boot/grub is
/// owned by root, as grub-install leaves it.
@Suite(.serialized, .enabled(if: unprivilegedVMBlocked == nil, "\(unprivilegedVMBlocked ?? "")"))
struct UnprivilegedOfflineVMTests {
    static let user: UInt32 = 65534

    /// The guest's script; $1 is imgtool, $2 and $3 util-linux's setpriv and unshare, named by
    /// their paths because the guest's busybox sh runs its own applets of those names first
    /// (busybox's setpriv has no --reuid). The guest's disk is a block device, and the offline
    /// strategy is for image files that their user owns (it replaces the file by a rename in its
    /// directory), so the disk is copied to a file on a tmpfs, installed there, and copied back onto
    /// the disk, which is the host's image file; the hashes show the copy back is exact.
    static let script = """
        set -u
        imgtool=$1 setpriv=$2 unshare=$3 user=\(user) dir=/mnt/unprivileged
        as_user() { "$setpriv" \(asUser(user).dropFirst().joined(separator: " ")) "$@"; }
        # KEY COMMAND...: its status and the first line of its stderr.
        check() { key=$1; shift; "$@" 2>/tmp/err; echo "$key.status: $?"; echo "$key.error: $(head -n 1 /tmp/err)"; }
        echo "user.ids: $(as_user id -u):$(as_user id -g) groups $(as_user id -G)"
        # 1. User namespaces: the user has them, until the limit is 0.
        check userns.before as_user "$unshare" --user true
        echo 0 >/proc/sys/user/max_user_namespaces
        echo "userns.limit: $(cat /proc/sys/user/max_user_namespaces)"
        check userns.after as_user "$unshare" --user true
        # 2. Loop devices: root opens /dev/loop-control; the user opens neither it nor a /dev/loopN.
        check loop.root sh -c 'exec 3<>"$1"' opens /dev/loop-control
        check loop.user as_user sh -c 'exec 3<>"$1"' opens /dev/loop-control
        n=0 opened=0
        for d in /dev/loop[0-9]*; do
            [ -b "$d" ] || continue
            n=$((n + 1))
            as_user sh -c 'exec 3<"$1"' opens "$d" 2>/dev/null && opened=$((opened + 1))
        done
        echo "loop.devices: $n"
        echo "loop.devices.opened: $opened"
        # 3. The image: a file of the user's, in a directory of the user's.
        mkdir -p $dir && mount -t tmpfs -o mode=0755,size=128m imgtool-unprivileged $dir || exit 71
        busybox chown $user:$user $dir
        dd if=/dev/vda of=$dir/disk.img bs=1M 2>/dev/null || exit 72
        busybox chown $user:$user $dir/disk.img && chmod 0644 $dir/disk.img || exit 73
        echo "image.before: $(stat -c '%u:%g %a' $dir/disk.img)"
        as_user "$imgtool" install-grub $dir/disk.img --json >/tmp/result.json
        echo "install.status: $?"
        echo "install.json: $(tr -d '\\n' </tmp/result.json)"
        echo "image.after: $(stat -c '%u:%g %a' $dir/disk.img)"
        echo "image.directory:" $(ls -A $dir)
        echo "loop.attached: $(losetup -a | wc -l)"
        echo "image.sha256: $(sha256sum <$dir/disk.img | cut -c1-64)"
        # 4. Back onto the disk.
        dd if=$dir/disk.img of=/dev/vda bs=1M conv=fsync 2>/dev/null; echo "copy.status: $?"
        blockdev --flushbufs /dev/vda
        echo "disk.sha256: $(sha256sum </dev/vda | cut -c1-64)"
        umount $dir; echo "umount.status: $?"
        """

    /// An entry of an ext filesystem as debugfs lists it: path, octal mode, "uid:gid".
    struct Entry: Sendable {
        let path: String
        let mode: String
        let owner: String
    }

    /// Everything below `directory` of the ext filesystem at byte `offset` of `image`, from
    /// debugfs's `ls -p` (/inode/mode/uid/gid/name/size/), which needs no root.
    func entries(_ image: String, offset: Int, below directory: String) throws -> [Entry] {
        let listing = try run(["debugfs", "-R", "ls -p \(directory)", "\(image)?offset=\(offset)"]).stdout
        var found: [Entry] = []
        for line in listing.split(separator: "\n") where line.hasPrefix("/") {
            let fields = line.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 7, fields[5] != ".", fields[5] != ".." else { continue }
            let entry = Entry(path: "\(directory)/\(fields[5])", mode: fields[2], owner: "\(fields[3]):\(fields[4])")
            found.append(entry)
            if entry.mode.hasPrefix("04") { found += try entries(image, offset: offset, below: entry.path) }
        }
        return found
    }

    @Test("as uid 65534 in a VM without unprivileged user namespaces or reachable loop devices, install-grub goes offline; the image boots and GRUB's files are root's")
    func installsWithoutNamespacesOrLoopDevices() throws {
        defer { #expect(leftovers() + IsolatedVMTests.leftovers() == [], "after the test") }
        let started = monotonicNow()
        let scratch = try Scratch()
        let marker = "IMGTOOL-UNPRIVILEGED-VM"
        // Hybrid: GPT with a BIOS boot partition (1), the ESP (2, 8 MiB from sector 4096) and ext4 (3).
        let image = scratch.file("disk.img")
        try run(["\(repositoryRoot)/TestImages/make-esp-disk.sh", image, "--bios-boot", "--esp-mib", "8", "--size-mib", "28", "--marker", marker])
        let before = try sha256(image)

        var isolation = Isolation(timeout: 180, executable: imgtoolPath)
        isolation.vm.cacheDirectory = scratch.file("cache")
        isolation.vm.snapshots = false  // one run: saving the VM would only cost time
        var options = isolation.vmOptions(for: .installGrub, imgtool: imgtoolPath)
        let setpriv = try #require(Subprocess.find("setpriv")), unshare = try #require(Subprocess.find("unshare"))
        options.executables += [setpriv, unshare]
        let vm = try IsolatedVM.run(command: ["sh", "-c", Self.script, "unprivileged", imgtoolPath, setpriv, unshare], image: image,
                                    readOnly: false, timeout: isolation.timeout, options: options)
        let r = DeviceMapperVM.Run(vm)
        #expect(r.status == 0, "\(r.context)")

        // The setup bites: each check fails if its restriction is not in force.
        #expect(r["user.ids"] == "65534:65534 groups 65534", "\(r.context)")
        #expect(r["userns.before.status"] == "0", "the user had user namespaces before the limit: \(r.context)")
        #expect(r["userns.limit"] == "0")
        let userns = "status \(r["userns.after.status"] ?? "?"): \(r["userns.after.error"] ?? "")"
        #expect(r["userns.after.status"] != "0" && userns.contains("No space left on device"), "unshare --user as the user: \(r.context)")
        #expect(r["loop.root.status"] == "0", "root opens /dev/loop-control, so it is there to be refused: \(r.context)")
        let loop = "status \(r["loop.user.status"] ?? "?"): \(r["loop.user.error"] ?? "")"
        #expect(r["loop.user.status"] != "0" && loop.contains("Permission denied"), "/dev/loop-control as the user: \(r.context)")
        #expect((Int(r["loop.devices"] ?? "") ?? 0) > 0 && r["loop.devices.opened"] == "0", "\(r.context)")

        // The install: offline, chosen by itself; the image keeps its owner and nothing is left.
        #expect(r["install.status"] == "0", "\(r.context)")
        let result = try #require(InstallGrub.Result(json: try JSONValue.parse(Array((r["install.json"] ?? "").utf8))), "\(r.context)")
        #expect(result.strategy == .offline && result.firmware == .hybrid && result.bootPartition.number == 3)
        #expect(r["image.before"] == "65534:65534 644" && r["image.after"] == "65534:65534 644", "\(r.context)")
        #expect(r["image.directory"] == "disk.img" && r["loop.attached"] == "0" && r["umount.status"] == "0", "\(r.context)")

        // What came back is what imgtool wrote.
        #expect(r["copy.status"] == "0")
        let after = try sha256(image)
        #expect(after != before && r["image.sha256"] == after && r["disk.sha256"] == after, "\(r.context)")

        let booted = try boot(image, expect: marker)
        #expect(booted.found, "SeaBIOS: GRUB did not print \(marker); console:\n\(booted.console)")
        let uefi = try boot(image, expect: marker, firmware: "uefi")
        #expect(uefi.found, "OVMF: GRUB did not print \(marker); console:\n\(uefi.console)")
        let offset = (4096 + 8 * 2048) * 512  // make-esp-disk.sh's ext4 /boot after the ESP
        let fsck = try Subprocess.run(["e2fsck", "-fn", "\(image)?offset=\(offset)"])
        #expect(fsck.status == 0, "\(fsck.stdout)\(fsck.stderr)")
        let grub = try entries(image, offset: offset, below: "/boot/grub")
        #expect(grub.count > 500 && grub.contains { $0.path == "/boot/grub/i386-pc/core.img" }
                && grub.contains { $0.path == "/boot/grub/x86_64-efi/core.efi" }, "\(grub.count) entries")
        let notRoot = grub.filter { $0.owner != "0:0" }.map { "\($0.path) \($0.owner)" }
        #expect(notRoot.isEmpty, "not root's: \(notRoot)")

        print("""
            unprivileged offline install in a VM: \(vm.seconds) s in the VM (\(vm.accelerator)), \(monotonicNow() - started) s in all
              unshare --user as \(r["user.ids"] ?? "?"): before the limit status \(r["userns.before.status"] ?? "?"), after it \(userns)
              /dev/loop-control as the user: \(loop); \(r["loop.devices.opened"] ?? "?") of \(r["loop.devices"] ?? "?") loop devices opened
              strategy \(result.strategy.rawValue), \(result.firmware.rawValue); booted to \(marker): SeaBIOS \(booted.found), OVMF \(uefi.found); \(grub.count) entries under /boot/grub, \(notRoot.count) not root's
            """)
    }
}
