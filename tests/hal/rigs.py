"""Test rigs: build every HAL device of one backend in a form tests can run and observe.

One rig per backend; the contract suite is parametrised over them. Real resources are private to
the test: LEDs are fake sysfs folders, storage and keys live in tmp folders, nft runs in a network
namespace created for the test and deleted after it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest

import hal
from hal import contracts


def nft_available():
    """(ok, reason): can this machine run nft inside a fresh network namespace?"""
    if shutil.which("nft") is None:
        return False, "nft not installed (tests/setup/apt-hal.txt installs nftables)"
    if shutil.which("ip") is None:
        return False, "iproute2 'ip' not installed"
    if os.geteuid() != 0:
        return False, "creating a network namespace needs root"
    return True, ""


class NetNs:
    """A named network namespace for nft, deleted on close()."""

    def __init__(self):
        ok, reason = nft_available()
        if not ok:
            pytest.skip(reason)
        self.name = "gwtest-%s" % uuid.uuid4().hex[:10]
        proc = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip("cannot create a network namespace here: %s" % proc.stderr.strip())
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True)
        self.nft = ("ip", "netns", "exec", self.name, "nft")

    def run(self, argv, **kw):
        return subprocess.run(["ip", "netns", "exec", self.name] + list(argv), **kw)

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def make_fake_leds(root, names=("gatewatch:green:status", "gatewatch:red:status"), with_delay_files=True):
    """Fake sysfs LED folders: brightness, max_brightness, trigger (and delay_on/off)."""
    for name in names:
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        for attr, value in (("brightness", "0"), ("max_brightness", "255"), ("trigger", "[none] timer heartbeat")):
            with open(os.path.join(d, attr), "w") as f:
                f.write(value + "\n")
        if with_delay_files:
            for attr in ("delay_on", "delay_off"):
                with open(os.path.join(d, attr), "w") as f:
                    f.write("500\n")
    return root


class Rig:
    """Builds devices for one backend; subclasses fill in the backend specifics."""

    name = None
    real_time = False  # True when expiry needs real seconds to pass

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.backend = hal.get_backend(self.name)
        self._cleanup = []

    def close(self):
        for fn in reversed(self._cleanup):
            fn()

    def advance(self, seconds):
        """Let ``seconds`` pass for expiring devices."""
        raise NotImplementedError

    def storage(self):
        return self.backend.Storage(root=str(self.tmp / "store"))

    def reboot_storage(self, storage):
        """What is on flash after the power came back: a fresh Storage on the same medium."""
        return self.backend.Storage(root=storage.root)

    def power_cut(self, storage):
        """Drop what a power loss drops. Real file systems: nothing can be dropped from here."""

    def keystore(self):
        return self.backend.KeyStore(root=str(self.tmp / "keys"))

    def reopen_keystore(self, ks):
        return self.backend.KeyStore(root=ks.root)

    def clock(self):
        return self.backend.Clock()

    def sysinfo(self):
        return self.backend.SystemInfo()

    def serial(self):
        return self.backend.SerialPort("loop://")

    def peer_send(self, port, data):
        port.port.write(data)  # loop:// hands back what was written

    def peer_received(self, port, n):
        return port.port.read(n)


class EmulatedRig(Rig):
    name = "emulated"

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.clk = self.backend.Clock()

    def advance(self, seconds):
        self.clk.advance(seconds)

    def led(self):
        return self.backend.StatusLed()

    def firewall(self):
        return self.backend.Firewall(clock=self.clk, hosts={"media.example": ["192.0.2.10", "2001:db8::10"]})

    def watchdog(self):
        return self.backend.Watchdog(clock=self.clk)

    def storage(self):
        return self.backend.Storage(clock=self.clk)

    def reboot_storage(self, storage):
        return self.backend.Storage(flash=storage.flash, clock=self.clk)

    def power_cut(self, storage):
        storage.flash.power_cut()

    def keystore(self):
        return self.backend.KeyStore()

    def reopen_keystore(self, ks):
        return ks  # in memory: the same object is the same device

    def clock(self):
        return self.clk

    def sysinfo(self):
        return self.backend.SystemInfo(clock=self.clk)

    def serial(self):
        return self.backend.SerialPort("emulated://console")

    def peer_send(self, port, data):
        port.drive_rx(data)

    def peer_received(self, port, n):
        out = bytes(port.tx[:n])
        del port.tx[:n]
        return out


class LinuxRig(Rig):
    name = "linux"
    real_time = True

    def advance(self, seconds):
        time.sleep(seconds)

    def led(self):
        root = make_fake_leds(str(self.tmp / "leds"))
        return self.backend.StatusLed(root=root)

    def firewall(self):
        ns = NetNs()
        self._cleanup.append(ns.close)
        return self.backend.Firewall(nft=ns.nft, resolver=lambda host: {"media.example": ["192.0.2.10", "2001:db8::10"]}[host])

    def watchdog(self):
        path = self.tmp / "watchdog"
        path.write_bytes(b"")
        return self.backend.Watchdog(device=str(path))


class OpenWrtRig(LinuxRig):
    name = "openwrt"

    def firewall(self):
        from hal import openwrt
        ns = NetNs()
        self._cleanup.append(ns.close)
        include = self.tmp / "gatewatch.nft"
        include.write_text(openwrt.fw4_include())
        # fw4 creates table inet fw4 and includes table-post files inside it; do the same here.
        ns.run(["nft", "-f", "-"], input='table inet fw4 {\ninclude "%s"\n}\n' % include, text=True, check=True)
        return self.backend.Firewall(nft=ns.nft, resolver=lambda host: {"media.example": ["192.0.2.10", "2001:db8::10"]}[host])

    def watchdog(self):
        return self.backend.Watchdog()


class MicroPythonRig(Rig):
    name = "micropython"

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        from hal import _machine_stub, emulated
        _machine_stub.reset_stub()
        self.clk = emulated.Clock()

    def advance(self, seconds):
        self.clk.advance(seconds)

    def led(self):
        return self.backend.StatusLed()

    def firewall(self):
        return self.backend.Firewall(clock=self.clk)

    def watchdog(self):
        return self.backend.Watchdog()

    def storage(self):
        return self.backend.Storage(root=str(self.tmp / "store"))

    def serial(self):
        return self.backend.SerialPort("uart:0")

    def peer_send(self, port, data):
        port.uart.drive_rx(data)

    def peer_received(self, port, n):
        out = bytes(port.uart.tx[:n])
        del port.uart.tx[:n]
        return out


RIGS = {"emulated": EmulatedRig, "linux": LinuxRig, "openwrt": OpenWrtRig, "micropython": MicroPythonRig}


def loadable(name):
    """(ok, reason) for whether backend ``name`` can load on this machine."""
    try:
        hal.load(name)
    except contracts.HalError as exc:
        return False, str(exc)
    return True, ""
