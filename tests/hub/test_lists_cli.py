"""`gatewatch-hub publish` and `gatewatch-hub serve` as commands, against a real mosquitto."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys

import pytest

from agent.confirm import tokens, wire
from agent.mqtt import MqttClient, Topics
from agent.lists.store import ListStore
from agent.updates.updater import Updater
from tests.brokers import mosquitto  # noqa: F401
from tests.listkit import Hub, device_confirmer, random_entries, wait_for
from tests import paths

ROOT = str(paths.ROOT)


def hub_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tools.hub_cli"] + list(args), capture_output=True, text=True,
                          cwd=ROOT, timeout=120, **kw)


def test_publish_command(mosquitto, tmp_path):
    hub = Hub(tmp_path / "hub")
    hub.build(random_entries(300, 1))
    hub.build(random_entries(300, 1) + random_entries(10, 2))
    r = hub_cli("publish", "--broker", mosquitto.url, "--lists", hub.out, "--json")
    assert r.returncode == 0, r.stderr
    ann = json.loads(r.stdout)
    assert (ann["source"], ann["list"], ann["version"]) == ("hl1", "sha", 2)
    assert ann["deltas"][0]["from"] == 1 and "head" not in ann
    client = MqttClient(mosquitto.url, "dev-cli").connect()
    try:
        up = Updater(client, Topics(), ListStore(str(tmp_path / "dev"), hub.trust())).start()
        wait_for(lambda: "hl1/sha" in up.lists)
        assert up.lists["hl1/sha"].version == 2
        up.stop()
    finally:
        client.stop()


def test_a_fuse_list_is_published_without_a_delta_and_devices_take_the_snapshot(mosquitto, tmp_path):
    hub = Hub(tmp_path / "hub")
    first = random_entries(300, 3, signal="pdq")
    hub.build(first, name="pdq", signal="pdq", filter_type="fuse16")
    client = MqttClient(mosquitto.url, "dev-fuse").connect()
    try:
        up = Updater(client, Topics(), ListStore(str(tmp_path / "dev"), hub.trust())).start()
        r = hub_cli("publish", "--broker", mosquitto.url, "--lists", hub.out, "--json")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "hl1/pdq" in up.lists)
        hub.build(first + random_entries(10, 4, signal="pdq"), name="pdq", signal="pdq", filter_type="fuse16")
        r = hub_cli("publish", "--broker", mosquitto.url, "--lists", hub.out, "--json")
        assert r.returncode == 0, r.stderr
        ann = json.loads(r.stdout)
        assert ann["version"] == 2 and ann["deltas"] == []  # a rebuilt fuse filter: the delta would be the list
        wait_for(lambda: up.lists["hl1/pdq"].version == 2)
        assert type(up.lists["hl1/pdq"].filter).__name__ == "Fuse16"
        up.stop()
    finally:
        client.stop()


@pytest.mark.parametrize("args,match", [
    (["--lists", "/nonexistent"], "does not exist"),
    (["--lists", "."], "no .gwl list files"),
    (["--lists", "{hub}", "--chunk-size", "0"], "chunk size"),
    (["--lists", "{hub}", "--chunk-size", "200000"], "chunk size"),
])
def test_publish_command_bad_input(mosquitto, tmp_path, args, match):
    hub = Hub(tmp_path / "hub")
    hub.build(random_entries(10, 1))
    args = [a.replace("{hub}", hub.out) for a in args]
    r = hub_cli("publish", "--broker", mosquitto.url, *args)
    assert r.returncode == 2 and match in r.stderr, r.stderr


def test_publish_command_bad_broker_url(tmp_path):
    hub = Hub(tmp_path / "hub")
    hub.build(random_entries(10, 1))
    r = hub_cli("publish", "--broker", "http://x", "--lists", hub.out)
    assert r.returncode == 2 and "scheme must be mqtt" in r.stderr


def test_publish_refuses_a_corrupt_file(mosquitto, tmp_path):
    hub = Hub(tmp_path / "hub")
    path = hub.build(random_entries(10, 1))
    with open(path, "r+b") as f:
        f.write(b"XXXX")
    r = hub_cli("publish", "--broker", mosquitto.url, "--lists", hub.out)
    assert r.returncode == 2 and "not a valid list file" in r.stderr


@pytest.mark.slow
def test_serve_command_answers_and_stops_on_sigterm(mosquitto, tmp_path):
    hub = Hub(tmp_path / "hub")
    entries = random_entries(100, 1)
    hub.build(entries)
    db = str(tmp_path / "stats.sqlite")
    proc = subprocess.Popen([sys.executable, "-m", "tools.hub_cli", "serve", "--broker", mosquitto.url, "--lists",
                             hub.out, "--db", db, "--ttl-positive", "123", "--ttl-negative", "7"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dev = MqttClient(mosquitto.url, "dev-serve").connect()
    try:
        from agent.confirm.sealed import EXACT_BAND
        from agent.lists.store import load_folder
        from agent.matching.scanner import Hit, ScanResult
        lst = list(load_folder(hub.out, hub.trust()).lists.values())[0]
        confirmer = device_confirmer(dev, [lst], "dev-serve", timeout=2.0, tokens=False)
        wait_for(lambda: confirmer.refill_all() or confirmer.wallet.count("hl1"), 30)
        probe = (EXACT_BAND, entries[5].hash)
        result = ScanResult("match", (Hit(lst, (probe,)),), digests={"sha256": entries[5].hash})
        answered = wait_for(lambda: confirmer.ask(result), 30)
        assert [e.id for e in answered["hl1/sha"].lookup(probe)] == ["e1-5"]
    finally:
        dev.stop()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    rows = dict(sqlite3.connect(db).execute("SELECT kind, SUM(n) FROM confirm_counts GROUP BY kind").fetchall())
    assert rows["evaluations"] == wire.ELEMENTS and rows["fetches"] == 1 and rows["tokens-issued"] == tokens.DEFAULT_BUDGET
    # the database holds counts only: no login, no probe, no hash
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert "dev-serve" not in dump and entries[5].hash.hex() not in dump


def test_serve_command_bad_lists(mosquitto, tmp_path):
    r = hub_cli("serve", "--broker", mosquitto.url, "--lists", str(tmp_path), "--db", str(tmp_path / "x.db"))
    assert r.returncode == 2 and "no sealed tables or confirmation keys" in r.stderr


def test_publishing_a_new_version_clears_the_old_chunks(mosquitto, tmp_path):
    from tests.listkit import only
    from tools.publish import publish_lists

    hub = Hub(tmp_path / "hub")
    v1 = hub.build(random_entries(3000, 1))
    v2 = hub.build(random_entries(3000, 1) + random_entries(10, 2))
    v3 = hub.build(random_entries(3000, 1) + random_entries(20, 2))
    topics = Topics()
    with MqttClient(mosquitto.url, "pub") as pub:
        publish_lists(pub, topics, only([v1], tmp_path / "a"), chunk_size=8192)
        publish_lists(pub, topics, only([v1, v2], tmp_path / "b"), chunk_size=8192)
        publish_lists(pub, topics, only([v3], tmp_path / "c"), chunk_size=8192)  # no v2 file this time
    retained = {}
    with MqttClient(mosquitto.url, "look") as look:
        look.subscribe(topics.lists_filter(), lambda m: retained.__setitem__(m.topic, m.payload)).wait(5)
        wait_for(lambda: topics.manifest("hl1", "sha") in retained)
        import time
        time.sleep(0.5)
    names = sorted(t.split("/lists/hl1/sha/")[1] for t in retained if retained[t])
    assert names and all(n == "manifest" or n.startswith("v3/snapshot/") for n in names), names
