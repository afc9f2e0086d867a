"""Linux HAL backend: sysfs LEDs, nftables sets, /dev/watchdog, fsync'd storage, pyserial.

Owns the translation of validated HAL calls into Linux interfaces. Paths are configurable so tests
point them at temporary folders (sysfs LEDs, watchdog device) and nft runs inside a network
namespace they create; it must not guess at board-specific names beyond its defaults.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import socket
import subprocess
import time

from hal import contracts
from hal.contracts import HalError, StorageMissing, TEMP_SUFFIX

NAME = "linux"

DEFAULT_LED_ROOT = "/sys/class/leds"


class StatusLed(contracts.StatusLed):
    """Sysfs LEDs show the state; blinking uses the kernel's timer trigger.

    Two LEDs (green, red): ok green on; updating green blinking; blocked red blinking; fault red on.
    One LED (``red=None``, common on routers): ok on; updating slow blink; blocked fast blink;
    fault a long-off short-on pulse (not plain off, which would look like no power).
    """

    PATTERNS = {
        "ok": (("green", "on", None), ("red", "off", None)),
        "updating": (("green", "blink", None), ("red", "off", None)),
        "blocked": (("green", "off", None), ("red", "blink", None)),
        "fault": (("green", "off", None), ("red", "on", None)),
    }
    SINGLE_PATTERNS = {
        "ok": (("green", "on", None),),
        "updating": (("green", "blink", (500, 500)),),
        "blocked": (("green", "blink", (100, 100)),),
        "fault": (("green", "blink", (100, 1900)),),
    }

    def __init__(self, *, green="gatewatch:green:status", red="gatewatch:red:status",
                 root=DEFAULT_LED_ROOT, blink_ms=(250, 250)):
        super().__init__()
        self.root = root
        self.blink_ms = blink_ms
        self.leds = {"green": green} if red is None else {"green": green, "red": red}
        self.patterns = self.SINGLE_PATTERNS if red is None else self.PATTERNS
        for colour, name in self.leds.items():
            if not os.path.isfile(os.path.join(root, name, "brightness")):
                available = sorted(os.listdir(root)) if os.path.isdir(root) else []
                raise HalError("no %s status LED %r under %s (available: %s); set the LED names in the "
                               "configuration" % (colour, name, root, ", ".join(available) or "none"))

    def _attr(self, name, attr):
        return os.path.join(self.root, name, attr)

    def _write(self, name, attr, value):
        path = self._attr(name, attr)
        try:
            with open(path, "w") as f:
                f.write("%s\n" % value)
        except OSError as exc:
            raise HalError("cannot write %s: %s" % (path, exc)) from exc

    def _max_brightness(self, name):
        try:
            with open(self._attr(name, "max_brightness")) as f:
                return int(f.read().strip() or 1)
        except (OSError, ValueError):
            return 1

    def _apply_state(self, state):
        for colour, mode, timing in self.patterns[state]:
            name = self.leds[colour]
            if mode == "blink":
                self._write(name, "trigger", "timer")
                # The kernel creates delay_on/delay_off only once the timer trigger is active.
                for attr, ms in zip(("delay_on", "delay_off"), timing or self.blink_ms):
                    if os.path.exists(self._attr(name, attr)):
                        self._write(name, attr, ms)
            else:
                self._write(name, "trigger", "none")
                self._write(name, "brightness", self._max_brightness(name) if mode == "on" else 0)


def ruleset_text(family="inet", table="gatewatch", set4="gatewatch_block4", set6="gatewatch_block6",
                 with_table=True):
    """The nftables text of the block sets and the chains that drop traffic to and from them."""
    body = (
        "\tset %(set4)s {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t}\n"
        "\tset %(set6)s {\n\t\ttype ipv6_addr\n\t\tflags timeout\n\t}\n"
        "\tchain gatewatch_forward {\n"
        "\t\ttype filter hook forward priority filter - 5; policy accept;\n"
        "\t\tip daddr @%(set4)s counter drop\n"
        "\t\tip saddr @%(set4)s counter drop\n"
        "\t\tip6 daddr @%(set6)s counter drop\n"
        "\t\tip6 saddr @%(set6)s counter drop\n"
        "\t}\n"
        "\tchain gatewatch_output {\n"
        "\t\ttype filter hook output priority filter - 5; policy accept;\n"
        "\t\tip daddr @%(set4)s counter drop\n"
        "\t\tip6 daddr @%(set6)s counter drop\n"
        "\t}\n") % {"set4": set4, "set6": set6}
    if not with_table:
        return body
    return "table %s %s {\n%s}\n" % (family, table, body)


def element_batch(action, family, table, set_name, address, seconds=None):
    """nft commands that set (action "block") or remove (action "unblock") one element, idempotently.

    Why add-delete-add: ``add element`` keeps an existing element's old timeout and ``delete``
    fails on a missing one; in one transaction the sequence always ends in the wanted state.
    """
    ref = "%s %s %s" % (family, table, set_name)
    if action == "block":
        elem = "%s timeout %ds" % (address, seconds)
        return ("add element %s { %s }\ndelete element %s { %s }\nadd element %s { %s }\n"
                % (ref, elem, ref, address, ref, elem))
    return "add element %s { %s timeout 1s }\ndelete element %s { %s }\n" % (ref, address, ref, address)


class Firewall(contracts.Firewall):
    """Blocks through two nftables sets (IPv4, IPv6) with the timeout flag.

    ``nft`` is the command prefix: tests pass ``("ip", "netns", "exec", NS, "nft")`` to work in a
    namespace of their own. With ``manage_table`` the backend creates its table when missing, on
    the first block (constructing a Firewall never touches the system's ruleset: an agent that
    never blocks leaves no table behind); on OpenWrt fw4 owns the table and the sets come from
    the include file instead.
    """

    def __init__(self, *, nft=("nft",), family="inet", table="gatewatch", set4="gatewatch_block4",
                 set6="gatewatch_block6", manage_table=True, resolver=None, timeout=10.0):
        self.nft = tuple(nft)
        self.family = family
        self.table = table
        self.set4 = set4
        self.set6 = set6
        self.resolver = resolver
        self.run_timeout = timeout
        self.manage_table = manage_table
        self._table_ready = not manage_table

    def _run(self, args, text=None, check=True):
        argv = list(self.nft) + list(args)
        try:
            proc = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=self.run_timeout)
        except FileNotFoundError as exc:
            raise HalError("cannot run %r: %s; install nftables" % (argv[0], exc)) from exc
        except subprocess.TimeoutExpired as exc:
            raise HalError("%s timed out after %.0fs" % (" ".join(argv), self.run_timeout)) from exc
        if check and proc.returncode != 0:
            raise HalError("%s failed (exit %d): %s" % (" ".join(argv), proc.returncode, proc.stderr.strip()))
        return proc

    def ruleset_text(self):
        """The table this backend manages, as nft text."""
        return ruleset_text(self.family, self.table, self.set4, self.set6)

    def check(self, text=None):
        """Check nft text (default: this backend's ruleset) with ``nft -c``; return (ok, message)."""
        proc = self._run(["-c", "-f", "-"], text=text if text is not None else self.ruleset_text(), check=False)
        return proc.returncode == 0, proc.stderr.strip()

    def setup(self):
        """Create the table, sets and chains unless the table exists (existing blocks survive restarts)."""
        if self._run(["list", "table", self.family, self.table], check=False).returncode != 0:
            self._run(["-f", "-"], text=self.ruleset_text())
        self._table_ready = True

    def _table_exists(self):
        return self._table_ready or self._run(["list", "table", self.family, self.table], check=False).returncode == 0

    def _set_for(self, address):
        return self.set6 if ":" in address else self.set4

    def _resolve(self, host):
        if self.resolver is not None:
            return list(self.resolver(host))
        try:
            infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise HalError("cannot resolve %r: %s; nothing was blocked" % (host, exc)) from exc
        return [info[4][0].split("%")[0] for info in infos]

    def _apply_block(self, addresses, seconds):
        if not self._table_ready:
            self.setup()
        text = "".join(element_batch("block", self.family, self.table, self._set_for(a), a, seconds)
                       for a in addresses)
        self._run(["-f", "-"], text=text)

    def _apply_unblock(self, addresses):
        if self.manage_table and not self._table_exists():
            return  # nothing was ever blocked
        text = "".join(element_batch("unblock", self.family, self.table, self._set_for(a), a)
                       for a in addresses)
        self._run(["-f", "-"], text=text)

    def _apply_list(self):
        if self.manage_table and not self._table_exists():
            return []
        out = []
        for set_name in (self.set4, self.set6):
            proc = self._run(["-j", "list", "set", self.family, self.table, set_name])
            out.extend(parse_set_json(proc.stdout))
        return out


def parse_set_json(text):
    """Entries of an ``nft -j list set`` answer as dicts address/expires_in."""
    out = []
    for item in json.loads(text).get("nftables", []):
        for elem in item.get("set", {}).get("elem", []):
            if isinstance(elem, dict) and "elem" in elem:
                out.append({"address": str(elem["elem"]["val"]),
                            "expires_in": elem["elem"].get("expires", elem["elem"].get("timeout"))})
            else:
                out.append({"address": str(elem), "expires_in": None})
    return out


WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int)


class Watchdog(contracts.Watchdog):
    """The kernel watchdog device: opened on start, a byte written per kick, 'V' on stop (magic close)."""

    owner = "kernel"

    def __init__(self, *, device="/dev/watchdog"):
        super().__init__()
        self.device = device
        self._fd = None
        self.timeout_applied = False

    def _apply_start(self, timeout):
        try:
            self._fd = os.open(self.device, os.O_WRONLY)
        except OSError as exc:
            raise HalError("cannot open watchdog %s: %s (is the driver loaded? on OpenWrt procd owns it)"
                           % (self.device, exc)) from exc
        try:
            import fcntl
            import struct
            fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("i", timeout))
            self.timeout_applied = True
        except OSError as exc:
            # A device without WDIOC_SETTIMEOUT keeps its own timeout; say so, keep going.
            if exc.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                raise HalError("cannot set watchdog timeout: %s" % exc) from exc
            self.timeout_applied = False

    def _apply_kick(self):
        os.write(self._fd, b"\0")

    def _apply_stop(self):
        try:
            os.write(self._fd, b"V")
        finally:
            os.close(self._fd)
            self._fd = None


class Storage(contracts.Storage):
    """Files in one directory on flash, written through temp + fsync + rename + directory fsync."""

    def __init__(self, *, root, clock=None):
        if not isinstance(root, str) or not root:
            raise contracts.HalArgumentError("storage root must be a directory path, got %r" % (root,))
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.root = root
        super().__init__(clock=clock)

    def _path(self, name):
        return os.path.join(self.root, name)

    def _op_recover(self):
        for entry in os.listdir(self.root):
            if entry.endswith(TEMP_SUFFIX):
                os.unlink(self._path(entry))

    def _op_create(self, temp):
        return os.open(self._path(temp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def _op_write(self, handle, data):
        view = memoryview(data)
        while view:
            n = os.write(handle, view)
            view = view[n:]

    def _op_fsync(self, handle):
        os.fsync(handle)

    def _op_close(self, handle):
        os.close(handle)

    def _op_rename(self, temp, name):
        os.replace(self._path(temp), self._path(name))

    def _op_fsync_dir(self):
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _op_read(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise StorageMissing("%s is not stored under %s" % (name, self.root)) from None

    def _op_exists(self, name):
        return os.path.isfile(self._path(name))

    def _op_remove(self, name):
        os.unlink(self._path(name))


class KeyStore(contracts.KeyStore):
    """The device secret in ``root/device_secret`` (mode 0600) and anchors in ``root/trust/<source>/``."""

    def __init__(self, *, root):
        if not isinstance(root, str) or not root:
            raise contracts.HalArgumentError("key store root must be a directory path, got %r" % (root,))
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.root = root
        self.secret_path = os.path.join(root, "device_secret")

    def _apply_load_secret(self):
        try:
            with open(self.secret_path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _apply_store_secret(self, secret):
        temp = "%s.%d%s" % (self.secret_path, os.getpid(), TEMP_SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secret)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails when another process stored a secret first: the first one wins, once.
            os.link(temp, self.secret_path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temp)
        _fsync_dir(self.root)

    def _anchor_dir(self, source):
        return os.path.join(self.root, "trust", source)

    def _anchor_path(self, source, key):
        return os.path.join(self._anchor_dir(source), hashlib.sha256(key).hexdigest()[:16] + ".pub")

    def _apply_add_anchor(self, source, public_key):
        folder = self._anchor_dir(source)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        path = self._anchor_path(source, public_key)
        with open(path + TEMP_SUFFIX, "w") as f:
            f.write(public_key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + TEMP_SUFFIX, path)
        _fsync_dir(folder)

    def _apply_remove_anchor(self, source, public_key):
        os.unlink(self._anchor_path(source, public_key))
        _fsync_dir(self._anchor_dir(source))

    def _apply_anchors(self, source):
        folder = self._anchor_dir(source)
        if not os.path.isdir(folder):
            return []
        keys = []
        for entry in os.listdir(folder):
            if entry.endswith(".pub"):
                with open(os.path.join(folder, entry)) as f:
                    text = f.read().strip()
                try:
                    key = bytes.fromhex(text)
                except ValueError:
                    raise HalError("trust anchor %s is not hex; remove or fix it" % os.path.join(folder, entry)) from None
                if len(key) != self.KEY_BYTES:
                    raise HalError("trust anchor %s is %d bytes, expected %d" % (entry, len(key), self.KEY_BYTES))
                keys.append(key)
        return keys

    def _apply_sources(self):
        folder = os.path.join(self.root, "trust")
        if not os.path.isdir(folder):
            return []
        return [s for s in os.listdir(folder) if self._apply_anchors(s)]


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Clock(contracts.Clock):
    """The system clock."""

    def wall(self):
        return time.time()

    def monotonic(self):
        return time.monotonic()


class SystemInfo(contracts.SystemInfo):
    """Reads /proc and the device tree or DMI under ``root`` (tests point it at a folder)."""

    MODEL_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model", "sys/class/dmi/id/product_name")

    def __init__(self, *, root="/"):
        self.root = root

    def _read(self, rel):
        try:
            with open(os.path.join(self.root, rel), "rb") as f:
                return f.read().decode("utf-8", "replace").replace("\0", "").strip()
        except OSError:
            return None

    def _model(self):
        for rel in self.MODEL_FILES:
            text = self._read(rel)
            if text:
                return text
        return None

    def _apply_info(self):
        info = {"model": self._model(), "arch": platform.machine(), "agent_version": contracts.agent_version()}
        meminfo = self._read("proc/meminfo") or ""
        for line in meminfo.splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if key in ("MemTotal", "MemAvailable") and fields and fields[0].isdigit():
                info["memory_total" if key == "MemTotal" else "memory_available"] = int(fields[0]) * 1024
        uptime = (self._read("proc/uptime") or "").split()
        if uptime:
            try:
                info["uptime"] = float(uptime[0])
            except ValueError:
                pass
        return info


class SerialPort(contracts.SerialPort):
    """Any pyserial URL: a device path, ``loop://``, ``socket://``, ``rfc2217://``."""

    def _apply_open(self):
        try:
            import serial
        except ImportError as exc:  # pragma: no cover - pyserial is in the serial extra
            raise HalError("pyserial is not installed; pip install 'gatewatch[serial]'") from exc
        try:
            self.port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=self.timeout)
        except (serial.SerialException, ValueError) as exc:
            raise HalError("cannot open serial port %r: %s" % (self.url, exc)) from exc

    def _apply_read(self, size):
        return self.port.read(size)

    def _apply_write(self, data):
        return self.port.write(data)

    def _apply_close(self):
        self.port.close()
