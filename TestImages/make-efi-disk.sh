#!/bin/bash
# make-efi-disk.sh: build a UEFI test disk reproducibly, with no root and no loop device: a GPT
# image whose EFI system partition (FAT16, made by mkfs.fat --invariant at a sector offset) holds
# a GRUB x86_64-efi image from grub-mkimage, its modules and a grub.cfg, copied in with mtools.
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: make-efi-disk.sh OUT.img [options]
  --loader-dir DIR      where the GRUB image goes on the ESP (default EFI/BOOT, as BOOTX64.EFI;
                        any other directory gets grubx64.efi, as grub-install without --removable)
  --prefix PREFIX       GRUB's prefix (default /EFI/BOOT: the ESP it was loaded from)
  --modules "M ..."     modules built into the image (default "part_gpt fat")
  --no-normal-mod       leave x86_64-efi/normal.mod out of the prefix directory
  --no-config           no grub.cfg
  --garbage-loader      BOOTX64.EFI is 64 KiB of text, not a PE image
  --cyclic-loader       BOOTX64.EFI's cluster chain loops back on itself
EOF
    exit 2
}
die() { echo "make-efi-disk.sh: $*" >&2; exit 2; }
export SOURCE_DATE_EPOCH=1700000000 LC_ALL=C TZ=UTC MTOOLS_SKIP_CHECK=1

[[ $# -ge 1 && $1 != -* ]] || usage
OUT=$1; shift
DIR=EFI/BOOT PREFIX=/EFI/BOOT MODULES="part_gpt fat" NORMAL=1 CONFIG=1 GARBAGE=0 CYCLIC=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --loader-dir) DIR=${2:?}; shift 2 ;;
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --modules) MODULES=${2:?}; shift 2 ;;
        --no-normal-mod) NORMAL=0; shift ;;
        --no-config) CONFIG=0; shift ;;
        --garbage-loader) GARBAGE=1; shift ;;
        --cyclic-loader) CYCLIC=1; shift ;;
        *) usage ;;
    esac
done
for tool in sgdisk mkfs.fat mcopy grub-mkimage; do
    command -v $tool >/dev/null || die "needs $tool (apt-get install gdisk dosfstools mtools grub-common)"
done
[[ -d /usr/lib/grub/x86_64-efi ]] || die "needs GRUB's x86_64-efi modules (apt-get install grub-efi-amd64-bin)"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
IMG=$TMP/disk.img
ESP_START=2048 ESP_SECTORS=65536   # 32 MiB: FAT16
truncate -s 64M "$IMG"
sgdisk -U 494D4754-0000-4000-8000-000000000000 \
    -n 1:$ESP_START:+$ESP_SECTORS -t 1:ef00 -u 1:494D4754-0000-4000-8000-000000000001 \
    -n 2:0:0 -t 2:8300 -u 2:494D4754-0000-4000-8000-000000000002 "$IMG" >/dev/null
# mkfs.fat warns that the file is larger than the filesystem; that is the point of --offset.
mkfs.fat -F 16 --invariant -n ESP --offset $ESP_START "$IMG" $(( ESP_SECTORS / 2 )) >/dev/null 2>&1
ESP="$IMG@@$(( ESP_START * 512 ))"

if (( GARBAGE )); then
    for _ in $(seq 4096); do echo 'not a PE image'; done > "$TMP/loader.efi"
else
    # shellcheck disable=SC2086  # the module list is words
    grub-mkimage -O x86_64-efi -p "$PREFIX" -o "$TMP/loader.efi" $MODULES
fi
name=BOOTX64.EFI
[[ $DIR == EFI/BOOT ]] || name=grubx64.efi
mmd -i "$ESP" ::/EFI
[[ $DIR == EFI/BOOT ]] || mmd -i "$ESP" ::/EFI/BOOT
mmd -i "$ESP" "::/$DIR"
mcopy -i "$ESP" "$TMP/loader.efi" "::/$DIR/$name"

# Modules and grub.cfg where the prefix points, when that is on the ESP.
if [[ $PREFIX == /* ]]; then
    mmd -i "$ESP" "::$PREFIX/x86_64-efi" 2>/dev/null || { mmd -i "$ESP" "::$PREFIX" && mmd -i "$ESP" "::$PREFIX/x86_64-efi"; }
    mkdir "$TMP/mods"
    cp /usr/lib/grub/x86_64-efi/*.mod /usr/lib/grub/x86_64-efi/*.lst "$TMP/mods/"
    (( NORMAL )) || rm "$TMP/mods/normal.mod"
    mcopy -i "$ESP" "$TMP"/mods/* "::$PREFIX/x86_64-efi/"
    if (( CONFIG )); then
        printf 'set timeout=30\nmenuentry "Alpha" { echo alpha }\nmenuentry "Beta" { echo beta }\n' > "$TMP/grub.cfg"
        mcopy -i "$ESP" "$TMP/grub.cfg" "::$PREFIX/grub.cfg"
    fi
fi

if (( CYCLIC )); then
    # Point the loader's second cluster back at its first in both FATs: a chain with no end.
    python3 - "$IMG" "$ESP_START" "/$DIR/$name" <<'EOF'
import struct, sys
img, start = sys.argv[1], int(sys.argv[2]) * 512
f = open(img, "r+b")
f.seek(start); boot = f.read(512)
per_sector, per_cluster, reserved, fats, root_entries = struct.unpack_from("<HBHBH", boot, 11)
fat_sectors = struct.unpack_from("<H", boot, 22)[0]
root = start + (reserved + fats * fat_sectors) * per_sector
# The loader is the first file mcopy wrote into its directory; find its first cluster by name.
def entries(offset, count):
    f.seek(offset)
    data = f.read(count * 32)
    return [data[i:i + 32] for i in range(0, len(data), 32)]
data_start = root + root_entries * 32
def cluster_offset(c): return data_start + (c - 2) * per_cluster * per_sector
directory = entries(root, root_entries)
for part in sys.argv[3].strip("/").split("/"):
    short = part.upper().split(".")
    name = short[0].ljust(8)[:8] + (short[1] if len(short) > 1 else "").ljust(3)[:3]
    entry = next(e for e in directory if e[0:11].decode("ascii", "replace") == name)
    first = struct.unpack_from("<H", entry, 26)[0]
    directory = entries(cluster_offset(first), per_cluster * per_sector // 32)
for copy in range(fats):
    f.seek(start + (reserved + copy * fat_sectors) * per_sector + 2 * (first + 1))
    f.write(struct.pack("<H", first))
EOF
fi
mv "$IMG" "$OUT"
