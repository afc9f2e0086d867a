"""Hardware abstraction: contracts (hal.contracts) and one module per backend, same class names in each.

Owns choosing a backend. ``get_backend(name=None)`` picks, in order: the ``name`` argument, the
``GATEWATCH_HAL`` environment variable, then a fallback chain (openwrt when /etc/openwrt_release
exists, linux on Linux, emulated otherwise), and says which one it chose and why (gpiozero
style). Backends: emulated, linux, openwrt, micropython. A backend module is the namespace::

    backend = hal.get_backend()
    led = backend.StatusLed(...)
"""

import importlib
import logging
import os
import sys

from hal.contracts import HalError, HalArgumentError  # noqa: F401  (re-exported)

log = logging.getLogger("gatewatch.hal")

BACKENDS = ("emulated", "linux", "openwrt", "micropython")
CLASS_NAMES = ("StatusLed", "Firewall", "Watchdog", "Storage", "KeyStore", "Clock", "SystemInfo", "SerialPort")
ENV = "GATEWATCH_HAL"


class Backend:
    """A chosen backend: its ``name``, the ``reason`` it was chosen, and its classes as attributes."""

    def __init__(self, name, module, reason):
        self.name = name
        self.module = module
        self.reason = reason

    def __getattr__(self, attr):
        if attr in CLASS_NAMES:
            return getattr(self.module, attr)
        raise AttributeError("HAL backend %r has no %r (classes: %s)" % (self.name, attr, ", ".join(CLASS_NAMES)))

    def __repr__(self):
        return "<hal backend %s: %s>" % (self.name, self.reason)


def load(name):
    """Import backend module ``name``; HalArgumentError for an unknown name, HalError when it cannot load."""
    if name not in BACKENDS:
        raise HalArgumentError("unknown HAL backend %r; choose one of: %s" % (name, ", ".join(BACKENDS)))
    try:
        return importlib.import_module("hal." + name)
    except ImportError as exc:
        raise HalError("HAL backend %r cannot load here: %s" % (name, exc)) from exc


def get_backend(name=None, *, environ=None, openwrt_release="/etc/openwrt_release", platform=None):
    """Choose a backend (argument, then $GATEWATCH_HAL, then openwrt/linux/emulated); log and return it."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if name is not None:
        chosen, reason = name, "requested by argument"
    elif environ.get(ENV):
        chosen, reason = environ[ENV], "from environment variable %s" % ENV
    elif os.path.exists(openwrt_release):
        chosen, reason = "openwrt", "fallback chain: %s exists" % openwrt_release
    elif platform.startswith("linux"):
        chosen, reason = "linux", "fallback chain: running on Linux without %s" % openwrt_release
    else:
        chosen, reason = "emulated", "fallback chain: platform %r has no real backend" % platform
    backend = Backend(chosen, load(chosen), reason)
    log.info("HAL backend %s (%s)", chosen, reason)
    return backend
