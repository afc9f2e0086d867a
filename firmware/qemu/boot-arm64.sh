#!/bin/sh
# Boots the emulated arm64 board (QEMU -M virt, Cortex-A53, TCG) from a make-boot-image.sh folder.
#
# Usage: firmware/qemu/boot-arm64.sh IMAGEDIR [--port PORT] [--mem MB]
#   Without --port the board's UART (ttyAMA0) is this terminal (quit: Ctrl-A X).
#   With --port it listens on 127.0.0.1:PORT and waits for a client before it boots, so nothing
#   is lost: drive it with pyserial, e.g. `python -m agent.console`-style tools on socket://127.0.0.1:PORT.
# The board powers off (QEMU exits) when its board command ends.
set -eu
IMG=${1:-}
[ -n "$IMG" ] && [ -f "$IMG/vmlinuz" ] && [ -f "$IMG/initrd" ] || {
    echo "usage: $0 IMAGEDIR [--port PORT] [--mem MB]   (IMAGEDIR from make-boot-image.sh)" >&2; exit 2; }
shift
PORT="" MEM=1536
while [ $# -gt 0 ]; do
    case "$1" in
        --port) PORT=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        *) echo "$0: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -n "$PORT" ]; then
    SERIAL="-chardev socket,id=uart,host=127.0.0.1,port=$PORT,server=on,wait=on,logfile=$IMG/serial.log,logappend=on -serial chardev:uart"
else
    SERIAL="-serial mon:stdio"
fi
# loglevel=1: the kernel's console shares the UART with the management console.
# panic=-1 with -no-reboot: when /init ends, QEMU exits instead of rebooting.
# shellcheck disable=SC2086
exec qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 1 -m "$MEM" -nodefaults -display none \
    -no-reboot -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd" \
    -append "console=ttyAMA0 rdinit=/init panic=-1 loglevel=1 quiet" $SERIAL
