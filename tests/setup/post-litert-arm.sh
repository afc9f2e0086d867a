#!/bin/sh
# Installs (once) the neural hash's TFLite runtime for the emulated arm64 board: the aarch64
# ai-edge-litert wheel from PyPI, into a cached folder that firmware/qemu/run-user.sh copies into
# the board's root filesystem (firmware/qemu/litert-site.sh). Idempotent: with the cache in place
# it only checks it. GW_SKIP_ARM=1 skips it, like post-arm.sh.
set -eu
[ "${GW_SKIP_ARM:-0}" = 1 ] && { echo "post-litert-arm: skipped (GW_SKIP_ARM=1)"; exit 0; }
here=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "post-litert-arm: must run as root (the cache is /var/cache/gatewatch); GW_SKIP_ARM=1 skips it" >&2
    exit 2
fi
dir=$("$here/firmware/qemu/litert-site.sh" arm64 | tail -n 1)
echo "post-litert-arm: ai-edge-litert for arm64 ready in $dir"
