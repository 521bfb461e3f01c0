#!/bin/bash
# make-corpus.sh: write the seed corpus for Fuzz/run.sh (the MBR, GPT, boot-code, core.img, FAT, PE,
# SYSLINUX patch area, ISOLINUX boot info table, ISO 9660, GRUB legacy and JSON parsers).
#
#   TestImages/make-corpus.sh [OUTDIR]      (default: TestImages/corpus/formats)
#
# Every seed is built field by field at its documented offset (python3's struct and zlib.crc32), with
# fixed GUIDs, so the same script gives the same bytes. Seeds are tiny images (at most 20 KiB):
# the fuzzer mutates them, and small inputs mean more executions per second. The GRUB 2 seed is
# Debian's boot.img (grub-pc-bin); the SYSLINUX ones are gptmbr.bin (syslinux-common), an installed
# ldlinux.sys (syslinux) and isolinux.bin (isolinux), each skipped with a note when absent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus/formats}
mkdir -p "$out"
command -v python3 >/dev/null || { echo "make-corpus.sh: needs python3" >&2; exit 2; }

# What an isolated VM's guest answers (IsolatedRequest): nesting, escapes, every number kind, null.
printf '%s' '{"result": {"image": "/i.img", "seconds": 0.25, "modules": ["part_gpt", "caf\u00e9\n"], "n": -12, "big": 18446744073709551615, "e": 1e-3, "z": null, "t": [true, false, {}]}}' \
    > "$out/json-isolated-response.bin"
# The same document framed as the guest sends it (ResponseFrame): a data frame, then the result.
{ printf 'data 5\n\0\1\2\n\377'; printf 'result %d\n' "$(wc -c < "$out/json-isolated-response.bin")"; cat "$out/json-isolated-response.bin"; } \
    > "$out/framed-isolated-response.bin"

python3 - "$out" <<'EOF'
import os, struct, sys, uuid, zlib

out = sys.argv[1]

def guid(text):
    # GPT stores the first three groups little-endian: uuid's bytes_le is exactly that order.
    return uuid.UUID(text).bytes_le

BIOS_BOOT = guid("21686148-6449-6E6F-744E-656564454649")
LINUX = guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
DISK = guid("494D4754-0000-4000-8000-000000000000")
def part_guid(n): return guid("494D4754-0000-4000-8000-00000000000%X" % n)

def image(sectors, sector_size=512):
    return bytearray(sectors * sector_size)

def mbr_entry(img, slot, type_, start, count, boot=False, lba=0):
    base = lba * 512 + 446 + 16 * slot
    struct.pack_into("<B3sB3sII", img, base, 0x80 if boot else 0, b"\xfe\xff\xff", type_, b"\xfe\xff\xff", start, count)
    img[lba * 512 + 510:lba * 512 + 512] = b"\x55\xaa"

def gpt(img, ss, entries, count, first_usable, last_usable, backup_header=None, backup_entries=None):
    """Protective MBR, primary header at LBA 1, array at LBA 2; backup only when asked for."""
    sectors = len(img) // ss
    mbr_entry(img, 0, 0xEE, 1, min(sectors - 1, 0xFFFFFFFF))
    array = bytearray(count * 128)
    for i, (type_, first, last, name) in enumerate(entries):
        struct.pack_into("<16s16sQQQ72s", array, i * 128, type_, part_guid(i + 1), first, last, 0,
                         name.encode("utf-16-le"))
    def header(lba, alternate, entries_lba):
        h = bytearray(92)
        struct.pack_into("<8sIIIIQQQQ16sQIII", h, 0, b"EFI PART", 0x10000, 92, 0, 0, lba, alternate,
                         first_usable, last_usable, DISK, entries_lba, count, 128, zlib.crc32(array))
        struct.pack_into("<I", h, 16, zlib.crc32(h))
        img[lba * ss:lba * ss + 92] = h
    # Without a backup, the primary still points at the last sector, as a truncated image would.
    header(1, backup_header if backup_header is not None else sectors - 1, 2)
    img[2 * ss:2 * ss + len(array)] = array
    if backup_header is not None:
        img[backup_entries * ss:backup_entries * ss + len(array)] = array
        header(backup_header, 1, backup_entries)

def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes(data))

# dos: a primary and an extended partition with three logicals behind a forward EBR chain.
# Sectors: 1 primary; 2..7 extended, with EBRs at 2, 4, 6 each followed by a one-sector logical.
img = image(8)
struct.pack_into("<I", img, 440, 0x494D4754)
mbr_entry(img, 0, 0x83, 1, 1, boot=True)
mbr_entry(img, 1, 0x0F, 2, 6)
for ebr, nxt in ((2, 4), (4, 6), (6, None)):
    mbr_entry(img, 0, 0x83, 1, 1, lba=ebr)  # logical: relative to its EBR
    if nxt:
        mbr_entry(img, 1, 0x05, nxt - 2, 2, lba=ebr)  # link: relative to the extended start
write("mbr-ebr-chain.bin", img)

# dos: an EBR chain that links back to itself (the parser must stop).
img = image(4)
mbr_entry(img, 0, 0x05, 2, 2)
mbr_entry(img, 0, 0x83, 1, 1, lba=2)
mbr_entry(img, 1, 0x05, 0, 2, lba=2)
write("mbr-ebr-loop.bin", img)

# gpt: the usual 128-entry array in a 40-sector image; no backup (the header says where it would be).
img = image(40)
gpt(img, 512, [(BIOS_BOOT, 34, 35, "bios"), (LINUX, 36, 39, "boot")], 128, 34, 39)
write("gpt-128-entries.bin", img)

# gpt: 4 entries (one sector of array) with a complete backup, so mutations reach the fallback.
img = image(10)
gpt(img, 512, [(BIOS_BOOT, 3, 4, "bios"), (LINUX, 5, 7, "boot")], 4, 3, 7, backup_header=9, backup_entries=8)
write("gpt-4-entries.bin", img)

# gpt with 4096-byte sectors: header at byte 4096, array at 8192; the image stops after the array.
img = bytearray(2 * 4096 + 512)
gpt(img, 4096, [(LINUX, 3, 5, "data")], 4, 3, 5)
write("gpt-4k-sectors.bin", img)

# hybrid MBR: the 4-entry GPT plus an MBR entry that mirrors partition 2.
img = image(10)
gpt(img, 512, [(BIOS_BOOT, 3, 4, "bios"), (LINUX, 5, 7, "boot")], 4, 3, 7, backup_header=9, backup_entries=8)
mbr_entry(img, 1, 0x83, 5, 3, boot=True)
write("gpt-hybrid-mbr.bin", img)

# GRUB legacy 0.97 stage1: jump, version 3.2 at 0x3E, boot drive, stage2 sector 1, messages.
img = image(1)
img[0:3] = b"\xeb\x48\x90"
struct.pack_into("<BBBBHIH", img, 0x3E, 3, 2, 0xFF, 0, 0x8000, 1, 0x0800)
img[0x4A:0x50] = b"\xfa\xeb\x03\x31\xc0\x8e"
msgs = b"GRUB \0Geom\0Hard Disk\0Read\0 Error\0"
img[0x17B:0x17B + len(msgs)] = msgs
mbr_entry(img, 0, 0x83, 63, 1000, boot=True)
write("grub-legacy-stage1.bin", img)

# No boot code: a zeroed sector.
write("zeroed.bin", image(1))

# GRUB legacy's whole chain (GRUB 0.97 stage1.h, start.S, asm.S): stage1 with stage2 at sector 1 and
# address 0x8000; the start sector ("push dx; push si; mov si, ...", "mov di, 0x81F8", its message and
# one blocklist entry {sector 2, 1 sector, segment 0x0820}); stage2's header (3.2, id 0, version,
# config file).
img = image(3)
img[0:3] = b"\xeb\x48\x90"
struct.pack_into("<BBBBHIH", img, 0x3E, 3, 2, 0xFF, 0, 0x8000, 1, 0x0800)
img[0x17B:0x17B + len(msgs)] = msgs
mbr_entry(img, 0, 0x83, 63, 1000, boot=True)
start = 512
img[start:start + 3] = b"\x52\x56\xbe"
img[start + 9] = 0xBF
struct.pack_into("<H", img, start + 10, 0x8000 + 0x1F8)
img[start + 0x160:start + 0x160 + 15] = b"Loading stage2\0"
struct.pack_into("<IHH", img, start + 0x1F8, 2, 1, 0x0820)
header = 1024
img[header + 6:header + 8] = b"\x03\x02"
img[header + 0x10] = 0
text = b"0.97\0/boot/grub/menu.lst\0"
img[header + 0x12:header + 0x12 + len(text)] = text
write("grub-legacy-chain.bin", img)

# An ldlinux.sys shape (SYSLINUX 6 libinstaller/syslxint.h): struct patch_area at 0x10 (magic, data
# sectors 3, checksum over all 384 words), struct ext_patch_area at 0x40 (current directory at 0x80,
# a sector map of 4 entries at 0x100 of which 2 are used, boot sector pointers at 0x1E0/0x1E4), the
# banner, and the checksum field set so that the words sum to LDLINUX_MAGIC.
MAGIC = 0x3EB202FE
img = bytearray(3 * 512)
img[0:2] = b"\xeb\x3c"
struct.pack_into("<IIHHIIHH", img, 0x10, MAGIC, 0x12345678, 3, 2, 384, 0, 0xFFFF, 0x40)
struct.pack_into("<HHHHHHHHHH", img, 0x40, 0, 0x80, 64, 0, 0, 0x100, 4, 0x1E0, 0x1E4, 0)
img[0x80:0x80 + 15] = b"/boot/syslinux\0"
struct.pack_into("<QH", img, 0x100, 100, 1)
struct.pack_into("<QH", img, 0x10A, 200, 1)
img[600:614] = b"SYSLINUX 6.04 "
rest = sum(struct.unpack_from("<384I", img, 0)) & 0xFFFFFFFF
struct.pack_into("<I", img, 0x10 + 16, (MAGIC - rest) & 0xFFFFFFFF)
write("syslinux-patch-area.bin", img)

# ISO 9660 (ECMA-119: both-endian fields, 2048-byte blocks). dirrec() is one directory record.
def dirrec(name, block, size, directory):
    n = len(name)
    rec = bytearray(33 + n + (1 - n % 2))
    struct.pack_into("<BBIIII7sBBBHHB", rec, 0, len(rec), 0, block, 0, size, 0, bytes(7),
                     2 if directory else 0, 0, 0, 1, 0, n)
    struct.pack_into(">I", rec, 6, block)
    struct.pack_into(">I", rec, 14, size)
    struct.pack_into(">H", rec, 30, 1)
    rec[33:33 + n] = name
    return bytes(rec)

def directory(block, parent, entries):
    data = dirrec(b"\0", block, 2048, True) + dirrec(b"\1", parent, 2048, True) + b"".join(entries)
    return data + bytes(2048 - len(data))

def pvd(blocks, root):
    d = bytearray(2048)
    d[0:7] = b"\x01CD001\x01"
    struct.pack_into("<I", d, 80, blocks)
    struct.pack_into(">I", d, 84, blocks)
    d[156:156 + 34] = dirrec(b"\0", root, 2048, True)
    return bytes(d)

def iso_tree(first, files):
    """Blocks from `first`: the root (with ISOLINUX/), ISOLINUX/ (with `files`), one data block."""
    root, sub, data = first, first + 1, first + 2
    out = directory(root, root, [dirrec(b"ISOLINUX", sub, 2048, True)])
    out += directory(sub, root, [dirrec(name.encode() + b";1", data, size, False) for name, size in files])
    return out

# A volume whose descriptor is at block 0, so the smallest inputs reach its directories.
tree = iso_tree(1, [("ISOLINUX.CFG", 11), ("LDLINUX.C32", 0)])
data = b"PROMPT 1\n\n" + bytes(2038)
write("iso9660-volume.bin", pvd(4, 1) + tree + data)

# An isohybrid image as isohdpfx.bin and xorriso leave it: sector 0 points at isolinux.bin (sector
# 16 = block 4); isolinux.bin has the hybrid signature at 64 and a boot info table (descriptor at
# block 1, itself at block 4, 2048 bytes, its checksum); blocks 2-3 are the directories.
mbr = bytearray(2048)
struct.pack_into("<Q", mbr, 0x1B0, 16)
mbr[510:512] = b"\x55\xaa"
isolinux = bytearray(2048)
isolinux[0:4] = b"\xfa\xe9\x00\x00"
struct.pack_into("<I", isolinux, 0x40, 0x7078C0FB)
isolinux[100:114] = b"ISOLINUX 6.04 "
struct.pack_into("<III", isolinux, 8, 1, 4, 2048)
struct.pack_into("<I", isolinux, 20, sum(struct.unpack_from("<496I", isolinux, 64)) & 0xFFFFFFFF)
tree = iso_tree(2, [("ISOLINUX.BIN", 2048), ("ISOLINUX.CFG", 11), ("LDLINUX.C32", 0)])
write("isohybrid.bin", mbr + pvd(5, 2) + tree + isolinux)

# An Apple partition map as parted writes it: the driver descriptor ("ER", 512-byte blocks), then
# the map's own entry, an HFS partition and free space ("PM" entries, big-endian).
apm = bytearray(4 * 512)
apm[0:4] = b"ER\x02\x00"
for i, (start, count, name, kind) in enumerate([(1, 63, b"Apple", b"Apple_partition_map"),
                                                (64, 1984, b"untitled", b"Apple_HFS"), (2048, 100, b"", b"Apple_Free")]):
    base = (i + 1) * 512
    struct.pack_into(">2sHIII", apm, base, b"PM", 0, 3, start, count)
    apm[base + 16:base + 16 + len(name)] = name
    apm[base + 48:base + 48 + len(kind)] = kind
write("apm-map.bin", apm)

# A BSD disklabel in an OpenBSD slice (0xA6) at sector 1: the label in the slice's sector 1, with
# both magic numbers, three partitions (one the raw slice) and its XOR checksum.
bsd = bytearray(8 * 512)
struct.pack_into("<B3sB3sII", bsd, 446, 0x80, b"\xfe\xff\xff", 0xA6, b"\xfe\xff\xff", 1, 7)
bsd[510:512] = b"\x55\xaa"
label = bytearray(512)
struct.pack_into("<I", label, 0, 0x82564557); struct.pack_into("<I", label, 132, 0x82564557)
parts = [(3, 3, 7), (2, 6, 1), (7, 1, 0)]
struct.pack_into("<H", label, 138, len(parts))
for i, (size, off, fs) in enumerate(parts): struct.pack_into("<IIIB", label, 148 + 16 * i, size, off, 0, fs)
x = 0
for i in range(0, 148 + 16 * len(parts), 2): x ^= struct.unpack_from("<H", label, i)[0]
struct.pack_into("<H", label, 136, x)
bsd[1024:1536] = label
write("mbr-bsd-label.bin", bsd)

# Container headers as qemu-img writes them, cut to what identify reads: a qcow2 v3 with a zstd
# compression type and a backing file name, a VMDK sparse extent with its embedded descriptor, and
# a dynamic VHD (footer copy, dynamic header, footer).
qcow = bytearray(512)
struct.pack_into(">4sIQIIQI", qcow, 0, b"QFI\xfb", 3, 112, 8, 16, 64 << 20, 0)
struct.pack_into(">QQQII", qcow, 72, 1 << 3, 0, 0, 4, 112)
qcow[104] = 1
qcow[112:120] = b"base.img"
write("qcow2-header.bin", qcow)
vmdk = bytearray(2 * 512)
struct.pack_into("<4sIIQQQQ", vmdk, 0, b"KDMV", 3, 3, 131072, 128, 1, 1)
struct.pack_into("<H", vmdk, 77, 1)
vmdk[512:] = b'# Disk DescriptorFile\nversion=1\ncreateType="streamOptimized"\nRW 131072 SPARSE "x.vmdk"\n'.ljust(512, b"\0")
write("vmdk-sparse-header.bin", vmdk)
footer = bytearray(512)
struct.pack_into(">8sIIQ", footer, 0, b"conectix", 2, 0x10000, 512)
struct.pack_into(">QQ", footer, 40, 64 << 20, 64 << 20)
struct.pack_into(">I", footer, 60, 3)
dyn = bytearray(1024)
struct.pack_into(">8sQQII", dyn, 0, b"cxsparse", 0xFFFFFFFFFFFFFFFF, 1536, 0x10000, 32)
struct.pack_into(">I", dyn, 32, 2 << 20)
write("vhd-dynamic.bin", footer + dyn + bytes(128) + footer)

# An LVM2 physical volume as pvcreate and vgcreate write it: the label in sector 1, the PV header
# with one data area and one metadata area at 4096, whose header points at the text metadata of a
# volume group with a linear and a two-segment logical volume.
lvm = bytearray(16384)
lvm[512:520] = b"LABELONE"
struct.pack_into("<QII8s", lvm, 520, 1, 0, 32, b"LVM2 001")
pvh = 512 + 32
lvm[pvh:pvh + 32] = b"TpMSoDbdUVOFCPE4paik1Sw0sGGofWx5"
struct.pack_into("<Q", lvm, pvh + 32, 64 << 20)
struct.pack_into("<QQQQQQQQ", lvm, pvh + 40, 1 << 20, 0, 0, 0, 4096, 8192, 0, 0)
text = (b'vgtest {\nid = "WHB0wg"\nseqno = 3\nextent_size = 8192\nphysical_volumes {\npv0 {\n'
        b'id = "TpMSoD-bdUV-OFCP-E4pa-ik1S-w0sG-GofWx5"\npe_start = 2048\npe_count = 15\n}\n}\n'
        b'logical_volumes {\nroot {\nid = "jXvU3t"\nsegment_count = 2\n'
        b'segment1 {\nstart_extent = 0\nextent_count = 6\ntype = "striped"\nstripe_count = 1\nstripes = [\n"pv0", 0\n]\n}\n'
        b'segment2 {\nstart_extent = 6\nextent_count = 2\ntype = "striped"\nstripe_count = 1\nstripes = [\n"pv0", 8\n]\n}\n}\n'
        b'swap {\nid = "aiVOJ9"\nsegment1 {\nstart_extent = 0\nextent_count = 2\ntype = "striped"\nstripe_count = 1\nstripes = ["pv0", 6]\n}\n}\n}\n}\n'
        b'# Generated by LVM2\ncontents = "Text Format Volume Group"\nversion = 1\n')
mda = 4096
lvm[mda + 4:mda + 20] = b" LVM2 x[5A%r0N*>"
struct.pack_into("<IQQQQII", lvm, mda + 20, 1, 4096, 8192, 512, len(text), 0, 0)
lvm[mda + 512:mda + 512 + len(text)] = text
write("lvm2-pv.bin", lvm)

# LUKS headers as cryptsetup writes them: LUKS1 with slot 0 enabled, and LUKS2 with its JSON area.
luks1 = bytearray(1024)
struct.pack_into(">6sH32s32s32sII", luks1, 0, b"LUKS\xba\xbe", 1, b"aes", b"xts-plain64", b"sha256", 4096, 64)
luks1[168:204] = b"9677f01f-77e5-4d28-8783-89a9e554635d"
struct.pack_into(">I", luks1, 208, 0x00AC71F3)
write("luks1-header.bin", luks1)
area = b'{"keyslots":{"0":{"type":"luks2"}},"segments":{"0":{"type":"crypt","offset":"16777216","encryption":"aes-xts-plain64"}}}'
luks2 = bytearray(4096 + 4096)
struct.pack_into(">6sHQ", luks2, 0, b"LUKS\xba\xbe", 2, len(luks2))
luks2[168:204] = b"f77ebc6d-55d8-440e-822a-073d7fe0db9c"
luks2[4096:4096 + len(area)] = area
write("luks2-header.bin", luks2)

# Rock Ridge names in a directory (a PX entry, then NM split over two entries with CONTINUE).
rr = dirrec(b"NORMAL.MOD;1", 5, 3, False)
su = b"PX" + bytes([8, 1]) + bytes(4) + b"NM" + bytes([11, 1, 1]) + b"normal" + b"NM" + bytes([9, 1, 0]) + b".mod"
rr = bytes([len(rr) + len(su)]) + rr[1:] + su
write("iso9660-rock-ridge-dir.bin", rr + bytes(2048 - len(rr)))

# GRUB 2 boot.img as grub-setup leaves it on an msdos disk: core.img at 1, drive check nopped,
# partition 1 at 2048 (past the end of this one-sector image, which is a finding, not a crash).
path = "/usr/lib/grub/i386-pc/boot.img"
if os.path.exists(path):
    img = bytearray(open(path, "rb").read()[:512])
    struct.pack_into("<Q", img, 0x5C, 1)
    img[0x66:0x68] = b"\x90\x90"
    img[446:510] = bytes(64)
    struct.pack_into("<I", img, 440, 0x494D4754)
    mbr_entry(img, 0, 0x83, 2048, 2048, boot=True)
    write("grub2-boot-img.bin", img)
else:
    sys.exit("make-corpus.sh: %s is missing (Debian package grub-pc-bin)" % path)

path = "/usr/lib/syslinux/mbr/gptmbr.bin"
if os.path.exists(path):
    img = image(1)
    code = open(path, "rb").read()[:440]
    img[0:len(code)] = code
    mbr_entry(img, 0, 0xEE, 1, 0xFFFFFFFF)
    write("syslinux-gptmbr.bin", img)
else:
    print("make-corpus.sh: %s is missing (syslinux-common); seed skipped" % path, file=sys.stderr)
EOF

# FAT and PE seeds for FATFilesystem, PEImage and GrubEFIImage: volumes made by mkfs.fat
# (dosfstools, --invariant) and mtools with fixed dates, PE files built field by field.
command -v mkfs.fat >/dev/null && command -v mcopy >/dev/null || {
    echo "make-corpus.sh: needs mkfs.fat and mtools (apt-get install dosfstools mtools)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export SOURCE_DATE_EPOCH=1700000000  # mtools' timestamps; mkfs.fat --invariant fixes its own
python3 -c 'import sys; sys.stdout.buffer.write(b"MZ" + bytes(range(256)) * 6)' > "$tmp/boot.efi"
printf 'set prefix=(hd0,gpt1)/EFI/debian\n' > "$tmp/grub.cfg"

fat() {  # fat NAME KIB MKFS-ARGS... : a volume with an ESP layout
    local name=$1 kib=$2; shift 2
    mkfs.fat -C --invariant "$@" "$tmp/$name" "$kib" >/dev/null
    mmd -i "$tmp/$name" ::/EFI ::/EFI/BOOT
    mcopy -i "$tmp/$name" "$tmp/boot.efi" ::/EFI/BOOT/BOOTX64.EFI
    mcopy -i "$tmp/$name" "$tmp/grub.cfg" "::/EFI/BOOT/Long file name.cfg"
    mcopy -i "$tmp/$name" "$tmp/grub.cfg" ::/deleted.txt
    mdel -i "$tmp/$name" ::/deleted.txt
}
fat fat12-esp.bin 48 -F 12 -s 1 -r 16 -n ESP
fat fat16-esp.bin 2200 -F 16 -s 1 -r 16 -n ESP
# FAT32 needs 65525 clusters, so its FAT alone is 256 KiB: only the reserved sectors and the
# start of the one FAT fit in a seed; the root directory lies past it and reads as empty.
mkfs.fat -C --invariant -F 32 -s 1 -f 1 "$tmp/fat32-empty.bin" 34000 >/dev/null

# SYSLINUX's own files: ldlinux.sys as syslinux --install patches it into a FAT volume (its sector map
# and checksum filled in), and isolinux.bin as Debian ships it (boot info table not yet written).
if command -v syslinux >/dev/null; then
    mkfs.fat -C --invariant "$tmp/syslinux.img" 1024 >/dev/null
    syslinux --install "$tmp/syslinux.img"
    mcopy -i "$tmp/syslinux.img" ::/ldlinux.sys "$out/syslinux-ldlinux-sys.bin"
else
    echo "make-corpus.sh: syslinux is missing (Debian package syslinux); ldlinux.sys seed skipped" >&2
fi
if [[ -f /usr/lib/ISOLINUX/isolinux.bin ]]; then
    cp /usr/lib/ISOLINUX/isolinux.bin "$out/isolinux-bin.bin"
else
    echo "make-corpus.sh: /usr/lib/ISOLINUX/isolinux.bin is missing (Debian package isolinux); seed skipped" >&2
fi

python3 - "$tmp" "$out" <<'PY'
import os, struct, sys
tmp, out = sys.argv[1:]

def trimmed(name):
    data = open(os.path.join(tmp, name), "rb").read()
    if name != "fat12-esp.bin":  # the FAT12 volume is whole, so it also opens without zero-extension
        data = data.rstrip(b"\0")
        data += bytes(-len(data) % 512)
    assert len(data) <= 64 * 1024, (name, len(data))
    return data

def elf(name, wide):
    """A relocatable ELF (64- or 32-bit, little-endian) with sections: null, .shstrtab, .modname."""
    names = b"\0.shstrtab\0.modname\0"
    modname = name.encode() + b"\0"
    header = 64 if wide else 52
    entry = 64 if wide else 40
    table = (header + len(names) + len(modname) + 7) & ~7
    body = bytearray(table + 3 * entry)
    body[0:7] = b"\x7fELF" + bytes([2 if wide else 1, 1, 1])
    if wide:
        struct.pack_into("<Q", body, 0x28, table)
        struct.pack_into("<HHH", body, 0x3A, entry, 3, 1)
    else:
        struct.pack_into("<I", body, 0x20, table)
        struct.pack_into("<HHH", body, 0x2E, entry, 3, 1)
    body[header:header + len(names)] = names
    body[header + len(names):header + len(names) + len(modname)] = modname
    for index, (name_offset, offset, size) in enumerate([(0, 0, 0), (1, header, len(names)), (11, header + len(names), len(modname))]):
        at = table + index * entry
        if wide:
            struct.pack_into("<IIQQQQ", body, at, name_offset, 3, 0, 0, offset, size)
        else:
            struct.pack_into("<IIIIII", body, at, name_offset, 3, 0, 0, offset, size)
    return bytes(body)

def mods(wide, entries):
    align = 8 if wide else 4
    area = b""
    for type_, body in entries:
        body += bytes(-len(body) % align)
        area += struct.pack("<II", type_, 8 + len(body)) + body
    if wide:
        return b"mimg" + struct.pack("<IQQ", 0, 24, 24 + len(area)) + area
    return b"mimg" + struct.pack("<II", 12, 12 + len(area)) + area

def pe(machine, magic, subsystem, sections):
    """DOS header (e_lfanew 0x80), COFF header, optional header, sections at 0x200-aligned offsets."""
    optional_size = 240 if magic == 0x20B else 224
    head = bytearray(0x80)
    head[0:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x80)
    head += b"PE\0\0" + struct.pack("<HHIIIHH", machine, len(sections), 0, 0, 0, optional_size, 0x22)
    optional = bytearray(optional_size)
    struct.pack_into("<H", optional, 0, magic)
    struct.pack_into("<H", optional, 68, subsystem)
    head += optional
    align = lambda n: (n + 0x1FF) & ~0x1FF
    raw = align(len(head) + 40 * len(sections))
    data = b""
    for index, (name, contents) in enumerate(sections):
        size = align(len(contents))
        head += struct.pack("<8sIIIIIIHHI", name.encode(), len(contents), 0x1000 * (index + 1), size, raw, 0, 0, 0, 0, 0x40000040)
        data += contents + bytes(size - len(contents))
        raw += size
    return bytes(head) + bytes(align(len(head)) - len(head)) + data

seeds = {name: trimmed(name) for name in ["fat12-esp.bin", "fat16-esp.bin", "fat32-empty.bin"]}
seeds["pe32plus-grub-mods.bin"] = pe(0x8664, 0x20B, 10, [
    (".text", b"\xc3"),
    ("mods", mods(True, [(0, elf("part_gpt", True)), (0, elf("fat", True)), (3, b"/EFI/debian\0"),
                         (2, b"configfile /EFI/debian/grub.cfg\n\0"), (6, b"")])),
])
seeds["pe32-grub-mods.bin"] = pe(0x14C, 0x10B, 10, [("mods", mods(False, [(0, elf("fat", False)), (3, b"(hd0,gpt1)/boot/grub\0")]))])
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
PY
