#!/bin/bash
# Packs the boot image of the emulated arm64 board: the Debian arm64 kernel and an initramfs that
# is the whole root filesystem (Debian's virtio and 9p drivers are modules, an initramfs needs none).
#
# Usage: firmware/qemu/make-boot-image.sh OUTDIR [--lists DIR] [--trust FILE] [--file SRC:DEST]...
#                                                [--board-cmd CMD] [--gzip]
#   OUTDIR receives vmlinuz and initrd (uncompressed cpio by default: QEMU loads it straight into
#   guest memory, and the emulated CPU would spend longer inflating a cpio.gz than the host saves).
#   --lists DIR    list files (*.gwl) copied to /etc/gatewatch/lists on the board
#   --trust FILE   public key line(s) copied to /etc/gatewatch/trust.pub
#   --file SRC:DEST  any extra file, e.g. a benign test image
#   --scan FILE    an image that board-agent.sh scans through the daemon at boot (/etc/gatewatch/scan/)
#   --board-cmd    what /init runs (default: board-agent.sh: the daemon with the emulated HAL and the
#                  lists, then the serial management console on ttyAMA0)
#   --gzip         write initrd as cpio.gz (smaller file, slower boot under TCG)
# Runs as root (device nodes in the image). Prints OUTDIR on its last line.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-}
[ -n "$OUT" ] && [ "${OUT#-}" = "$OUT" ] || { echo "usage: $0 OUTDIR [options]" >&2; exit 2; }
shift
LISTS="" TRUST="" GZIP=0 FILES=()
BOARD_CMD=""
while [ $# -gt 0 ]; do
    case "$1" in
        --lists) LISTS=$2; shift 2 ;;
        --trust) TRUST=$2; shift 2 ;;
        --file) FILES+=("$2"); shift 2 ;;
        --scan) FILES+=("$2:/etc/gatewatch/scan/$(basename "$2")"); shift 2 ;;
        --board-cmd) BOARD_CMD=$2; shift 2 ;;
        --gzip) GZIP=1; shift ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "$0: must run as root" >&2; exit 2; }
[ -z "$LISTS" ] || [ -d "$LISTS" ] || { echo "$0: --lists $LISTS is not a folder" >&2; exit 2; }
[ -z "$TRUST" ] || [ -f "$TRUST" ] || { echo "$0: --trust $TRUST is not a file" >&2; exit 2; }

TAR=$("$HERE/build-rootfs.sh" arm64 | tail -n1)
mkdir -p "$OUT"
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/gw-bootimg.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
R="$STAGE/root"
mkdir -p "$R"
tar -C "$R" -xf "$TAR"

kernel=$(ls "$R"/boot/vmlinuz-* | head -n1)
cp "$kernel" "$OUT/vmlinuz"
rm -rf "$R/boot"

mkdir -p "$R/opt/gatewatch" "$R/etc/gatewatch/lists"
for p in agent hal tools models pyproject.toml; do
    [ -e "$REPO/$p" ] && cp -a "$REPO/$p" "$R/opt/gatewatch/"
done
find "$R/opt/gatewatch" -name __pycache__ -prune -exec rm -rf {} +
[ -n "$LISTS" ] && cp "$LISTS"/*.gwl "$R/etc/gatewatch/lists/"
[ -n "$TRUST" ] && cp "$TRUST" "$R/etc/gatewatch/trust.pub"
for spec in "${FILES[@]}"; do
    src=${spec%%:*} dest=${spec#*:}
    mkdir -p "$R$(dirname "$dest")"
    cp "$src" "$R$dest"
done
if [ -n "$BOARD_CMD" ]; then
    cat > "$R/etc/gatewatch/board.sh" <<EOF
#!/bin/sh
cd /opt/gatewatch
export PYTHONPATH=/opt/gatewatch PYTHONDONTWRITEBYTECODE=1 GATEWATCH_AGENT_HAL=emulated
$BOARD_CMD
EOF
else
    cp "$HERE/board-agent.sh" "$R/etc/gatewatch/board.sh"
fi
chmod 755 "$R/etc/gatewatch/board.sh"
install -m 755 "$HERE/board-init.sh" "$R/init"

# The kernel opens /dev/console for init before devtmpfs is mounted: it must exist in the image.
rm -rf "$R/dev" && mkdir -p "$R/dev" "$R/proc" "$R/sys" "$R/tmp" "$R/run"
mknod -m 600 "$R/dev/console" c 5 1
mknod -m 666 "$R/dev/null" c 1 3

# Compiled bytecode makes the emulated imports several times faster than compiling at boot.
chroot "$R" /usr/bin/python3 -m compileall -q -j 0 /opt/gatewatch/agent /opt/gatewatch/hal >/dev/null 2>&1 || true

if [ "$GZIP" = 1 ]; then
    (cd "$R" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$OUT/initrd.part"
else
    (cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) > "$OUT/initrd.part"
fi
mv "$OUT/initrd.part" "$OUT/initrd"
echo "make-boot-image: $(du -h "$OUT/vmlinuz" | cut -f1) kernel, $(du -h "$OUT/initrd" | cut -f1) initrd" >&2
echo "$OUT"
