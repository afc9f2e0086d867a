#!/bin/bash
# Installs the TFLite runtime of the neural hash (PyPI ai-edge-litert, its aarch64 wheel) into a
# cached folder that run-user.sh copies into the emulated arm64 root filesystem's
# /usr/local/lib/python3.11/dist-packages, so the board runs the same interpreter a real arm64
# gateway would install with pip.
#
# Usage: firmware/qemu/litert-site.sh ARCH     (ARCH: arm64; run as root like build-rootfs.sh)
# Prints the cached folder on its last line. armhf exits 3: PyPI has no armv7 wheel of
# ai-edge-litert or tflite-runtime for Python 3.11 (Debian bookworm's), so an armv7 board has no
# runtime and refuses neural lists with that reason.
#
# Environment:
#   GW_ROOTFS_CACHE     cache folder (default /var/cache/gatewatch, shared with build-rootfs.sh)
#   GW_LITERT_VERSION   ai-edge-litert version (default 2.3.0, what the x86 test extra resolves to)
#
# Why pip on the host and not inside the board: pip's own client resolves the aarch64 wheel for
# the board's Python (cp311, manylinux_2_27: bookworm has glibc 2.36) without running anything
# under emulation, and --no-deps keeps Debian's numpy 1.24 (the wheel asks numpy >= 1.23.2): the
# interpreter module imports numpy only. Nothing is downloaded at run time: run-user.sh only
# copies this folder. Idempotent and safe to run twice at once (a lock, then an atomic rename).
set -euo pipefail

ARCH=${1:-}
case "$ARCH" in
    arm64) PLATFORM=manylinux_2_27_aarch64 ;;
    armhf) echo "litert-site: no TFLite runtime wheel for armv7 (Python 3.11) on PyPI" >&2; exit 3 ;;
    *) echo "usage: $0 arm64" >&2; exit 2 ;;
esac
CACHE=${GW_ROOTFS_CACHE:-/var/cache/gatewatch}
VERSION=${GW_LITERT_VERSION:-2.3.0}
PYVER=3.11
OUT="$CACHE/litert-$ARCH-$VERSION-cp${PYVER/./}"

log() { echo "litert-site[$ARCH]: $*" >&2; }

mkdir -p "$CACHE"
exec 8>"$CACHE/.lock-litert-$ARCH"
flock 8
if [ -f "$OUT/.complete" ]; then
    log "cached: $OUT"
    echo "$OUT"
    exit 0
fi
rm -rf "$CACHE"/litert-"$ARCH".tmp.*
TMP=$(mktemp -d "$CACHE/litert-$ARCH.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PY=$(command -v python3)
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary=:all: \
    --platform "$PLATFORM" --python-version "$PYVER" --implementation cp \
    --target "$TMP/site" "ai-edge-litert==$VERSION" >&2
test -f "$TMP/site/ai_edge_litert/interpreter.py"
touch "$TMP/site/.complete"
rm -rf "$OUT"
mv "$TMP/site" "$OUT"
# Older versions of this arch are stale now.
find "$CACHE" -maxdepth 1 -name "litert-$ARCH-*" ! -name "$(basename "$OUT")" -exec rm -rf {} +
log "installed ai-edge-litert $VERSION ($PLATFORM, cp${PYVER/./}) in $OUT ($(du -sh "$OUT" | cut -f1))"
echo "$OUT"
