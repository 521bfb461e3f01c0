#!/bin/bash
# boot.sh: boot a disk image under qemu (TCG) and print what appeared on its serial console.
# The drive is opened with snapshot=on, so the image is never modified.
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: boot.sh IMG [--timeout SECONDS] [--expect TEXT] [--firmware bios|uefi|uefi-secure] [--sector-size 512|4096]
  Boots IMG under qemu-system-x86_64 (TCG, 128 MiB, serial console only) and prints the serial
  output, with ANSI escape sequences and CRs removed, on stdout.
  --timeout SECONDS  give up after this many whole seconds (default 30)
  --firmware         bios (SeaBIOS, the default), uefi (OVMF with a private copy of its variables) or
                     uefi-secure (OVMF enforcing Secure Boot with Microsoft's keys enrolled; q35 with SMM)
  --sector-size      4096: the disk is a virtio-blk device with 4 KiB logical sectors (default 512, IDE)
  --expect TEXT      stop as soon as TEXT appears and exit 0; exit 1, with the output on stderr,
                     if qemu exits or the timeout passes first
  Without --expect: exit 0 when qemu exits by itself, 124 on timeout, 1 if qemu fails.
EOF
    exit 2
}

[[ $# -ge 1 && $1 != -* ]] || usage
IMG=$1; shift
TIMEOUT=30 EXPECT='' HAVE_EXPECT=0 FIRMWARE=bios SECTOR=512
while [[ $# -gt 0 ]]; do
    case $1 in
        --timeout) [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || { echo "boot.sh: --timeout needs whole seconds" >&2; usage; }
                   TIMEOUT=$2; shift 2 ;;
        --expect)  [[ $# -ge 2 && -n $2 ]] || { echo "boot.sh: --expect needs a non-empty TEXT" >&2; usage; }
                   EXPECT=$2; HAVE_EXPECT=1; shift 2 ;;
        --firmware) [[ $# -ge 2 && ( $2 == bios || $2 == uefi || $2 == uefi-secure ) ]] ||
                        { echo "boot.sh: --firmware is bios, uefi or uefi-secure" >&2; usage; }
                   FIRMWARE=$2; shift 2 ;;
        --sector-size) [[ $# -ge 2 && ( $2 == 512 || $2 == 4096 ) ]] || { echo "boot.sh: --sector-size is 512 or 4096" >&2; usage; }
                   SECTOR=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "boot.sh: unknown argument: $1" >&2; usage ;;
    esac
done
[[ -f $IMG && -r $IMG ]] || { echo "boot.sh: cannot read image '$IMG'" >&2; exit 2; }

# Everything qemu writes, including its snapshot=on overlay (it goes to $TMPDIR), lives in one
# directory that the trap removes, so a killed qemu leaves nothing behind.
WORK=$(mktemp -d)
QPID=''
# shellcheck disable=SC2317  # called from the trap
cleanup() {
    if [[ -n $QPID ]] && kill -0 "$QPID" 2>/dev/null; then
        kill "$QPID" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QPID" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$QPID" 2>/dev/null || true
        wait "$QPID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

LOG=$WORK/serial.log
: >"$LOG"
FIRMWARE_ARGS=()
if [[ $FIRMWARE == uefi* ]]; then
    OVMF=/usr/share/OVMF CODE=OVMF_CODE_4M.fd VARS=OVMF_VARS_4M.fd
    # Secure Boot: the SMM-protected build, and variables with Microsoft's keys enrolled.
    [[ $FIRMWARE == uefi-secure ]] && CODE=OVMF_CODE_4M.secboot.fd VARS=OVMF_VARS_4M.ms.fd
    [[ -r $OVMF/$CODE && -r $OVMF/$VARS ]] || { echo "boot.sh: no $OVMF/$CODE; install the Debian package ovmf" >&2; exit 2; }
    cp "$OVMF/$VARS" "$WORK/vars.fd"   # the firmware writes its variables
    FIRMWARE_ARGS=(-m 256 -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF/$CODE"
                   -drive "if=pflash,format=raw,unit=1,file=$WORK/vars.fd")
    [[ $FIRMWARE == uefi-secure ]] && FIRMWARE_ARGS+=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on)
fi
# qemu's -drive option splits on commas; a literal comma is written as two.
DISK_ARGS=(-drive "file=${IMG//,/,,},format=raw,snapshot=on,if=ide")
if [[ $SECTOR == 4096 ]]; then
    DISK_ARGS=(-drive "file=${IMG//,/,,},format=raw,snapshot=on,if=none,id=disk"
               -device virtio-blk-pci,drive=disk,logical_block_size=4096,physical_block_size=4096)
fi
TMPDIR=$WORK qemu-system-x86_64 -accel tcg -m 128 -nodefaults -display none -no-reboot "${FIRMWARE_ARGS[@]}" \
    -serial "file:$LOG" "${DISK_ARGS[@]}" \
    </dev/null >/dev/null 2>"$WORK/qemu.err" &
QPID=$!

# GRUB draws with ANSI sequences (cursor moves, colours) and ends lines with CR LF.
# CSI sequences are ESC [ parameters (0x30-0x3F) intermediates (0x20-0x2F) final (0x40-0x7E).
clean() { LC_ALL=C sed -E 's#\x1b\[[0-?]*[ -/]*[@-~]##g; s#\x1b[()][0-9A-Za-z]##g; s#\x1b[=>78]##g; s#\r##g' "$LOG"; }
seen() { (( HAVE_EXPECT )) && clean | grep -qF -- "$EXPECT"; }

deadline=$(( ${EPOCHREALTIME/./} + TIMEOUT * 1000000 ))
status=running
while :; do
    if seen; then status=found; break; fi
    if ! kill -0 "$QPID" 2>/dev/null; then
        wait "$QPID" && status=exited || status=failed
        QPID=
        seen && status=found   # the text may have arrived just before qemu powered off
        break
    fi
    (( ${EPOCHREALTIME/./} < deadline )) || { status=timeout; break; }
    sleep 0.05
done

if (( HAVE_EXPECT )); then
    if [[ $status == found ]]; then clean; exit 0; fi
    {
        case $status in
            timeout) why="within ${TIMEOUT}s" ;; exited) why="before qemu exited" ;; *) why="qemu failed" ;;
        esac
        echo "boot.sh: '$EXPECT' did not appear $why; serial output:"
        clean
        [[ -s $WORK/qemu.err ]] && { echo "--- qemu stderr:"; cat "$WORK/qemu.err"; }
    } >&2
    exit 1
fi
clean
case $status in
    exited) exit 0 ;;
    timeout) exit 124 ;;
    *) cat "$WORK/qemu.err" >&2; exit 1 ;;
esac
