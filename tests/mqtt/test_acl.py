"""The shipped fleet config (firmware/mosquitto/) with real mosquitto and real logins.

Every "cannot" below has a positive control beside it (the same message reaches the party that
is allowed to see it), so a broker that delivers nothing would fail these tests too.
"""
from __future__ import annotations

import queue
import time

import pytest

from agent.core.report import encode_report, make_report
from agent.mqtt import MqttClient, MqttError, Topics, wait_all
from tests.brokers import shipped_fleet_broker

USERS = {"gatewatch-hub": "hub-pw", "gw-0001": "pw-1", "gw-0002": "pw-2"}
T = Topics()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    broker = shipped_fleet_broker(tmp_path_factory.mktemp("fleet"), USERS)
    yield broker
    broker.kill()


def login(broker, user, client_id=None):
    return MqttClient(broker.url, client_id or user, username=user, password=USERS[user],
                      reconnect=(1, 2)).connect()


def drain(q, wait=0.7):
    out = []
    deadline = time.monotonic() + wait
    while True:
        try:
            out.append(q.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            return out


def test_no_anonymous_or_wrong_password_login(fleet):
    for user, pw in ((None, None), ("gw-0001", "wrong"), ("nobody", "x")):
        c = MqttClient(fleet.url, "intruder", username=user, password=pw, reconnect=(1, 1))
        with pytest.raises(MqttError):
            c.connect(timeout=2)
        c.stop()


def test_device_cannot_publish_a_list(fleet):
    hub, dev = login(fleet, "gatewatch-hub"), login(fleet, "gw-0001")
    seen = queue.Queue()
    try:
        manifest = T.manifest("hl1", "sha256")
        assert hub.publish(manifest, b"signed-manifest-v2", qos=1, retain=True).wait(5)
        assert hub.subscribe(T.lists_filter(), seen.put).wait(5)
        assert [m.payload for m in drain(seen)] == [b"signed-manifest-v2"]
        # the device tries: manifest, snapshot chunk, delta chunk
        acks = [dev.publish(manifest, b"forged-manifest", qos=1, retain=True),
                dev.publish(T.snapshot_chunk("hl1", "sha256", 3, 0), b"forged-chunk", qos=1),
                dev.publish(T.delta_chunk("hl1", "sha256", 2, 3, 0), b"forged-delta", qos=1)]
        wait_all(acks, 5)
        # positive control: the hub's own chunk arrives, the device's do not
        assert hub.publish(T.snapshot_chunk("hl1", "sha256", 3, 0), b"real-chunk", qos=1).wait(5)
        assert [m.payload for m in drain(seen)] == [b"real-chunk"]
        fresh = queue.Queue()
        assert dev.subscribe(manifest, fresh.put).wait(5)  # devices may read lists
        assert [m.payload for m in drain(fresh)] == [b"signed-manifest-v2"]
    finally:
        hub.stop()
        dev.stop()


def test_device_reads_only_its_own_confirmation_answers(fleet):
    hub, d1, d2 = login(fleet, "gatewatch-hub"), login(fleet, "gw-0001"), login(fleet, "gw-0002")
    q1, q2 = queue.Queue(), queue.Queue()
    try:
        assert d2.subscribe(T.confirm_resp_filter("gw-0002"), q2.put).wait(5)
        assert d1.subscribe(T.confirm_resp_filter("gw-0001"), q1.put).wait(5)
        granted = [d1.subscribe(f, q1.put) for f in (T.confirm_resp_filter("gw-0002"),
                                                     "gatewatch/v1/confirm/resp/+/#", "gatewatch/v1/#", "#")]
        for g in granted:
            g.wait(5)
        assert hub.publish(T.confirm_resp("gw-0002", "r1"), b"answer-for-2", qos=1).wait(5)
        assert hub.publish(T.confirm_resp("gw-0001", "r1"), b"answer-for-1", qos=1).wait(5)
        assert [m.payload for m in drain(q2)] == [b"answer-for-2"]       # positive control
        got1 = [m for m in drain(q1) if "/confirm/" in m.topic]
        assert {m.payload for m in got1} == {b"answer-for-1"}          # nothing of device 2
    finally:
        hub.stop()
        d1.stop()
        d2.stop()


def test_borrowed_client_id_does_not_open_another_devices_answers(fleet):
    hub = login(fleet, "gatewatch-hub")
    impostor = login(fleet, "gw-0001", client_id="gw-0002")  # device 1's login, device 2's id
    got = queue.Queue()
    try:
        impostor.subscribe(T.confirm_resp_filter("gw-0002"), got.put).wait(5)
        assert hub.publish(T.confirm_resp("gw-0002", "r2"), b"answer-for-2", qos=1).wait(5)
        assert drain(got) == []
    finally:
        hub.stop()
        impostor.stop()


def test_device_writes_reports_requests_and_own_status_only(fleet):
    hub, d1, d2 = login(fleet, "gatewatch-hub"), login(fleet, "gw-0001"), login(fleet, "gw-0002")
    seen, d2_seen = queue.Queue(), queue.Queue()
    try:
        assert hub.subscribe(T.reports_shared(), seen.put).wait(5)   # shared, as collectors do
        assert hub.subscribe(T.confirm_req_shared(), seen.put).wait(5)
        assert hub.subscribe(T.status_filter(), seen.put).wait(5)
        assert hub.subscribe("gatewatch/v1/confirm/resp/#", seen.put).wait(5)
        d2.subscribe("gatewatch/v1/reports/#", d2_seen.put).wait(5)
        d2.subscribe(T.confirm_req(), d2_seen.put).wait(5)
        d2.subscribe(T.status_filter(), d2_seen.put).wait(5)
        report = make_report("hl1", "sha256", 1, "sha256", 0, "e1", now=1_800_000_000, agent_version="0.1.0")
        allowed = [(T.reports("hl1"), encode_report(report)), (T.confirm_req(), b"request"),
                   (T.status("gw-0001"), b"status-1")]
        denied = [(T.status("gw-0002"), b"forged-status"),
                  (T.confirm_resp("gw-0002", "r9"), b"forged-answer"),
                  ("gatewatch/v1/other", b"x")]
        wait_all([d1.publish(t, p, qos=1) for t, p in allowed + denied], 5)
        got = {(m.topic, m.payload) for m in drain(seen, 1.0)}
        assert got == set(allowed)
        assert drain(d2_seen) == []  # devices read no one's reports, requests or status
    finally:
        hub.stop()
        d1.stop()
        d2.stop()
