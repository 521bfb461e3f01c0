#!/bin/bash
# build-libdevmapper.sh [PREFIX]: builds a static libdevmapper from Debian's own lvm2 source and
# installs it into PREFIX (default .build/deps): lib/libdevmapper.a, lib/libimgtool_udev.a,
# include/libdevmapper.h and lib/pkgconfig/imgtool-devmapper.pc, which the CDeviceMapper target names.
# imgtool ships as a static executable and Debian ships no libdevmapper.a (issue 5).
#
# The source comes through apt with private state (its own deb-src list, lists and cache under
# PREFIX/work/apt; the system's apt configuration is not touched), so apt checks the archive's
# signature and the files' hashes; this script checks the hashes once more before unpacking with
# dpkg-source, which applies Debian's patches. libdm is configured with udev sync on and linked
# against libudev-shim/ (the five libudev functions libdm calls; Debian ships no libudev.a either).
# Skipped when PREFIX already holds a build of the same lvm2 version made by this script and shim
# as they are now. Needs: dpkg-dev, gcc, make, pkg-config, debian-archive-keyring (BUILD_PKGS).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-$root/.build/deps}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
work=$prefix/work
shim=$root/Scripts/libudev-shim
log=$work/build.log

apt_dir=$work/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
cat > "$apt_dir/deb-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(-q -o "Dir::Etc::SourceList=$apt_dir/deb-src.sources" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")

refresh() {
    apt-get "${apt_opts[@]}" update >"$work/apt-update.log" 2>&1 \
        || { cat "$work/apt-update.log" >&2; echo "build-libdevmapper: apt-get update (deb-src, private lists) failed" >&2; exit 1; }
    refreshed=1
}
# uris: one line per file from the signed Sources index ('URI' NAME SIZE SHA256:HEX); dsc, version.
resolve() {
    uris=$(apt-get "${apt_opts[@]}" source --print-uris lvm2 2>/dev/null | grep "^'" || true)
    dsc=$(awk '$2 ~ /\.dsc$/ {print $2}' <<<"$uris")
    [[ -n $dsc ]] || { echo "build-libdevmapper: no lvm2 source in Debian bookworm's index" >&2; exit 1; }
    version=${dsc#lvm2_}; version=${version%.dsc}
}
# Refresh the private lists only when there are none, or when the version they name can no longer
# be downloaded: a rebuild of the same version needs no network.
refreshed=0
compgen -G "$apt_dir/lists/*_Sources*" >/dev/null || refresh
resolve

stamp_want="lvm2 $version; $(cat "$0" "$shim"/libudev.[ch] | sha256sum | cut -c1-16); $prefix"
if [[ -f $prefix/libdevmapper.stamp && $(cat "$prefix/libdevmapper.stamp") == "$stamp_want"
      && -f $prefix/lib/libdevmapper.a && -f $prefix/lib/pkgconfig/imgtool-devmapper.pc ]]; then
    echo "libdevmapper: lvm2 $version already built in $prefix"
    exit 0
fi
echo "libdevmapper: building from Debian's lvm2 $version source into $prefix (log: $log)"
start=$SECONDS

downloads=$work/src
mkdir -p "$downloads"
# apt's download sandbox user must be able to write there.
if [[ $(id -u) == 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$downloads"; fi
download() {
    (cd "$downloads" && apt-get "${apt_opts[@]}" source --download-only "lvm2=$version") >"$log" 2>&1 \
        || { cat "$log" >&2; echo "build-libdevmapper: apt-get source lvm2=$version failed" >&2; return 1; }
}
if ! download; then
    (( !refreshed )) || exit 1
    # A Debian point release may have replaced the version our lists name.
    echo "build-libdevmapper: refreshing the deb-src lists and trying again" >&2
    refresh
    resolve
    download || exit 1
fi
# apt checked these against the signed index; check again so that a stale file left in the
# directory by an interrupted run cannot slip through.
while read -r _ name _ hash; do
    [[ $hash == SHA256:* ]] || { echo "build-libdevmapper: no SHA256 for $name in the index" >&2; exit 1; }
    echo "${hash#SHA256:}  $downloads/$name"
done <<<"$uris" | sha256sum --quiet -c - \
    || { echo "build-libdevmapper: downloaded lvm2 files do not match Debian's signed index" >&2; exit 1; }

build=$work/build
rm -rf "$build"
mkdir -p "$build/udev/include" "$build/udev/lib"
dpkg-source -x "$downloads/$dsc" "$build/lvm2" >>"$log" 2>&1 \
    || { cat "$log" >&2; echo "build-libdevmapper: dpkg-source -x $dsc failed" >&2; exit 1; }

# The shim, and a libudev.pc naming it, visible to configure only.
cp "$shim/libudev.h" "$build/udev/include/"
gcc -O2 -fPIC -Wall -Werror -I"$shim" -c "$shim/libudev.c" -o "$build/udev/libudev.o"
ar rcs "$build/udev/lib/libimgtool_udev.a" "$build/udev/libudev.o"
cat > "$build/udev/libudev.pc" <<EOF
Name: libudev
Description: imgtool's libudev shim: the five functions libdevmapper calls
Version: 252
Cflags: -I$build/udev/include
Libs: -L$build/udev/lib -limgtool_udev
EOF

# -fPIC: the debug build links this archive into position-independent executables too.
(
    cd "$build/lvm2"
    PKG_CONFIG_PATH=$build/udev ./configure --enable-static_link --enable-udev_sync --disable-udev_rules \
        --disable-selinux --disable-readline --disable-blkid_wiping --with-thin=none --with-cache=none \
        CFLAGS="-O2 -fPIC" >>"$log" 2>&1
    grep -q '^#define UDEV_SYNC_SUPPORT 1' include/configure.h
    make -C libdm -j"$(nproc)" >>"$log" 2>&1
) || { tail -40 "$log" >&2; echo "build-libdevmapper: configure or make -C libdm failed (full log: $log)" >&2; exit 1; }

mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
cp "$build/lvm2/libdm/ioctl/libdevmapper.a" "$build/udev/lib/libimgtool_udev.a" "$prefix/lib/"
cp "$build/lvm2/libdm/libdevmapper.h" "$prefix/include/"
# What Sources/CDevMapper includes: its presence tells that the .pc file's -I took effect (SwiftPM
# passes on -I from pkg-config, not -D), and it includes the libdevmapper.h beside it.
cat > "$prefix/include/imgtool-devmapper.h" <<EOF
/* Written by Scripts/build-libdevmapper.sh: libdevmapper from Debian's lvm2 $version, static. */
#include "libdevmapper.h"
EOF
dm_version=$(cut -d' ' -f1 "$build/lvm2/VERSION_DM")
# Only static archives live in PREFIX/lib, so -ldevmapper picks libdevmapper.a even where
# libdevmapper-dev put a libdevmapper.so in the system's directories: the debug build links the
# same code as the static executable. A name of our own, so a system devmapper.pc never stands in.
cat > "$prefix/lib/pkgconfig/imgtool-devmapper.pc" <<EOF
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: imgtool-devmapper
Description: static libdevmapper $dm_version from Debian's lvm2 $version, udev sync through imgtool's libudev shim
Version: $dm_version
Cflags: -I\${includedir}
Libs: -L\${libdir} -ldevmapper -limgtool_udev -lm
EOF
rm -rf "$build"
echo "$stamp_want" > "$prefix/libdevmapper.stamp"
echo "libdevmapper: built in $((SECONDS - start)) s"
