#!/bin/sh
# Builds (once) the cached arm64 and armhf root filesystems that tests/arm runs in. Idempotent:
# with the cache in place (/var/cache/gatewatch, keyed by package list) it only checks it.
# GW_SKIP_ARM=1 skips it (a developer who does not run tests/arm).
set -eu
[ "${GW_SKIP_ARM:-0}" = 1 ] && { echo "post-arm: skipped (GW_SKIP_ARM=1)"; exit 0; }
here=$(cd "$(dirname "$0")/../.." && pwd)
start=$(date +%s)
# Shared host state first, once, before the parallel builds: binfmt_misc mounted and both
# interpreters registered (binfmt.sh is locked and idempotent; the builds call it again, then
# it finds everything in place). A fresh machine used to fail here: both builds mounted
# binfmt_misc at once and the loser's "already mounted" ended its build.
if [ "$(id -u)" != 0 ]; then
    echo "post-arm: must run as root (debootstrap, chroot, binfmt_misc); GW_SKIP_ARM=1 skips it" >&2
    exit 2
fi
"$here/firmware/qemu/binfmt.sh" qemu-aarch64 qemu-arm
# Both in parallel: the download phases overlap and CI's two cores are otherwise idle here.
logs=$(mktemp -d)
pids=""
for arch in arm64 armhf; do
    nice -n 5 "$here/firmware/qemu/build-rootfs.sh" "$arch" >"$logs/$arch.out" 2>"$logs/$arch.err" &
    pids="$pids $!"
done
rc=0
for pid in $pids; do wait "$pid" || rc=1; done
for arch in arm64 armhf; do
    grep -h 'took\|built\|cached' "$logs/$arch.err" | sed 's/^/post-arm: /' || true
done
if [ "$rc" != 0 ]; then
    echo "post-arm: a root filesystem build failed:" >&2
    tail -n 40 "$logs"/*.err >&2
fi
rm -rf "$logs"
echo "post-arm: root filesystems ready in $(( $(date +%s) - start )) s"
exit "$rc"
