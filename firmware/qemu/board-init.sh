#!/bin/sh
# /init of the emulated arm64 board (the root filesystem is the initramfs, so this is PID 1).
#
# Mounts the kernel filesystems, prints a banner on the board's UART (ttyAMA0) and runs the
# board command that make-boot-image.sh wrote to /etc/gatewatch/board.sh: by default the agent's
# serial console with the emulated HAL on ttyAMA0 and the list folder /etc/gatewatch/lists loaded.
# When the command ends the board powers off and QEMU exits: the board's life is the command's.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname gatewatch-board 2>/dev/null || true

# The kernel's console is this UART too; keep its messages off the management line.
echo 1 > /proc/sys/kernel/printk 2>/dev/null || true

UART=/dev/ttyAMA0
# Raw line, no echo: the agent's console (pyserial) sets its own mode, the banner must not be
# mangled by a cooked tty (onlcr) either way.
stty -F "$UART" 115200 raw -echo 2>/dev/null || true
printf 'gatewatch-board: booted %s %s, %s MB RAM\r\n' "$(uname -m)" "$(uname -r)" \
    "$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)" > "$UART"

if [ -x /etc/gatewatch/board.sh ]; then
    /etc/gatewatch/board.sh </dev/null >>/tmp/board.log 2>&1
    rc=$?
else
    echo "gatewatch-board: /etc/gatewatch/board.sh missing" > "$UART"
    rc=127
fi
printf 'gatewatch-board: board command exited %d\r\n' "$rc" > "$UART"
tail -n 20 /tmp/board.log 2>/dev/null | sed 's/$/\r/' > "$UART"
sync
# Power off through PSCI (QEMU exits). Should sysrq be missing, leaving PID 1 panics the kernel,
# panic=-1 reboots at once and QEMU's -no-reboot exits all the same.
echo 1 > /proc/sys/kernel/sysrq 2>/dev/null
echo o > /proc/sysrq-trigger 2>/dev/null
sleep 5
exit "$rc"
