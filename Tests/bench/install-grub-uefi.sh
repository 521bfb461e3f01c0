#!/bin/bash
# Benchmark for `make bench`: `imgtool install-grub --firmware uefi` on a GPT image (ESP + ext4 /boot)
# against the recipe a user would run on a kernel without vfat: a loop device for /boot, mount it,
# grub-mkimage the x86_64-efi image, copy GRUB's modules, fonts and translations into /boot/grub,
# and mcopy the image to \EFI\BOOT\BOOTX64.EFI. Alternating, on fresh copies of the same image, in
# one run; medians and the median per-run ratio (target <= 1.0); both results are booted under OVMF.
#   env: IMGTOOL (default .build/release/imgtool), BENCH_RUNS (default 10). Needs root.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=Tests/bench/lib.sh
. "$ROOT/Tests/bench/lib.sh"
IMGTOOL=${IMGTOOL:-$ROOT/.build/release/imgtool}
RUNS=${BENCH_RUNS:-10}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "install-grub-uefi.sh: BENCH_RUNS must be a positive integer" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "install-grub-uefi.sh: needs root (loop devices and mount)" >&2; exit 1; }
[[ -x $IMGTOOL ]] || { echo "install-grub-uefi.sh: no imgtool at $IMGTOOL (swift build -c release)" >&2; exit 2; }
export MTOOLS_SKIP_CHECK=1

WORK=$(mktemp -d /tmp/bench-install-uefi.XXXXXX)
# shellcheck disable=SC2317  # called from the trap
release_all() { release_work_images; }
bench_traps

MARKER=BENCH-UEFI-OK
BASE=$WORK/base.img COPY=$WORK/copy.img
"$ROOT/TestImages/make-esp-disk.sh" "$BASE" --marker "$MARKER"
ESP=$(( 2048 * 512 )) BOOT_START=$(( (2048 + 64 * 2048) * 512 ))

recipe() {   # IMG
    local img=$1 part mnt=$WORK/mnt
    part=$(losetup -f --show -o "$BOOT_START" "$img")
    mkdir "$mnt"
    mount "$part" "$mnt"
    mkdir -p "$mnt/boot/grub/x86_64-efi" "$mnt/boot/grub/fonts" "$mnt/boot/grub/locale"
    cp /usr/lib/grub/x86_64-efi/*.mod /usr/lib/grub/x86_64-efi/*.lst "$mnt/boot/grub/x86_64-efi/"
    cp /usr/share/grub/unicode.pf2 "$mnt/boot/grub/fonts/"
    for mo in /usr/share/locale/*/LC_MESSAGES/grub.mo; do
        lang=${mo#/usr/share/locale/}; cp "$mo" "$mnt/boot/grub/locale/${lang%%/*}.mo"
    done
    grub-mkimage -O x86_64-efi -p '(hd0,gpt2)/boot/grub' -o "$WORK/BOOTX64.EFI" part_gpt ext2
    mmd -D s -i "$img@@$ESP" ::/EFI ::/EFI/BOOT 2>/dev/null || true
    mcopy -o -i "$img@@$ESP" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
    umount "$mnt"
    losetup -d "$part"
    rmdir "$mnt"
    sync "$img"
}
# The recipe's own presentation (a loop device per partition), so the two differ only in who does
# the steps, as in install-grub.sh.
run_imgtool() { "$IMGTOOL" install-grub -q --firmware uefi --strategy offset "$1"; }

RESULTS=$WORK/results.txt
: >"$RESULTS"
for (( i = 1; i <= RUNS; i++ )); do
    if (( i % 2 )); then order="imgtool recipe"; else order="recipe imgtool"; fi
    for side in $order; do
        fresh_copy "$BASE" "$COPY"
        t0=$(now_us)
        if [[ $side == imgtool ]]; then run_imgtool "$COPY"; else recipe "$COPY"; fi
        t1=$(now_us)
        echo "$side $i $(( t1 - t0 ))" >>"$RESULTS"
        if (( i == 1 )); then mv "$COPY" "$WORK/booted-$side.img"; fi
    done
done
for side in imgtool recipe; do
    if "$ROOT/TestImages/boot.sh" "$WORK/booted-$side.img" --firmware uefi --expect "$MARKER" --timeout 60 >/dev/null; then
        echo "$side boot ok" >>"$RESULTS"
    else
        echo "$side boot FAILED" >>"$RESULTS"
    fi
done
[[ -z $(losetup -j "$COPY") ]] || echo "install-grub-uefi.sh: loop devices left behind" >&2

python3 - "$RESULTS" "$RUNS" <<'EOF'
import statistics, sys
t, boots = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[1] == "boot": boots[f[0]] = f[2]; continue
    t.setdefault(f[0], {})[int(f[1])] = int(f[2]) / 1e6
ratio = statistics.median(t["imgtool"][i] / t["recipe"][i] for i in t["imgtool"])
print(f"install-grub --firmware uefi: {sys.argv[2]} runs per side on a 160 MiB GPT image (64 MiB ESP, ext4 /boot)")
print(f"  mtools recipe (losetup, mount, cp, grub-mkimage, mcopy)  {statistics.median(t['recipe'].values()):6.3f} s   boot {boots.get('recipe')}")
print(f"  imgtool install-grub --firmware uefi                   {statistics.median(t['imgtool'].values()):6.3f} s   boot {boots.get('imgtool')}   ratio {ratio:.2f} (target <= 1.0)")
EOF
