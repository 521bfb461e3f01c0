#!/bin/bash
# Usage: make-deb.sh <imgtool executable> <output directory>
# Builds out/imgtool_<version>-<revision>_<arch>.deb from the static executable with dpkg-deb:
# the files of Scripts/install-tree.sh under /usr, the copyright and changelog, md5sums and a
# control file. The version is the executable's own (`imgtool --version`), so the package can
# never claim another.
set -euo pipefail
umask 022
if [ $# -ne 2 ]; then echo "usage: $0 <imgtool executable> <output directory>" >&2; exit 64; fi
bin=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$bin" ]; then echo "$0: $bin is not an executable; run 'make build' first." >&2; exit 66; fi

upstream=$("$bin" --version)
upstream=${upstream#imgtool }
# The Debian revision: a new package of the same imgtool raises it.
version=$upstream-${DEB_REVISION:-1}
arch=$(dpkg --print-architecture)
maintainer="imgtool developers <imgtool@example.org>"
# The changelog's date: SOURCE_DATE_EPOCH when a build sets it (reproducible builds), else the
# commit the package is built from, else now.
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
else
	date=$(git -C "$here/.." log -1 --format=%cD 2>/dev/null || date -u -R)
fi
commit=$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)

stage=$(mktemp -d "${TMPDIR:-/tmp}/imgtool-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
"$here/install-tree.sh" "$bin" "$stage" /usr

doc=$stage/usr/share/doc/imgtool
install -d "$doc" "$stage/usr/share/lintian/overrides" "$stage/DEBIAN"
install -m 0644 "$here/deb/copyright" "$doc/copyright"
install -m 0644 "$here/deb/lintian-overrides" "$stage/usr/share/lintian/overrides/imgtool"
cat <<CHANGELOG | gzip -9n > "$doc/changelog.Debian.gz"
imgtool ($version) unstable; urgency=medium

  * imgtool $upstream, built from commit $commit.

 -- $maintainer  $date
CHANGELOG

# The Debian sources of what the static executable has linked in (policy 7.8, Built-Using).
built_using=$(dpkg-query -W -f='${source:Package} (= ${source:Version}), ' \
	libc6-dev libblkid-dev libext2fs-dev liblzma-dev libdevmapper-dev zlib1g-dev libzstd-dev libewf-dev \
	libparted-dev libarchive-dev libbz2-dev uuid-dev | sed 's/, $//')
installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
# What imgtool runs: grub-install and GRUB's BIOS files, udevadm (grub-probe asks it), mkfs and
# libext2fs's tools, setpriv (--pdeathsig: util-linux 2.33; util-linux is essential, so only a
# version says anything). Recommended: the throwaway VM of --isolate (qemu, Debian's cloud
# kernel, busybox), OVMF for UEFI boot checks, eatmydata for grub-install inside the VM.
cat > "$stage/DEBIAN/control" <<CONTROL
Package: imgtool
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: grub-pc-bin, grub2-common, udev, e2fsprogs, util-linux (>= 2.33)
Recommends: dosfstools, mtools, qemu-system-x86, linux-image-cloud-amd64, busybox-static, ovmf, eatmydata
Built-Using: $built_using
Section: admin
Priority: optional
Description: install GRUB into disk image files, and inspect and verify them
 imgtool makes a disk image file behave like a real disk for grub-install:
 it attaches the image, presents its partitions (loop partitions, BLKPG,
 device mapper or offsets), mounts the boot partition, runs grub-install and
 releases everything it acquired, also on error or signal. With --isolate it
 does the same inside a throwaway qemu VM.
 .
 imgtool create makes partitioned images from a layout (systemd-repart's
 definitions or inline specs) and a root filesystem tree or tar archive,
 through libparted, without root, reproducibly, and can make them bootable.
 .
 It also inspects images (partition tables, filesystems, boot code, OS) and
 tells whether they will boot under BIOS or UEFI, read-only and without root.
 .
 The executable is statically linked and starts in about a millisecond.
CONTROL
(cd "$stage" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/imgtool_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
