#!/bin/bash
# make-linux-rootfs.sh: a small root filesystem tarball that boots Linux to a marker on the serial
# console, for the end-to-end tests of `imgtool create` (issue 16). No root, no loop device, and
# deterministic: the same bytes on every run and machine with the same installed packages
# (linux-image-cloud-amd64, busybox-static, kmod, python3). See README.md in this folder.
#
#   /boot/vmlinuz          the newest /boot/vmlinuz-*-cloud-amd64 (KERNEL_RELEASE=... picks another)
#   /boot/initrd.img       a busybox initramfs (newc cpio, uncompressed): loads the modules for virtio
#                          and IDE disks, finds root=UUID= with findfs, mounts it read-only and
#                          switch_roots to /sbin/init
#   /boot/grub/grub.cfg    serial console; search --fs-uuid ROOT_UUID; linux + initrd
#   /sbin/init             checks that /etc/fstab's UUID=ROOT_UUID is the device mounted at / and
#                          prints `IMGTOOL-LINUX-BOOTED root=ROOT_UUID dev=/dev/...` on the console,
#                          then powers off; any failure prints `IMGTOOL-LINUX-FAILED ...` and powers off
#   /etc/fstab             UUID=ROOT_UUID / ext4 ro 0 1
#   /bin/busybox           static, with /bin/sh and applet symlinks
#
# Every entry is owned by 0:0 with mtime 1700000000, entries are sorted by name, the tar is GNU
# format with empty user and group names. Exit status: 2 bad arguments, 3 a requirement is missing
# or unreadable (the message names the package), 0 success; the script prints nothing on success.
set -euo pipefail

die() { echo "make-linux-rootfs.sh: $*" >&2; exit "${2:-2}"; }
missing() { echo "make-linux-rootfs.sh: $1" >&2; exit 3; }
[[ $# -eq 2 && $1 != -* ]] || die "usage: make-linux-rootfs.sh OUT.tar ROOT_UUID"
OUT=$1 ROOT_UUID=$2
[[ $ROOT_UUID =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] ||
    die "ROOT_UUID must be a lower-case UUID (8-4-4-4-12 hex digits), not '$ROOT_UUID'"
export LC_ALL=C TZ=UTC
readonly MTIME=1700000000 BUSYBOX=/bin/busybox

# The kernel: the newest cloud kernel, its modules beside it.
if [[ -n ${KERNEL_RELEASE:-} ]]; then
    RELEASE=$KERNEL_RELEASE
else
    RELEASE=$(cd /boot && ls -1 vmlinuz-*-cloud-amd64 2>/dev/null | sed 's/^vmlinuz-//' | sort -V | tail -n 1) || true
fi
[[ -n $RELEASE && -e /boot/vmlinuz-$RELEASE ]] ||
    missing "no /boot/vmlinuz-*-cloud-amd64; install the Debian package linux-image-cloud-amd64"
KERNEL=/boot/vmlinuz-$RELEASE MODULES=/lib/modules/$RELEASE
# Debian installs the kernel 0644; distributions that make it 0600 need this run as root.
[[ -r $KERNEL ]] || missing "$KERNEL is not readable by $(id -un); run this as a user who can read it (root)"
[[ -r $MODULES/modules.dep ]] || missing "no $MODULES/modules.dep; reinstall linux-image-$RELEASE"
command -v python3 >/dev/null || missing "no python3; install the Debian package python3"
[[ -x $BUSYBOX ]] || missing "no $BUSYBOX; install the Debian package busybox-static"
# The initramfs has no libraries: busybox must be the static one.
python3 -c '
import struct, sys
f = open(sys.argv[1], "rb"); h = f.read(64)
phoff, = struct.unpack_from("<Q", h, 32); phentsize, phnum = struct.unpack_from("<HH", h, 54)
f.seek(phoff); table = f.read(phentsize * phnum)
sys.exit(any(struct.unpack_from("<I", table, i * phentsize)[0] == 3 for i in range(phnum)))  # PT_INTERP
' "$BUSYBOX" ||
    missing "$BUSYBOX is linked dynamically; install the Debian package busybox-static"
"$BUSYBOX" --list | grep -x findfs >/dev/null || missing "$BUSYBOX has no findfs applet; install the Debian package busybox-static"
MODPROBE=$(command -v modprobe || echo /usr/sbin/modprobe)
[[ -x $MODPROBE ]] || missing "no modprobe; install the Debian package kmod"

# Modules for a root disk on virtio (virtio_pci, virtio_blk) or IDE (ata_piix, sd_mod: what
# TestImages/boot.sh gives qemu), dependencies first, each once; built-in ones (ext4, crc32c on
# Debian 12's cloud kernel) give no line. Compression is none on Debian 12's cloud kernel, which
# cannot decompress modules itself (CONFIG_MODULE_DECOMPRESS is off).
MODULE_LIST=()
for module in virtio_pci virtio_blk ata_piix sd_mod ext4; do
    deps=$("$MODPROBE" -S "$RELEASE" --show-depends "$module" 2>&1) ||
        missing "kernel $RELEASE has no module $module: $deps"
    while read -r word path _; do
        [[ $word == insmod ]] || continue
        [[ $path == *.ko ]] || missing "$path is compressed; this script stores modules as they are"
        [[ " ${MODULE_LIST[*]} " == *" $path "* ]] || MODULE_LIST+=("$path")
    done <<<"$deps"
done

TMP="$OUT.tmp.$$" WORK=$(mktemp -d)
trap 'rm -rf "$TMP" "$WORK"' EXIT
# Files written here get their mode from the manifest, not from the umask.

# The initramfs's /init: PID 1 until switch_root.
{
    cat <<'EOF'
#!/bin/sh
# The initramfs of TestImages/make-linux-rootfs.sh: mount root=UUID=... read-only, switch_root.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
exec </dev/console >/dev/console 2>&1
fail() { echo "IMGTOOL-LINUX-FAILED initramfs: $*"; sync; poweroff -f; sleep 5; exit 1; }
EOF
    for path in "${MODULE_LIST[@]}"; do
        printf 'insmod %s || echo "initramfs: insmod %s failed"\n' "$path" "${path##*/}"
    done
    cat <<'EOF'
root=
for arg in $(cat /proc/cmdline); do
    case $arg in root=*) root=${arg#root=} ;; esac
done
case $root in UUID=?*) ;; *) fail "no root=UUID=... on the kernel command line: $(cat /proc/cmdline)" ;; esac
dev= tries=0
while [ $tries -lt 150 ]; do
    dev=$(findfs "$root" 2>/dev/null) && [ -n "$dev" ] && break
    dev=
    tries=$((tries + 1))
    usleep 100000
done
[ -n "$dev" ] || fail "no device has $root after 15 s; block devices: $(ls /sys/class/block | tr '\n' ' ')"
mount -t ext4 -o ro "$dev" /newroot || fail "cannot mount $dev (ext4, read-only)"
[ -x /newroot/sbin/init ] || fail "$dev has no executable /sbin/init"
umount /proc /sys
mount --move /dev /newroot/dev || fail "cannot move /dev to $dev's /dev"
exec switch_root /newroot /sbin/init
EOF
} >"$WORK/init"

# The root filesystem's /sbin/init: the proof, then power off.
cat >"$WORK/sbin-init" <<'EOF'
#!/bin/sh
# /sbin/init of TestImages/make-linux-rootfs.sh: prove that /etc/fstab's UUID= names the
# filesystem mounted at /, print the marker on the console, power off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
grep -q '^[^ ]* /dev ' /proc/mounts || mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
fail() { echo "IMGTOOL-LINUX-FAILED init: $*"; sync; poweroff -f; sleep 5; exit 1; }
spec=$(awk '$1 !~ /^#/ && $2 == "/" { print $1 }' /etc/fstab)
case $spec in
    UUID=?*) uuid=${spec#UUID=} ;;
    *) fail "/etc/fstab names / as '$spec', not UUID=..." ;;
esac
dev=$(findfs "UUID=$uuid" 2>/dev/null) || fail "findfs UUID=$uuid (from /etc/fstab) finds no device"
# The last mount on /: the root filesystem, not the initramfs's rootfs under it.
set -- $(awk '$2 == "/" && $1 != "rootfs" { s = $1 " " $3 " " $4 } END { print s }' /proc/mounts)
src=${1:-} type=${2:-} options=${3:-}
[ -n "$src" ] || fail "nothing but rootfs is mounted at / ($(cat /proc/mounts | tr '\n' ';'))"
[ "$(readlink -f "$dev")" = "$(readlink -f "$src")" ] ||
    fail "/etc/fstab's UUID=$uuid is $dev, but / is $src"
[ "$type" = ext4 ] || fail "/ is $type, not ext4"
case ,$options, in *,ro,*) ;; *) fail "/ is mounted $options, not read-only" ;; esac
grep -q "root=UUID=$uuid " /proc/cmdline || fail "the kernel command line names another root: $(cat /proc/cmdline)"
echo "IMGTOOL-LINUX-BOOTED root=$uuid dev=$src"
sync
poweroff -f
sleep 5
EOF

cat >"$WORK/grub.cfg" <<EOF
# TestImages/make-linux-rootfs.sh: boot /boot/vmlinuz from the filesystem with UUID $ROOT_UUID,
# on the serial console, at once.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod part_gpt
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $ROOT_UUID
set default=0
set timeout=0
menuentry 'imgtool test Linux' {
    echo 'imgtool-linux: GRUB loads /boot/vmlinuz and /boot/initrd.img'
    linux /boot/vmlinuz root=UUID=$ROOT_UUID ro console=ttyS0 panic=-1 quiet
    initrd /boot/initrd.img
}
EOF

printf '# <file system> <mount point> <type> <options> <dump> <pass>\nUUID=%s / ext4 ro,errors=remount-ro 0 1\n' \
    "$ROOT_UUID" >"$WORK/fstab"
printf 'imgtool-linux\n' >"$WORK/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$WORK/passwd"
printf 'root:x:0:\n' >"$WORK/group"

# Manifests: TYPE MODE PATH [SOURCE|TARGET|MAJOR MINOR], one entry a line.
APPLETS=(sh ash awk cat dmesg echo findfs blkid grep ls mkdir mount poweroff readlink sleep sync umount uname usleep)
{
    for d in bin dev lib newroot proc sys; do echo "d 0755 $d"; done
    echo "c 0600 dev/console 5 1"
    echo "c 0666 dev/null 1 3"
    echo "f 0755 bin/busybox $BUSYBOX"
    echo "l 0777 bin/sh busybox"
    echo "f 0755 init $WORK/init"
    for path in "${MODULE_LIST[@]}"; do
        dir=${path%/*}
        while [[ $dir != / && $dir != /lib ]]; do echo "d 0755 ${dir#/}"; dir=${dir%/*}; done
        echo "f 0644 ${path#/} $path"
    done
} >"$WORK/initramfs.list"
{
    for d in bin boot boot/grub dev etc mnt proc run sbin sys usr var; do echo "d 0755 $d"; done
    echo "d 0700 root"
    echo "d 1777 tmp"
    echo "d 1777 var/tmp"
    echo "f 0755 bin/busybox $BUSYBOX"
    for a in "${APPLETS[@]}"; do echo "l 0777 bin/$a busybox"; done
    echo "f 0755 sbin/init $WORK/sbin-init"
    echo "f 0644 boot/vmlinuz $KERNEL"
    echo "f 0644 boot/initrd.img $WORK/initrd.img"
    echo "f 0644 boot/grub/grub.cfg $WORK/grub.cfg"
    echo "f 0644 etc/fstab $WORK/fstab"
    echo "f 0644 etc/hostname $WORK/hostname"
    echo "f 0644 etc/passwd $WORK/passwd"
    echo "f 0644 etc/group $WORK/group"
} >"$WORK/rootfs.list"

# cpio (newc) and tar (GNU) writers: entries sorted by name, each once, owner 0:0, mtime fixed,
# inode numbers by position; only what the manifest says goes in (no umask, no atime, no user names).
python3 - "$MTIME" "$WORK/initramfs.list" "$WORK/initrd.img" "$WORK/rootfs.list" "$TMP" <<'PY'
import io, sys, tarfile
mtime = int(sys.argv[1])

def entries(listing):
    seen = {}
    for line in open(listing):
        kind, mode, path, *rest = line.split()
        seen.setdefault(path, (kind, int(mode, 8), rest))  # parents repeat; the first wins
    return sorted(seen.items(), key=lambda e: e[0].encode())

def cpio(listing, out):
    def header(ino, mode, nlink, size, rmajor, rminor, name):
        n = name.encode() + b"\0"
        h = b"070701" + b"".join(b"%08X" % v for v in
            (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rmajor, rminor, len(n), 0)) + n
        return h + b"\0" * (-len(h) % 4)
    buf = io.BytesIO()
    for ino, (path, (kind, mode, rest)) in enumerate(entries(listing), start=1):
        rmajor = rminor = 0
        if kind == "d": data, mode, nlink = b"", 0o040000 | mode, 2
        elif kind == "f": data, mode, nlink = open(rest[0], "rb").read(), 0o100000 | mode, 1
        elif kind == "l": data, mode, nlink = rest[0].encode(), 0o120000 | mode, 1
        elif kind == "c": data, mode, nlink, rmajor, rminor = b"", 0o020000 | mode, 1, int(rest[0]), int(rest[1])
        else: raise SystemExit(f"unknown entry type {kind}")
        buf.write(header(ino, mode, nlink, len(data), rmajor, rminor, path))
        buf.write(data + b"\0" * (-len(data) % 4))
    buf.write(header(0, 0, 1, 0, 0, 0, "TRAILER!!!"))
    open(out, "wb").write(buf.getvalue())

def tar(listing, out):
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
        for path, (kind, mode, rest) in entries(listing):
            info = tarfile.TarInfo(path)
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = mode, mtime, 0, 0, "", ""
            if kind == "d": info.type = tarfile.DIRTYPE; t.addfile(info)
            elif kind == "l": info.type, info.linkname = tarfile.SYMTYPE, rest[0]; t.addfile(info)
            elif kind == "f":
                data = open(rest[0], "rb").read()
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else: raise SystemExit(f"entry type {kind} is not for the root filesystem")

cpio(sys.argv[2], sys.argv[3])
tar(sys.argv[4], sys.argv[5])
PY
chmod 0644 "$TMP"
mv -f "$TMP" "$OUT"
