"""Run the MQTT client tests a second time on paho-mqtt 1.6.1 (installed by tests/setup/post-mqtt.sh)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.paths import ROOT
PAHO161 = ROOT / ".cache" / "paho161"
MODULES = ["tests/mqtt/test_mqtt_client.py", "tests/mqtt/test_mqtt_tls.py", "tests/reports/test_reporter.py", "tests/hub/test_collector.py",
           "tests/mqtt/test_acl.py", "tests/reports/test_no_loss.py", "tests/reports/test_hub_ack.py",
           "tests/reports/test_pending.py"]


@pytest.mark.slow
def test_mqtt_tests_pass_on_paho_161():
    if not (PAHO161 / "paho" / "mqtt" / "client.py").exists():  # the setup script is idempotent
        subprocess.run(["sh", str(ROOT / "tests" / "setup" / "post-mqtt.sh")], check=True, timeout=300,
                       env=dict(os.environ, PYTHON=sys.executable))
    assert (PAHO161 / "paho" / "mqtt" / "client.py").exists(), "tests/setup/post-mqtt.sh did not install paho 1.6.1"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PAHO161), str(ROOT)] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["GATEWATCH_EXPECT_PAHO"] = "1.6.1"
    mods = [m for m in MODULES if (ROOT / m).exists()]
    # the real-daemon variant of the no-loss test runs once, on the installed paho
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not real_daemon"] + mods,
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=540)
    assert r.returncode == 0, r.stdout[-6000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
