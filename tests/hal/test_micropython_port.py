"""hal.micropython under real MicroPython: tests/hal/mp_hal_check.py in the WebAssembly port (Node).

The port is installed by tests/setup/post-micropython.sh (the MicroPython engineer's); without it
this test skips and says so.
"""

import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORT = os.path.join(REPO, "firmware", "micropython", "node_modules", "@micropython",
                    "micropython-webassembly-pyscript", "micropython.mjs")


def test_micropython_backend_runs_under_micropython():
    node = shutil.which("node")
    if node is None or not os.path.exists(PORT):
        pytest.skip("MicroPython WebAssembly port not installed (tests/setup/post-micropython.sh installs it)")
    proc = subprocess.run([node, os.path.join(REPO, "tests", "hal", "mp_hal.mjs"), REPO],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"^MPHAL OK (\d+)$", proc.stdout, re.M)
    assert m and int(m.group(1)) >= 25, proc.stdout
