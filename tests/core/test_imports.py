"""Every module of the core imports on this interpreter (a new module that is not MicroPython-safe
fails here under the WebAssembly port before it reaches a device)."""

import os

from tests.core import support


def core_modules():
    path = support.core_pkg.__file__
    folder = path[:path.rfind("/")] if "/" in path else "."
    names = sorted(n[:-3] for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py")
    assert "bloom" in names and "listfile" in names, names
    return names


def test_every_core_module_imports():
    failed = []
    for name in core_modules():
        try:
            support.import_core(name)
        except Exception as exc:  # report every broken module at once
            failed.append("%s: %s: %s" % (name, type(exc).__name__, exc))
    assert not failed, "; ".join(failed)
