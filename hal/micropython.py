"""MicroPython HAL backend: ``machine.Pin`` LEDs, ``machine.WDT``, ``machine.UART``, files on the board's flash.

Owns the mapping of HAL calls onto MicroPython's ``machine`` and ``os``. Under CPython (tests)
``machine`` is the stub shipped in hal/_machine_stub.py. Kept MicroPython-friendly: % formatting,
no typing, no dataclasses, try/except ImportError fallbacks. A microcontroller has no packet
filter, so Firewall is a block table with expiry that the agent's own intake consults.
"""

try:
    import machine
except ImportError:
    from hal import _machine_stub as machine

import os
import sys
import time

try:
    from hal import contracts
except ImportError:  # pragma: no cover - frozen on a board without the hal package layout
    import contracts

NAME = "micropython"
HalError = contracts.HalError


def _ticks_s():
    if hasattr(time, "ticks_ms"):  # pragma: no cover - MicroPython
        return time.ticks_ms() / 1000.0
    return time.monotonic()


class Clock(contracts.Clock):
    """time.time() and the board's millisecond tick counter."""

    def wall(self):
        return time.time()

    def monotonic(self):
        return _ticks_s()


class StatusLed(contracts.StatusLed):
    """A green and a red GPIO LED; blinking states toggle on ``tick()`` (the agent loop calls it).

    ok: green; updating: green and red (amber on a bi-colour LED); blocked: red blinking; fault: red.
    """

    PATTERNS = {"ok": (1, 0), "updating": (1, 1), "blocked": (0, "blink"), "fault": (0, 1)}

    def __init__(self, green_pin=2, red_pin=4):
        contracts.StatusLed.__init__(self)
        self.green = machine.Pin(green_pin, machine.Pin.OUT)
        self.red = machine.Pin(red_pin, machine.Pin.OUT)
        self._blink = False

    def _apply_state(self, state):
        g, r = self.PATTERNS[state]
        self.green.value(g)
        self._blink = r == "blink"
        self.red.value(1 if r == "blink" else r)

    def tick(self):
        """Advance a blinking pattern by one half-period."""
        if self._blink:
            self.red.value(0 if self.red.value() else 1)


class Firewall(contracts.Firewall):
    """A block table with expiry on the board clock (no packet filter exists here)."""

    def __init__(self, clock=None):
        self.clock = clock or Clock()
        self._entries = {}

    def _apply_block(self, addresses, seconds):
        for a in addresses:
            self._entries[a] = self.clock.monotonic() + seconds

    def _apply_unblock(self, addresses):
        for a in addresses:
            if a in self._entries:
                del self._entries[a]

    def _apply_list(self):
        now = self.clock.monotonic()
        for a in [a for a in self._entries if self._entries[a] <= now]:
            del self._entries[a]
        return [{"address": a, "expires_in": int(self._entries[a] - now)} for a in self._entries]


class Watchdog(contracts.Watchdog):
    """machine.WDT: it cannot be stopped once started, so stop() says so and leaves it armed."""

    owner = "machine.WDT"
    stoppable = False

    def __init__(self, wdt_id=0):
        contracts.Watchdog.__init__(self)
        self.wdt_id = wdt_id
        self.wdt = None

    def _apply_start(self, timeout):
        self.wdt = machine.WDT(id=self.wdt_id, timeout=timeout * 1000)

    def _apply_kick(self):
        self.wdt.feed()

    def _apply_stop(self):
        raise HalError("machine.WDT cannot be stopped once started; keep kicking it or let the board reset")


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _sync_fd(f):
    f.flush()
    if hasattr(os, "fsync"):
        os.fsync(f.fileno())
    elif hasattr(os, "sync"):  # pragma: no cover - MicroPython
        os.sync()


def _sync_dir(root):
    if hasattr(os, "open") and hasattr(os, "O_RDONLY"):
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    elif hasattr(os, "sync"):  # pragma: no cover - MicroPython
        os.sync()


class Storage(contracts.Storage):
    """Files in one folder of the board's file system (littlefs/FAT), via open/rename/sync."""

    def __init__(self, root="/data", clock=None):
        self.root = root.rstrip("/") or "/"
        if not _exists(self.root):
            os.mkdir(self.root)
        contracts.Storage.__init__(self, clock=clock)

    def _path(self, name):
        return "%s/%s" % (self.root, name)

    def _op_recover(self):
        for entry in os.listdir(self.root):
            if entry.endswith(contracts.TEMP_SUFFIX):
                os.remove(self._path(entry))

    def _op_create(self, temp):
        return open(self._path(temp), "wb")

    def _op_write(self, handle, data):
        handle.write(data)

    def _op_fsync(self, handle):
        _sync_fd(handle)

    def _op_close(self, handle):
        handle.close()

    def _op_rename(self, temp, name):
        # littlefs and CPython replace atomically; FAT cannot rename over a file.
        try:
            os.rename(self._path(temp), self._path(name))
        except OSError:  # pragma: no cover - FAT
            os.remove(self._path(name))
            os.rename(self._path(temp), self._path(name))

    def _op_fsync_dir(self):
        _sync_dir(self.root)

    def _op_read(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except OSError:
            raise contracts.StorageMissing("%s is not stored under %s" % (name, self.root))

    def _op_exists(self, name):
        return _exists(self._path(name))

    def _op_remove(self, name):
        os.remove(self._path(name))


class KeyStore(contracts.KeyStore):
    """Secret and anchors as files under ``root`` (anchors: one hex key a line per source)."""

    def __init__(self, root="/keys"):
        self.root = root.rstrip("/") or "/"
        if not _exists(self.root):
            os.mkdir(self.root)
        self.secret_path = self.root + "/device_secret"

    def _apply_load_secret(self):
        if not _exists(self.secret_path):
            return None
        with open(self.secret_path, "rb") as f:
            return f.read()

    def _apply_store_secret(self, secret):
        temp = self.secret_path + contracts.TEMP_SUFFIX
        if hasattr(os, "open") and hasattr(os, "O_CREAT"):
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
        with open(temp, "wb") as f:
            f.write(secret)
            _sync_fd(f)
        os.rename(temp, self.secret_path)
        _sync_dir(self.root)

    def _anchor_file(self, source):
        return "%s/trust-%s.txt" % (self.root, source)

    def _write_anchors(self, source, keys):
        path = self._anchor_file(source)
        with open(path + contracts.TEMP_SUFFIX, "w") as f:
            for k in keys:
                f.write("".join("%02x" % b for b in k) + "\n")
            _sync_fd(f)
        os.rename(path + contracts.TEMP_SUFFIX, path)
        _sync_dir(self.root)

    def _apply_add_anchor(self, source, public_key):
        self._write_anchors(source, self._apply_anchors(source) + [public_key])

    def _apply_remove_anchor(self, source, public_key):
        self._write_anchors(source, [k for k in self._apply_anchors(source) if k != public_key])

    def _apply_anchors(self, source):
        path = self._anchor_file(source)
        if not _exists(path):
            return []
        keys = []
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        keys.append(bytes(int(line[i:i + 2], 16) for i in range(0, len(line), 2)))
                    except ValueError:
                        raise HalError("trust anchor file %s has a line that is not hex" % path)
        return keys

    def _apply_sources(self):
        out = []
        for entry in os.listdir(self.root):
            if entry.startswith("trust-") and entry.endswith(".txt"):
                source = entry[6:-4]
                if self._apply_anchors(source):
                    out.append(source)
        return out


class SystemInfo(contracts.SystemInfo):
    """sys.platform/sys.implementation, gc memory counters, the tick counter since import."""

    _boot = _ticks_s()

    def _apply_info(self):
        info = {"arch": sys.platform, "agent_version": contracts.agent_version(),
                "uptime": _ticks_s() - SystemInfo._boot}
        machine_name = getattr(sys.implementation, "_machine", None)
        info["model"] = machine_name or "%s on %s" % (sys.implementation.name, sys.platform)
        try:
            import gc
            if hasattr(gc, "mem_free"):  # pragma: no cover - MicroPython
                info["memory_available"] = gc.mem_free()
                info["memory_total"] = gc.mem_free() + gc.mem_alloc()
        except ImportError:  # pragma: no cover
            pass
        return info


class SerialPort(contracts.SerialPort):
    """machine.UART; the URL names the UART: ``uart:0``, ``uart:1``..."""

    def _apply_open(self):
        if not self.url.startswith("uart:") or not self.url[5:].isdigit():
            raise contracts.HalArgumentError("a MicroPython serial URL is 'uart:<id>' (e.g. uart:0), got %r" % self.url)
        self.uart = machine.UART(int(self.url[5:]), baudrate=self.baudrate)

    def _apply_read(self, size):
        return self.uart.read(size) or b""

    def _apply_write(self, data):
        return self.uart.write(data)

    def _apply_close(self):
        self.uart.deinit()
