"""End-to-end delivery: a report stays on the device until the HUB says it stored it.

Before: the spool deleted a report on the broker's PUBACK, and a broker with no collector
subscribed drops what it acknowledged (3 of 3 reports lost while the collector was down). Now the
collector acknowledges committed reports on <prefix>/ack/<random token>, and only that ack empties
the spool; PUBACK (even MQTT 5's 0x10 "no matching subscribers") only schedules a resend.
"""
from __future__ import annotations

import json
import queue
import time

import pytest

from agent.core.report import make_report
from agent.mqtt import Message, MqttClient, Topics
from agent.reports.reporter import Reporter, parse_ack
from agent.reports.spool import ReportSpool
from tests.brokers import start_mosquitto
from tools.collector import Collector, ReportStore


def rep(i, source="hl1"):
    return make_report(source, "sha256", 1, "sha256", 0, "sha256:%016x" % i, now=1_800_000_000,
                       agent_version="0.1.0")


class _Ack:
    def __init__(self, reason=0):
        self.done = False
        self.failed = False
        self.reason = reason


class FakeClient:
    def __init__(self, client_id="gw-0001"):
        self.client_id = client_id
        self.connected = True
        self.connects = 1
        self.sent = []
        self.subs = {}

    def publish(self, topic, payload, qos=0, retain=False):
        ack = _Ack()
        self.sent.append((topic, payload, ack))
        return ack

    def subscribe(self, topic_filter, callback, qos=1):
        self.subs[topic_filter] = callback

    def unsubscribe(self, topic_filter):
        self.subs.pop(topic_filter, None)

    def hub_ack(self, token, ids):
        Topics_ = Topics()
        self.subs[Topics_.ack(token)](Message(Topics_.ack(token), json.dumps({"ids": ids}).encode(), 1, False))


def wait_until(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_puback_alone_keeps_the_report_and_resends_with_backoff(tmp_path):
    now = [0.0]
    client = FakeClient()
    spool = ReportSpool(tmp_path)
    r = Reporter(client, spool, Topics(), clock=lambda: now[0], resend_after=30, resend_max=100)
    token = r.token
    assert len(token) == 16 and token != client.client_id and set(token) <= set("0123456789abcdef")
    assert list(client.subs) == ["gatewatch/v1/ack/" + token]
    a = rep(1)
    r.submit(a)
    r.step()
    # the partition (last level) comes from the random report id, so a resend goes to the same one
    part = Topics().pick_partition(a["id"])
    assert [t for t, _, _ in client.sent] == ["gatewatch/v1/reports/hl1/%s/%d" % (token, part)]
    assert json.loads(client.sent[0][1]) == a  # the payload is the plain report: no token, no id of the device
    client.sent[0][2].done = True  # PUBACK
    r.step()
    assert a["id"] in spool and r.stats()["awaiting_hub_ack"] == 1
    sent_at = []
    for t in range(1, 400):  # counted from the PUBACK (seen 1 s after each send): 30, 60, 100 (cap), 100
        now[0] = float(t)
        r.step()
        if len(client.sent) > len(sent_at) + 1:
            sent_at.append(t)
            client.sent[-1][2].done = True
    assert sent_at == [30, 91, 192, 293, 394], sent_at
    assert a["id"] in spool and r.republished == 5
    client.hub_ack(token, [a["id"], "f" * 32])  # an id it does not hold is ignored
    r.step()
    assert a["id"] not in spool and len(spool) == 0 and r.hub_acked == 1


def test_ack_before_puback_and_token_rotation(tmp_path):
    now = [0.0]
    client = FakeClient()
    spool = ReportSpool(tmp_path)
    r = Reporter(client, spool, clock=lambda: now[0], token_seconds=86400)
    first = r.token
    a, b = rep(1), rep(2)
    r.submit(a)
    r.step()
    client.hub_ack(first, [a["id"]])  # the hub was faster than the broker's PUBACK
    r.step()
    assert len(spool) == 0 and r.stats()["in_flight"] == 0
    now[0] = 86401
    r.submit(b)
    r.step()
    assert r.token != first and client.sent[-1][0].split("/")[-2] == r.token  # .../<token>/<partition>
    # the previous token still listens one more period (acks in flight), the one before is dropped
    assert set(client.subs) == {"gatewatch/v1/ack/" + first, "gatewatch/v1/ack/" + r.token}
    client.hub_ack(first, [b["id"]])
    r.step()
    assert len(spool) == 0
    now[0] = 2 * 86401
    r.step()
    assert "gatewatch/v1/ack/" + first not in client.subs


def test_parse_ack_is_strict():
    good = "ab" * 16
    assert parse_ack(json.dumps({"ids": [good, "AB" * 16, 3, "x"]}).encode()) == [good]
    for junk in (b"", b"\xff", b"[]", b'{"ids": "x"}', b"{" * 70000):
        assert parse_ack(junk) == []


def test_mqtt5_no_matching_subscribers_keeps_the_report_in_broker_mode(tmp_path):
    from agent.mqtt import PAHO2
    if not PAHO2:
        pytest.skip("paho 1.6.1 does not pass the PUBACK reason code on; the hub mode covers it")
    broker = start_mosquitto(tmp_path)
    spool = ReportSpool(tmp_path / "spool")
    dev = MqttClient(broker.url, "dev-v5", protocol="5").connect()
    r = Reporter(dev, spool, ack="broker", resend_after=60)
    try:
        r.submit(rep(1))
        r.step()
        assert wait_until(lambda: (r.step() or True) and r.no_subscribers == 1, 10), r.stats()
        assert len(spool) == 1  # nobody took it: kept
    finally:
        dev.stop()
        spool.close()
        broker.kill()


def test_reports_published_while_no_collector_is_subscribed_are_not_lost(tmp_path):
    """The measured loss: a collector that was never subscribed (or lost its session) when the
    device published. The broker acknowledges and drops; the device resends until the hub acks."""
    broker = start_mosquitto(tmp_path)
    spool = ReportSpool(tmp_path / "spool")
    store = ReportStore(tmp_path / "hub.db")
    dev = MqttClient(broker.url, "dev-1", reconnect=(1, 2)).connect()
    r = Reporter(dev, spool, ack_delay=0.05, resend_after=1.0, resend_max=2.0).start()
    hub = None
    try:
        reports = [rep(i) for i in range(3)]
        for x in reports:
            r.submit(x)
        assert wait_until(lambda: r.published >= 3 and r.stats()["in_flight"] == 0, 10)
        time.sleep(0.3)
        assert len(spool) == 3  # the broker's PUBACK came, nobody stored them: kept
        hub = MqttClient(broker.url, "collector-late", clean_session=False)
        col = Collector(hub, store, Topics(), group=None).start()
        hub.connect()
        assert col.subscribed.wait(5)
        assert r.drain(20), r.stats()
        assert store.ids() == {x["id"] for x in reports} and col.acked >= 3
        # resent copies are stored once and acknowledged again
        assert col.stored == 3
    finally:
        r.stop()
        dev.stop()
        if hub is not None:
            hub.stop()
        store.close()
        spool.close()
        broker.kill()


def test_collector_acks_only_after_commit_and_acks_duplicates_again(tmp_path):
    broker = start_mosquitto(tmp_path)
    store = ReportStore(tmp_path / "hub.db")
    t = Topics()
    got = queue.Queue()
    hub = MqttClient(broker.url, "col-a", clean_session=False)
    col = Collector(hub, store, t, group=None).start()
    real_add, calls = store.add, []

    def flaky(report, received_at=None):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk I/O error (simulated)")
        return real_add(report, received_at)

    store.add = flaky
    try:
        hub.connect()
        assert col.subscribed.wait(5)
        with MqttClient(broker.url, "dev") as dev:
            assert dev.subscribe(t.ack("0123456789abcdef"), got.put).wait(5)
            x = rep(7)
            payload = json.dumps(x).encode()
            assert dev.publish(t.reports("hl1", "0123456789abcdef"), payload, qos=1).wait(5)
            first = got.get(timeout=20)  # after the failed commit, the redelivery, the commit
            assert json.loads(first.payload) == {"ids": [x["id"]]} and len(calls) == 2
            assert dev.publish(t.reports("hl1", "0123456789abcdef"), payload, qos=1).wait(5)
            again = got.get(timeout=10)
            assert json.loads(again.payload) == {"ids": [x["id"]]}
        assert store.count() == 1 and col.stored == 1 and col.duplicates == 1 and col.acked == 2
    finally:
        hub.stop()
        store.close()
        broker.kill()
