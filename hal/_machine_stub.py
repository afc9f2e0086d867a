"""A stand-in for MicroPython's ``machine`` module (Pin, WDT, UART) so hal.micropython runs under CPython.

Owns only the subset of ``machine`` the micropython backend uses, with MicroPython's signatures.
Every object records what was done to it (``history``) so tests can assert on it; the UART has
``drive_rx()`` to play the other end. It must never be imported on a real board (the backend
imports ``machine`` first).
"""


class Pin:
    """machine.Pin: a GPIO line."""

    IN = 0
    OUT = 1
    instances = {}

    def __init__(self, pin_id, mode=-1, value=None):
        self.id = pin_id
        self.mode = mode
        self._value = 0 if value is None else int(bool(value))
        self.history = []
        Pin.instances[pin_id] = self

    def value(self, v=None):
        """Read, or set when ``v`` is given (MicroPython semantics)."""
        if v is None:
            return self._value
        self._value = int(bool(v))
        self.history.append(self._value)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class WDT:
    """machine.WDT: cannot be stopped once started (as on real ports)."""

    instances = []

    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("timeout must be >= 1 ms")
        self.timeout = timeout
        self.feeds = 0
        WDT.instances.append(self)

    def feed(self):
        self.feeds += 1


class UART:
    """machine.UART: ``read``/``write``/``any``; ``drive_rx`` injects incoming bytes."""

    def __init__(self, id, baudrate=115200, **kwargs):
        self.id = id
        self.baudrate = baudrate
        self.kwargs = kwargs
        self.rx = bytearray()
        self.tx = bytearray()

    def any(self):
        return len(self.rx)

    def read(self, nbytes=None):
        if not self.rx:
            return None  # MicroPython returns None on timeout with nothing read
        n = len(self.rx) if nbytes is None else nbytes
        out = bytes(self.rx[:n])
        self.rx = self.rx[n:]  # MicroPython's bytearray has no slice deletion
        return out

    def write(self, buf):
        self.tx.extend(buf)
        return len(buf)

    def deinit(self):
        pass

    def drive_rx(self, data):
        self.rx.extend(data)


def reset_stub():
    """Forget every pin and watchdog (tests call it between cases)."""
    Pin.instances = {}
    WDT.instances = []
