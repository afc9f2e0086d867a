#!/bin/sh
# Makes the kernel run ARM binaries through qemu-user-static: mounts binfmt_misc (containers and
# minimal systems often lack it; systemd-binfmt is absent there) and enables the given
# interpreters with update-binfmts (binfmt-support).
# Usage: firmware/qemu/binfmt.sh qemu-aarch64 [qemu-arm ...]
#
# Idempotent and safe to run concurrently (tests/setup/post-arm.sh builds arm64 and armhf at the
# same time, the ARM tests may run several boards): everything below runs under one host-wide
# lock, "already mounted" and "already enabled" count as success, and the result is checked in
# /proc/sys/fs/binfmt_misc rather than trusted from exit codes. GW_BINFMT_LOCK names the lock file;
# GW_BINFMT_DIR another mount point (tests/arm/test_binfmt.py races mounts there, not on the real one).
set -eu
BM=${GW_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}
LOCK=${GW_BINFMT_LOCK:-/run/lock/gatewatch-binfmt.lock}

die() { echo "binfmt.sh: $*" >&2; exit 2; }

mounted() { grep -qs "^[^ ]* $BM binfmt_misc " /proc/mounts; }

mkdir -p "$(dirname "$LOCK")"
exec 9>>"$LOCK"
flock -w 300 9 || die "waited 300 s for $LOCK"

# Mounted by us, by a concurrent caller that did not take the lock (update-binfmts mounts it
# itself), or by systemd's automount (reading register triggers it): all are fine.
if ! mounted && [ ! -e "$BM/register" ]; then
    err=$(mount -t binfmt_misc binfmt_misc "$BM" 2>&1) || {
        mounted || [ -e "$BM/register" ] || \
            die "cannot mount binfmt_misc at $BM (needs root and a kernel with binfmt_misc): $err"
    }
fi
[ -e "$BM/register" ] || die "$BM is mounted but has no register file"

# The whole mechanism can be switched off (echo 0 > status); switch it back on.
if [ "$(cat "$BM/status" 2>/dev/null)" != enabled ]; then
    echo 1 > "$BM/status" || die "binfmt_misc is disabled and cannot be enabled ($BM/status)"
fi

for name in "$@"; do
    state=$(head -n1 "$BM/$name" 2>/dev/null || true)
    case "$state" in
        enabled) ;;
        disabled)
            # registered but switched off: update-binfmts would only say "already enabled"
            echo 1 > "$BM/$name" ;;
        *)
            [ -e "/usr/share/binfmts/$name" ] || \
                die "/usr/share/binfmts/$name missing: apt-get install qemu-user-static binfmt-support"
            out=$(update-binfmts --enable "$name" 2>&1) || {
                # a caller outside the lock may have won the race: the kernel's view decides
                [ "$(head -n1 "$BM/$name" 2>/dev/null)" = enabled ] || die "update-binfmts --enable $name: $out"
            } ;;
    esac
    [ "$(head -n1 "$BM/$name" 2>/dev/null)" = enabled ] || die "$name is not enabled in $BM after registration"
    # The F flag loads the interpreter at registration, so a chroot needs no copy of qemu inside.
    grep -q '^flags:.*F' "$BM/$name" || \
        die "$name is registered without the F (fix-binary) flag; chroots would not find qemu"
done
