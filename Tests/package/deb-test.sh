#!/bin/bash
# Usage: deb-test.sh <imgtool .deb>   (root; `make test-deb` builds the package and runs this)
# The package as a user gets it. First lintian, the man page under groff -ww, the zsh and fish
# completions (they parse, and zsh and fish offer install-grub for 'imgtool ins'). Then apt-get installs the
# .deb into a clean Debian root (debootstrap --variant=minbase from this machine's own apt mirror
# and suite; the dependencies come from the archive), and the installed tool runs there:
# --version, `man imgtool`, bash completion through bash-completion's loader, and inspect on a
# small image. The root lives under $TMPDIR and is removed on any exit.
set -euo pipefail
if [ $# -ne 1 ] || [ ! -f "$1" ]; then echo "usage: $0 <imgtool .deb>" >&2; exit 64; fi
if [ "$(id -u)" != 0 ]; then echo "$0: needs root (debootstrap, chroot, mounting /proc in the root)." >&2; exit 77; fi
deb=$(realpath "$1")
repo=$(cd "$(dirname "$0")/../.." && pwd)
started=$SECONDS
fail() { echo "deb-test: FAIL: $*" >&2; exit 1; }
step() { echo "deb-test: $* ($((SECONDS - started)) s)"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/imgtool-deb-test.XXXXXX")
root=$work/root
cleanup() {
	# Nothing may stay mounted in the root before it is removed (and rm stays on this filesystem).
	if mountpoint -q "$root/proc" 2>/dev/null; then umount "$root/proc"; fi
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

version=$(dpkg-deb -f "$deb" Version)
upstream=${version%-*}

step "lintian $(basename "$deb")"
# Errors and warnings fail; the package's lintian-overrides name each exception and why.
# Its own TMPDIR: lintian leaves files of its ELF cache there.
TMPDIR=$work lintian --fail-on error,warning "$deb" >"$work/lintian.log" 2>&1 \
	|| { cat "$work/lintian.log" >&2; fail "lintian reports errors or warnings (above)"; }
grep -v 'running with root privileges' "$work/lintian.log" || true
owners=$(dpkg-deb -c "$deb" | awk '$2 != "root/root"')
[ -z "$owners" ] || fail "files not owned by root:root: $owners"

step "man page and completions, as packaged"
dpkg-deb -x "$deb" "$work/files"
page=$work/files/usr/share/man/man1/imgtool.1.gz
warnings=$(zcat "$page" | groff -man -Tutf8 -ww -z 2>&1)
[ -z "$warnings" ] || fail "groff warns about imgtool(1): $warnings"
zsh -n "$work/files/usr/share/zsh/vendor-completions/_imgtool" || fail "zsh cannot parse _imgtool"
# What zsh's completion system offers, sorted, on one line (see zsh-complete.zsh).
zsh_offers() {
	timeout 30 zsh -f "$repo/Tests/package/zsh-complete.zsh" "$work/files/usr/share/zsh/vendor-completions" "$@" \
		| LC_ALL=C sort | paste -sd' '
}
[ "$(zsh_offers imgtool ins)" = "inspect install-grub" ] || fail "zsh completes 'imgtool ins' to '$(zsh_offers imgtool ins)'"
[ "$(zsh_offers imgtool install-grub --str)" = "--strategy" ] \
	|| fail "zsh completes 'imgtool install-grub --str' to '$(zsh_offers imgtool install-grub --str)'"
[ "$(zsh_offers imgtool verify --firmware=)" = "bios efi efi-secure" ] \
	|| fail "zsh completes 'imgtool verify --firmware=' to '$(zsh_offers imgtool verify --firmware=)'"
fish_file=$work/files/usr/share/fish/vendor_completions.d/imgtool.fish
fish --no-config -n "$fish_file" || fail "fish cannot parse imgtool.fish"
offered=$(fish --no-config -c "source '$fish_file'; complete -C'imgtool ins'" | cut -f1)
grep -qx install-grub <<<"$offered" || fail "fish offers '$offered' for 'imgtool ins', not install-grub"
offered=$(fish --no-config -c "source '$fish_file'; complete -C'imgtool install-grub --strategy '" | cut -f1)
grep -qx device-mapper <<<"$offered" || fail "fish offers '$offered' for '--strategy ', not the strategies"

# This machine's own Debian mirror and suite (not a hard-coded release): the first enabled deb
# source with a plain suite (not -updates or -security, which debootstrap cannot start from).
read -r mirror suite < <(python3 - <<'PY'
import glob, re
for path in sorted(glob.glob('/etc/apt/sources.list.d/*.sources')):
    for paragraph in open(path).read().split('\n\n'):
        fields = {}
        for line in paragraph.splitlines():
            if line.startswith('#') or line[:1].isspace() or ':' not in line:
                continue
            key, value = line.split(':', 1)
            fields[key.strip().lower()] = value.split()
        if 'deb' not in fields.get('types', []) or fields.get('enabled', ['yes'])[0] == 'no':
            continue
        for suite in fields.get('suites', []):
            if fields.get('uris') and not re.search(r'[-/]', suite):
                print(fields['uris'][0], suite); raise SystemExit
for path in ['/etc/apt/sources.list'] + sorted(glob.glob('/etc/apt/sources.list.d/*.list')):
    try:
        lines = open(path).readlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r'\[[^]]*\]', '', line.split('#')[0]).split()
        if len(words) >= 3 and words[0] == 'deb' and not re.search(r'[-/]', words[2]):
            print(words[1], words[2]); raise SystemExit
PY
) || true
[ -n "${suite:-}" ] || fail "no Debian mirror and suite found in /etc/apt/sources.list(.d); this test needs one"
arch=$(dpkg --print-architecture)

# A minbase root takes about 70 s to bootstrap, so the fresh root is kept as a tarball under
# .build, keyed by suite and architecture, and rebuilt when a week old. Each run unpacks it anew.
cache=$repo/.build/deb-test-cache
base=$cache/root-$suite-$arch.tar
mkdir -p "$cache/archives"
if [ -z "$(find "$base" -mtime -7 2>/dev/null)" ]; then
	step "debootstrap --variant=minbase $suite $mirror (cached in $base)"
	debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
		|| { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap $suite $mirror failed"; }
	rm -rf "$root"/var/cache/apt/archives/*.deb "$cache"/archives/*.deb
	# A private name until complete: a concurrent run only ever sees a whole tarball.
	tar -C "$root" -cf "$base.$$" . && mv "$base.$$" "$base"
else
	step "unpacking the cached $suite root"
	mkdir "$root"
	tar -C "$root" -xf "$base"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Packages are installed, never started: no daemon of the root (udev) may run on this machine.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
# The archive's packages from earlier runs; apt-get checks them against the fresh index.
cp "$cache/archives/"*.deb "$root/var/cache/apt/archives/" 2>/dev/null || true
cp "$deb" "$root/tmp/"
mount -t proc proc "$root/proc"

step "apt-get install ./$(basename "$deb") man-db bash-completion (dependencies from $mirror)"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
in_root apt-get update -q >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get update in the root failed"; }
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	"/tmp/$(basename "$deb")" man-db bash-completion >>"$work/apt.log" 2>&1 \
	|| { tail -30 "$work/apt.log" >&2; fail "apt-get could not install the package"; }
cp -n "$root"/var/cache/apt/archives/*.deb "$cache/archives/" 2>/dev/null || true
for dependency in grub-pc-bin grub2-common udev e2fsprogs util-linux; do
	in_root dpkg-query -W -f='${Status}\n' "$dependency" | grep -q 'install ok installed' \
		|| fail "apt-get did not install the dependency $dependency"
done

step "the installed imgtool"
[ "$(in_root imgtool --version)" = "imgtool $upstream" ] \
	|| fail "imgtool --version says '$(in_root imgtool --version)', the package is $version"
[ "$(in_root imgtool version)" = "imgtool $upstream" ] || fail "imgtool version disagrees with --version"

# Spaces collapsed: man justifies lines.
page=$(in_root env MANPAGER=cat MANWIDTH=80 man imgtool 2>&1 | tr -s ' ') || fail "man imgtool failed: $page"
grep -q '^NAME' <<<"$page" && grep -q 'imgtool - make disk image files behave like disks' <<<"$page" \
	|| fail "man imgtool shows no NAME line: $page"
grep -q -- '--strategy name' <<<"$page" || fail "man imgtool does not document --strategy"
whatis=$(in_root whatis imgtool 2>&1) || fail "whatis imgtool finds nothing (the NAME line): $whatis"
grep -q '^imgtool (1) *- make disk image files' <<<"$whatis" || fail "whatis imgtool says '$whatis'"

# bash-completion loads /usr/share/bash-completion/completions/imgtool on first use; this calls
# its loader as a TAB would, then the completion function with the words typed so far.
complete_bash() {
	in_root bash -c 'source /usr/share/bash-completion/bash_completion
		_completion_loader imgtool
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
		$(complete -p imgtool | sed -n "s/.*-F \([^ ]*\) .*/\1/p") imgtool "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
		echo "${COMPREPLY[*]}"' bash "$@"
}
[ "$(complete_bash imgtool ins)" = "install-grub inspect" ] \
	|| fail "bash completes 'imgtool ins' to '$(complete_bash imgtool ins)'"
[ "$(complete_bash imgtool install-grub --str)" = "--strategy" ] \
	|| fail "bash completes 'imgtool install-grub --str' to '$(complete_bash imgtool install-grub --str)'"
[ "$(complete_bash imgtool verify --firmware '')" = "bios efi efi-secure" ] \
	|| fail "bash completes 'imgtool verify --firmware ' to '$(complete_bash imgtool verify --firmware '')'"

# A 4 MiB image with a dos table and one Linux partition at sector 2048.
truncate -s 4M "$root/tmp/small.img"
echo 'label: dos
start=2048, size=4096, type=83' | sfdisk -q "$root/tmp/small.img"
report=$(in_root imgtool inspect --json /tmp/small.img) || fail "imgtool inspect failed: $report"
grep -Eq '"type" *: *"dos"' <<<"$report" && grep -Eq '"start" *: *2048' <<<"$report" \
	|| fail "imgtool inspect does not see the dos partition at 2048: $report"
in_root imgtool inspect /tmp/small.img >/dev/null || fail "imgtool inspect (text) failed"

step "passed"
