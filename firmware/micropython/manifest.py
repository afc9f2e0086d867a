# Freezes gatewatch's MicroPython-safe core (agent/core) into a MicroPython firmware image as the
# package `core`, beside the port's own frozen modules. Build from a MicroPython checkout, e.g.:
#
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/gatewatch/firmware/micropython/manifest.py
#   make -C ports/rp2 BOARD=RPI_PICO_W FROZEN_MANIFEST=/path/to/gatewatch/firmware/micropython/manifest.py
#
# Relative paths in a manifest are relative to this file. On the device, code imports it as
# `import core.bloom`, exactly as tests/core does under the WebAssembly port.
include("$(PORT_DIR)/boards/manifest.py")
package("core", base_path="../../agent", opt=3)
