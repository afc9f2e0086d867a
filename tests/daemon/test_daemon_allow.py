"""An analyst's false positive reaches a running device: `gatewatch-hub allow build`, published over a
real mosquitto, picked up by the daemon (a process, with its built-in proxy); the image that was
blocked and reported then loads and nothing is reported. The allow list rolls forward (an empty
version withdraws the entry) and a rollback to the old version is refused, as for every list.

Images are generated benign pictures standing in for listed material.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from agent.confirm.wire import Entry
from agent.hashing.samples import encode, generate_image
from agent.mqtt import MqttClient, Topics
from tests.brokers import mosquitto  # noqa: F401
from tests.daemon.proxydevice import ProxyDevice
from tests.daemon.test_daemon import _log, _status
from tests.listkit import Hub, only, wait_for
from tests.paths import ROOT
from tools.collector import Collector, ReportStore
from tools.confirm_service import ConfirmService
from tools.demo import Origin
from tools.publish import publish_lists


def _allow_build(hub, text, tmp_path, name):
    inp = tmp_path / name
    inp.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "tools.hub_cli", "allow", "build", "--source", "hl1",
                        "--key", hub.key_path, "--input", str(inp), "--out", hub.out],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["device_list"]


@pytest.mark.slow
def test_rejected_false_positive_passes_after_the_next_update(mosquitto, tmp_path):
    fp, other = (encode(generate_image(8800 + i, (256, 192)), "JPEG", 90) for i in range(2))
    hub = Hub(tmp_path / "hub")
    blocklist = hub.build([Entry("fp-entry", hashlib.sha256(fp).digest()),
                           Entry("other-entry", hashlib.sha256(other).digest())], capacity=50)
    topics = Topics()
    with MqttClient(mosquitto.url, "publisher") as pub:
        publish_lists(pub, topics, only([blocklist], tmp_path / "p1"), chunk_size=4096)
    hub_client = MqttClient(mosquitto.url, "hub-serve")
    ConfirmService(hub_client, topics, hub.out).start()
    hub_client.connect()
    store = ReportStore(str(tmp_path / "reports.sqlite"))
    collector_client = MqttClient(mosquitto.url, "collector")
    Collector(collector_client, store, topics).start()
    collector_client.connect()
    origin = Origin({"/fp.jpg": ("image/jpeg", fp), "/other.jpg": ("image/jpeg", other)}).start()
    device = ProxyDevice(tmp_path, mosquitto.url, "dev-allow", "hl1", hub.pub_path)
    state = device.state

    def fetch(path):
        return device.fetch(origin.url(path))

    held = device.held

    try:
        device.wait_listening()
        wait_for(lambda: held("hl1/sha") == 1, 30)
        assert fetch("/fp.jpg") == 403
        wait_for(lambda: store.count() == 1, 20)
        # the analyst rejects it: the hub builds and publishes the allow list, the device picks it up
        v1 = _allow_build(hub, "# case 17: a holiday photo\nsha256,%s\n" % hashlib.sha256(fp).hexdigest(),
                          tmp_path, "rejected.txt")
        with MqttClient(mosquitto.url, "publisher") as pub:
            publish_lists(pub, topics, only([v1], tmp_path / "p2"), chunk_size=4096)
        wait_for(lambda: held("hl1/allow") == 1, 30)
        assert fetch("/fp.jpg") == fp  # passes, unchanged
        assert fetch("/other.jpg") == 403  # the list still blocks what is not allowed
        wait_for(lambda: store.count() == 2, 20)  # the other image's report: the allowed one made none
        assert sorted(r["entry"] for r in store.reports("hl1")) == ["fp-entry", "other-entry"]
        # status.json is written every status_interval: wait for the one written after these decisions
        wait_for(lambda: {k: _status(state)[1]["policy"][k] for k in ("allowed", "reported", "blocked")}
                 == {"allowed": 1, "reported": 2, "blocked": 2}, 10)
        assert _status(state)[1]["lists"]["hl1/allow"]["entries"] == 1
        # the allow list rolls forward: an empty version withdraws the entry
        v2 = _allow_build(hub, "# case 17 reopened\n", tmp_path, "none.txt")
        with MqttClient(mosquitto.url, "publisher") as pub:
            publish_lists(pub, topics, only([v1, v2], tmp_path / "p3"), chunk_size=4096)
        wait_for(lambda: held("hl1/allow") == 2, 30)
        assert fetch("/fp.jpg") == 403
        # a broker replaying v1 cannot bring the entry back
        with MqttClient(mosquitto.url, "publisher") as pub:
            publish_lists(pub, topics, only([v1], tmp_path / "p4"), chunk_size=4096)
        wait_for(lambda: "rollback" in json.dumps(_status(state)[1]["lists"]["hl1/allow"].get("last_refusal")), 30)
        assert held("hl1/allow") == 2 and fetch("/fp.jpg") == 403
        wait_for(lambda: store.count() == 4, 20)
    finally:
        code = device.stop()
        hub_client.stop()
        collector_client.stop()
        origin.stop()
        store.close()
    assert code == 0, _log(tmp_path)
    # the log says what was allowed without the URL or anything about the subscriber
    log = _log(tmp_path)
    assert "allowed by hl1/allow v1 entry #0 (sha256)" in log
    assert not [line for line in log.splitlines() if "allowed by" in line and ("fp.jpg" in line or "127.0.0.1" in line)]


def test_status_topic_counts_allowed_and_uncorroborated_hits(mosquitto, tmp_path):
    """The retained status topic carries the two counters, and only counts: an image an allow list
    lets through and one the two-countries rule holds back each add one, nothing names them."""
    from agent.daemon import Agent
    from agent.intake.localapi import LocalApiClient
    from tests.daemon.test_daemon_login import _agent_conf
    from tools.allow import build_allow_list

    fp, lone = (encode(generate_image(8900 + i, (256, 192)), "JPEG", 90) for i in range(2))
    hub = Hub(tmp_path / "hub")
    hub.build([Entry("fp-entry", hashlib.sha256(fp).digest()), Entry("lone-entry", hashlib.sha256(lone).digest())],
              capacity=50)
    (tmp_path / "allow.txt").write_text("sha256,%s\n" % hashlib.sha256(fp).hexdigest())
    build_allow_list(str(tmp_path / "allow.txt"), hub.out, "hl1", hub.key_path)
    conf = _agent_conf(tmp_path, hub, mosquitto.url, "dev-counts")
    conf["lists"]["dir"] = hub.out  # no hub answers confirmations: exact hits act while it is away
    conf["policy"].update(confirm_timeout=0.3, source_country=["hl1=DE"], min_countries=2)
    statuses = []
    watcher = MqttClient(mosquitto.url, "status-watcher")
    watcher.subscribe(Topics().status("dev-counts"), lambda m: statuses.append(json.loads(m.payload)))
    watcher.connect()
    agent = Agent(conf).start()
    try:
        wait_for(lambda: any(s.get("online") for s in statuses), 20)
        assert (statuses[-1]["allowed"], statuses[-1]["uncorroborated"]) == (0, 0)
        with LocalApiClient(conf["localapi"]["socket"]) as api:
            assert api.check_bytes(fp, url="http://origin.test/fp.jpg")["reason"] == "allowed-by-list"
            assert api.check_bytes(lone, url="http://origin.test/lone.jpg")["reason"] == "uncorroborated"
        wait_for(lambda: statuses[-1]["allowed"] == 1 and statuses[-1]["uncorroborated"] == 1, 10)
        last = statuses[-1]
        assert set(last) == {"client", "online", "agent", "lists", "spool_depth", "log_fork", "allowed",
                             "uncorroborated"}
        assert "fp-entry" not in json.dumps(statuses) and "origin.test" not in json.dumps(statuses)
        assert agent.status()["policy"]["reported"] == 0 and agent.status()["policy"]["blocked"] == 0
    finally:
        agent.stop()
        watcher.stop()
