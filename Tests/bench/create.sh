#!/bin/bash
# Benchmark for `make bench`: `imgtool create` making a GPT image (a 256 MiB vfat ESP and a 512 MiB
# ext4 root, each filled from a tree) against what a user would otherwise run, in one run on the
# same trees: systemd-repart (Debian 12's 252) as root with the same repart.d definitions, and the
# shell recipe as root (truncate, sfdisk, a loop device per partition, mkfs.vfat, mkfs.ext4, mount,
# cp -a, umount, losetup -d). imgtool runs as an ordinary user (uid 65534), once with the same
# definitions (--definitions --root) and once with the equivalent --partition specs. Every run
# starts from no image and ends with the image on disk (imgtool fsyncs it; the others are timed
# through `sync IMG`, so no side leaves dirty pages for the next). The sides alternate within each
# round. Medians and the median per-round ratios; targets: imgtool/repart <= 1.0, imgtool/recipe <= 0.5.
#   env: IMGTOOL (default .build/release/imgtool), BENCH_RUNS (default 10). Needs root.
#
# The root tree (about 130 MB, about 5,400 entries), made once per run: a copy of /usr/lib/grub
# (GRUB's modules: a few hundred 1-200 KiB files), /usr/share/locale/[a-f]* (about 1200 .mo files
# and 300-odd symbolic links, the shape of a distribution's /usr/share), 3000 generated small files
# (0.1-16 KiB, random bytes from a fixed seed) in a three-level directory tree like /etc and
# /usr/share/doc, four generated 1-8 MiB files (binaries, an initrd), and the usr-merge links
# (bin, sbin, lib). The ESP tree: shim as EFI/BOOT/BOOTX64.EFI, GRUB's signed image, MokManager,
# and a grub.cfg. The kernel here has no vfat: where it has none, repart formats the ESP without
# CopyFiles= and mcopy fills it, and the recipe fills it by mcopy rather than a mount (both said
# in the output); imgtool always fills it itself (mtools, as it does everywhere).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=Tests/bench/lib.sh
. "$ROOT/Tests/bench/lib.sh"
IMGTOOL=${IMGTOOL:-$ROOT/.build/release/imgtool}
RUNS=${BENCH_RUNS:-10}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "create.sh: BENCH_RUNS must be a positive integer" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "create.sh: needs root (repart and the recipe use loop devices and mount)" >&2; exit 1; }
[[ -x $IMGTOOL ]] || { echo "create.sh: no imgtool at $IMGTOOL (make build, or set IMGTOOL)" >&2; exit 2; }
for tool in systemd-repart sfdisk mkfs.vfat mkfs.ext4 mcopy setpriv python3; do
    command -v "$tool" >/dev/null || { echo "create.sh: $tool is missing (make deps-bench)" >&2; exit 2; }
done
export MTOOLS_SKIP_CHECK=1

umask 022
WORK=$(mktemp -d /tmp/bench-create.XXXXXX)
chmod 755 "$WORK"
# shellcheck disable=SC2317  # called from the trap
release_all() { release_work_images; }
bench_traps

ESP_MIB=256 ROOT_MIB=512 DISK_MIB=800
ESP_START=$(( 1 << 20 )) ROOT_START=$(( (1 + ESP_MIB) << 20 ))
HAVE_VFAT=0
if grep -qw vfat /proc/filesystems || modprobe -q vfat 2>/dev/null; then HAVE_VFAT=1; fi

# --- the trees, once per run, outside the timing.
SRC=$WORK/src
mkdir -p "$SRC/tree/usr/lib" "$SRC/tree/usr/share" "$SRC/esp-tree/EFI/BOOT" "$SRC/esp-tree/EFI/debian"
cp -a /usr/lib/grub "$SRC/tree/usr/lib/"
mkdir "$SRC/tree/usr/share/locale"
cp -a /usr/share/locale/[a-f]* "$SRC/tree/usr/share/locale/"
ln -s usr/bin "$SRC/tree/bin"; ln -s usr/sbin "$SRC/tree/sbin"; ln -s usr/lib "$SRC/tree/lib"
python3 - "$SRC/tree" <<'EOF'
import os, random, sys
rng = random.Random(16)
root = sys.argv[1]
for top in ("etc", "usr/share/doc", "var/lib"):
    for a in range(10):
        for b in range(10):
            d = os.path.join(root, top, f"d{a:02}", f"e{b:02}")
            os.makedirs(d, exist_ok=True)
            for f in range(10):
                with open(os.path.join(d, f"file{f:02}.conf"), "wb") as out:
                    out.write(rng.randbytes(rng.choice((100, 500, 1000, 2000, 4000, 8000, 16000))))
os.makedirs(os.path.join(root, "usr/bin"), exist_ok=True)
os.makedirs(os.path.join(root, "usr/sbin"), exist_ok=True)
os.makedirs(os.path.join(root, "boot"), exist_ok=True)
for path, mib in (("usr/bin/big-tool", 1), ("usr/sbin/daemon", 2), ("usr/lib/libhuge.so.1", 4), ("boot/initrd.img", 8)):
    with open(os.path.join(root, path), "wb") as out:
        out.write(rng.randbytes(mib << 20))
EOF
chmod 755 "$SRC/tree/usr/bin/big-tool" "$SRC/tree/usr/sbin/daemon"
cp /usr/lib/shim/shimx64.efi.signed "$SRC/esp-tree/EFI/BOOT/BOOTX64.EFI"
cp /usr/lib/shim/mmx64.efi.signed "$SRC/esp-tree/EFI/BOOT/mmx64.efi"
cp /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed "$SRC/esp-tree/EFI/BOOT/grubx64.efi"
printf 'search --label root-x86-64 --set root\nconfigfile /boot/grub/grub.cfg\n' >"$SRC/esp-tree/EFI/debian/grub.cfg"
read -r TREE_MB TREE_ENTRIES < <(echo "$(( $(du -sk "$SRC/tree" | cut -f1) / 1024 )) $(find "$SRC/tree" | wc -l)")
read -r ESP_KB ESP_ENTRIES < <(echo "$(du -sk "$SRC/esp-tree" | cut -f1) $(find "$SRC/esp-tree" | wc -l)")

# --- the definitions: one set for imgtool (and repart where the kernel has vfat), and repart's
# own without the ESP's CopyFiles= where it has not (it mounts to copy).
defs() {   # DIR ESP-COPY(0|1)
    mkdir -p "$1"
    {
        printf '[Partition]\nType=esp\nFormat=vfat\n'
        (( $2 )) && printf 'CopyFiles=/esp-tree:/\n'
        printf 'SizeMinBytes=%sM\nSizeMaxBytes=%sM\n' "$ESP_MIB" "$ESP_MIB"
    } >"$1/10-esp.conf"
    printf '[Partition]\nType=root\nFormat=ext4\nCopyFiles=/tree:/\nSizeMinBytes=%sM\nSizeMaxBytes=%sM\n' \
        "$ROOT_MIB" "$ROOT_MIB" >"$1/20-root.conf"
}
defs "$WORK/defs" 1
defs "$WORK/defs-repart" "$HAVE_VFAT"

# imgtool as uid 65534, in a directory it owns, its own copy of the executable (as install-grub.sh).
USERDIR=$WORK/nobody
install -d -o 65534 -g 65534 "$USERDIR"
install -m 0755 "$IMGTOOL" "$USERDIR/imgtool"
as_user() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }

esp_mcopy() {   # IMG: the ESP tree into the image's ESP without a mount
    mcopy -s -i "$1@@$ESP_START" "$SRC/esp-tree/EFI" ::/
}

run_repart() {   # IMG
    systemd-repart --empty=create --size="${DISK_MIB}M" --definitions="$WORK/defs-repart" --root="$SRC" \
        --dry-run=no --pretty=no --json=off "$1" >"$WORK/repart.log" 2>&1 || { cat "$WORK/repart.log" >&2; return 1; }
    if (( ! HAVE_VFAT )); then esp_mcopy "$1"; fi
}
run_recipe() {   # IMG
    local img=$1 esp root mnt=$WORK/mnt
    truncate -s "${DISK_MIB}M" "$img"
    sfdisk -q "$img" >/dev/null <<EOF
label: gpt
start=2048, size=${ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=ESP
size=${ROOT_MIB}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root-x86-64
EOF
    esp=$(losetup -f --show -o "$ESP_START" --sizelimit "$(( ESP_MIB << 20 ))" "$img")
    root=$(losetup -f --show -o "$ROOT_START" --sizelimit "$(( ROOT_MIB << 20 ))" "$img")
    mkfs.vfat -F 32 -n ESP "$esp" >/dev/null
    mkfs.ext4 -q -L root-x86-64 "$root"
    mkdir "$mnt"
    mount "$root" "$mnt"
    cp -a "$SRC/tree/." "$mnt/"
    umount "$mnt"
    if (( HAVE_VFAT )); then
        mount "$esp" "$mnt"
        cp -r --preserve=timestamps "$SRC/esp-tree/." "$mnt/"
        umount "$mnt"
    fi
    losetup -d "$esp" "$root"
    rmdir "$mnt"
    if (( ! HAVE_VFAT )); then esp_mcopy "$img"; fi
}
run_imgtool_defs() {   # IMG
    as_user "$USERDIR/imgtool" create -q "$1" --definitions "$WORK/defs" --root "$SRC" --size "${DISK_MIB}M" \
        2>"$WORK/imgtool.log" || { cat "$WORK/imgtool.log" >&2; return 1; }
}
run_imgtool_specs() {   # IMG
    as_user "$USERDIR/imgtool" create -q "$1" --size "${DISK_MIB}M" \
        --partition "type=esp,size=${ESP_MIB}M,format=vfat,copy=$SRC/esp-tree,label=ESP" \
        --partition "type=root,size=${ROOT_MIB}M,format=ext4,copy=$SRC/tree,label=root-x86-64" \
        2>"$WORK/imgtool.log" || { cat "$WORK/imgtool.log" >&2; return 1; }
}

# Loops or mounts left over from a run are a bug; wait briefly (autoclear detaches on last close).
LEAKS=0
check_leaks() {   # IMG WHO
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        [[ -z $(losetup -j "$1") && $(findmnt -rn -o TARGET) != *"$WORK/"* ]] && return 0
        sleep 0.1
    done
    echo "create.sh: $2 left loop devices or mounts behind:" >&2
    losetup -j "$1" >&2; findmnt -rn | grep -F "$WORK/" >&2 || true
    LEAKS=1; release_all
}

# What each side made, checked on the first round outside the timing: entries in the ESP's
# EFI/BOOT (mtools), and the root filesystem clean (e2fsck -n) with its used inode count.
check_image() {   # IMG SIDE
    local img=$1 side=$2 esp_files inodes root=ok
    esp_files=$(mdir -b -i "$img@@$ESP_START" ::/EFI/BOOT 2>/dev/null | wc -l)
    e2fsck -fn "$img?offset=$ROOT_START" >/dev/null 2>&1 || root=fsck
    inodes=$(dumpe2fs -h "$img?offset=$ROOT_START" 2>/dev/null | awk -F: '/^Inode count/ {n=$2} /^Free inodes/ {f=$2} END {print n-f}')
    echo "$side check esp/EFI/BOOT=$esp_files root=$root inodes=$inodes" >>"$RESULTS"
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
sides=(imgtool-defs repart imgtool-specs recipe)
for (( i = 1; i <= RUNS; i++ )); do
    # Rotate the order, so no side always follows the same one or always runs first.
    order="${sides[*]:i%4} ${sides[*]:0:i%4}"
    for side in $order; do
        img=$WORK/$side.img
        [[ $side == imgtool-* ]] && img=$USERDIR/$side.img
        rm -f "$img"
        t0=$(now_us)
        case $side in
            repart) run_repart "$img"; sync "$img" ;;
            recipe) run_recipe "$img"; sync "$img" ;;
            imgtool-defs) run_imgtool_defs "$img" ;;
            imgtool-specs) run_imgtool_specs "$img" ;;
        esac
        t1=$(now_us)
        check_leaks "$img" "$side"
        echo "$side $i $(( t1 - t0 ))" >>"$RESULTS"
        (( i == 1 )) && check_image "$img" "$side"
        rm -f "$img"
    done
done

python3 - "$RESULTS" "$RUNS" "$TREE_MB" "$TREE_ENTRIES" "$ESP_KB" "$ESP_ENTRIES" "$HAVE_VFAT" <<'EOF'
import statistics, sys
path, runs, tree_mb, tree_n, esp_kb, esp_n, vfat = sys.argv[1:]
t, checks = {}, {}
for line in open(path):
    f = line.split()
    if f[1] == "check": checks[f[0]] = " ".join(f[2:]); continue
    t.setdefault(f[0], {})[int(f[1])] = int(f[2]) / 1e6
def med(side): return statistics.median(t[side].values())
def spread(side): v = t[side].values(); return f"{min(v):.2f}-{max(v):.2f}"
def ratio(a, b): return statistics.median(t[a][i] / t[b][i] for i in t[a])
print(f"create: {runs} rounds, GPT 800 MiB: ESP 256 MiB vfat ({esp_n} entries, {esp_kb} KiB) + root 512 MiB ext4 "
      f"({tree_n} entries, {tree_mb} MiB); wall time until the image is on disk")
rows = (("repart", "systemd-repart 252, root"), ("recipe", "shell recipe, root"),
        ("imgtool-defs", "imgtool --definitions, uid 65534"), ("imgtool-specs", "imgtool --partition, uid 65534"))
print(f"  {'side':34} {'median s':>9} {'min-max s':>11}  check (first round)")
for side, what in rows:
    print(f"  {what:34} {med(side):9.3f} {spread(side):>11}  {checks.get(side, '?')}")
for side in ("imgtool-defs", "imgtool-specs"):
    print(f"  {side}: vs repart {ratio(side, 'repart'):.2f} (target <= 1.0), vs recipe {ratio(side, 'recipe'):.2f} (target <= 0.5)")
print("ratios are medians of per-round ratios against the side run in the same round.")
if vfat != "1":
    print("no vfat in this kernel: repart makes the ESP without CopyFiles= and mcopy fills it; the recipe fills it by mcopy.")
print("recipe: truncate, sfdisk, losetup -o/--sizelimit x2, mkfs.vfat, mkfs.ext4, mount, cp -a, umount, losetup -d, sync.")
EOF

! grep -q 'root=fsck\|BOOT=0 ' "$RESULTS" && (( ! LEAKS ))
