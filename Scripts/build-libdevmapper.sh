#!/bin/bash
# build-libdevmapper.sh [PREFIX]: builds a static libdevmapper.a from the lvm2 source of the
# libdevmapper-dev installed on this machine, into PREFIX/lib (default .build/deps/lib). Only the
# CLI's static build (`make build`) links it, against the same libdevmapper-dev's header: Debian
# ships no libdevmapper.a. Library users link the distribution's libdevmapper.so and need none of this.
#
# The source comes through apt with this machine's own repositories: every enabled `deb` entry of
# its apt configuration becomes a `deb-src` entry in private state (lists and cache under
# PREFIX/work/apt; the system's apt configuration and state are not touched). No release or mirror
# is named here. apt checks the archive's signature and the files' hashes; this script checks the
# hashes once more before unpacking with dpkg-source, which applies the distribution's patches.
# libdm is configured with udev sync on and its archive carries libudev-shim/ (the five libudev
# functions libdm calls; Debian ships no libudev.a either). Skipped when PREFIX already holds a
# build of the same lvm2 version made by this script and shim as they are now.
# Needs: libdevmapper-dev, dpkg-dev, gcc, make (BUILD_PKGS in the Makefile).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-$root/.build/deps}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
work=$prefix/work
shim=$root/Scripts/libudev-shim
log=$work/build.log

# The version to build: the one whose header the Swift targets compile against.
source_package=$(dpkg-query -W -f='${source:Package}' libdevmapper-dev 2>/dev/null) \
    || { echo "build-libdevmapper: libdevmapper-dev is not installed (apt-get install libdevmapper-dev)" >&2; exit 1; }
version=$(dpkg-query -W -f='${source:Version}' libdevmapper-dev)

apt_dir=$work/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d"

# The machine's repositories as deb-src entries: one-line `deb` lines and deb822 stanzas whose
# Types name deb. Files apt would not read (other suffixes) stay out, as they do for apt.
write_source_lists() {
    local etc list part
    etc=$(apt-config shell etc Dir::Etc/d | sed -n "s/^etc='\(.*\)'$/\1/p")
    list=$(apt-config shell l Dir::Etc::sourcelist/f | sed -n "s/^l='\(.*\)'$/\1/p")
    part=$(apt-config shell p Dir::Etc::sourceparts/d | sed -n "s/^p='\(.*\)'$/\1/p")
    : "${etc:=/etc/apt/}" "${list:=${etc}sources.list}" "${part:=${etc}sources.list.d/}"
    rm -f "$apt_dir/sources.list" "$apt_dir"/sources.list.d/*
    if [[ -f $list ]]; then
        sed -n 's/^[[:space:]]*deb\([[:space:]]\)/deb-src\1/p' "$list" > "$apt_dir/sources.list"
    fi
    touch "$apt_dir/sources.list"
    local f
    for f in "$part"/*.list; do
        [[ -f $f ]] && sed -n 's/^[[:space:]]*deb\([[:space:]]\)/deb-src\1/p' "$f" > "$apt_dir/sources.list.d/${f##*/}"
    done
    for f in "$part"/*.sources; do
        [[ -f $f ]] && awk '
            BEGIN { IGNORECASE = 1 }
            /^Types:/ { if ($0 ~ /[[:space:]]deb([[:space:]]|$)/) print "Types: deb-src"; else print "Types: none"; next }
            { print }' "$f" > "$apt_dir/sources.list.d/${f##*/}"
    done
    if ! grep -qs '^deb-src\|^Types: deb-src' "$apt_dir/sources.list" "$apt_dir"/sources.list.d/*; then
        echo "build-libdevmapper: this machine's apt configuration ($list, $part) names no deb repository" >&2
        exit 1
    fi
}
apt_opts=(-q -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")

refresh() {
    write_source_lists
    # A repository without source indices only warns; what matters is that lvm2's source is found.
    apt-get "${apt_opts[@]}" update >"$work/apt-update.log" 2>&1 \
        || { cat "$work/apt-update.log" >&2; echo "build-libdevmapper: apt-get update (deb-src, private lists) failed" >&2; exit 1; }
    refreshed=1
}
# uris: one line per file from the signed Sources index ('URI' NAME SIZE SHA256:HEX); dsc.
resolve() {
    uris=$(apt-get "${apt_opts[@]}" source --print-uris "$source_package=$version" 2>/dev/null | grep "^'" || true)
    dsc=$(awk '$2 ~ /\.dsc$/ {print $2}' <<<"$uris")
}
# Refresh the private lists only when there are none, or when they do not name the version: a
# rebuild of the same version needs no network.
refreshed=0
compgen -G "$apt_dir/lists/*_Sources*" >/dev/null || refresh
resolve
if [[ -z $dsc ]] && (( !refreshed )); then refresh; resolve; fi
[[ -n $dsc ]] || { echo "build-libdevmapper: no source for $source_package $version (the installed libdevmapper-dev) in this machine's repositories; see $work/apt-update.log" >&2; exit 1; }

stamp_want="$source_package $version; $(cat "$0" "$shim"/libudev.[ch] | sha256sum | cut -c1-16); $prefix"
if [[ -f $prefix/libdevmapper.stamp && $(cat "$prefix/libdevmapper.stamp") == "$stamp_want"
      && -f $prefix/lib/libdevmapper.a ]]; then
    echo "libdevmapper: $source_package $version already built in $prefix"
    exit 0
fi
echo "libdevmapper: building from $source_package $version's source into $prefix (log: $log)"
start=$SECONDS

downloads=$work/src
mkdir -p "$downloads"
# apt's download sandbox user must be able to write there.
if [[ $(id -u) == 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$downloads"; fi
(cd "$downloads" && apt-get "${apt_opts[@]}" source --download-only "$source_package=$version") >"$log" 2>&1 \
    || { cat "$log" >&2; echo "build-libdevmapper: apt-get source $source_package=$version failed" >&2; exit 1; }
# apt checked these against the signed index; check again so that a stale file left in the
# directory by an interrupted run cannot slip through.
while read -r _ name _ hash; do
    [[ $hash == SHA256:* ]] || { echo "build-libdevmapper: no SHA256 for $name in the index" >&2; exit 1; }
    echo "${hash#SHA256:}  $downloads/$name"
done <<<"$uris" | sha256sum --quiet -c - \
    || { echo "build-libdevmapper: downloaded lvm2 files do not match the repository's signed index" >&2; exit 1; }

# lvm2's configure and makefiles split paths at spaces (a clone under "My Projects" broke the
# build), so the build happens in a private directory under /tmp, removed however the script ends.
build=$(mktemp -d /tmp/imgtool-libdevmapper-XXXXXX)
trap 'rm -rf "$build"' EXIT
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

# -fPIC: a static-pie link takes the archive too.
(
    cd "$build/lvm2"
    PKG_CONFIG_PATH=$build/udev ./configure --enable-static_link --enable-udev_sync --disable-udev_rules \
        --disable-selinux --disable-readline --disable-blkid_wiping --with-thin=none --with-cache=none \
        CFLAGS="-O2 -fPIC" >>"$log" 2>&1
    grep -q '^#define UDEV_SYNC_SUPPORT 1' include/configure.h
    make -C libdm -j"$(nproc)" >>"$log" 2>&1
) || { tail -40 "$log" >&2; echo "build-libdevmapper: configure or make -C libdm failed (full log: $log)" >&2; exit 1; }

# Only static archives live in PREFIX/lib, and the shim's object goes into libdevmapper.a itself,
# so the static link needs nothing but -L PREFIX/lib beside the -ldevmapper that pkg-config gives.
rm -rf "$prefix/lib" "$prefix/include"
mkdir -p "$prefix/lib"
cp "$build/lvm2/libdm/ioctl/libdevmapper.a" "$prefix/lib/"
ar rs "$prefix/lib/libdevmapper.a" "$build/udev/libudev.o"
rm -rf "$build"
echo "$stamp_want" > "$prefix/libdevmapper.stamp"
echo "libdevmapper: built in $((SECONDS - start)) s"
