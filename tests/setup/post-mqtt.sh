#!/bin/sh
# MQTT tests: paho-mqtt 1.6.1 (what OpenWrt ships) in its own folder, so that the MQTT tests run a
# second time on it (tests/mqtt/test_mqtt_paho161.py) while the environment keeps paho 2.x. Idempotent.
set -eu
cd "$(dirname "$0")/../.."
TARGET=.cache/paho161
PY=${PYTHON:-python3}
# One run at a time: the folder is removed and refilled below.
mkdir -p .cache
exec 7>>.cache/.paho161.lock
flock -w 600 7
if "$PY" -c "import sys; sys.path.insert(0, '$TARGET'); import paho.mqtt as m; sys.exit(m.__version__ != '1.6.1')" 2>/dev/null \
   && [ -f "$TARGET/paho/mqtt/client.py" ]; then
    exit 0
fi
rm -rf "$TARGET"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$TARGET" paho-mqtt==1.6.1
