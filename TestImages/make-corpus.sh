#!/bin/bash
# make-corpus.sh: write the seed corpus for Fuzz/run.sh (the MBR, GPT and boot-code parsers).
#
#   TestImages/make-corpus.sh [OUTDIR]      (default: TestImages/corpus/formats)
#
# Every seed is built field by field at its documented offset (python3's struct and zlib.crc32), with
# fixed GUIDs, so the same script gives the same bytes. Seeds are tiny images (at most 20 KiB):
# the fuzzer mutates them, and small inputs mean more executions per second. The GRUB 2 seed is
# Debian's boot.img (grub-pc-bin); the SYSLINUX one is gptmbr.bin (syslinux-common), skipped with a
# note when absent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus/formats}
mkdir -p "$out"
command -v python3 >/dev/null || { echo "make-corpus.sh: needs python3" >&2; exit 2; }

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
