#!/bin/bash
# Usage: install-tree.sh <imgtool executable> <root> <prefix>
# Installs the executable, imgtool(1) and the bash, zsh and fish completions under <root><prefix>:
# what `make install` and `make deb` share. The page and the completions are written by the
# executable itself (its hidden `__generate`), from the argument table its help comes from, so
# they describe exactly the binary installed beside them.
set -euo pipefail
umask 022
if [ $# -ne 3 ]; then echo "usage: $0 <imgtool executable> <root> <prefix>" >&2; exit 64; fi
bin=$1 dest=$2$3
if [ ! -x "$bin" ]; then echo "$0: $bin is not an executable; run 'make build' first." >&2; exit 66; fi

install -D -m 0755 "$bin" "$dest/bin/imgtool"
install -d "$dest/share/man/man1" "$dest/share/bash-completion/completions" \
	"$dest/share/zsh/vendor-completions" "$dest/share/fish/vendor_completions.d"
# -n: no name or time stamp in the gzip header, so the same page gives the same bytes.
"$bin" __generate man | gzip -9n > "$dest/share/man/man1/imgtool.1.gz"
"$bin" __generate bash > "$dest/share/bash-completion/completions/imgtool"
"$bin" __generate zsh > "$dest/share/zsh/vendor-completions/_imgtool"
"$bin" __generate fish > "$dest/share/fish/vendor_completions.d/imgtool.fish"
