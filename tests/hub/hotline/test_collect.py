"""The fleet's reports into cases: the collector feeding the hub refuses what it must, stores nothing
for it, and acknowledges a report to its device only once its case is committed."""
from __future__ import annotations

import json

from agent.core.report import encode_report
from agent.mqtt import MqttClient, Topics, wait_all
from tests.brokers import mosquitto  # noqa: F401
from tests.hub.hotline.hubs import TestHub
from tests.hub.hotline.kit import Network, report
from tests.waiting import wait_for
from tools.collector import Collector
from tools.hotline.hub import CaseSink


def test_unknown_source_and_malformed_reports_are_refused_and_nothing_is_stored(tmp_path, mosquitto, dns):
    net = Network(tmp_path / "net", {"hotline-a": ["NL"], "hotline-b": ["FR"]})
    h = TestHub(net, "hotline-a", str(tmp_path / "a.sqlite"), dns=dns, sources=["hotline-a"])
    topics = Topics()
    client = MqttClient(mosquitto.url, "hub-a", clean_session=False)
    col = Collector(client, CaseSink(h.hub), topics, group="", sources={"hotline-a"}).start()
    acks = []
    try:
        client.connect()
        assert col.subscribed.wait(5)
        with MqttClient(mosquitto.url, "dev") as dev:
            dev.subscribe(topics.ack("0123456789abcdef"), lambda m: acks.append(json.loads(m.payload)), qos=1)
            stranger = report(1, source="hotline-x")
            good = report(2)
            sent = [dev.publish(topics.reports("hotline-x") + "/0123456789abcdef", encode_report(stranger), qos=1),
                    dev.publish(topics.reports("hotline-a") + "/0123456789abcdef",
                                encode_report(good).replace(b'"schema":1', b'"schema":1,"client":"10.0.0.9"'), qos=1),
                    dev.publish(topics.reports("hotline-a") + "/0123456789abcdef", b"\x00garbage", qos=1),
                    dev.publish(topics.reports("hotline-a") + "/0123456789abcdef", encode_report(good), qos=1)]
            assert wait_all(sent, 10) == 4
            wait_for(lambda: col.stored + col.rejected >= 4, 10)
            wait_for(lambda: acks, 10)
        assert col.refusals["source"] == 1 and col.refusals["schema"] == 2 and col.stored == 1
        assert acks == [{"ids": [good["id"]]}]                       # only the stored one is acknowledged
        assert h.store.count_reports() == 1 and h.store.count_cases() == 1
        assert h.store.cases()[0]["source"] == "hotline-a"
    finally:
        client.stop()
        h.close()
