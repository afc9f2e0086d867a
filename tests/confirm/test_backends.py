"""Which group backend a device uses, what it says about it, and that both speak the same protocol:
a device on the pure-Python twin (OpenWrt's minimal libsodium) confirms against a hub on libsodium."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from agent.confirm import group
from agent.mqtt import MqttClient, Topics
from tests.brokers import mosquitto  # noqa: F401
from tests.confirm.test_confirm import world  # noqa: F401
from tests.paths import ROOT
from tools.confirm_service import ConfirmService

DEVICE = r'''
import hashlib, json, sys
from agent.confirm import group
from agent.confirm.client import Confirmer
from agent.lists.store import load_folder
from agent.lists.trust import TrustStore
from agent.matching.scanner import Scanner
from agent.mqtt import MqttClient, Topics
url, out, pub, image = sys.argv[1:5]
lists = list(load_folder(out, TrustStore.from_specs([pub])).lists.values())
client = MqttClient(url, "dev-py").connect()
c = Confirmer(client, Topics(), "dev-py", timeout=10.0, lists=lambda: lists).start()
scanner = Scanner(lists)
r = scanner.scan_bytes(open(image, "rb").read())
done = scanner.confirm(r, c.ask(r, timeout=30))
print(json.dumps({"backend": group.backend(), "verdict": done.verdict, "entry": done.best.entry_id if done.best else None,
                  "stats": c.stats()}))
client.stop()
'''


def _env(**kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(kw)
    return env


def test_backend_is_chosen_and_named():
    for want, env in (("python", {"GATEWATCH_CRYPTO": "python"}), ("libsodium", {"GATEWATCH_CRYPTO": "sodium"}),
                      ("libsodium", {})):
        r = subprocess.run([sys.executable, "-c", "from agent.confirm import group; print(group.backend())"],
                           env=_env(**env), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == want, (env, r.stderr)
    # without usable libsodium the device falls to the twin, never to another protocol
    r = subprocess.run([sys.executable, "-c", "from agent.confirm import group; print(group.backend())"],
                       env=_env(GATEWATCH_LIBSODIUM="/nonexistent/libsodium.so"), capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.strip() == "python", r.stderr


def test_forcing_a_missing_libsodium_is_a_clear_status_and_asks_nothing(world):
    code = r'''
import json
from agent.confirm.client import Confirmer
class NoBroker:
    connected = True
    def subscribe(self, *a, **k): raise AssertionError("nothing is subscribed")
    def publish(self, *a, **k): raise AssertionError("nothing is sent")
from agent.mqtt import Topics
c = Confirmer(NoBroker(), Topics(), "dev")
print(json.dumps(c.stats()))
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=_env(GATEWATCH_CRYPTO="sodium", GATEWATCH_LIBSODIUM="/nonexistent/libsodium.so"))
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["crypto"] is None and "libsodium" in stats["unavailable"] and "ristretto255" in stats["unavailable"]
    assert "private confirmation unavailable" in r.stderr


def test_a_pure_python_device_confirms_against_a_libsodium_hub(mosquitto, world, tmp_path):
    assert group.backend() == "libsodium"  # the hub, in this process
    hub = MqttClient(mosquitto.url, "hub-sodium").connect()
    try:
        assert ConfirmService(hub, Topics(), world["hub"].out).start().subscription.wait(5)
        image = tmp_path / "edited.jpg"
        image.write_bytes(world["edited"])  # a JPEG q50 copy of a listed picture: a PDQ candidate
        r = subprocess.run([sys.executable, "-c", DEVICE, mosquitto.url, world["hub"].out, world["hub"].pub_path,
                            str(image)], env=_env(GATEWATCH_CRYPTO="python"), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        got = json.loads(r.stdout.strip().splitlines()[-1])
        assert got["backend"] == "python" and got["stats"]["crypto"] == "python"
        assert got["verdict"] == "match" and got["entry"] == "known-1"
    finally:
        hub.stop()
