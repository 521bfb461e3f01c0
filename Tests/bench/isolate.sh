#!/bin/bash
# Benchmark for `make bench`: what `install-grub --isolate` (the same install inside a throwaway qemu
# VM, resumed from the VM the first run saved; offline in the VM by default) costs, against the same
# install on this machine's kernel, the isolated install through grub-install on the VM's block
# device, the isolated device-mapper install, and libguestfs's appliance under TCG (`virt-filesystems --all --long`: it boots its VM and only
# lists filesystems, the floor for "boot an appliance VM and do something"). Alternating, in one
# run, each on a fresh copy of the same image. Prints medians (min/max) in seconds, the ratios and
# whether the isolated (offline) median meets the 1.0 s target. It never fails on a time, only when a run
# fails, an install does not boot, or a run leaves a loop device, a qemu of ours or a mount dir.
#   env: IMGTOOL (default .build/release/imgtool, else imgtool in PATH), BENCH_RUNS (default 5).
#   Needs root, qemu-system-x86, linux-image-cloud-amd64 and libguestfs-tools.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=Tests/bench/lib.sh
. "$ROOT/Tests/bench/lib.sh"
if [[ -z ${IMGTOOL:-} ]]; then
    IMGTOOL=$ROOT/.build/release/imgtool
    [[ -x $IMGTOOL ]] || IMGTOOL=$(command -v imgtool || true)
fi
RUNS=${BENCH_RUNS:-5}
TARGET=1.0
MAKE_DISK=$ROOT/TestImages/make-disk.sh
BOOT=$ROOT/TestImages/boot.sh
MARKER=BENCH-ISOLATE-OK

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "isolate.sh: BENCH_RUNS must be a positive integer" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "isolate.sh: needs root (loop devices and mount)" >&2; exit 1; }
[[ -n $IMGTOOL && -x $IMGTOOL ]] ||
    { echo "isolate.sh: no imgtool at ${IMGTOOL:-.build/release/imgtool} or in PATH (swift build -c release, or set IMGTOOL)" >&2; exit 2; }
command -v virt-filesystems >/dev/null ||
    { echo "isolate.sh: no virt-filesystems; install the Debian package libguestfs-tools (make deps-bench)" >&2; exit 2; }

# libguestfs's own VM without KVM, like a host where KVM is unavailable.
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg

WORK=$(mktemp -d /tmp/bench-isolate.XXXXXX)
# libguestfs's overlay goes under $WORK, so its qemu names $WORK like imgtool's does (the image);
# its appliance stays cached in /var/tmp/.guestfs-$UID across runs.
export LIBGUESTFS_TMPDIR=$WORK/guestfs
mkdir "$LIBGUESTFS_TMPDIR"

# qemu processes whose command line names a file of ours: the image (imgtool) or the overlay
# (libguestfs). Never another user's VM.
our_qemus() {
    local p argv0 cmd
    for p in $(pgrep qemu-system || true); do
        argv0=$(tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | head -1) || continue
        cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue
        if [[ ${argv0##*/} == qemu-system-* && $cmd == *"$WORK/"* ]]; then echo "$p"; fi
    done
}
# Release whatever is still attached to or mounted from our files and stop our qemus, by pid.
# shellcheck disable=SC2317  # called from the trap
release_all() {
    local m dev img p
    for p in $(our_qemus); do kill "$p" 2>/dev/null || true; done
    for img in "$WORK"/*.img; do
        [[ -e $img ]] || continue
        for dev in $(losetup -n -O NAME -j "$img"); do
            for m in $(findmnt -rn -o SOURCE,TARGET | awk -v d="$dev" '$1 ~ "^"d"(p[0-9]+)?$" {print $2}' | sort -r); do
                umount "$m" || umount -l "$m"
            done
            losetup -d "$dev" 2>/dev/null || true
        done
    done
}
bench_traps

# After every run, asked of the kernel: no loop device over the image, no qemu of ours, and no
# mount directory in /run/imgtool. Waits briefly (autoclear detaches on last close, qemu exits
# after its guest powers off); anything still there stops the benchmark.
check_leaks() {   # IMG WHO
    local i loops qemus mnts
    for i in 1 2 3 4 5 6 7 8 9 10; do
        loops=$(losetup -a | grep -F "$1" || true)
        qemus=$(our_qemus)
        mnts=$(find /run/imgtool -maxdepth 1 -name 'mnt-*' 2>/dev/null || true)
        [[ -z $loops && -z $qemus && -z $mnts ]] && return 0
        sleep 0.1
    done
    {
        echo "isolate.sh: LEAK: $2 left something behind:"
        [[ -z $loops ]] || echo "  loop devices (losetup -a): $loops"
        [[ -z $qemus ]] || { echo "  qemu processes of ours:"; for i in $qemus; do ps -o pid=,args= -p "$i" || true; done; }
        [[ -z $mnts ]] || echo "  in /run/imgtool: $mnts   (see imgtool status)"
    } >&2
    exit 1
}

run_side() {   # SIDE IMG
    local log=$WORK/$1.log
    case $1 in
        local) "$IMGTOOL" install-grub -q "$2" ;;
        isolated) "$IMGTOOL" install-grub -q --isolate "$2" ;;
        isolated-block) "$IMGTOOL" install-grub -q --isolate --strategy block-device "$2" ;;
        isolated-dm) "$IMGTOOL" install-grub -q --isolate --strategy device-mapper "$2" ;;
        virt-filesystems) virt-filesystems -a "$2" --all --long ;;
    esac >"$log" 2>&1 || { echo "isolate.sh: $1 failed:" >&2; cat "$log" >&2; return 1; }
}

BASE=$WORK/base.img COPY=$WORK/copy.img
"$MAKE_DISK" "$BASE" --marker "$MARKER"   # 64 MiB, dos label, ext4 /boot on partition 1

# Warm-ups: supermin builds libguestfs's appliance on first use; imgtool extracts the kernel,
# takes its KVM verdict and saves the booted VM on first use (in a private cache here, so this
# first run is measured too). The isolated one runs with --verbose to learn which accelerator its
# VM got.
export XDG_CACHE_HOME=$WORK/cache
fresh_copy "$BASE" "$COPY"
run_side virt-filesystems "$COPY"
check_leaks "$COPY" "virt-filesystems (warm-up)"
fresh_copy "$BASE" "$COPY"
t0=$(now_us)
"$IMGTOOL" install-grub -v --isolate "$COPY" >"$WORK/warmup.log" 2>&1 ||
    { echo "isolate.sh: isolated warm-up failed:" >&2; cat "$WORK/warmup.log" >&2; exit 1; }
t1=$(now_us)
check_leaks "$COPY" "isolated (warm-up)"
FIRST=$(( t1 - t0 ))
grep -q "saved the VM for later runs" "$WORK/warmup.log" ||
    { echo "isolate.sh: the first isolated run did not save its VM:" >&2; cat "$WORK/warmup.log" >&2; exit 1; }
ACCEL=$(grep -o 'accelerator=[a-z]*' "$WORK/warmup.log" | tail -1 | cut -d= -f2 || true)
# grub-install's VM (block-device, device-mapper) is another VM, saved by its own first run: not timed.
fresh_copy "$BASE" "$COPY"
run_side isolated-block "$COPY"
check_leaks "$COPY" "isolated-block (warm-up)"
ACCEL=${ACCEL:+ran under $ACCEL}

RESULTS=$WORK/results.txt
: >"$RESULTS"
sides=(local isolated isolated-block isolated-dm virt-filesystems)
for (( i = 1; i <= RUNS; i++ )); do
    # Rotate which side goes first, so none always runs on a warmer cache.
    order="${sides[*]:i%5} ${sides[*]:0:i%5}"
    for side in $order; do
        fresh_copy "$BASE" "$COPY"
        t0=$(now_us)
        run_side "$side" "$COPY"
        t1=$(now_us)
        check_leaks "$COPY" "$side run $i"
        echo "$side $i $(( t1 - t0 ))" >>"$RESULTS"
        # Keep the first install of each side for the boot check.
        if (( i == 1 )) && [[ $side != virt-filesystems ]]; then mv "$COPY" "$WORK/booted-$side.img"; fi
    done
done
for side in local isolated isolated-block isolated-dm; do
    img=$WORK/booted-$side.img
    if "$BOOT" "$img" --expect "$MARKER" --timeout 30 >/dev/null 2>&1; then
        echo "$side boot ok" >>"$RESULTS"
    else
        echo "$side boot FAILED" >>"$RESULTS"
    fi
    rm -f "$img"
done

python3 - "$RESULTS" "$RUNS" "$TARGET" "${ACCEL:-did not report its accelerator}" "$FIRST" <<'EOF'
import statistics, sys
runs, boots = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[1] == "boot":
        boots[f[0]] = f[2]
    else:
        runs.setdefault(f[0], {})[int(f[1])] = int(f[2]) / 1e6
n, target, accel = sys.argv[2], float(sys.argv[3]), sys.argv[4]
med = {side: statistics.median(t.values()) for side, t in runs.items()}
print(f"isolate: {n} runs per variant, alternating, each on a fresh copy of a 64 MiB dos image (ext4 /boot),"
      " median wall time")
print("  warm-ups first: one virt-filesystems (supermin builds its appliance on first use) and one --isolate")
print(f"  install, which extracts the kernel and saves the booted VM for later runs: {int(sys.argv[5]) / 1e6:.2f} s;")
print(f"  the isolated VM {accel}; then one untimed --strategy block-device install saves grub-install's VM;")
print("  the timed isolated runs resume the saved VMs")
print(f"{'variant':17} {'median s':>9} {'min s':>7} {'max s':>7}  boot  command")
commands = {
    "local": "imgtool install-grub -q IMG",
    "isolated": "imgtool install-grub -q --isolate IMG   (offline in the VM)",
    "isolated-block": "imgtool install-grub -q --isolate --strategy block-device IMG   (grub-install on /dev/vda)",
    "isolated-dm": "imgtool install-grub -q --isolate --strategy device-mapper IMG",
    "virt-filesystems": "virt-filesystems -a IMG --all --long   (libguestfs, direct backend, force_tcg)",
}
for side in ("local", "isolated", "isolated-block", "isolated-dm", "virt-filesystems"):
    t = runs[side]
    print(f"{side:17} {med[side]:9.2f} {min(t.values()):7.2f} {max(t.values()):7.2f}  {boots.get(side, '-'):4}  "
          f"{commands[side]}")
print("virt-filesystems installs nothing: it boots libguestfs's appliance under TCG and lists the filesystems,")
print('  the floor for "boot an appliance VM and do something".')
iso, blk, loc, vfs = runs["isolated"], runs["isolated-block"], runs["local"], runs["virt-filesystems"]
print(f"ratios (medians of per-run ratios within a round): isolated/local "
      f"{statistics.median(iso[i] / loc[i] for i in iso):.2f}, isolated/isolated-block "
      f"{statistics.median(iso[i] / blk[i] for i in iso):.2f}, isolated/virt-filesystems "
      f"{statistics.median(iso[i] / vfs[i] for i in iso):.2f}")
if med["isolated"] <= target:
    print(f"target {target:.1f} s: met")
else:
    print(f"target {target:.1f} s: NOT met ({med['isolated']:.2f} s)")
print("after every run: no loop device over the image, no qemu of ours, no /run/imgtool/mnt-* entry")
EOF

! grep -q FAILED "$RESULTS"
