"""A hit made while the hub is away is blocked, not reported; once the hub confirms it, it is reported."""

from __future__ import annotations

import hashlib

from agent.daemon import Agent
from agent.confirm.wire import Entry
from agent.intake.localapi import LocalApiClient
from agent.mqtt import MqttClient, Topics
from agent.hashing.samples import encode, generate_image
from tests.brokers import mosquitto  # noqa: F401
from tests.listkit import Hub, only, wait_for
from tests.daemon.test_daemon_login import _agent_conf
from tools.collector import Collector, ReportStore
from tools.publish import publish_lists
from tools.confirm_service import ConfirmService


def test_hit_reported_after_the_hub_comes_back(mosquitto, tmp_path):
    known = encode(generate_image(777, (256, 192)), "JPEG", 90)
    hub = Hub(tmp_path / "hub")
    v1 = hub.build([Entry("known-r", hashlib.sha256(known).digest())], capacity=50)
    topics = Topics()
    with MqttClient(mosquitto.url, "pub") as pub:
        publish_lists(pub, topics, only([v1], tmp_path / "p"))
    collector_client = MqttClient(mosquitto.url, "collector")
    store = ReportStore(str(tmp_path / "reports.sqlite"))
    Collector(collector_client, store, topics).start()
    collector_client.connect()
    conf = _agent_conf(tmp_path, hub, mosquitto.url, "dev-r1")
    conf["policy"]["confirm_timeout"] = 0.3
    agent = Agent(conf).start()
    hub_client = None
    try:
        wait_for(lambda: "hl1/sha" in agent.updater.lists, 20)
        with LocalApiClient(conf["localapi"]["socket"]) as api:
            d = api.check_bytes(known, url="http://origin.test/r.jpg")
        assert (d["action"], d["reason"]) == ("block", "match-unconfirmed")
        wait_for(lambda: agent.status()["policy"]["pending"] == 1)
        assert store.count() == 0  # nothing reported while unconfirmed
        hub_client = MqttClient(mosquitto.url, "hub")
        ConfirmService(hub_client, topics, hub.out).start()
        hub_client.connect()
        wait_for(lambda: store.count() == 1, 20)
        assert store.reports("hl1")[0]["entry"] == "known-r"
        assert agent.status()["policy"]["reconfirmed"] == 1
    finally:
        agent.stop()
        if hub_client is not None:
            hub_client.stop()
        collector_client.stop()
        store.close()
