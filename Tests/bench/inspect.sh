#!/bin/bash
# Benchmark for `make bench`: `imgtool inspect --json` on a 1 TiB sparse GPT image (four partitions,
# ext4 on one) against what a user would otherwise run: `sfdisk -J` plus `blkid -p` on each
# partition (offsets known beforehand, so the pipeline pays for nothing else). Alternating, in one
# run. Also peak memory, and bytes read on a 1 GiB and a 1 TiB image (they must not grow).
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
