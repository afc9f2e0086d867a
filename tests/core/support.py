"""Helpers the portable core tests share; the same code runs under CPython and MicroPython.

Why not pytest helpers: MicroPython has no pytest, so the tests use plain asserts plus the
small ``raises`` and ``skip`` below. Under CPython ``skip`` raises pytest's own Skipped so that
pytest reports a skip; under MicroPython it raises ``Skipped``, which tests/core/mp_runner.py
counts as one.
"""

try:
    import pytest

    def skip(reason):
        """Skip the calling test, or the whole module when called at import time."""
        pytest.skip(reason, allow_module_level=True)
except ImportError:  # MicroPython

    class Skipped(Exception):
        """A test that cannot run here."""

    def skip(reason):
        """Skip the calling test with ``reason``."""
        raise Skipped(reason)


try:
    import agent.core as core_pkg  # noqa: F401 - CPython: the repository package
except ImportError:  # MicroPython: the core is installed (or frozen) as ``core``
    import core as core_pkg  # noqa: F401

IS_MICROPYTHON = False
try:
    import sys

    IS_MICROPYTHON = sys.implementation.name == "micropython"
except (ImportError, AttributeError):
    pass


def import_core(name):
    """Import ``agent.core.<name>`` (CPython) or ``core.<name>`` (MicroPython); skip if absent."""
    full = ("core." if IS_MICROPYTHON else "agent.core.") + name
    try:
        mod = __import__(full)
    except ImportError as exc:
        # Only "this very module does not exist" means absent; an ImportError raised inside an
        # existing module (say it imports something MicroPython lacks) is a failure and surfaces.
        if full not in str(exc):
            raise
        skip("core module %r does not exist yet" % name)
    for part in full.split(".")[1:]:
        mod = getattr(mod, part)
    return mod


def _dirname(path):
    i = path.rfind("/")
    if i < 0:
        i = path.rfind("\\")
    return path[:i] if i > 0 else (path[:1] if i == 0 else ".")


def data_path(name):
    """Path of ``tests/data/<name>``, found from this file so it works from any working folder."""
    return _dirname(_dirname(__file__)) + "/data/" + name


def exists(path):
    """True when ``path`` can be opened for reading."""
    try:
        f = open(path, "rb")
    except OSError:
        return False
    f.close()
    return True


def read_bytes(path):
    """The whole file as bytes."""
    f = open(path, "rb")
    try:
        return f.read()
    finally:
        f.close()


def load_json(path):
    """Parse a JSON file."""
    import json

    f = open(path)
    try:
        return json.load(f)
    finally:
        f.close()


def raises(exc_type, func, *args, **kwargs):
    """Call ``func`` and return the ``exc_type`` it must raise; fail if it raises nothing."""
    try:
        func(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError("%s did not raise %s" % (getattr(func, "__name__", func), exc_type.__name__))


def refuses_every_prefix(parse, data, exc_type):
    """Every proper prefix of ``data`` (a power cut at any byte) makes ``parse`` raise ``exc_type``."""
    for n in range(len(data)):
        raises(exc_type, parse, data[:n])


def overridden(fields, over):
    """``fields`` with ``over`` applied: a value replaces the field, None removes it."""
    for k in over:
        if over[k] is None:
            del fields[k]
        else:
            fields[k] = over[k]
    return fields
