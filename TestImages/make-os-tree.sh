#!/bin/bash
# make-os-tree.sh: build a small Debian-like disk image, byte-for-byte reproducibly, with no root and
# no loop device, for the tests of `imgtool ls`/`cat` and OS inspection. See README.md in this folder.
#
#   partition 1 (ext2, sectors 2048-34815): a separate /boot: vmlinuz-6.1.0-test, initrd.img-6.1.0-test,
#                                           config-6.1.0-test, grub/
#   partition 2 (ext4, 34816-end):          the root filesystem:
#     /etc/os-release -> ../usr/lib/os-release (relative symlink, as on Debian), /etc/hostname,
#     /etc/passwd, /usr/lib/os-release, /boot (empty: the mount point), /bin -> usr/bin,
#     /vmlinuz -> boot/vmlinuz-6.1.0-test (dangling here: the kernel is on partition 1), and
#     /srv/links/ with symlinks the tests resolve: passwd -> /etc/passwd, escape ->
#     ../../../../../etc/passwd, etc -> /etc, loop-a <-> loop-b, self -> self, slow (a target of
#     more than 60 bytes, stored in a data block instead of the inode).
set -euo pipefail

die() { echo "make-os-tree.sh: $*" >&2; exit 2; }
[[ $# -eq 1 && $1 != -* ]] || die "usage: make-os-tree.sh OUT.img"
OUT=$1

readonly DOS_ID=0x494d4755
readonly BOOT_UUID=494d4754-0000-4000-8000-0000000000b1 ROOT_UUID=494d4754-0000-4000-8000-0000000000b2
readonly HASH_SEED=494d4754-0000-4000-8000-0000000000a5
readonly BOOT_START=2048 BOOT_SIZE=32768 ROOT_START=34816 SIZE_MIB=64
readonly ROOT_SIZE=$(( SIZE_MIB * 2048 - ROOT_START ))
readonly SLOW_DIR=/usr/lib/imgtool-test/a-directory-name-long-enough-for-a-slow-symlink
# libext2fs (mke2fs, debugfs) takes every timestamp from E2FSPROGS_FAKE_TIME when it is set.
export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000 LC_ALL=C TZ=UTC

TMP="$OUT.tmp.$$" SRC=$(mktemp -d)
trap 'rm -rf "$TMP" "$SRC"' EXIT
truncate -s "${SIZE_MIB}M" "$TMP"
printf 'label: dos\nlabel-id: %s\nunit: sectors\nstart=%d, size=%d, type=83, bootable\nstart=%d, size=%d, type=83\n' \
    "$DOS_ID" "$BOOT_START" "$BOOT_SIZE" "$ROOT_START" "$ROOT_SIZE" | sfdisk -q "$TMP" >/dev/null

# root_owner: mke2fs would otherwise give / to the calling user's uid/gid.
mkfs() {  # TYPE LABEL UUID START SECTORS
    mke2fs -q -F -t "$1" -L "$2" -U "$3" -E "offset=$(( $4 * 512 )),hash_seed=$HASH_SEED,root_owner=0:0" \
        "$TMP" "$(( $5 / 2 ))k"
}
mkfs ext2 boot "$BOOT_UUID" $BOOT_START $BOOT_SIZE
mkfs ext4 root "$ROOT_UUID" $ROOT_START $ROOT_SIZE

# Sources for debugfs's write, which copies their mode and owner.
printf 'fake kernel 6.1.0-test\n' >"$SRC/vmlinuz"
printf 'fake initrd 6.1.0-test\n' >"$SRC/initrd"
printf 'CONFIG_EXT4_FS=y\n' >"$SRC/config"
printf 'testhost\n' >"$SRC/hostname"
printf 'root:x:0:0:imgtool-test-root-in-image:/root:/bin/sh\n' >"$SRC/passwd"
printf 'slow symlink target\n' >"$SRC/slow"
# Debian 12's os-release, plus the quoting os-release(5) allows: a comment, single quotes, escapes.
cat >"$SRC/os-release" <<'EOF'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
# a comment, then values quoted in other ways
HOME_URL='https://www.debian.org/'
VARIANT="Test \"quoted\" \$HOME \\ edition"
EOF
chmod 0644 "$SRC"/*

# The owner too, so the image does not depend on who builds it.
own() { for f in "$@"; do printf 'set_inode_field %s uid 0\nset_inode_field %s gid 0\n' "$f" "$f"; done; }
populate() {  # START SECTORS, commands on stdin; debugfs exits 0 even when a command fails
    debugfs -w -f - "$TMP?offset=$(( $1 * 512 ))" >/dev/null 2>&1 || true
}
{
    printf 'write %s %s\n' "$SRC/vmlinuz" vmlinuz-6.1.0-test "$SRC/initrd" initrd.img-6.1.0-test \
        "$SRC/config" config-6.1.0-test
    printf 'mkdir grub\n'
    own /vmlinuz-6.1.0-test /initrd.img-6.1.0-test /config-6.1.0-test
} | populate $BOOT_START $BOOT_SIZE
{
    for d in /etc /boot /root /usr /usr/bin /usr/lib /usr/lib/imgtool-test "$SLOW_DIR" /srv /srv/links; do
        printf 'mkdir %s\n' "$d"
    done
    printf 'write %s %s\n' "$SRC/os-release" /usr/lib/os-release "$SRC/hostname" /etc/hostname \
        "$SRC/passwd" /etc/passwd "$SRC/slow" "$SLOW_DIR/file.txt"
    printf 'symlink %s %s\n' /etc/os-release ../usr/lib/os-release /bin usr/bin \
        /vmlinuz boot/vmlinuz-6.1.0-test /srv/links/passwd /etc/passwd \
        /srv/links/escape ../../../../../etc/passwd /srv/links/etc /etc \
        /srv/links/loop-a loop-b /srv/links/loop-b loop-a /srv/links/self self \
        /srv/links/slow "$SLOW_DIR/file.txt"
    own /usr/lib/os-release /etc/hostname /etc/passwd "$SLOW_DIR/file.txt"
} | populate $ROOT_START $ROOT_SIZE

# Check by reading back through a symlink, which needs the directories, the file and the link.
got=$(debugfs -R 'cat /usr/lib/os-release' "$TMP?offset=$(( ROOT_START * 512 ))" 2>/dev/null) || true
link=$(debugfs -R 'stat /srv/links/slow' "$TMP?offset=$(( ROOT_START * 512 ))" 2>/dev/null) || true
kernel=$(debugfs -R 'cat /vmlinuz-6.1.0-test' "$TMP?offset=$(( BOOT_START * 512 ))" 2>/dev/null) || true
if [[ $got != "$(cat "$SRC/os-release")" || $link != *'Type: symlink'* || $kernel != 'fake kernel 6.1.0-test' ]]; then
    die "writing files with debugfs failed"
fi
mv -f "$TMP" "$OUT"
