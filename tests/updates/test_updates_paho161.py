"""Run the list-update, confirmation and daemon tests again on paho-mqtt 1.6.1 (what OpenWrt ships)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.paths import ROOT
PAHO161 = ROOT / ".cache" / "paho161"
MODULES = ["tests/updates/test_updates_mqtt.py", "tests/confirm/test_confirm.py", "tests/daemon/test_daemon.py",
           "tests/hub/test_fleet.py", "tests/daemon/test_daemon_login.py", "tests/daemon/test_daemon_reconfirm.py",
           "tests/updates/test_translog_mqtt.py"]


@pytest.mark.slow
def test_update_and_confirm_tests_pass_on_paho_161():
    if not (PAHO161 / "paho" / "mqtt" / "client.py").exists():
        pytest.fail("paho-mqtt 1.6.1 missing in %s: run tests/setup/post-mqtt.sh" % PAHO161)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PAHO161), str(ROOT)] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    probe = subprocess.run([sys.executable, "-c", "import paho.mqtt; print(paho.mqtt.__version__)"],
                           env=env, capture_output=True, text=True, cwd=ROOT)
    assert probe.stdout.strip() == "1.6.1", probe
    mods = [m for m in MODULES if (ROOT / m).exists()]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + mods,
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=540)
    assert r.returncode == 0, r.stdout[-6000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
