#!/bin/bash
# make-esp-disk.sh: build a disk image with an EFI system partition and no bootloader, for
# install-grub's UEFI and hybrid installs; reproducibly, with no root and no loop device.
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: make-esp-disk.sh OUT.img [options]
  --label gpt|dos       partition table (default gpt); dos: the ESP has type 0xEF
  --boot ext2|ext3|ext4|esp
                        where /boot/grub goes (default ext4: a Linux partition after the ESP;
                        esp: no other partition, /boot/grub on the ESP)
  --bios-boot           gpt: a 1 MiB BIOS boot partition (EF02) first, for hybrid installs
  --esp-mib N           the ESP's size (default 64)
  --esp-fs vfat|ext4    what the ESP holds (default vfat; ext4 for the refusal tests)
  --marker TEXT         a grub.cfg in /boot/grub that prints TEXT on the serial console and halts
  --size-mib N          image size (default 160)
  --sector-size 512|4096  the logical sector size the GPT is laid out for (default 512; 4096: the
                        table by sfdisk --sector-size, FAT with 4096-byte sectors; GPT only)
Layout: [BIOS boot 2048-4095,] ESP at the next MiB, [Linux (ext4, label boot) to the end].
Fixed identifiers as make-disk.sh's; FAT volume id 494D4754, label ESP.
EOF
    exit 2
}
die() { echo "make-esp-disk.sh: $*" >&2; exit 2; }

readonly DOS_ID=0x494d4754 GUID_PREFIX=494D4754-0000-4000-8000-00000000000
readonly FS_UUID=494d4754-0000-4000-8000-0000000000f5 HASH_SEED=494d4754-0000-4000-8000-0000000000a5
export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000 LC_ALL=C TZ=UTC MTOOLS_SKIP_CHECK=1

[[ $# -ge 1 && $1 != -* ]] || usage
OUT=$1; shift
LABEL=gpt BOOT=ext4 BIOS=0 ESP_MIB=64 ESP_FS=vfat MARKER='' HAVE_MARKER=0 SIZE_MIB=160 SECTOR=512
while [[ $# -gt 0 ]]; do
    case $1 in
        --label) LABEL=${2:?}; shift 2 ;;
        --boot) BOOT=${2:?}; shift 2 ;;
        --bios-boot) BIOS=1; shift ;;
        --esp-mib) ESP_MIB=${2:?}; shift 2 ;;
        --esp-fs) ESP_FS=${2:?}; shift 2 ;;
        --marker) MARKER=${2:?}; HAVE_MARKER=1; shift 2 ;;
        --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
        --sector-size) SECTOR=${2:?}; shift 2 ;;
        *) usage ;;
    esac
done
case $LABEL in gpt|dos) ;; *) die "--label must be gpt or dos" ;; esac
case $BOOT in ext2|ext3|ext4|esp) ;; *) die "--boot must be ext2, ext3, ext4 or esp" ;; esac
case $ESP_FS in vfat|ext4) ;; *) die "--esp-fs must be vfat or ext4" ;; esac
[[ $ESP_MIB =~ ^[1-9][0-9]*$ && $SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "sizes must be positive integers"
(( BIOS )) && [[ $LABEL != gpt ]] && die "--bios-boot applies to --label gpt only"
case $SECTOR in 512) ;; 4096) [[ $LABEL == gpt ]] || die "--sector-size 4096 applies to --label gpt only" ;; *) die "--sector-size must be 512 or 4096" ;; esac
[[ $MARKER == *[\"\$\\]* || $MARKER == *$'\n'* ]] && die "--marker must be without \", \$, \\ or newlines"

ESP_START=$(( BIOS ? 4096 : 2048 )) ESP_SECTORS=$(( ESP_MIB * 2048 ))
BOOT_START=$(( ESP_START + ESP_SECTORS ))
GPT_TAIL=0; [[ $LABEL == gpt ]] && GPT_TAIL=$(( SECTOR == 512 ? 33 : 40 + 7 ))   # the backup header and entries, in 512-byte units
LAST=$(( SIZE_MIB * 2048 - 1 - GPT_TAIL ))
[[ $BOOT == esp ]] || (( LAST - BOOT_START >= 16 * 2048 )) || die "no room for a 16 MiB /boot after the ESP; raise --size-mib"

TMP=$(mktemp "$OUT.XXXXXX")
trap 'rm -f "$TMP"' EXIT
truncate -s "${SIZE_MIB}M" "$TMP"
if [[ $SECTOR == 4096 ]]; then
    # Neither sgdisk nor sfdisk lays a file out for 4096-byte sectors (they take the file's 512), so
    # the table is written field by field: protective MBR, header at LBA 1, 128 entries from LBA 2,
    # their backup before the backup header in the last LBA; LBAs of 4 KiB, CRC32s as GPT has them.
    parts=()
    (( BIOS )) && parts+=("21686148-6449-6E6F-744E-656564454649 2048 2048 bios")
    parts+=("C12A7328-F81F-11D2-BA4B-00A0C93EC93B $ESP_START $ESP_SECTORS esp")
    [[ $BOOT != esp ]] && parts+=("0FC63DAF-8483-4772-8E79-3D69D8477DE4 $BOOT_START $(( LAST + 1 - BOOT_START )) boot")
    python3 - "$TMP" "$GUID_PREFIX" "${parts[@]}" <<'PY'
import struct, sys, uuid, zlib
path, prefix, parts = sys.argv[1], sys.argv[2], sys.argv[3:]
ss, count = 4096, 128
f = open(path, "r+b")
f.seek(0, 2)
lbas = f.tell() // ss
def guid(text): return uuid.UUID(text).bytes_le
array = bytearray(count * 128)
for i, p in enumerate(parts):
    type_, start, sectors, name = p.split()
    first, n = int(start) * 512 // ss, int(sectors) * 512 // ss   # 512-byte units to 4 KiB LBAs
    struct.pack_into("<16s16sQQQ72s", array, i * 128, guid(type_), guid(prefix + "%X" % (i + 1)), first, first + n - 1, 0,
                     name.encode("utf-16-le"))
entry_lbas = len(array) // ss
first_usable, last_usable = 2 + entry_lbas, lbas - 2 - entry_lbas
def header(lba, alternate, entries):
    h = bytearray(92)
    struct.pack_into("<8sIIIIQQQQ16sQIII", h, 0, b"EFI PART", 0x10000, 92, 0, 0, lba, alternate, first_usable, last_usable,
                     guid(prefix + "0"), entries, count, 128, zlib.crc32(array))
    struct.pack_into("<I", h, 16, zlib.crc32(h))
    f.seek(lba * ss); f.write(h)
mbr = bytearray(512)
struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\x00\x02\x00", 0xEE, b"\xfe\xff\xff", 1, min(lbas - 1, 0xFFFFFFFF))
mbr[510:512] = b"\x55\xaa"
f.seek(0); f.write(mbr)
f.seek(2 * ss); f.write(array)
f.seek((lbas - 1 - entry_lbas) * ss); f.write(array)
header(1, lbas - 1, 2)
header(lbas - 1, 1, lbas - 1 - entry_lbas)
PY
elif [[ $LABEL == gpt ]]; then
    args=(-a 1 -U "${GUID_PREFIX}0")
    n=1
    if (( BIOS )); then args+=(-n "$n:2048:4095" -t "$n:ef02" -c "$n:bios" -u "$n:$GUID_PREFIX$n"); n=$(( n + 1 )); fi
    args+=(-n "$n:$ESP_START:$(( BOOT_START - 1 ))" -t "$n:ef00" -c "$n:esp" -u "$n:$GUID_PREFIX$n")
    ESP_NUMBER=$n
    if [[ $BOOT != esp ]]; then n=$(( n + 1 )); args+=(-n "$n:$BOOT_START:$LAST" -t "$n:8300" -c "$n:boot" -u "$n:$GUID_PREFIX$n"); fi
    sgdisk "${args[@]}" "$TMP" >/dev/null
else
    { echo "label: dos"; echo "label-id: $DOS_ID"; echo "start=$ESP_START, size=$ESP_SECTORS, type=ef"
      [[ $BOOT != esp ]] && echo "start=$BOOT_START, type=83, bootable"; } | sfdisk -q "$TMP" >/dev/null
    ESP_NUMBER=1
fi
: "${ESP_NUMBER:=$(( BIOS ? 2 : 1 ))}"

CFG=$(mktemp)
trap 'rm -f "$TMP" "$CFG"' EXIT
(( HAVE_MARKER )) && printf 'serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\necho "%s"\nhalt\n' "$MARKER" >"$CFG"
chmod 0644 "$CFG"

if [[ $ESP_FS == vfat ]]; then
    # --offset counts the -S sectors; the block count is in KiB.
    mkfs.fat --invariant -i 494D4754 -n ESP -S "$SECTOR" --offset $(( ESP_START * 512 / SECTOR )) "$TMP" $(( ESP_SECTORS / 2 )) >/dev/null 2>&1
else
    mke2fs -q -F -t ext4 -L esp -E "offset=$(( ESP_START * 512 )),root_owner=0:0" "$TMP" "$(( ESP_SECTORS / 2 ))k"
fi
if [[ $BOOT == esp ]] && (( HAVE_MARKER )); then
    [[ $ESP_FS == vfat ]] || die "--boot esp needs --esp-fs vfat"
    mmd -i "$TMP@@$(( ESP_START * 512 ))" ::/boot ::/boot/grub
    mcopy -i "$TMP@@$(( ESP_START * 512 ))" "$CFG" ::/boot/grub/grub.cfg
fi
if [[ $BOOT != esp ]]; then
    OFF=$(( BOOT_START * 512 ))
    # A filesystem's blocks are never smaller than the disk's sectors, or the kernel cannot mount it.
    mke2fs -q -F -t "$BOOT" -b $(( SECTOR == 4096 ? 4096 : 1024 )) -L boot -U "$FS_UUID" -E "offset=$OFF,hash_seed=$HASH_SEED,root_owner=0:0" \
        "$TMP" "$(( (LAST + 1 - BOOT_START) / 2 ))k"
    cmds='mkdir /boot\nmkdir /boot/grub\n'
    (( HAVE_MARKER )) && cmds+="write $CFG /boot/grub/grub.cfg\n"
    printf '%b' "$cmds" | debugfs -w -f - "$TMP?offset=$OFF" >/dev/null 2>&1 || true
    debugfs -R 'stat /boot/grub' "$TMP?offset=$OFF" 2>/dev/null | grep -q 'Type: directory' ||
        { echo "make-esp-disk.sh: writing /boot/grub with debugfs failed" >&2; exit 1; }
fi
mv -f "$TMP" "$OUT"
: "$ESP_NUMBER"
