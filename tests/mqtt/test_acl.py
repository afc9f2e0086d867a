"""The shipped fleet config (firmware/mosquitto/) with real mosquitto and real logins.

Every "cannot" below has a positive control beside it (the same message reaches the party that
is allowed to see it), so a broker that delivers nothing would fail these tests too.
"""
from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest

from agent.core.report import encode_report, make_report
from agent.mqtt import MqttClient, MqttError, Topics, wait_all
from tests.brokers import FIRMWARE_CONF, Broker, free_port, write_password_file

USERS = {"gatewatch-hub": "hub-pw", "gw-0001": "pw-1", "gw-0002": "pw-2", "gatewatch-collector": "col-pw"}
T = Topics()


def shipped_broker(tmp_path, users):
    """firmware/mosquitto/mosquitto.conf line by line, in its order, with only the machine-specific
    lines replaced: its TLS listener becomes a plain loopback listener, so that the listener options
    that follow it (use_username_as_clientid) apply to the test's listener exactly as shipped."""
    folder = Path(tmp_path) / ("shipped-%d" % time.monotonic_ns())
    (folder / "data").mkdir(parents=True)
    port = free_port()
    pw = write_password_file(folder / "passwd", users)
    drop = {"certfile", "keyfile", "cafile", "capath", "tls_version", "log_dest", "user", "pid_file"}
    lines = []
    for raw in (FIRMWARE_CONF / "mosquitto.conf").read_text().splitlines():
        line = raw.strip()
        word = line.split(" ", 1)[0]
        if not word or word.startswith("#") or word in drop:
            continue
        if word == "listener":
            line = "listener %d 127.0.0.1" % port
        elif word == "password_file":
            line = "password_file %s" % pw
        elif word == "acl_file":
            line = "acl_file %s" % (FIRMWARE_CONF / "acl")
        elif word == "persistence_location":
            line = "persistence_location %s/" % (folder / "data")
        lines.append(line)
    assert "use_username_as_clientid true" in lines
    lines.append("log_dest stderr")
    if os.geteuid() == 0:
        lines.append("user root")
    return Broker(folder, port, "\n".join(lines) + "\n").start()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    broker = shipped_broker(tmp_path_factory.mktemp("fleet"), USERS)
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


def test_device_reads_the_log_but_cannot_write_its_heads(fleet):
    hub, dev = login(fleet, "gatewatch-hub"), login(fleet, "gw-0002")
    seen = queue.Queue()
    try:
        head, step = T.log_head("hub"), T.log_step("hub", 3)
        assert hub.publish(head, b"signed-head-4", qos=1, retain=True).wait(5)
        assert hub.subscribe(T.prefix + "/log/#", seen.put).wait(5)
        assert [m.payload for m in drain(seen)] == [b"signed-head-4"]
        wait_all([dev.publish(head, b"forged-head", qos=1, retain=True), dev.publish(step, b"forged-step", qos=1)], 5)
        assert hub.publish(head, b"signed-head-5", qos=1, retain=True).wait(5)  # positive control
        assert [m.payload for m in drain(seen)] == [b"signed-head-5"]
        fresh = queue.Queue()
        assert dev.subscribe(T.log_head_filter(), fresh.put).wait(5)  # devices may read the log
        assert [m.payload for m in drain(fresh)] == [b"signed-head-5"]
    finally:
        hub.stop()
        dev.stop()


def test_device_reads_only_its_own_token_answers(fleet):
    hub, d1, d2 = login(fleet, "gatewatch-hub"), login(fleet, "gw-0001"), login(fleet, "gw-0002")
    q1, q2 = queue.Queue(), queue.Queue()
    try:
        assert d2.subscribe(T.tokens_resp_filter("gw-0002"), q2.put).wait(5)
        assert d1.subscribe(T.tokens_resp_filter("gw-0001"), q1.put).wait(5)
        granted = [d1.subscribe(f, q1.put) for f in (T.tokens_resp_filter("gw-0002"),
                                                     "gatewatch/v1/tokens/resp/+/+", "gatewatch/v1/#", "#")]
        for g in granted:
            g.wait(5)
        assert hub.publish(T.tokens_resp("gw-0002", "r1"), b"tokens-for-2", qos=1).wait(5)
        assert hub.publish(T.tokens_resp("gw-0001", "r1"), b"tokens-for-1", qos=1).wait(5)
        assert [m.payload for m in drain(q2)] == [b"tokens-for-2"]       # positive control
        got1 = [m for m in drain(q1) if "/tokens/" in m.topic]
        assert {m.payload for m in got1} == {b"tokens-for-1"}          # nothing of device 2
    finally:
        hub.stop()
        d1.stop()
        d2.stop()


def test_confirmation_answers_are_readable_one_level_deep_only(fleet):
    """Answers go to random reply ids: any device may read confirm/resp/+ (the answers are useless to it),
    nothing deeper, and no device can write an answer."""
    hub, d1, d2 = login(fleet, "gatewatch-hub"), login(fleet, "gw-0001"), login(fleet, "gw-0002")
    q1, seen = queue.Queue(), queue.Queue()
    try:
        d1.subscribe("gatewatch/v1/confirm/resp/#", q1.put).wait(5)  # granted, but nothing deeper is delivered
        assert hub.subscribe("gatewatch/v1/confirm/resp/#", seen.put).wait(5)
        assert hub.publish(T.confirm_resp("a" * 32), b"answer", qos=1).wait(5)
        assert hub.publish(T.confirm_resp("a" * 32) + "/deeper", b"deeper", qos=1).wait(5)
        assert [m.payload for m in drain(q1)] == [b"answer"]
        drain(seen)
        wait_all([d2.publish(T.confirm_resp("b" * 32), b"forged-answer", qos=1)], 5)
        assert drain(seen) == []
    finally:
        hub.stop()
        d1.stop()
        d2.stop()


def test_borrowed_client_id_does_not_open_another_devices_tokens(fleet):
    hub = login(fleet, "gatewatch-hub")
    impostor = login(fleet, "gw-0001", client_id="gw-0002")  # device 1's login, device 2's id
    got = queue.Queue()
    try:
        impostor.subscribe(T.tokens_resp_filter("gw-0002"), got.put).wait(5)
        assert hub.publish(T.tokens_resp("gw-0002", "r2"), b"tokens-for-2", qos=1).wait(5)
        assert drain(got) == []
    finally:
        hub.stop()
        impostor.stop()


def test_device_writes_reports_requests_and_own_status_only(fleet):
    hub, d1, d2 = login(fleet, "gatewatch-hub"), login(fleet, "gw-0001"), login(fleet, "gw-0002")
    seen, d2_seen = queue.Queue(), queue.Queue()
    try:
        assert hub.subscribe(T.reports_shared(), seen.put).wait(5)   # shared, as collectors do
        for f in T.confirm_requests_shared():
            assert hub.subscribe(f, seen.put).wait(5)
        assert hub.subscribe(T.status_filter(), seen.put).wait(5)
        assert hub.subscribe("gatewatch/v1/confirm/resp/#", seen.put).wait(5)
        assert hub.subscribe("gatewatch/v1/ack/#", seen.put).wait(5)
        assert hub.subscribe("gatewatch/v1/hub/#", seen.put).wait(5)
        d2.subscribe("gatewatch/v1/reports/#", d2_seen.put).wait(5)
        d2.subscribe("gatewatch/v1/confirm/eval/#", d2_seen.put).wait(5)
        d2.subscribe("gatewatch/v1/confirm/fetch/#", d2_seen.put).wait(5)
        d2.subscribe(T.tokens_req_filter(), d2_seen.put).wait(5)
        d2.subscribe(T.status_filter(), d2_seen.put).wait(5)
        report = make_report("hl1", "sha256", 1, "sha256", 0, "e1", now=1_800_000_000, agent_version="0.1.0")
        allowed = [(T.reports("hl1"), encode_report(report)), (T.confirm_eval(), b"request"),
                   (T.confirm_fetch(), b"fetch"), (T.tokens_req("gw-0001"), b"tokens please"),
                   (T.reports("hl1", "0123456789abcdef"), encode_report(report)),
                   (T.reports("hl1", "0123456789abcdef", 3), encode_report(report)),
                   (T.confirm_eval(T.partitions - 1), b"partitioned request"),
                   (T.confirm_fetch(0), b"partitioned fetch"), (T.tokens_req("gw-0001", 5), b"tokens, partitioned"),
                   (T.status("gw-0001"), b"status-1")]
        denied = [(T.status("gw-0002"), b"forged-status"),
                  (T.confirm_resp("c" * 32), b"forged-answer"), (T.tokens_req("gw-0002"), b"not mine"),
                  (T.tokens_resp("gw-0001", "r9"), b"forged-tokens"),
                  ("gatewatch/v1/other", b"x"),
                  ("gatewatch/v1/reports/hl1/0123456789abcdef/3/more", b"deeper than a report topic"),
                  ("gatewatch/v1/confirm/eval/3/more", b"deeper than a request topic"),
                  (T.tokens_req("gw-0002", 5), b"not mine either"),
                  (T.hub_member("collect", "gw-0001"), b"a device posing as a hub instance"),
                  (T.ack("0123456789abcdef"), b'{"ids":[]}')]
        wait_all([d1.publish(t, p, qos=1) for t, p in allowed + denied], 5)
        got = {(m.topic, m.payload) for m in drain(seen, 1.0)}
        assert got == set(allowed)
        assert drain(d2_seen) == []  # devices read no one's reports, requests or status
    finally:
        hub.stop()
        d1.stop()
        d2.stop()


def test_another_devices_client_id_no_longer_kicks_that_device_off(fleet):
    """use_username_as_clientid: the broker names a session after the login, so gw-0001 connecting
    with the client id "gw-0002" takes over nothing of gw-0002 (before: gw-0002 was disconnected)."""
    hub, d2 = login(fleet, "gatewatch-hub"), login(fleet, "gw-0002")
    got = queue.Queue()
    impostor = None
    try:
        assert d2.subscribe(T.status("gw-0002"), got.put).wait(5)
        connects = d2.connects
        impostor = login(fleet, "gw-0001", client_id="gw-0002")
        time.sleep(1.0)
        assert d2.connected and d2.connects == connects  # never dropped, never reconnected
        assert hub.publish(T.status("gw-0002"), b"still-here", qos=1).wait(5)
        assert [m.payload for m in drain(got)] == [b"still-here"]
    finally:
        hub.stop()
        d2.stop()
        if impostor is not None:
            impostor.stop()


def test_acks_are_readable_by_token_writable_only_by_the_hub(fleet):
    hub, d1, d2 = login(fleet, "gatewatch-collector"), login(fleet, "gw-0001"), login(fleet, "gw-0002")
    mine, wild, spy = queue.Queue(), queue.Queue(), queue.Queue()
    token = "0123456789abcdef"
    try:
        assert d1.subscribe(T.ack(token), mine.put).wait(5)
        d2.subscribe("gatewatch/v1/ack/#", wild.put).wait(5)
        d2.subscribe("gatewatch/v1/reports/#", spy.put).wait(5)
        # a device cannot forge an ack, neither for itself nor for another device
        wait_all([d2.publish(T.ack(token), b'{"ids":["%s"]}' % (b"ab" * 16), qos=1),
                  d1.publish(T.ack(token), b'{"ids":["%s"]}' % (b"cd" * 16), qos=1)], 5)
        assert d1.publish(T.reports("hl1", token), b"{}", qos=1).wait(5)
        real = b'{"ids":["%s"]}' % (b"ef" * 16)
        assert hub.publish(T.ack(token), real, qos=1).wait(5)  # positive control
        assert [m.payload for m in drain(mine)] == [real]
        # mosquitto cannot tie a random token to a login: another device that subscribes to every
        # ack sees this one too. What it learns: a random token and random report ids, no more.
        assert [m.payload for m in drain(wild)] == [real]
        assert drain(spy) == []  # but no device reads anyone's reports
    finally:
        hub.stop()
        d1.stop()
        d2.stop()


def test_collector_login_reads_acked_reports_and_clears_retained_ones(fleet, tmp_path):
    from tools.collector import Collector, ReportStore
    col_client, d1 = login(fleet, "gatewatch-collector"), login(fleet, "gw-0001")
    store = ReportStore(tmp_path / "hub.db")
    acks = queue.Queue()
    token = "00112233445566aa"
    try:
        col = Collector(col_client, store, T, group=None, sources={"hl1"}).start()
        assert col.subscribed.wait(5)
        assert d1.subscribe(T.ack(token), acks.put).wait(5)
        good = make_report("hl1", "sha256", 1, "sha256", 0, "e1", now=1_800_000_000, agent_version="0.1.0")
        junk = b'{"junk":"' + b"J" * 60000 + b'"}'
        assert d1.publish(T.reports("hl1", token), junk, qos=1, retain=True).wait(5)
        assert d1.publish(T.reports("hl1", token), encode_report(good), qos=1).wait(5)
        got = drain(acks, 2.0)
        assert [m.payload for m in got] == [b'{"ids":["%s"]}' % good["id"].encode()]
        # delivered live (the retain flag is not passed on to present subscribers): refused by size
        assert store.ids() == {good["id"]} and col.refusals["size"] == 1
        # the retained junk is gone from the broker: a new subscriber gets nothing retained
        late = queue.Queue()
        with MqttClient(fleet.url, "gatewatch-hub", username="gatewatch-hub", password=USERS["gatewatch-hub"]) as h:
            assert h.subscribe("gatewatch/v1/reports/#", late.put).wait(5)
            assert drain(late, 1.0) == []
    finally:
        col_client.stop()
        d1.stop()
        store.close()


def test_collector_login_holds_its_lease_devices_cannot_pose_as_hub_instances(fleet):
    """tools/partitions.py: collectors renew their leases on hub/collect/members/<instance>; the
    collector login may, a device may not (it could otherwise take report partitions nobody serves)."""
    hub, col, d1 = login(fleet, "gatewatch-hub"), login(fleet, "gatewatch-collector"), login(fleet, "gw-0001")
    seen = queue.Queue()
    try:
        assert hub.subscribe(T.hub_members_filter("collect"), seen.put).wait(5)
        assert d1.publish(T.hub_member("collect", "evil"), b'{"forged":1}', qos=1).wait(5)
        assert col.publish(T.hub_member("collect", "c1"), b'{"lease":1}', qos=1).wait(5)
        assert [(m.topic, m.payload) for m in drain(seen, 1.0)] == [(T.hub_member("collect", "c1"), b'{"lease":1}')]
    finally:
        for c in (hub, col, d1):
            c.stop()
