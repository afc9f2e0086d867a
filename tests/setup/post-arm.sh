#!/bin/sh
# Builds (once) the cached arm64 and armhf root filesystems that tests/arm runs in. Idempotent:
# with the cache in place (/var/cache/gatewatch, keyed by package list) it only checks it.
# GW_SKIP_ARM=1 skips it (a developer who does not run tests/arm).
set -eu
[ "${GW_SKIP_ARM:-0}" = 1 ] && { echo "post-arm: skipped (GW_SKIP_ARM=1)"; exit 0; }
here=$(cd "$(dirname "$0")/../.." && pwd)
for arch in arm64 armhf; do
    start=$(date +%s)
    nice -n 5 "$here/firmware/qemu/build-rootfs.sh" "$arch" >/dev/null
    echo "post-arm: rootfs $arch ready ($(( $(date +%s) - start )) s)"
done
