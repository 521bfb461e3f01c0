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

# Release whatever is still attached to or mounted from the images under $WORK, whoever attached it
# (a recipe or imgtool). Asking the kernel, by backing file, never touches another user's loop devices.
# shellcheck disable=SC2317  # called from the traps
release_work_images() {
    local m dev img
    for m in $(findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r); do umount "$m" || umount -l "$m"; done
    for img in "$WORK"/*.img; do
        [[ -e $img ]] || continue
        for dev in $(losetup -n -O NAME -j "$img"); do losetup -d "$dev" 2>/dev/null || true; done
    done
}
