"""The transparency log over a real mosquitto: a device refuses a validly signed list version that is
not in the log; it follows the log's heads; a forked head is refused, kept as evidence and shown on
the status, its topic and the LED, while the last good list stays in force."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from agent.config import defaults
from agent.core.errors import ConfigError
from agent.daemon import Agent
from agent.mqtt import MqttClient, Topics
from tests.brokers import mosquitto  # noqa: F401
from tests.listkit import Hub, only, random_entries, wait_for
from tests.updates.test_updates_mqtt import CHUNK, IDENT, Device, raw_publish
from tools.publish import publish_lists
from tools.translog import LogStore


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path / "hub", log=True)
    h.v1 = h.build(random_entries(1500, 1))
    return h


def publish(broker, folder, translog=None):
    with MqttClient(broker.url, "publisher") as c:
        return publish_lists(c, Topics(), folder, chunk_size=CHUNK, translog=translog)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_device_refuses_a_signed_version_that_is_not_in_the_log(mosquitto, hub, tmp_path):
    topics = Topics()
    publish(mosquitto, only([hub.v1], tmp_path / "p1"), translog=hub.log)
    dev = Device(mosquitto, tmp_path, hub.trust())
    try:
        st = dev.wait_outcome(1)
        assert (st.version, st.last_refusal) == (1, None)
        assert sorted(os.listdir(dev.store.directory)) == ["hl1+sha.v1.gwl", "hl1+sha.v1.proof"]
        assert dev.updater.log.held["hub"].size == 1
        downloaded = st.bytes_downloaded
        # v2: validly signed by the source's key, never appended to the log
        v2 = hub.build(random_entries(1500, 1) + random_entries(100, 2), logged=False)
        with pytest.raises(ConfigError, match="not in log hub"):  # the hub's own publisher refuses it
            publish(mosquitto, only([hub.v1, v2], tmp_path / "p2"), translog=hub.log)
        publish(mosquitto, only([hub.v1, v2], tmp_path / "p3"))  # a publisher (or broker) without the log
        wait_for(lambda: dev.status().announced == 2 and dev.status().last_refusal is not None, 15)
        st = dev.status()
        assert "no log proof" in st.last_refusal["reason"], st.last_refusal
        assert st.version == 1 and st.bytes_downloaded == downloaded  # refused before any download
        # someone puts v1's genuine proof on v2's proof topic and announces v2 again
        raw_publish(mosquitto, topics.log_proof("hl1", "sha", 2), _read(hub.v1[:-4] + ".proof"))
        manifest = []
        with MqttClient(mosquitto.url, "spy") as spy:
            spy.subscribe(topics.manifest("hl1", "sha"), lambda m: manifest.append(m.payload)).wait(5)
            wait_for(lambda: manifest)
        raw_publish(mosquitto, topics.manifest("hl1", "sha"), manifest[0])
        wait_for(lambda: "is not in log hub" in dev.status().last_refusal["reason"], 15)
        st = dev.status()
        assert st.version == 1 and st.bytes_downloaded == downloaded
        assert dev.store.load()[IDENT].version == 1 and not dev.updater.log.fault()
    finally:
        dev.close()


def _conf(tmp_path, hub, broker):
    conf = defaults()
    conf["agent"].update(state_dir=str(tmp_path / "state"), hal="emulated", status_interval=0.2,
                         client_id="dev-log")
    conf["localapi"]["enabled"] = False
    conf["lists"].update(trust=[hub.pub_path, hub.log_pub_path], stale_hours=0)
    conf["broker"]["url"] = broker.url
    return conf


def test_daemon_follows_heads_and_shows_a_forked_log_as_a_fault(mosquitto, hub, tmp_path):
    topics = Topics()
    publish(mosquitto, only([hub.v1], tmp_path / "p1"), translog=hub.log)
    seen = {}
    with MqttClient(mosquitto.url, "watcher") as w:
        w.subscribe(topics.status("dev-log"), lambda m: seen.__setitem__("s", m.payload)).wait(5)
        agent = Agent(_conf(tmp_path, hub, mosquitto)).start()
        try:
            wait_for(lambda: agent.status()["lists"].get(IDENT, {}).get("version") == 1, 15)
            # the hub logs and publishes v2: the device walks to the new head and installs it (delta)
            v2 = hub.build(random_entries(1500, 1) + random_entries(100, 2))
            publish(mosquitto, only([hub.v1, v2], tmp_path / "p2"), translog=hub.log)
            wait_for(lambda: agent.status()["lists"][IDENT]["version"] == 2, 15)
            wait_for(lambda: (agent.status()["log"]["hub"]["size"], agent.led.state) == (2, "ok"), 10)
            # the log's key signs another history of the same size (leaf 0 replaced) and it shows up
            # on the head topic: two signed heads of size 2 with different roots
            with open(hub.log_pub_path, "r", encoding="utf-8") as f:
                evil = LogStore.create(str(tmp_path / "evil-log"), "hub", f.read())
            other = hub.build(random_entries(300, 8), version=1, out=str(tmp_path / "evil"), logged=False)
            evil.append([other], hub.log_key)
            evil.append([shutil.copy(v2, str(tmp_path / "evil"))], hub.log_key)
            raw_publish(mosquitto, topics.log_head("hub"), evil.steps()[-1])
            wait_for(lambda: agent.status()["log"]["hub"]["fork"] is not None, 15)
            st = agent.status()
            assert "forked" in st["log"]["hub"]["fork"]["reason"] and st["log"]["hub"]["size"] == 2
            wait_for(lambda: agent.led.state == "fault", 5)
            wait_for(lambda: seen.get("s") and json.loads(seen["s"]).get("log_fork") is True, 5)
            assert [l.version for l in agent.scanner.lists] == [2]  # the last good list stays
        finally:
            agent.stop()
    # the evidence is on disk: a restarted agent still shows the fault
    state = json.loads(_read(str(tmp_path / "state" / "log-heads.json")))
    assert len(state["logs"]["hub"]["fork"]["heads"]) == 2
