#!/bin/bash
# Runs gatewatch's tests inside an emulated ARM root filesystem under qemu-user (chroot).
#
# Usage: firmware/qemu/run-user.sh ARCH [COMMAND...]      (ARCH: arm64 | armhf; run as root)
#   Without COMMAND it runs pytest on the tests named in firmware/qemu/user-tests.txt.
#   COMMAND runs in /opt/gatewatch inside the chroot, e.g. `python3 -c 'import platform; ...'`.
#
# The cached root filesystem (build-rootfs.sh, built on first use) is unpacked into a fresh
# temporary folder (arm64: with the cached ai-edge-litert wheel of litert-site.sh installed);
# the work tree's agent/, hal/, tools/, models/, tests/ and pyproject.toml are copied to /opt/gatewatch (on PYTHONPATH: no pip under emulation). The chroot runs in its
# own mount and PID namespaces, so /proc is unmounted and stray processes end with it.
# GW_SHARE=DIR copies DIR to /opt/share inside (inputs such as benign test images).
# GW_KEEP_ROOT=1 keeps the unpacked folder and prints where it is.
set -euo pipefail

ARCH=${1:-}
case "$ARCH" in
    arm64) QEMU_BINFMT=qemu-aarch64 ;;
    armhf) QEMU_BINFMT=qemu-arm ;;
    *) echo "usage: $0 arm64|armhf [COMMAND...]" >&2; exit 2 ;;
esac
shift
[ "$(id -u)" = 0 ] || { echo "$0: must run as root (chroot)" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TAR=$("$HERE/build-rootfs.sh" "$ARCH" | tail -n1)
# The neural hash's TFLite runtime where PyPI has one (arm64: the aarch64 ai-edge-litert wheel,
# cached by litert-site.sh); armhf has none and refuses neural lists, as an armv7 router would.
SITE=""
[ "$ARCH" = arm64 ] && SITE=$("$HERE/litert-site.sh" "$ARCH" | tail -n1)
"$HERE/binfmt.sh" "$QEMU_BINFMT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gw-$ARCH.XXXXXX")
if [ "${GW_KEEP_ROOT:-0}" = 1 ]; then
    echo "run-user: root kept at $WORK/root" >&2
else
    trap 'rm -rf "$WORK"' EXIT
    trap 'exit 143' TERM INT HUP
fi
ROOT="$WORK/root"
mkdir -p "$ROOT"
tar -C "$ROOT" -xf "$TAR"

if [ -n "$SITE" ]; then
    # bookworm's Python 3.11 (the wheel is cp311) looks here first, before Debian's dist-packages
    mkdir -p "$ROOT/usr/local/lib/python3.11/dist-packages"
    cp -a "$SITE"/. "$ROOT/usr/local/lib/python3.11/dist-packages/"
fi
DEST="$ROOT/opt/gatewatch"
mkdir -p "$DEST"
for p in agent hal tools models tests bench pyproject.toml; do
    [ -e "$REPO/$p" ] && cp -a "$REPO/$p" "$DEST/"
done
find "$DEST" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$DEST/tests/data/.cache" 2>/dev/null || true
if [ -n "${GW_SHARE:-}" ]; then
    [ -d "$GW_SHARE" ] || { echo "run-user: GW_SHARE=$GW_SHARE is not a folder" >&2; exit 2; }
    cp -a "$GW_SHARE" "$ROOT/opt/share"
fi

if [ $# -eq 0 ]; then
    mapfile -t tests < <(sed 's/#.*//; /^[[:space:]]*$/d' "$HERE/user-tests.txt")
    present=()
    for t in "${tests[@]}"; do
        case "$t" in
            deselect\ *) present+=(--deselect "${t#deselect }"); continue ;;
        esac
        # A test file may not exist yet (another engineer's); say so instead of failing.
        if [ -e "$DEST/${t%%::*}" ]; then present+=("$t"); else echo "run-user: $t not in the work tree, not run" >&2; fi
    done
    set -- python3 -m pytest -q -p no:cacheprovider -o addopts= "${present[@]}"
fi

echo "run-user[$ARCH]: $*" >&2
# env -i: nothing of the host's environment (virtualenvs, PYTHONPATH) leaks into the board.
# Not exec: the EXIT trap must still remove the unpacked root (hundreds of MB) afterwards.
rc=0
unshare --mount --pid --fork --mount-proc="$ROOT/proc" \
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PYTHONPATH=/opt/gatewatch PYTHONDONTWRITEBYTECODE=1 GW_BOARD="$ARCH" \
    /bin/sh -c 'cd /opt/gatewatch && exec "$@"' sh "$@" || rc=$?
exit "$rc"
