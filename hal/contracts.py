"""HAL contracts: the abstract devices every backend provides, and the argument checks they share.

Owns what a device must do and which arguments are valid. It must not touch hardware: a
backend only *applies* what the contract has already validated (pyserial style: the base class
validates settings, the backend applies them), so every backend refuses bad input the same way
and a refused call changes nothing.

Kept MicroPython-friendly (the micropython backend imports it, and tests/hal/test_micropython_port.py
runs it under the MicroPython WebAssembly port): ``%`` formatting, no typing at run time,
fallbacks for ``abc`` and ``ipaddress``, and name checks written as character loops because
MicroPython's ``re`` has no counted repetition (``{0,61}``).
"""

try:
    from abc import ABC, abstractmethod
except ImportError:  # pragma: no cover - MicroPython has no abc
    ABC = object

    def abstractmethod(f):
        return f

try:
    import ipaddress
except ImportError:  # pragma: no cover - MicroPython
    ipaddress = None

try:
    from agent.core.errors import GatewatchError
except ImportError:  # pragma: no cover - MicroPython layout
    from core.errors import GatewatchError


# MicroPython allows only one built-in exception base (and has no FileNotFoundError): there the
# errors derive from the root alone, so ``except GatewatchError`` still catches them.
try:
    class HalError(GatewatchError, RuntimeError):
        """A device could not do what was asked (missing sysfs node, nft failure, no watchdog)."""

    class HalArgumentError(GatewatchError, ValueError):
        """A HAL call got an invalid argument; nothing was changed."""
except TypeError:  # pragma: no cover - MicroPython
    class HalError(GatewatchError):
        """A device could not do what was asked (missing sysfs node, nft failure, no watchdog)."""

    class HalArgumentError(GatewatchError):
        """A HAL call got an invalid argument; nothing was changed."""


LED_STATES = ("ok", "updating", "blocked", "fault")
MAX_BLOCK_SECONDS = 7 * 24 * 3600
MAX_WATCHDOG_SECONDS = 3600
STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)

_LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
_ALNUM = _LOWER_DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _chars_ok(text, first, rest, max_len):
    if not isinstance(text, str) or not 1 <= len(text) <= max_len or text[0] not in first:
        return False
    for ch in text:
        if ch not in rest:
            return False
    return True


def _is_hostname(text):
    if len(text) > 253:
        return False
    if text.endswith("."):
        text = text[:-1]
    for label in text.split("."):
        if not _chars_ok(label, _ALNUM, _ALNUM + "-", 63) or label[-1] not in _ALNUM:
            return False
    return True


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def parse_address(text):
    """Return the canonical text of an IPv4/IPv6 address and its family (4 or 6), or None."""
    if not isinstance(text, str) or "%" in text:
        return None  # scoped (link-local) addresses cannot go into an nftables set
    if ipaddress is not None:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return None
        return str(addr), addr.version
    parts = text.split(".")  # pragma: no cover - MicroPython fallback, IPv4 only
    if len(parts) == 4 and all(p.isdigit() and 0 <= int(p) <= 255 and str(int(p)) == p for p in parts):
        return text, 4
    return None


def check_target(target):
    """Validate a firewall target: an IP address literal or a DNS host name."""
    if not isinstance(target, str) or not target:
        raise HalArgumentError("firewall target must be a non-empty string (an IP address or host name), got %r" % (target,))
    if parse_address(target) is not None:
        return target
    if not _is_hostname(target) or target.replace(".", "").isdigit():
        raise HalArgumentError("firewall target %r is neither an IP address nor a valid host name" % (target,))
    return target


def check_seconds(seconds, upper, what):
    """Validate a whole number of seconds in 1..upper."""
    if not _is_int(seconds) or seconds < 1 or seconds > upper:
        raise HalArgumentError("%s must be a whole number of seconds between 1 and %d, got %r" % (what, upper, seconds))
    return seconds


def check_storage_name(name):
    """Validate a storage file name: one path component, no dot-files, no separators."""
    if not _chars_ok(name, _ALNUM + "_", _ALNUM + "_.-", 128):
        raise HalArgumentError(
            "storage name %r is invalid: use 1-128 characters of letters, digits, '_', '.', '-', "
            "not starting with '.' or '-' and without '/'" % (name,))
    if name.endswith(".gwtmp"):
        raise HalArgumentError("storage name %r uses the reserved temporary suffix '.gwtmp'" % (name,))
    return name


def check_source(source):
    """Validate a list source name (the key of its trust anchors)."""
    if not _chars_ok(source, _LOWER_DIGITS, _LOWER_DIGITS + "._-", 64):
        raise HalArgumentError("source name %r is invalid: use 1-64 lower-case letters, digits, '.', '_', '-'" % (source,))
    return source


class StatusLed(ABC):
    """The device's status light: one of ok, updating, blocked (recently), fault.

    Why a state and not colours: boards differ (one bi-colour LED, two LEDs, a GPIO pin), so the
    agent says what is true and the backend decides how to show it.
    """

    STATES = LED_STATES

    def __init__(self):
        self._state = None

    @property
    def state(self):
        """The state last set, or None before the first set."""
        return self._state

    def set_state(self, state):
        """Show ``state`` (one of STATES)."""
        if state not in LED_STATES:
            raise HalArgumentError("LED state must be one of %s, got %r" % (", ".join(LED_STATES), state))
        self._apply_state(state)
        self._state = state

    @abstractmethod
    def _apply_state(self, state):
        """Backend: make the hardware show ``state`` (already validated)."""

    def close(self):
        """Release the device."""


class Firewall(ABC):
    """Blocks traffic to hosts or addresses for a while, through an nftables set with timeouts.

    Why a set with timeouts and not rules: the kernel expires entries itself, so a crashed agent
    never leaves a block in place forever, and adding an address is one atomic set operation.
    """

    def block(self, target, seconds):
        """Block ``target`` (IP address or host name) for ``seconds``; return the addresses blocked."""
        check_target(target)
        check_seconds(seconds, MAX_BLOCK_SECONDS, "block duration")
        addresses = self._addresses(target)
        if not addresses:
            raise HalError("host %r resolved to no address; nothing was blocked" % (target,))
        self._apply_block(addresses, seconds)
        return addresses

    def unblock(self, target):
        """Remove ``target`` from the block set (no error when it was not blocked)."""
        check_target(target)
        addresses = self._addresses(target)
        self._apply_unblock(addresses)
        return addresses

    def is_blocked(self, address):
        """True when ``address`` is in the block set now."""
        parsed = parse_address(address)
        if parsed is None:
            raise HalArgumentError("is_blocked needs an IP address, got %r" % (address,))
        return any(e["address"] == parsed[0] for e in self.list())

    def list(self):
        """Blocked entries now: a list of dicts ``{"address": str, "expires_in": seconds}``."""
        return sorted(self._apply_list(), key=lambda e: e["address"])

    def _addresses(self, target):
        parsed = parse_address(target)
        if parsed is not None:
            return [parsed[0]]
        return sorted(set(self._resolve(target)))

    def _resolve(self, host):
        """Backend hook: the addresses of ``host``."""
        raise HalError("this backend cannot resolve host names; block %r by address" % (host,))

    @abstractmethod
    def _apply_block(self, addresses, seconds):
        """Backend: add canonical ``addresses`` with a timeout of ``seconds``."""

    @abstractmethod
    def _apply_unblock(self, addresses):
        """Backend: remove ``addresses`` if present."""

    @abstractmethod
    def _apply_list(self):
        """Backend: the current entries as dicts address/expires_in."""


class Watchdog(ABC):
    """A hardware or supervisor watchdog: started with a timeout, kicked while the agent is alive.

    ``owner`` says who really resets the device: "kernel" (/dev/watchdog), "procd" (OpenWrt, where
    the agent must not open the device itself), "machine.WDT", or "emulated".
    """

    owner = "none"

    def __init__(self):
        self._timeout = None

    @property
    def running(self):
        """True between start() and stop()."""
        return self._timeout is not None

    @property
    def timeout(self):
        """The timeout in seconds while running, else None."""
        return self._timeout

    def start(self, timeout):
        """Arm the watchdog with ``timeout`` seconds."""
        check_seconds(timeout, MAX_WATCHDOG_SECONDS, "watchdog timeout")
        if self._timeout is not None:
            raise HalError("watchdog already started (timeout %ds); stop() it first" % self._timeout)
        self._apply_start(timeout)
        self._timeout = timeout

    def kick(self):
        """Tell the watchdog the agent is alive."""
        if self._timeout is None:
            raise HalError("watchdog kicked before start(); call start(timeout) first")
        self._apply_kick()

    def stop(self):
        """Disarm (where the hardware allows it); no error when not running."""
        if self._timeout is None:
            return
        self._apply_stop()
        self._timeout = None

    @abstractmethod
    def _apply_start(self, timeout):
        """Backend: arm."""

    @abstractmethod
    def _apply_kick(self):
        """Backend: kick."""

    @abstractmethod
    def _apply_stop(self):
        """Backend: disarm."""


class Clock(ABC):
    """Injectable time: wall time (seconds since the epoch) and a monotonic counter (seconds)."""

    @abstractmethod
    def wall(self):
        """Seconds since the epoch (may jump when NTP corrects it)."""

    @abstractmethod
    def monotonic(self):
        """Seconds from an arbitrary origin that never goes back."""


class SystemInfo(ABC):
    """What the device is: model, arch, memory, uptime, agent version."""

    KEYS = ("model", "arch", "memory_total", "memory_available", "uptime", "agent_version")

    def info(self):
        """A dict with exactly KEYS (memory in bytes, uptime in seconds; None where unknown)."""
        raw = self._apply_info()
        out = {}
        for key in self.KEYS:
            out[key] = raw.get(key)
        return out

    @abstractmethod
    def _apply_info(self):
        """Backend: a dict with some or all of KEYS."""


def agent_version():
    """The agent's version string."""
    try:
        from agent import __version__
    except ImportError:  # pragma: no cover - MicroPython layout
        return "unknown"
    return __version__


class SerialPort(ABC):
    """A byte stream to a management terminal, opened from a pyserial URL (or a UART)."""

    def __init__(self, url, baudrate=115200, timeout=0.1):
        if not isinstance(url, str) or not url:
            raise HalArgumentError("serial port URL must be a non-empty string such as 'loop://' or '/dev/ttyS0', got %r" % (url,))
        if baudrate not in STANDARD_BAUDRATES:
            raise HalArgumentError("baud rate %r is not one of %s" % (baudrate, ", ".join(str(b) for b in STANDARD_BAUDRATES)))
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0):
            raise HalArgumentError("serial timeout must be None or seconds >= 0, got %r" % (timeout,))
        self.url = url
        self.baudrate = baudrate
        self.timeout = timeout
        self._apply_open()

    def read(self, size=1):
        """Up to ``size`` bytes (fewer on timeout)."""
        if not _is_int(size) or size < 1:
            raise HalArgumentError("read size must be a positive integer, got %r" % (size,))
        return self._apply_read(size)

    def write(self, data):
        """Write ``data`` (bytes); return the count written."""
        if not isinstance(data, (bytes, bytearray)):
            raise HalArgumentError("serial write needs bytes, got %s" % type(data).__name__)
        return self._apply_write(bytes(data))

    def close(self):
        """Close the port."""
        self._apply_close()

    @abstractmethod
    def _apply_open(self):
        """Backend: open."""

    @abstractmethod
    def _apply_read(self, size):
        """Backend: read."""

    @abstractmethod
    def _apply_write(self, data):
        """Backend: write."""

    @abstractmethod
    def _apply_close(self):
        """Backend: close."""


try:
    class StorageMissing(GatewatchError, FileNotFoundError):
        """A stored file does not exist."""
except (TypeError, NameError):  # pragma: no cover - MicroPython
    class StorageMissing(GatewatchError):
        """A stored file does not exist."""


class PowerLoss(Exception):
    """Raised by a fault hook to simulate power failing at a step of an atomic write (tests only)."""


# The points of an atomic write where power can fail. A fault hook is called with each name.
WRITE_STEPS = ("start", "temp_created", "temp_partial", "temp_written", "temp_synced",
               "temp_closed", "renamed", "dir_synced")
TEMP_SUFFIX = ".gwtmp"
MAX_STORAGE_BYTES = 64 * 1024 * 1024


class Storage(ABC):
    """Files on flash, written atomically (temp, fsync, rename, fsync dir) and counted per hour.

    Why count bytes: flash wears out by erase cycles, so the agent must be able to show (and
    cap) how much it writes; the count is kept per clock hour for the last 48 hours.

    The algorithm lives here once; a backend supplies the primitive file operations
    (``_op_*``). ``fault_hook`` (None in production) is called with each name in WRITE_STEPS so
    tests can cut the power at any step.
    """

    HOURS_KEPT = 48

    def __init__(self, clock=None):
        self._clock = clock
        self._written = {}
        self.fault_hook = None
        self._op_recover()

    def _point(self, step):
        if self.fault_hook is not None:
            self.fault_hook(step)

    def write(self, name, data):
        """Replace ``name`` with ``data`` atomically: a reader sees the old or the new bytes, never a mix."""
        check_storage_name(name)
        if not isinstance(data, (bytes, bytearray)):
            raise HalArgumentError("storage write needs bytes, got %s" % type(data).__name__)
        if len(data) > MAX_STORAGE_BYTES:
            raise HalArgumentError("storage write of %d bytes exceeds the %d byte cap" % (len(data), MAX_STORAGE_BYTES))
        data = bytes(data)
        temp = name + TEMP_SUFFIX
        self._point("start")
        handle = self._op_create(temp)
        try:
            self._point("temp_created")
            half = len(data) // 2
            self._op_write(handle, data[:half])
            self._point("temp_partial")
            self._op_write(handle, data[half:])
            self._count(len(data))
            self._point("temp_written")
            self._op_fsync(handle)
            self._point("temp_synced")
        finally:
            self._op_close(handle)
        self._point("temp_closed")
        self._op_rename(temp, name)
        self._point("renamed")
        self._op_fsync_dir()
        self._point("dir_synced")

    def read(self, name):
        """The bytes of ``name``; StorageMissing when absent."""
        check_storage_name(name)
        return self._op_read(name)

    def delete(self, name):
        """Remove ``name`` durably; no error when absent."""
        check_storage_name(name)
        if self._op_exists(name):
            self._op_remove(name)
            self._op_fsync_dir()

    def exists(self, name):
        """True when ``name`` is stored."""
        check_storage_name(name)
        return self._op_exists(name)

    def _hour(self):
        now = self._clock.wall() if self._clock is not None else _time_now()
        return int(now) // 3600 * 3600

    def _count(self, n):
        hour = self._hour()
        self._written[hour] = self._written.get(hour, 0) + n
        for old in [h for h in self._written if h <= hour - self.HOURS_KEPT * 3600]:
            del self._written[old]

    def bytes_written(self, hour=None):
        """Bytes written in the clock hour containing epoch second ``hour`` (default: this hour)."""
        if hour is None:
            return self._written.get(self._hour(), 0)
        return self._written.get(int(hour) // 3600 * 3600, 0)

    def written_per_hour(self):
        """A dict {hour start (epoch seconds): bytes written} for the hours kept."""
        return dict(self._written)

    @abstractmethod
    def _op_recover(self):
        """Backend: remove temporaries left by an interrupted write (called at start)."""

    @abstractmethod
    def _op_create(self, temp):
        """Backend: create/truncate ``temp`` for writing; return a handle."""

    @abstractmethod
    def _op_write(self, handle, data):
        """Backend: write all of ``data``."""

    @abstractmethod
    def _op_fsync(self, handle):
        """Backend: make the handle's data durable."""

    @abstractmethod
    def _op_close(self, handle):
        """Backend: close the handle."""

    @abstractmethod
    def _op_rename(self, temp, name):
        """Backend: atomically replace ``name`` by ``temp``."""

    @abstractmethod
    def _op_fsync_dir(self):
        """Backend: make the directory entries durable."""

    @abstractmethod
    def _op_read(self, name):
        """Backend: read all bytes or raise StorageMissing."""

    @abstractmethod
    def _op_exists(self, name):
        """Backend: True when the file exists."""

    @abstractmethod
    def _op_remove(self, name):
        """Backend: remove the file."""


def _time_now():
    import time
    return time.time()


class KeyStore(ABC):
    """The device secret behind report pseudonyms, and the trust anchors (Ed25519 public keys per source).

    Why the secret is generated on the device and never leaves it: pseudonyms derived from it let
    a hub count reports from one device within a rotation period without learning which device
    it is; a secret that left the device would undo that.
    """

    SECRET_BYTES = 32
    KEY_BYTES = 32

    def device_secret(self):
        """The 32-byte device secret, generated (from the OS's random source) on first use."""
        secret = self._apply_load_secret()
        if secret is None:
            self._apply_store_secret(_random_bytes(self.SECRET_BYTES))
            secret = self._apply_load_secret()
        if not isinstance(secret, bytes) or len(secret) != self.SECRET_BYTES:
            raise HalError("the stored device secret is corrupt (%s bytes, expected %d); "
                           "remove it to generate a new one (report pseudonyms will change)"
                           % (len(secret) if isinstance(secret, bytes) else "?", self.SECRET_BYTES))
        return secret

    def add_trust_anchor(self, source, public_key):
        """Trust ``public_key`` (32 raw Ed25519 bytes) for lists of ``source``."""
        check_source(source)
        if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != self.KEY_BYTES:
            raise HalArgumentError("an Ed25519 public key is %d raw bytes, got %r" % (
                self.KEY_BYTES, len(public_key) if isinstance(public_key, (bytes, bytearray)) else type(public_key).__name__))
        public_key = bytes(public_key)
        if public_key not in self.trust_anchors(source):
            self._apply_add_anchor(source, public_key)

    def remove_trust_anchor(self, source, public_key):
        """Stop trusting ``public_key`` for ``source``; no error when absent."""
        check_source(source)
        if isinstance(public_key, (bytes, bytearray)) and bytes(public_key) in self.trust_anchors(source):
            self._apply_remove_anchor(source, bytes(public_key))

    def trust_anchors(self, source):
        """The public keys trusted for ``source`` (sorted)."""
        check_source(source)
        return sorted(self._apply_anchors(source))

    def sources(self):
        """The sources that have at least one trust anchor."""
        return sorted(self._apply_sources())

    @abstractmethod
    def _apply_load_secret(self):
        """Backend: the stored secret bytes, or None when none was generated yet."""

    @abstractmethod
    def _apply_store_secret(self, secret):
        """Backend: store the secret once, readable by the owner only."""

    @abstractmethod
    def _apply_add_anchor(self, source, public_key):
        """Backend: persist an anchor."""

    @abstractmethod
    def _apply_remove_anchor(self, source, public_key):
        """Backend: forget an anchor."""

    @abstractmethod
    def _apply_anchors(self, source):
        """Backend: the anchors of ``source``."""

    @abstractmethod
    def _apply_sources(self):
        """Backend: sources with anchors."""


def _random_bytes(n):
    """``n`` bytes from the OS's random source (on MicroPython: os.urandom, the board's hardware RNG)."""
    try:
        import os
        return os.urandom(n)
    except (ImportError, AttributeError):  # pragma: no cover - a MicroPython port without os.urandom
        raise HalError("this platform has no os.urandom; a device secret needs a hardware random source")
