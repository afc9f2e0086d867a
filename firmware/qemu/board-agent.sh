#!/bin/sh
# Default board command of the emulated arm64 board (make-boot-image.sh installs it as
# /etc/gatewatch/board.sh; board-init.sh runs it as the board's only service).
#
# 1. starts the agent daemon (`gatewatch run`) with the emulated HAL, no broker, the signed lists
#    of /etc/gatewatch/lists and the keys of /etc/gatewatch/trust.pub;
# 2. once it answers on its local check API, scans every image in /etc/gatewatch/scan/ through
#    that API and writes one `board-scan: <file> <JSON answer>` line per image to the UART;
# 3. hands the UART to the serial management console (`python -m agent.console`), which answers
#    status/lists from the daemon's status.json, until the board is switched off.
# Logs go to /tmp/*.log (shown on the UART if the console ever exits).
cd /opt/gatewatch
export PYTHONPATH=/opt/gatewatch PYTHONDONTWRITEBYTECODE=1
export GATEWATCH_AGENT_HAL=emulated GATEWATCH_AGENT_STATUS_INTERVAL=2
UART=/dev/ttyAMA0
STATE=/var/lib/gatewatch
SOCK=/run/gatewatch.sock
mkdir -p "$STATE"

say() { printf '%s\r\n' "$*" > "$UART"; }

python3 -m agent.cli run --state-dir "$STATE" --lists /etc/gatewatch/lists \
    --trust /etc/gatewatch/trust.pub --socket "$SOCK" >/tmp/daemon.log 2>&1 &
DAEMON=$!
say "board-agent: daemon started (pid $DAEMON)"

# Under TCG the daemon needs a few seconds to import numpy/Pillow/cryptography and verify lists.
i=0
while [ ! -S "$SOCK" ] || [ ! -s "$STATE/status.json" ]; do
    if ! kill -0 "$DAEMON" 2>/dev/null; then
        say "board-agent: daemon exited early:"
        tail -n 15 /tmp/daemon.log | sed 's/$/\r/' > "$UART"
        exit 1
    fi
    i=$((i + 1))
    [ "$i" -gt 600 ] && { say "board-agent: daemon not ready after 300 s"; exit 1; }
    sleep 0.5
done
say "board-agent: daemon ready"

for f in /etc/gatewatch/scan/*; do
    [ -f "$f" ] || continue
    answer=$(python3 - "$SOCK" "$f" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(120)
s.connect(sys.argv[1])
s.sendall(json.dumps({"path": sys.argv[2], "url": "http://images.example/" + sys.argv[2].rsplit("/", 1)[-1]}).encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
print(buf.decode().strip())
EOF
)
    say "board-scan: $(basename "$f") $answer"
done

say "board-agent: console on $UART"
exec python3 -m agent.console --port "$UART" --state-dir "$STATE" 2>/tmp/console.log
