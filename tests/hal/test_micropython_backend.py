"""MicroPython backend specifics: machine.Pin/WDT/UART use through the stub, and MicroPython-friendly source."""

import ast
import os

import pytest

from hal import _machine_stub as machine
from hal import micropython as mp
from hal.contracts import HalArgumentError, HalError


@pytest.fixture(autouse=True)
def _fresh_stub():
    machine.reset_stub()


def test_backend_uses_the_stub_under_cpython():
    assert mp.machine is machine


def test_led_pins_and_blink_tick():
    led = mp.StatusLed(green_pin=5, red_pin=6)
    green, red = machine.Pin.instances[5], machine.Pin.instances[6]
    assert green.mode == machine.Pin.OUT
    led.set_state("ok")
    assert (green.value(), red.value()) == (1, 0)
    led.set_state("blocked")
    assert red.value() == 1
    led.tick()
    assert red.value() == 0
    led.tick()
    assert red.value() == 1
    led.set_state("fault")
    led.tick()
    assert (green.value(), red.value()) == (0, 1)  # fault is steady


def test_watchdog_uses_machine_wdt_in_milliseconds():
    wd = mp.Watchdog()
    wd.start(8)
    (wdt,) = machine.WDT.instances
    assert wdt.timeout == 8000
    wd.kick()
    wd.kick()
    assert wdt.feeds == 2


def test_uart_url_and_io():
    port = mp.SerialPort("uart:1", baudrate=9600)
    assert (port.uart.id, port.uart.baudrate) == (1, 9600)
    assert port.read(4) == b""  # machine.UART.read returns None on timeout; the contract says b""
    port.uart.drive_rx(b"help\n")
    assert port.read(5) == b"help\n"
    with pytest.raises(HalArgumentError, match="uart:<id>"):
        mp.SerialPort("/dev/ttyS0")


def test_keystore_anchor_file_with_bad_line(tmp_path):
    ks = mp.KeyStore(root=str(tmp_path))
    ks.add_trust_anchor("hub", b"\1" * 32)
    with open(str(tmp_path / "trust-hub.txt"), "a") as f:
        f.write("zz\n")
    with pytest.raises(HalError, match="not hex"):
        ks.trust_anchors("hub")


FILES = ("micropython.py", "_machine_stub.py", "contracts.py")


@pytest.mark.parametrize("name", FILES)
def test_source_stays_micropython_friendly(name):
    """No f-strings, annotations, dataclasses or typing: the MicroPython subset the core uses."""
    path = os.path.join(os.path.dirname(mp.__file__), name)
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        assert not isinstance(node, ast.JoinedStr), "%s:%d f-string" % (name, node.lineno)
        assert not isinstance(node, ast.AnnAssign), "%s:%d annotation" % (name, node.lineno)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.returns is None and all(a.annotation is None for a in node.args.args), "%s:%d" % (name, node.lineno)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                assert m not in ("typing", "dataclasses", "__future__"), "%s imports %s" % (name, m)
