#!/bin/bash
# Benchmark for `make bench`: `imgtool inspect --json` on a 1 TiB sparse GPT image (four partitions,
# ext4 on one) against what a user would otherwise run: `sfdisk -J` plus `blkid -p` on each
# partition (offsets known beforehand, so the pipeline pays for nothing else). Alternating, in one
# run. Also peak memory, and bytes read on a 1 GiB and a 1 TiB image (they must not grow).
# Then the same image as a qcow2: inspect on it against inspect on the raw image (target <= 2x),
# against `qemu-img convert` to raw + sfdisk + blkid, and against libguestfs's virt-filesystems.
# env: IMGTOOL (default .build/release/imgtool), BENCH_RUNS (default 30). No root needed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=Tests/bench/lib.sh
. "$ROOT/Tests/bench/lib.sh"
IMGTOOL=${IMGTOOL:-$ROOT/.build/release/imgtool}
RUNS=${BENCH_RUNS:-30}
[[ -x $IMGTOOL ]] || { echo "inspect.sh: no imgtool at $IMGTOOL (swift build -c release)" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

make_image() {   # OUT SIZE: GPT with BIOS boot, ESP, a 64 MiB ext4, and the rest
    local img=$1
    truncate -s "$2" "$img"
    sgdisk -U 494D4754-0000-4000-8000-000000000000 \
        -n 1:2048:+1M -t 1:ef02 -n 2:0:+512M -t 2:ef00 -n 3:0:+64M -t 3:8300 -n 4:0:0 -t 4:8300 \
        -u 4:494D4754-0000-4000-8000-000000000004 "$img" >/dev/null
    local start
    start=$(sfdisk -J "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][2]["start"])')
    E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -U 494d4754-0000-4000-8000-0000000000f5 \
        -E offset=$(( start * 512 )) "$img" 65536
}
BIG=$WORK/big.img SMALL=$WORK/small.img
make_image "$SMALL" 1G
# The 1 TiB image is the 1 GiB one grown (backup GPT moved to the end, partition 4 to the rest),
# so both hold the same bytes where they have data and differ only in size.
cp --sparse=always "$SMALL" "$BIG"
truncate -s 1T "$BIG"
sgdisk -e -d 4 -n 4:0:0 -t 4:8300 -u 4:494D4754-0000-4000-8000-000000000004 "$BIG" >/dev/null
sync
OFFSETS=$(sfdisk -J "$BIG" | python3 -c 'import json,sys; print(" ".join(str(p["start"] * 512) for p in json.load(sys.stdin)["partitiontable"]["partitions"]))')

pipeline() { sfdisk -J "$1" >/dev/null; for o in $OFFSETS; do blkid -p -O "$o" "$1" >/dev/null || true; done; }
inspect() { "$IMGTOOL" inspect --json "$1" >/dev/null; }

: >"$WORK/times"
for (( i = 1; i <= RUNS; i++ )); do
    if (( i % 2 )); then order="inspect pipeline"; else order="pipeline inspect"; fi
    for side in $order; do
        t0=$(now_us); $side "$BIG"; t1=$(now_us)
        echo "$side $i $(( t1 - t0 ))" >>"$WORK/times"
    done
done

peak_kib() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
image_bytes_read() {   # only reads of the image itself: pread64 on its descriptor after it was opened
    strace -f -e trace=openat,pread64,read -o "$WORK/strace" "$IMGTOOL" inspect --json "$1" >/dev/null 2>&1
    python3 - "$WORK/strace" "$1" <<'PY'
import re, sys
fds, total = set(), 0
for line in open(sys.argv[1]):
    m = re.search(r'openat\(AT_FDCWD, "([^"]+)".*= (\d+)$', line)
    if m and m.group(1) == sys.argv[2]:
        fds.add(m.group(2)); continue
    m = re.search(r'(?:pread64|read)\((\d+),.*= (\d+)$', line)
    if m and m.group(1) in fds:
        total += int(m.group(2))
print(total)
PY
}

python3 - "$WORK/times" "$RUNS" "$(peak_kib "$IMGTOOL" inspect --json "$BIG")" \
    "$(peak_kib sfdisk -J "$BIG")" "$(image_bytes_read "$SMALL")" "$(image_bytes_read "$BIG")" <<'EOF2'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    side, i, us = line.split()
    t.setdefault(side, {})[int(i)] = int(us) / 1000
runs, peak, peak_sfdisk, small, big = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
ratio = statistics.median(t["inspect"][i] / t["pipeline"][i] for i in t["inspect"])
print(f"inspect: {runs} runs per side on a 1 TiB sparse GPT image (4 partitions, ext4 on one), median wall time")
print(f"  sfdisk -J + blkid -p x4  {statistics.median(t['pipeline'].values()):7.2f} ms")
print(f"  imgtool inspect --json   {statistics.median(t['inspect'].values()):7.2f} ms   ratio {ratio:.2f}   (target <= 0.25)")
print(f"  peak memory: imgtool {peak / 1024:.1f} MiB (target < 25 MiB); sfdisk alone {peak_sfdisk / 1024:.1f} MiB")
print(f"  bytes of the image read: 1 GiB image {small}, 1 TiB image {big}   ({'same' if small == big else 'DIFFERENT'})")
EOF2

# The same disks as qcow2 files: what a cloud or VM user holds.
qemu-img convert -f raw -O qcow2 "$SMALL" "$WORK/small.qcow2"
qemu-img convert -f raw -O qcow2 "$BIG" "$WORK/big.qcow2"
QCOW2=$WORK/big.qcow2
if ! diff <("$IMGTOOL" inspect --json "$BIG" | grep -v '"image"') \
          <("$IMGTOOL" inspect --json "$QCOW2" | python3 -c 'import json,sys; d=json.load(sys.stdin); d["container"]=None; print(json.dumps(d,indent=2,sort_keys=True))' | grep -v '"image"') >/dev/null; then
    # The keys are sorted in both (imgtool sorts them); only the container differs.
    echo "inspect.sh: the qcow2's report differs from the raw image's" >&2
fi
converted() { qemu-img convert -f qcow2 -O raw "$1" "$WORK/converted.raw"; pipeline "$WORK/converted.raw"; rm -f "$WORK/converted.raw"; }
: >"$WORK/qtimes"
for (( i = 1; i <= RUNS; i++ )); do
    if (( i % 2 )); then order="inspect-qcow2 inspect-raw"; else order="inspect-raw inspect-qcow2"; fi
    for side in $order; do
        t0=$(now_us)
        if [[ $side == inspect-qcow2 ]]; then inspect "$QCOW2"; else inspect "$BIG"; fi
        t1=$(now_us)
        echo "$side $i $(( t1 - t0 ))" >>"$WORK/qtimes"
    done
done
# The alternatives take seconds: a few runs each.
for (( i = 1; i <= 3; i++ )); do
    t0=$(now_us); converted "$QCOW2"; t1=$(now_us); echo "convert $i $(( t1 - t0 ))" >>"$WORK/qtimes"
done
if command -v virt-filesystems >/dev/null; then
    export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
    for (( i = 1; i <= 3; i++ )); do
        t0=$(now_us); virt-filesystems --all --long --format=qcow2 -a "$QCOW2" >/dev/null 2>"$WORK/guestfs.err" || { echo "inspect.sh: virt-filesystems failed: $(tail -1 "$WORK/guestfs.err")" >&2; break; }; t1=$(now_us)
        echo "guestfs $i $(( t1 - t0 ))" >>"$WORK/qtimes"
    done
fi

python3 - "$WORK/qtimes" "$RUNS" "$(peak_kib "$IMGTOOL" inspect --json "$QCOW2")" \
    "$(image_bytes_read "$WORK/small.qcow2")" "$(image_bytes_read "$QCOW2")" <<'EOF3'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    side, i, us = line.split()
    t.setdefault(side, {})[int(i)] = int(us) / 1000
runs, peak, small, big = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ratio = statistics.median(t["inspect-qcow2"][i] / t["inspect-raw"][i] for i in t["inspect-qcow2"])
q = statistics.median(t["inspect-qcow2"].values())
print(f"inspect of the same 1 TiB disk as a qcow2: {runs} runs per side, median wall time")
print(f"  imgtool inspect --json, raw     {statistics.median(t['inspect-raw'].values()):9.2f} ms")
print(f"  imgtool inspect --json, qcow2   {q:9.2f} ms   ratio to raw {ratio:.2f}   (target <= 2.0)")
c = statistics.median(t["convert"].values())
print(f"  qemu-img convert + sfdisk + blkid x4   {c:9.2f} ms   ratio {q / c:.3f}")
if "guestfs" in t:
    g = statistics.median(t["guestfs"].values())
    print(f"  virt-filesystems --all --long (TCG)    {g:9.2f} ms   ratio {q / g:.4f}")
else:
    print("  virt-filesystems: not installed (libguestfs-tools), not measured")
print(f"  peak memory: imgtool {peak / 1024:.1f} MiB (target < 25 MiB)")
# The L1 table grows with the disk (8 bytes per 512 MiB with 64 KiB clusters): reading the far end's
# entries may take another 4 KiB page of it, whatever the size; anything more would grow with it.
print(f"  bytes of the qcow2 read: 1 GiB disk {small}, 1 TiB disk {big}   "
      f"({'same' if small == big else f'{big - small:+d}: L1 table pages' if 0 < big - small <= 3 * 4096 else 'DIFFERENT'})")
EOF3
