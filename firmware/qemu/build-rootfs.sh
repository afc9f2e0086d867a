#!/bin/bash
# Builds a Debian bookworm root filesystem for an ARM board (arm64 or armhf) and caches it as a
# tarball outside the clone, so that later runs (and CI's second run) only unpack it.
#
# Usage: firmware/qemu/build-rootfs.sh ARCH        (ARCH: arm64 | armhf; run as root)
# Prints the path of the cached tarball on its last line.
#
# Environment:
#   GW_ROOTFS_CACHE   cache folder (default /var/cache/gatewatch)
#   GW_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   GW_REBUILD=1      ignore a cached tarball
#
# The tarball holds Debian only: no gatewatch code. firmware/qemu/run-user.sh and the boot
# image builder copy the agent in per run, so a code change never invalidates the cache; the
# cache key is the package list, the suite, the mirror and RECIPE (the script's content version).
#
# Python packages come from Debian (python3-numpy, python3-pil, python3-cryptography, ...)
# because pip would compile under emulation. The arm64 tarball also carries the Debian arm64
# kernel in /boot (unpacked from its .deb, not installed: installing would build an initramfs
# under emulation for nothing; boot-arm64.sh packs its own).
set -euo pipefail

ARCH=${1:-}
case "$ARCH" in
    arm64) QEMU_BINFMT=qemu-aarch64 ;;
    armhf) QEMU_BINFMT=qemu-arm ;;
    *) echo "usage: $0 arm64|armhf" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "$0: must run as root (debootstrap, chroot)" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${GW_ROOTFS_CACHE:-/var/cache/gatewatch}
MIRROR=${GW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=$(sed 's/#.*//' "$HERE/rootfs-packages.txt" | tr -s ' \t\n' ' ' | sed 's/^ //; s/ $//')
# Bump RECIPE when a change below alters what the tarball holds; edits that do not (messages,
# locking) then leave every cache valid.
RECIPE=1
KEY=$( { echo "$ARCH $SUITE $MIRROR recipe $RECIPE"; echo "$PACKAGES"; } | sha256sum | cut -c1-16)
OUT="$CACHE/rootfs-$ARCH-$KEY.tar"
LINK="$CACHE/rootfs-$ARCH.tar"

log() { echo "build-rootfs[$ARCH]: $*" >&2; }

mkdir -p "$CACHE"
# One build per arch at a time (CI's installer and a developer's test run may both ask): the
# second waits, then finds the first one's tarball.
exec 9>"$CACHE/.lock-$ARCH"
flock 9

if [ -s "$OUT" ] && [ "${GW_REBUILD:-0}" != 1 ]; then
    log "cached: $OUT"
    ln -sfn "$(basename "$OUT")" "$LINK"
    echo "$OUT"
    exit 0
fi

for tool in debootstrap update-binfmts chroot; do
    command -v "$tool" >/dev/null || { log "missing $tool: install tests/setup/apt-arm.txt"; exit 2; }
done
"$HERE/binfmt.sh" "$QEMU_BINFMT"

# Unmounts everything under folder $1, deepest first. debootstrap mounts proc and sys in the
# target and, in a container, bind-mounts the host's /dev/null, /dev/pts, /dev/shm ... there:
# a plain rm -rf of a killed build's folder would reach into the host's /dev/shm.
umount_under() {
    local dir m
    dir=$(realpath -m "$1")
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# Leftovers of a build that was killed (no trap runs on SIGKILL): nobody else builds this arch
# now (the lock), and each arch only touches its own names.
for old in "$CACHE"/build-"$ARCH".*; do
    [ -e "$old" ] || continue
    log "removing the leftovers of an interrupted build: $old"
    umount_under "$old"
    rm -rf --one-file-system "$old"
done
rm -f "$CACHE"/rootfs-"$ARCH"-*.tar.part
WORK=$(mktemp -d "$CACHE/build-$ARCH.XXXXXX")
ROOT="$WORK/root"
cleanup() {
    umount_under "$WORK"
    rm -rf --one-file-system "$WORK" "$OUT.part"
}
trap cleanup EXIT

t0=$(date +%s)
log "debootstrap $SUITE (minbase) with: $PACKAGES"
# The include list is comma-separated for debootstrap.
debootstrap --arch="$ARCH" --variant=minbase --include="$(echo "$PACKAGES" | tr ' ' ',')" \
    "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    log "debootstrap failed; last lines of its log:"; tail -n 30 "$WORK/debootstrap.log" >&2
    tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    exit 1
}
t1=$(date +%s)
log "debootstrap took $((t1 - t0)) s"

if [ "$ARCH" = arm64 ]; then
    # debootstrap keeps the suite's package index, so apt inside can resolve the kernel's name.
    kpkg=$(chroot "$ROOT" apt-cache depends linux-image-arm64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-arm64\)$/\1/p' | head -n1)
    [ -n "$kpkg" ] || { log "cannot resolve linux-image-arm64 in the rootfs's package index"; exit 1; }
    log "fetching kernel $kpkg"
    mkdir -p "$WORK/deb"
    (cd "$WORK/deb" && chroot "$ROOT" sh -c "cd /tmp && apt-get download -q $kpkg" >/dev/null && mv "$ROOT"/tmp/*.deb .)
    # dpkg-deb runs natively: only /boot is wanted (the modules stay out, the initramfs has
    # everything it needs built in: PL011 UART, initramfs unpacking).
    dpkg-deb --fsys-tarfile "$WORK"/deb/*.deb | tar -x -C "$ROOT" --wildcards './boot/vmlinuz-*' './boot/config-*'
    ls "$ROOT"/boot/vmlinuz-* >/dev/null
fi

# Smaller tarball, faster unpacking: documentation, manuals, locales and apt's caches are not
# needed on a test board.
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
    "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/log/*.log "$ROOT"/debootstrap
find "$ROOT"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
# Quick proof that the emulated Python and its Debian modules import.
chroot "$ROOT" /usr/bin/python3 -c 'import numpy, PIL, cryptography, pytest, serial, platform; print("python", platform.python_version(), platform.machine(), "numpy", numpy.__version__)' >&2

tar -C "$ROOT" --numeric-owner -cf "$OUT.part" .
mv "$OUT.part" "$OUT"
# Older keys of this arch are stale now.
find "$CACHE" -maxdepth 1 -name "rootfs-$ARCH-*.tar" ! -name "$(basename "$OUT")" -delete
ln -sfn "$(basename "$OUT")" "$LINK"
log "built $OUT ($(du -h "$OUT" | cut -f1)) in $(( $(date +%s) - t0 )) s"
echo "$OUT"
