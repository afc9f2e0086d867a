"""Reporter in the legacy ``ack="broker"`` mode: deletes from the spool on PUBACK, resumes after
reconnect (real mosquitto). The hub-acknowledged mode (the default) is tests/reports/test_hub_ack.py."""
from __future__ import annotations

import json
import queue
import time

from agent.core.report import make_report
from agent.mqtt import MqttClient, Topics
from agent.reports.reporter import Reporter
from agent.reports.spool import ReportSpool
from tests.brokers import start_mosquitto


def rep(i, source="hl1"):
    return make_report(source, "md5", 1, "md5", 0, "md5:%016x" % i, now=1_800_000_000,
                       agent_version="0.1.0")


class _Ack:
    def __init__(self):
        self.done = False
        self.failed = False


class FakeClient:
    """Records publishes; acknowledges only when the test says so."""

    def __init__(self):
        self.connected = True
        self.sent = []
        self.subs = []

    def subscribe(self, topic_filter, callback, qos=1):
        self.subs.append((topic_filter, callback))

    def unsubscribe(self, topic_filter):
        self.subs = [s for s in self.subs if s[0] != topic_filter]

    def publish(self, topic, payload, qos=0, retain=False):
        ack = _Ack()
        self.sent.append((topic, payload, qos, ack))
        return ack


def test_spool_keeps_a_report_until_its_puback(tmp_path):
    now = [0.0]
    client = FakeClient()
    spool = ReportSpool(tmp_path)
    r = Reporter(client, spool, Topics(), ack_timeout=1000, refused_retry=60, clock=lambda: now[0],
                 ack="broker")
    a, b = rep(1), rep(2, source="hl2")
    r.submit(a)
    r.submit(b)
    r.step()
    assert [(t, q) for t, _, q, _ in client.sent] == [("gatewatch/v1/reports/hl1", 1),
                                                       ("gatewatch/v1/reports/hl2", 1)]
    assert json.loads(client.sent[0][1]) == a
    r.step()
    assert len(client.sent) == 2 and len(spool) == 2  # in flight: not sent twice, not deleted
    client.sent[1][3].done = True
    r.step()
    assert len(spool) == 1 and a["id"] in spool and b["id"] not in spool
    client.sent[0][3].done = client.sent[0][3].failed = True  # broker refused: stays spooled
    r.step()
    r.step()
    assert a["id"] in spool and len(client.sent) == 2 and r.refused == 1  # not hammered at once
    now[0] = 61
    r.step()
    assert len(client.sent) == 3 and client.sent[2][1] == client.sent[0][1]  # tried again later


def test_unanswered_publish_is_sent_again_after_timeout(tmp_path):
    now = [0.0]
    client = FakeClient()
    spool = ReportSpool(tmp_path)
    r = Reporter(client, spool, ack_timeout=30, clock=lambda: now[0], ack="broker")
    r.submit(rep(1))
    r.step()
    now[0] = 10
    r.step()
    assert len(client.sent) == 1
    now[0] = 31
    r.step()
    assert len(client.sent) == 2 and r.republished == 1
    client.connected = False
    now[0] = 100
    r.step()
    assert len(client.sent) == 2  # offline: waits, paho resends on reconnect


def test_unreadable_spooled_payload_is_dropped_and_counted(tmp_path):
    client = FakeClient()
    spool = ReportSpool(tmp_path)
    spool.put("ab" * 16, b"\xff not json")
    r = Reporter(client, spool, ack="broker")
    r.submit(rep(1))
    r.step()
    r.step()
    assert r.invalid == 1 and "ab" * 16 not in spool
    assert len(client.sent) == 1


def test_window_bounds_reports_in_flight(tmp_path):
    client = FakeClient()
    spool = ReportSpool(tmp_path)
    r = Reporter(client, spool, window=5, ack="broker")
    for i in range(12):
        r.submit(rep(i))
    r.step()
    assert len(client.sent) == 5
    for *_, ack in client.sent:
        ack.done = True
    r.step()
    r.step()
    assert len(client.sent) == 10 and len(spool) == 7


def test_drains_through_broker_outage(tmp_path):
    broker = start_mosquitto(tmp_path)
    spool = ReportSpool(tmp_path / "spool")
    got = queue.Queue()
    try:
        with MqttClient(broker.url, "hub-sub", clean_session=False, reconnect=(1, 2)) as sub:
            assert sub.subscribe("gatewatch/v1/reports/+", got.put).wait(5)
            dev = MqttClient(broker.url, "dev-1", reconnect=(1, 2)).start()
            r = Reporter(dev, spool, ack_delay=0.05, ack="broker").start()
            try:
                reports = [rep(i) for i in range(40)]
                for x in reports[:20]:
                    r.submit(x)
                assert r.drain(15)
                broker.stop()
                for x in reports[20:]:
                    r.submit(x)
                time.sleep(0.5)
                assert len(spool) == 20  # nothing acknowledged while the broker is away
                broker.start()
                assert r.drain(30), r.stats()
            finally:
                r.stop()
                dev.stop()
            seen = set()
            deadline = time.monotonic() + 10
            while len(seen) < 40 and time.monotonic() < deadline:
                try:
                    seen.add(json.loads(got.get(timeout=1).payload)["id"])
                except queue.Empty:
                    pass
            assert seen == {x["id"] for x in reports}
            assert r.stats()["spool_depth"] == 0 and r.stats()["delivered"] >= 40
    finally:
        spool.close()
        broker.kill()
