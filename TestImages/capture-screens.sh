#!/bin/bash
# capture-screens.sh: captures the boot screens BootScreenTests classify without qemu, into
# TestImages/screens/. Committed: a capture depends on the firmware's and GRUB's versions (these are
# Debian 12's: SeaBIOS 1.16.2, OVMF 2022.11, GRUB 2.06). No root, no loop device: the EFI image is a
# bare FAT filesystem made with mtools, and every drive is opened with snapshot=on.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)/screens
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

qemu() {  # qemu SECONDS IMAGE EXTRA...: runs until SECONDS pass; qemu's "terminating on signal" is expected
    local seconds=$1 image=$2; shift 2
    timeout "$seconds" qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -display none -vga std \
        -no-reboot -nic none -drive "file.driver=file,file.filename=$image,format=raw,if=ide,snapshot=on" "$@" \
        2>/dev/null || true
}
ovmf() {  # the firmware and a private copy of its variable store
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars-$1.fd"
    echo -m 256 -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
        -drive "if=pflash,format=raw,unit=1,file=$work/vars-$1.fd"
}

truncate -s 16M "$work/empty.img"

# SeaBIOS with nothing to boot: the VGA text buffer (80x25 character/attribute pairs), by QMP pmemsave.
{ sleep 8; echo '{"execute":"qmp_capabilities"}'
  echo "{\"execute\":\"pmemsave\",\"arguments\":{\"val\":753664,\"size\":4000,\"filename\":\"$out/seabios-no-bootable-device.vga\"}}"
  sleep 1; echo '{"execute":"quit"}'; } |
    qemu 30 "$work/empty.img" -m 128 -chardev stdio,id=qmp,signal=off -mon chardev=qmp,mode=control >/dev/null

# OVMF with nothing to boot falls back to its shell: the serial console.
# shellcheck disable=SC2046
qemu 40 "$work/empty.img" $(ovmf shell) -serial "file:$out/ovmf-shell.serial"

# GRUB's EFI menu, two entries and a timeout far beyond the capture, on the serial console through OVMF.
printf 'set timeout=300\nmenuentry "Alpha" { true }\nmenuentry "Beta" { true }\n' >"$work/grub.cfg"
grub-mkstandalone -O x86_64-efi -o "$work/BOOTX64.EFI" "boot/grub/grub.cfg=$work/grub.cfg"
truncate -s 32M "$work/efi.img"
mkfs.vfat -n EFI "$work/efi.img" >/dev/null
mmd -i "$work/efi.img" ::/EFI ::/EFI/BOOT
mcopy -i "$work/efi.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/
# shellcheck disable=SC2046
qemu 40 "$work/efi.img" $(ovmf grub) -serial "file:$out/grub-efi-menu.serial"
