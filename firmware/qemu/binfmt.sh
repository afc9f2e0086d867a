#!/bin/sh
# Makes the kernel run ARM binaries through qemu-user-static: mounts binfmt_misc (containers and
# minimal systems often lack it; systemd-binfmt is absent there) and enables the given
# interpreters with update-binfmts (binfmt-support). Idempotent.
# Usage: firmware/qemu/binfmt.sh qemu-aarch64 [qemu-arm ...]
set -eu
BM=/proc/sys/fs/binfmt_misc
if [ ! -e "$BM/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BM" || {
        echo "binfmt.sh: cannot mount binfmt_misc at $BM (needs root and a kernel with binfmt_misc)" >&2
        exit 2
    }
fi
for name in "$@"; do
    if ! grep -qx enabled "$BM/$name" 2>/dev/null; then
        [ -e "/usr/share/binfmts/$name" ] || {
            echo "binfmt.sh: /usr/share/binfmts/$name missing: apt-get install qemu-user-static binfmt-support" >&2
            exit 2
        }
        update-binfmts --enable "$name" >/dev/null
    fi
    # The F flag loads the interpreter at registration, so a chroot needs no copy of qemu inside.
    grep -q '^flags:.*F' "$BM/$name" || {
        echo "binfmt.sh: $name is registered without the F (fix-binary) flag; chroots would not find qemu" >&2
        exit 2
    }
done
