#!/bin/bash
# with-private-tmp.sh [--check] CMD...: runs CMD with TMPDIR set to a fresh directory, then removes
# it. SwiftPM 6 leaves a few empty TemporaryDirectory.* (and its _*.lock files) in $TMPDIR on every run;
# this keeps them out of /tmp. With --check, anything else left in that directory (a test's temp
# file or directory that outlived it) fails the run, named. Sticky and world-writable like /tmp,
# because tests run imgtool as an unprivileged user too.
set -uo pipefail
check=0
if [[ ${1:-} == --check ]]; then check=1; shift; fi
dir=$(mktemp -d /tmp/imgtool-tmpdir.XXXXXX) || exit 2
trap 'rm -rf --one-file-system "$dir"' EXIT   # never into a mount a test left there
chmod 1777 "$dir"
TMPDIR=$dir "$@"
status=$?
if (( check )); then
    left=$(find "$dir" -mindepth 1 -maxdepth 1 ! -name 'TemporaryDirectory.*' ! -name '_*.lock' -printf '  %f\n')
    if [[ -n $left ]]; then
        echo "temp files left behind in \$TMPDIR:" >&2
        echo "$left" >&2
        (( status )) || status=1
    else
        echo "after the run: nothing left in \$TMPDIR but SwiftPM's own"
    fi
fi
exit "$status"
