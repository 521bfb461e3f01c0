#!/bin/bash
# run.sh [SECONDS [LIBFUZZER FLAGS...]]: build the libFuzzer target for the ImgFormats parsers (MBR,
# GPT, boot code, GRUB core.img and its placement, FAT, PE, SYSLINUX/ISOLINUX, ISO 9660, GRUB legacy, the container
# readers, LVM, LUKS, the probe window, TableIdentity) and fuzz them for
# SECONDS (default 60); further arguments go to libFuzzer (for
# example -use_value_profile=1 or -jobs=4). Exits 1 on a crash, leaving the reproducer in .build/fuzz/; 2 on
# bad usage or a failed build. See README.md in this folder.
set -euo pipefail

seconds=${1:-60}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "usage: Fuzz/run.sh [SECONDS [LIBFUZZER FLAGS...]]" >&2; exit 2; }
shift $(( $# > 0 ? 1 : 0 ))

root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/.build/fuzz
fuzzer=$out/formats-fuzzer
corpus=$root/TestImages/corpus/formats
swiftc=$(command -v swiftc || echo /opt/swift/usr/bin/swiftc)
mkdir -p "$out"

# One module from the parser sources plus the entry point; lld because gold warns about ASan's
# local symbols. -g so a crash report has file:line. -I finds the CLzma, CZlib and CZstd module
# maps (core.img's decompression uses liblzma, package liblzma-dev; qcow2's and VMDK's
# compressed clusters zlib and zstd, packages zlib1g-dev and libzstd-dev).
echo "building $fuzzer"
"$swiftc" -parse-as-library -module-name FormatsFuzzer -package-name imgtool -sanitize=fuzzer,address -O -g -use-ld=lld \
    -I "$root/Sources/CLzma" -I "$root/Sources/CZlib" -I "$root/Sources/CZstd" -llzma -lz -lzstd \
    "$root"/Sources/ImgFormats/*.swift "$root/Fuzz/FormatsFuzzer.swift" -o "$fuzzer" || exit 2

# libFuzzer adds what it finds to its first corpus directory: work on a copy so the seeds in the
# repository stay as make-corpus.sh wrote them.
work=$(mktemp -d /tmp/imgtool-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$corpus"/* "$work"/
# The seeds taken from Debian's GRUB and SYSLINUX files are not in git; make-corpus.sh writes them.
"$root/TestImages/make-corpus.sh" "$work" >/dev/null
# A whole boot chain for GrubCoreDecoder: boot.img as shipped points at sector 1, and grub-mkimage's
# diskboot.img already lists the sectors after it, so boot.img followed by core.img is a valid disk.
grub=/usr/lib/grub/i386-pc
if command -v grub-mkimage >/dev/null && [[ -f $grub/boot.img ]]; then
    grub-mkimage -O i386-pc -d "$grub" -p '(,msdos1)/boot/grub' -o "$work/core.tmp" biosdisk part_msdos ext2
    cat "$grub/boot.img" "$work/core.tmp" > "$work/grub2-core-chain.bin"
    truncate -s %512 "$work/grub2-core-chain.bin"  # whole sectors, or the last blocklist sector is cut off
    rm "$work/core.tmp"
fi

# Containers as qemu-img writes them, each holding a small disk with data in a few places (small
# clusters keep the seeds small; VHD's 2 MiB blocks and VHDX's 1 MiB regions cannot be smaller).
if command -v qemu-img >/dev/null; then
    python3 - "$work/disk.tmp" <<'PY'
import sys
disk = bytearray(256 * 1024)
disk[510:512] = b"\x55\xaa"
disk[4096:4096 + 52] = b"imgtool fuzz seed, compressible text " + bytes(15)
disk[131072 - 100:131072 + 100] = bytes(range(200))
disk[-512:] = bytes((i * 7) & 0xFF for i in range(512))
open(sys.argv[1], "wb").write(disk)
PY
    while read -r name args; do
        # shellcheck disable=SC2086  # the options are words
        qemu-img convert -f raw $args "$work/disk.tmp" "$work/$name" 2>/dev/null || echo "qemu-img could not write $name" >&2
    done <<'FORMATS'
container-v2.qcow2 -O qcow2 -o compat=0.10,cluster_size=512
container-zlib.qcow2 -O qcow2 -c -o cluster_size=4096
container-zstd.qcow2 -O qcow2 -c -o cluster_size=4096,compression_type=zstd
container-l2.qcow2 -O qcow2 -o cluster_size=16384,extended_l2=on
container-sparse.vmdk -O vmdk
container-stream.vmdk -O vmdk -o subformat=streamOptimized
container-dynamic.vhd -O vpc -o force_size=on
container-fixed.vhd -O vpc -o subformat=fixed,force_size=on
container-disk.vhdx -O vhdx -o block_size=1M,log_size=1M
FORMATS
    rm "$work/disk.tmp"
fi

# Swift's own crash handler would symbolicate for many seconds before libFuzzer saves the input.
symbolizer=$(dirname "$swiftc")/llvm-symbolizer
log=$out/last-run.log
set +e
SWIFT_BACKTRACE=enable=no ASAN_SYMBOLIZER_PATH=$symbolizer \
    "$fuzzer" "$work" -max_total_time="$seconds" -rss_limit_mb=512 -timeout=5 \
    -artifact_prefix="$out/" -print_final_stats=1 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

if (( status != 0 )); then
    reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "fuzzer failed (exit $status); log: $log" >&2
    if [[ -n $reproducer ]]; then
        echo "reproducer: $reproducer (replay: $fuzzer $reproducer)" >&2
    fi
    exit 1
fi
echo "no crash in ${seconds}s; corpus grew from $(ls "$corpus" | wc -l) to $(ls "$work" | wc -l) inputs"
