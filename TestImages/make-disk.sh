#!/bin/bash
# make-disk.sh: build a test disk image, byte-for-byte reproducibly, with no root and no loop device.
# Partition tools work on the image file directly, mke2fs writes at a byte offset (-E offset=), and
# debugfs puts files in through libext2fs's '?offset=' io option. See README.md in this folder.
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: make-disk.sh OUT.img [options]
  --label dos|gpt|none      partition table (default dos); none: the filesystem fills the image
  --tool sfdisk|sgdisk|parted
                            tool that writes the table (default: sfdisk for dos, sgdisk for gpt)
  --fs ext2|ext3|ext4|none  filesystem on the boot partition (default ext4); none: leave zeros
  --marker TEXT             write /boot/grub/grub.cfg that prints TEXT on the serial console and halts
  --size-mib N              image size in MiB (default 64)
  --first-sector N          start of the first partition (default 2048; dos --logical: start of
                            logical partition 5, default 6144)
  --bios-boot-sectors N     gpt: size of the BIOS boot partition (EF02), partition 1 (default 2048;
                            0 = none, the filesystem is then partition 1 instead of 2)
  --logical                 dos: boot filesystem in logical partition 5, after a 1 MiB primary 1
  --extra-partition         add an unformatted data partition after the boot one
EOF
    exit 2
}
die() { echo "make-disk.sh: $*" >&2; exit 2; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Fixed identifiers: the same arguments must give the same bytes. "494d4754" is "IMGT" in ASCII.
readonly DOS_ID=0x494d4754
readonly GUID_PREFIX=494D4754-0000-4000-8000-00000000000   # + partition number (0 = the disk)
readonly FS_UUID=494d4754-0000-4000-8000-0000000000f5
readonly HASH_SEED=494d4754-0000-4000-8000-0000000000a5
readonly GPT_BIOS=21686148-6449-6E6F-744E-656564454649 GPT_LINUX=0FC63DAF-8483-4772-8E79-3D69D8477DE4
# libext2fs (mke2fs, debugfs) takes every timestamp from E2FSPROGS_FAKE_TIME when it is set.
export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000 LC_ALL=C TZ=UTC

[[ $# -ge 1 && $1 != -* ]] || usage
OUT=$1; shift
LABEL=dos TOOL='' FS=ext4 MARKER='' HAVE_MARKER=0 SIZE_MIB=64 FIRST='' BB='' LOGICAL=0 EXTRA=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --label|--tool|--fs|--marker|--size-mib|--first-sector|--bios-boot-sectors)
            [[ $# -ge 2 ]] || die "$1 needs a value"
            case $1 in
                --label) LABEL=$2 ;; --tool) TOOL=$2 ;; --fs) FS=$2 ;;
                --marker) MARKER=$2; HAVE_MARKER=1 ;; --size-mib) SIZE_MIB=$2 ;;
                --first-sector) FIRST=$2 ;; --bios-boot-sectors) BB=$2 ;;
            esac
            shift 2 ;;
        --logical) LOGICAL=1; shift ;;
        --extra-partition) EXTRA=1; shift ;;
        -h|--help) usage ;;
        *) echo "make-disk.sh: unknown argument: $1" >&2; usage ;;
    esac
done

# --- validate: refuse what cannot be honoured rather than silently ignore it ---
case $LABEL in dos|gpt|none) ;; *) die "--label must be dos, gpt or none, not '$LABEL'" ;; esac
case $FS in ext2|ext3|ext4|none) ;; *) die "--fs must be ext2, ext3, ext4 or none, not '$FS'" ;; esac
[[ -z $TOOL ]] && { [[ $LABEL == gpt ]] && TOOL=sgdisk || TOOL=sfdisk; }
case $TOOL in sfdisk|sgdisk|parted) ;; *) die "--tool must be sfdisk, sgdisk or parted, not '$TOOL'" ;; esac
[[ $TOOL == sgdisk && $LABEL == dos ]] && die "sgdisk writes only GPT; use --tool sfdisk or parted for dos"
[[ $SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "--size-mib must be a positive integer"
[[ -z $FIRST ]] || is_uint "$FIRST" || die "--first-sector must be a non-negative integer"
[[ -z $BB ]] || is_uint "$BB" || die "--bios-boot-sectors must be a non-negative integer"
[[ -n $BB && $LABEL != gpt ]] && die "--bios-boot-sectors applies to --label gpt only"
(( LOGICAL )) && [[ $LABEL != dos ]] && die "--logical applies to --label dos only"
[[ $LABEL == none ]] && { (( EXTRA )) || [[ -n $FIRST ]]; } && die "--label none has no partitions"
if (( HAVE_MARKER )); then
    # The marker goes inside a GRUB double-quoted string, where \ and $ are special.
    [[ -n $MARKER && $MARKER != *[\"\$\\]* && $MARKER != *$'\n'* ]] ||
        die "--marker must be non-empty without \", \$, \\ or newlines"
fi

# --- layout, in 512-byte sectors ---
TOTAL=$(( SIZE_MIB * 2048 ))
XSIZE=$(( TOTAL / 8 / 2048 * 2048 )); (( XSIZE >= 4096 )) || XSIZE=4096   # extra partition area
if (( EXTRA )); then BOOT_END=$(( TOTAL - XSIZE - 1 )); else BOOT_END=$(( TOTAL - 1 )); fi
case $LABEL in
    none) BOOT_START=0 BOOT_END=$(( TOTAL - 1 )) ;;
    dos)
        if (( LOGICAL )); then
            # p1 primary 2048..4095, p2 extended 4096..end (its first EBR sits at 4096), p5 boot,
            # p6 extra (its EBR sits in the 2048 sectors before it).
            BOOT_START=${FIRST:-6144}
            (( BOOT_START > 4096 )) || die "with --logical, --first-sector must be above 4096 (sector 4096 holds the EBR)"
            XSTART=$(( TOTAL - XSIZE + 2048 ))
        else
            BOOT_START=${FIRST:-2048}
            (( BOOT_START >= 1 )) || die "--first-sector must be at least 1 (sector 0 holds the MBR)"
            XSTART=$(( TOTAL - XSIZE ))
        fi ;;
    gpt)
        FIRST=${FIRST:-2048} BB=${BB:-2048}
        (( FIRST >= 34 )) || die "with gpt, --first-sector must be at least 34 (sectors 0-33 hold the table)"
        if (( BB > 0 )); then
            BB_START=$FIRST BB_END=$(( FIRST + BB - 1 ))
            BOOT_START=$(( (FIRST + BB + 2047) / 2048 * 2048 ))   # 1 MiB-align the filesystem
            BOOTN=2
        else
            BOOT_START=$FIRST BOOTN=1
        fi
        XSTART=$(( TOTAL - XSIZE ))
        LAST=$(( TOTAL - 34 ))     # last usable sector: the backup entries and header follow
        (( EXTRA )) || BOOT_END=$LAST ;;
esac
(( BOOT_END - BOOT_START >= 2047 )) || die "no room for a 1 MiB boot partition; raise --size-mib"
BOOT_SIZE=$(( BOOT_END - BOOT_START + 1 ))
guid() { echo "$GUID_PREFIX$1"; }

# Build under a temporary name and rename at the end, so a failure never leaves a half image.
TMP="$OUT.tmp.$$"; CFG=
trap 'rm -f "$TMP" ${CFG:+"$CFG"}' EXIT
rm -f "$TMP"
truncate -s "${SIZE_MIB}M" "$TMP"    # sparse zeros

# --- partition table ---
write_sfdisk() { sfdisk -q "$TMP" >/dev/null; }
# parted runs `udevadm settle`, which complains on stderr when udevd is not running (always, for
# a non-root user); show its output only when parted fails.
run_parted() {
    local out
    out=$(parted -s -a none "$TMP" unit s "$@" 2>&1 >/dev/null) || { echo "$out" >&2; exit 1; }
}
case $LABEL/$TOOL in
    dos/sfdisk)
        {
            printf 'label: dos\nlabel-id: %s\nunit: sectors\n' "$DOS_ID"
            if (( LOGICAL )); then
                printf 'start=2048, size=2048, type=83\nstart=4096, type=5\n'
            fi
            printf 'start=%d, size=%d, type=83, bootable\n' "$BOOT_START" "$BOOT_SIZE"
            (( EXTRA )) && printf 'start=%d, size=%d, type=83\n' "$XSTART" $(( TOTAL - XSTART ))
            true
        } | write_sfdisk ;;
    dos/parted)
        # Both sfdisk and parted accept any start >= 1 (checked down to 1), so even negative-test
        # layouts need no hand-written MBR entry. parted (-a none: take sectors as given) picks a
        # random disk identifier; sfdisk --disk-id replaces it with the fixed one afterwards.
        args=(mklabel msdos)
        if (( LOGICAL )); then
            args+=(mkpart primary 2048s 4095s mkpart extended 4096s $(( TOTAL - 1 ))s
                   mkpart logical ext2 "${BOOT_START}s" "${BOOT_END}s" set 5 boot on)
            (( EXTRA )) && args+=(mkpart logical "${XSTART}s" $(( TOTAL - 1 ))s)
        else
            args+=(mkpart primary ext2 "${BOOT_START}s" "${BOOT_END}s" set 1 boot on)
            (( EXTRA )) && args+=(mkpart primary "${XSTART}s" $(( TOTAL - 1 ))s)
        fi
        run_parted "${args[@]}"
        sfdisk -q --disk-id "$TMP" "$DOS_ID" >/dev/null ;;
    gpt/sfdisk)
        {
            # first-lba 34: libfdisk would otherwise reserve up to 2048 for alignment.
            printf 'label: gpt\nlabel-id: %s\nunit: sectors\nfirst-lba: 34\n' "$(guid 0)"
            (( BB > 0 )) && printf 'start=%d, size=%d, type=%s, uuid=%s, name="bios"\n' \
                "$BB_START" "$BB" "$GPT_BIOS" "$(guid 1)"
            printf 'start=%d, size=%d, type=%s, uuid=%s, name="boot"\n' \
                "$BOOT_START" "$BOOT_SIZE" "$GPT_LINUX" "$(guid "$BOOTN")"
            (( EXTRA )) && printf 'start=%d, size=%d, type=%s, uuid=%s, name="data"\n' \
                "$XSTART" $(( LAST - XSTART + 1 )) "$GPT_LINUX" "$(guid $(( BOOTN + 1 )))"
            true
        } | write_sfdisk ;;
    gpt/sgdisk)
        # -a 1: take start sectors as given; -U/-u replace the random GUIDs sgdisk would pick.
        args=(-o -a 1 -U "$(guid 0)")
        (( BB > 0 )) && args+=(-n "1:$BB_START:$BB_END" -t 1:EF02 -c 1:bios -u "1:$(guid 1)")
        args+=(-n "$BOOTN:$BOOT_START:$BOOT_END" -t "$BOOTN:8300" -c "$BOOTN:boot" -u "$BOOTN:$(guid "$BOOTN")")
        (( EXTRA )) && { XN=$(( BOOTN + 1 ));
            args+=(-n "$XN:$XSTART:$LAST" -t "$XN:8300" -c "$XN:data" -u "$XN:$(guid $XN)"); }
        sgdisk "${args[@]}" "$TMP" >/dev/null ;;
    gpt/parted)
        # parted cannot set GUIDs: sfdisk --disk-id / --part-uuid overwrite its random ones
        # (and recompute the CRCs) afterwards.
        args=(mklabel gpt)
        (( BB > 0 )) && args+=(mkpart bios "${BB_START}s" "${BB_END}s" set 1 bios_grub on)
        args+=(mkpart boot ext2 "${BOOT_START}s" "${BOOT_END}s")
        (( EXTRA )) && args+=(mkpart data "${XSTART}s" "${LAST}s")
        run_parted "${args[@]}"
        sfdisk -q --disk-id "$TMP" "$(guid 0)" >/dev/null
        for n in $(seq 1 $(( BOOTN + EXTRA ))); do
            sfdisk -q --part-uuid "$TMP" "$n" "$(guid "$n")" >/dev/null
        done ;;
    none/*) ;;
esac

# --- filesystem and files ---
if [[ $FS != none ]]; then
    OFF=$(( BOOT_START * 512 ))
    # root_owner: mke2fs would otherwise give / to the calling user's uid/gid.
    mke2fs -q -F -t "$FS" -L boot -U "$FS_UUID" \
        -E "offset=$OFF,hash_seed=$HASH_SEED,root_owner=0:0" "$TMP" "$(( BOOT_SIZE / 2 ))k"
    CFG=$(mktemp)
    if (( HAVE_MARKER )); then
        printf 'serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\necho "%s"\nhalt\n' \
            "$MARKER" >"$CFG"
    fi
    chmod 0644 "$CFG"   # debugfs copies the mode of the source file; umask must not matter
    cmds='mkdir /boot\nmkdir /boot/grub\n'
    (( HAVE_MARKER )) && cmds+="write $CFG /boot/grub/grub.cfg\n"
    # debugfs exits 0 even when a command fails, so keep its chatter and check by reading back.
    log=$(printf '%b' "$cmds" | debugfs -w -f - "$TMP?offset=$OFF" 2>&1) || true
    dir=$(debugfs -R 'stat /boot/grub' "$TMP?offset=$OFF" 2>/dev/null) || true
    if [[ $dir != *'Type: directory'* ]] || { (( HAVE_MARKER )) &&
            ! cmp -s "$CFG" <(debugfs -R 'cat /boot/grub/grub.cfg' "$TMP?offset=$OFF" 2>/dev/null); }; then
        echo "make-disk.sh: writing files with debugfs failed:" >&2; echo "$log" >&2; exit 1
    fi
fi

mv -f "$TMP" "$OUT"
