#!/bin/bash
# Examples/test.sh: builds Examples/installer the way a user's package is built (a path dependency
# on this checkout, plain `swift build` in its own scratch directory, no PKG_CONFIG_PATH, no
# Makefile), then proves what it claims: it installs GRUB into a test image that then boots under
# qemu; it reports a bad image with the library's exit status; and Ctrl-C (SIGINT) stops an install
# with exit 130 and nothing of imgtool's left attached or mounted; and run as an unprivileged user it
# installs offline, and that image boots too. Needs root (loop devices, mounts, setpriv).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
example=$root/Examples/installer
work=$(mktemp -d /tmp/imgtool-test-example-XXXXXX)
pid=
cleanup() {
    [[ -z $pid ]] || kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "Examples/test.sh: FAIL: $*" >&2; exit 1; }

unset PKG_CONFIG_PATH
echo "--- building Examples/installer as a package depending on ImgKit (swift build)"
(cd "$example" && "$root/Scripts/with-private-tmp.sh" "${SWIFT:-swift}" build)
installer=$example/.build/debug/installer

echo "--- installing GRUB with it into a test image, then booting the image"
marker="Hello from GRUB, installed by the embedded installer"
"$root/TestImages/make-disk.sh" "$work/disk.img" --label gpt --fs ext4 --marker "$marker" >/dev/null
"$installer" "$work/disk.img" || fail "the installer failed (exit $?)"
"$root/TestImages/boot.sh" "$work/disk.img" --timeout 60 --expect "$marker" >/dev/null \
    || fail "the installed image did not print the marker when booted"
echo "booted: GRUB printed the marker"

echo "--- a bad image: the library's error message and exit status"
: > "$work/empty.img"
status=0
"$installer" "$work/empty.img" 2>"$work/err" || status=$?
[[ $status == 65 ]] || fail "an empty image gave exit $status, not 65 (unusable image): $(cat "$work/err")"
grep -q "is empty" "$work/err" || fail "the message for an empty image does not say so: $(cat "$work/err")"
echo "exit 65: $(cat "$work/err")"

echo "--- Ctrl-C during grub-install: exit 130, nothing left behind"
"$root/TestImages/make-disk.sh" "$work/slow.img" --label dos --fs ext4 >/dev/null
mbr=$(head -c 440 "$work/slow.img" | sha256sum)
# A grub-install that never finishes, first in PATH: the interruption has to stop it.
mkdir "$work/bin"
printf '#!/bin/sh\nexec sleep 600\n' > "$work/bin/grub-install"
chmod 755 "$work/bin/grub-install"
PATH=$work/bin:$PATH "$installer" "$work/slow.img" >"$work/slow.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
    grep -q "running grub-install" "$work/slow.log" && break
    sleep 0.1
done
grep -q "running grub-install" "$work/slow.log" || fail "the installer never reached grub-install: $(cat "$work/slow.log")"
kill -INT "$pid"
status=0
wait "$pid" || status=$?
pid=
[[ $status == 130 ]] || fail "SIGINT gave exit $status, not 130: $(cat "$work/slow.log")"
if losetup -l -n -O BACK-FILE | grep -F "$work/"; then fail "a loop device is left over $work"; fi
if grep -E " /run/imgtool/" /proc/self/mounts; then fail "a mount under /run/imgtool is left"; fi
[[ $(head -c 440 "$work/slow.img" | sha256sum) == "$mbr" ]] || fail "the interrupted install changed the boot code"
echo "exit 130, no loop device or mount left, boot code unchanged"
echo "--- as an unprivileged user (uid 65534): the same installer takes the offline strategy"
nobody=$work/nobody
install -d -o 65534 -g 65534 "$nobody"
chmod 755 "$work"
install -m 0755 "$installer" "$nobody/installer"
"$root/TestImages/make-disk.sh" "$nobody/disk.img" --label dos --fs ext4 --marker "$marker" >/dev/null
chown 65534:65534 "$nobody/disk.img"
setpriv --reuid=65534 --regid=65534 --clear-groups -- "$nobody/installer" "$nobody/disk.img" >"$work/nobody.log" 2>&1 \
    || fail "the installer failed as uid 65534: $(cat "$work/nobody.log")"
grep -q "with strategy offline" "$work/nobody.log" || fail "the unprivileged install did not go offline: $(cat "$work/nobody.log")"
"$root/TestImages/boot.sh" "$nobody/disk.img" --timeout 60 --expect "$marker" >/dev/null \
    || fail "the image installed without root did not print the marker when booted"
echo "booted: GRUB installed by uid 65534 printed the marker"
echo "--- as uid 65534: the builder makes a bootable image from a layout written in Swift (libparted)"
builder=$example/.build/debug/builder
install -m 0755 "$builder" "$nobody/builder"
install -d -o 65534 -g 65534 "$nobody/tree" "$nobody/tree/boot" "$nobody/tree/boot/grub"
printf 'serial --unit=0 --speed=115200\nterminal_output serial\necho %s\nhalt\n' "$marker" > "$nobody/tree/boot/grub/grub.cfg"
chmod 644 "$nobody/tree/boot/grub/grub.cfg"
setpriv --reuid=65534 --regid=65534 --clear-groups -- "$nobody/builder" "$nobody/built.img" "$nobody/tree" >"$work/builder.log" 2>&1 \
    || fail "the builder failed as uid 65534: $(cat "$work/builder.log")"
grep -q "bootable: true" "$work/builder.log" || fail "the builder's image is not bootable: $(cat "$work/builder.log")"
for firmware in bios uefi; do
    "$root/TestImages/boot.sh" "$nobody/built.img" --timeout 90 --firmware "$firmware" --expect "$marker" >/dev/null \
        || fail "the builder's image did not print the marker under $firmware"
done
echo "booted under BIOS and UEFI: GRUB in the image the builder made printed the marker"
echo "Examples/installer: all checks passed"
