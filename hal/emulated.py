"""Emulated HAL backend: every device in memory, recording what happened, drivable by tests.

A first-class backend (gpiozero's mock pins): the demo and the QEMU smoke test run the agent on
it. Each device keeps a ``history``, offers ``assert_...`` and ``drive_...`` helpers and
``reset()``. Storage runs on ``SimulatedFlash``, a model of a file system that loses whatever was
not made durable (fsync'd data, fsync'd directory entries) when ``power_cut()`` is called, so
power-loss tests can check the write order and not only exceptions.

It must not touch the host: no files, no subprocesses, no network.
"""

from __future__ import annotations

import threading

from hal import contracts
from hal.contracts import HalError, StorageMissing, TEMP_SUFFIX

NAME = "emulated"


class Clock(contracts.Clock):
    """A settable clock: time moves only when a test says so."""

    def __init__(self, wall=1_700_000_000.0, monotonic=1000.0):
        self._wall = float(wall)
        self._mono = float(monotonic)
        self._start = (self._wall, self._mono)

    def wall(self):
        return self._wall

    def monotonic(self):
        return self._mono

    def set(self, wall=None, monotonic=None):
        """Set wall time (may go back, like an NTP correction) and/or the monotonic counter (never back)."""
        if wall is not None:
            self._wall = float(wall)
        if monotonic is not None:
            if monotonic < self._mono:
                raise contracts.HalArgumentError("a monotonic clock never goes back (%r < %r)" % (monotonic, self._mono))
            self._mono = float(monotonic)

    def advance(self, seconds):
        """Move both clocks forward by ``seconds``."""
        if seconds < 0:
            raise contracts.HalArgumentError("advance() needs seconds >= 0, got %r" % (seconds,))
        self._wall += seconds
        self._mono += seconds

    def reset(self):
        """Back to the start time."""
        self._wall, self._mono = self._start


class StatusLed(contracts.StatusLed):
    """Records every state shown."""

    def __init__(self):
        super().__init__()
        self.history = []

    def _apply_state(self, state):
        self.history.append(state)

    def assert_states(self, expected):
        """Assert the states shown so far, in order."""
        assert self.history == list(expected), "LED states %r, expected %r" % (self.history, list(expected))

    def reset(self):
        self.history = []
        self._state = None


class Firewall(contracts.Firewall):
    """An in-memory block set whose entries expire on the injected clock."""

    def __init__(self, *, clock=None, hosts=None):
        self.clock = clock or Clock()
        self.hosts = dict(hosts or {})
        self.history = []
        self._entries = {}

    def _resolve(self, host):
        if host not in self.hosts:
            raise HalError("cannot resolve %r (emulated resolver knows: %s); nothing was blocked"
                           % (host, ", ".join(sorted(self.hosts)) or "nothing"))
        return list(self.hosts[host])

    def _apply_block(self, addresses, seconds):
        for a in addresses:
            self._entries[a] = self.clock.monotonic() + seconds
            self.history.append(("block", a, seconds))

    def _apply_unblock(self, addresses):
        for a in addresses:
            self._entries.pop(a, None)
            self.history.append(("unblock", a))

    def _apply_list(self):
        now = self.clock.monotonic()
        for a in [a for a, until in self._entries.items() if until <= now]:
            del self._entries[a]
        return [{"address": a, "expires_in": int(until - now)} for a, until in self._entries.items()]

    def assert_blocked(self, address):
        """Assert ``address`` is blocked now."""
        assert self.is_blocked(address), "%s is not blocked; blocked: %r" % (address, self.list())

    def reset(self):
        self._entries = {}
        self.history = []


class Watchdog(contracts.Watchdog):
    """Records start/kick/stop; ``expired()`` says whether a real one would have reset the board."""

    owner = "emulated"

    def __init__(self, *, clock=None):
        super().__init__()
        self.clock = clock or Clock()
        self.history = []
        self._last_kick = None

    def _apply_start(self, timeout):
        self.history.append(("start", timeout))
        self._last_kick = self.clock.monotonic()

    def _apply_kick(self):
        self.history.append(("kick",))
        self._last_kick = self.clock.monotonic()

    def _apply_stop(self):
        self.history.append(("stop",))

    def expired(self):
        """True when running and not kicked within the timeout (a real device would reset now)."""
        return self.running and self.clock.monotonic() - self._last_kick >= self.timeout

    def reset(self):
        self.history = []
        self._timeout = None


class SimulatedFlash:
    """A file system model with a volatile and a durable view of data and directory entries.

    ``fsync(file)`` makes that inode's data durable; ``fsync_dir()`` makes the directory's
    name -> inode map durable. ``power_cut()`` drops everything else: files whose data was never
    synced come back empty, renames that were never synced are undone.
    """

    def __init__(self):
        self._next = 1
        self.data = {}          # inode -> bytes (what a running system reads)
        self.durable_data = {}  # inode -> bytes (what survives a power cut)
        self.dir = {}           # name -> inode
        self.durable_dir = {}
        self.lock = threading.Lock()

    def create(self, name):
        inode = self._next
        self._next += 1
        self.data[inode] = b""
        self.dir[name] = inode
        return inode

    def power_cut(self):
        """Lose every change that was not made durable."""
        self.dir = dict(self.durable_dir)
        self.data = {i: self.durable_data.get(i, b"") for i in set(self.dir.values())}


class Storage(contracts.Storage):
    """Storage on a SimulatedFlash (pass one in to share it between 'reboots')."""

    def __init__(self, *, flash=None, clock=None):
        self.flash = flash if flash is not None else SimulatedFlash()
        self.history = []
        super().__init__(clock=clock)

    def _op_recover(self):
        for name in [n for n in self.flash.dir if n.endswith(TEMP_SUFFIX)]:
            del self.flash.dir[name]
        self._op_fsync_dir()

    def _op_create(self, temp):
        self.history.append(("create", temp))
        return [self.flash.create(temp)]

    def _op_write(self, handle, data):
        self.flash.data[handle[0]] = self.flash.data[handle[0]] + data

    def _op_fsync(self, handle):
        self.flash.durable_data[handle[0]] = self.flash.data[handle[0]]

    def _op_close(self, handle):
        pass

    def _op_rename(self, temp, name):
        self.history.append(("rename", temp, name))
        self.flash.dir[name] = self.flash.dir.pop(temp)

    def _op_fsync_dir(self):
        self.flash.durable_dir = dict(self.flash.dir)

    def _op_read(self, name):
        if name not in self.flash.dir:
            raise StorageMissing("%s is not stored (emulated flash)" % name)
        return self.flash.data[self.flash.dir[name]]

    def _op_exists(self, name):
        return name in self.flash.dir

    def _op_remove(self, name):
        del self.flash.dir[name]

    def reset(self):
        self.flash = SimulatedFlash()
        self.history = []
        self._written = {}


class KeyStore(contracts.KeyStore):
    """Secret and anchors in memory; ``secret_mode`` mirrors the file mode a real store uses."""

    def __init__(self):
        self.reset()

    def _apply_load_secret(self):
        return self._secret

    def _apply_store_secret(self, secret):
        if self._secret is None:
            self._secret = secret
            self.secret_mode = 0o600

    def _apply_add_anchor(self, source, public_key):
        self._anchors.setdefault(source, []).append(public_key)

    def _apply_remove_anchor(self, source, public_key):
        self._anchors[source].remove(public_key)

    def _apply_anchors(self, source):
        return list(self._anchors.get(source, []))

    def _apply_sources(self):
        return [s for s, keys in self._anchors.items() if keys]

    def reset(self):
        self._secret = None
        self.secret_mode = None
        self._anchors = {}


class SystemInfo(contracts.SystemInfo):
    """Fixed, settable facts about an imaginary board."""

    DEFAULTS = {"model": "gatewatch emulated board", "arch": "emulated", "memory_total": 128 * 1024 * 1024,
                "memory_available": 96 * 1024 * 1024}

    def __init__(self, *, clock=None, **facts):
        self.clock = clock or Clock()
        self._boot = self.clock.monotonic()
        self.facts = dict(self.DEFAULTS)
        self.facts.update(facts)

    def _apply_info(self):
        info = dict(self.facts)
        info["uptime"] = self.clock.monotonic() - self._boot
        info["agent_version"] = contracts.agent_version()
        return info


class SerialPort(contracts.SerialPort):
    """An in-memory port: ``drive_rx(bytes)`` feeds what the terminal types, ``tx`` holds what was sent."""

    def _apply_open(self):
        self.rx = bytearray()
        self.tx = bytearray()
        self.is_open = True

    def _apply_read(self, size):
        if not self.is_open:
            raise HalError("emulated serial port is closed")
        out = bytes(self.rx[:size])
        del self.rx[:size]
        return out

    def _apply_write(self, data):
        if not self.is_open:
            raise HalError("emulated serial port is closed")
        self.tx.extend(data)
        return len(data)

    def _apply_close(self):
        self.is_open = False

    def drive_rx(self, data):
        """Bytes the other end sends."""
        self.rx.extend(data)

    def assert_tx(self, expected):
        """Assert everything written so far."""
        assert bytes(self.tx) == expected, "serial sent %r, expected %r" % (bytes(self.tx), expected)

    def reset(self):
        self._apply_open()
