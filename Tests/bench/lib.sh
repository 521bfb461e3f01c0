# shellcheck shell=bash
# Shared by the benchmarks (sourced): timing, fresh image copies and teardown on exit or signal.
# The sourcing script sets WORK and defines release_all (what of ours to release) before bench_traps.

now_us() { echo "${EPOCHREALTIME/./}"; }   # bash 5 builtin: no fork inside the timed region

fresh_copy() {   # BASE DEST: copied and flushed, so no side pays for another's dirty pages
    rm -f "$2"; cp --sparse=always "$1" "$2"; sync "$2"
}

# shellcheck disable=SC2317  # called from the traps
bench_cleanup() { release_all; rm -rf "$WORK"; }
bench_traps() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
