"""agent.mqtt against a real mosquitto; runs on paho 2.x here and on 1.6.1 via test_mqtt_paho161."""
from __future__ import annotations

import os
import queue
import threading

import paho.mqtt
import pytest

from agent.core.errors import ConfigError
from agent.mqtt import MqttClient, MqttError, Topics, TopicError, parse_url, PAHO2, wait_all
from tests.brokers import mosquitto, start_mosquitto  # noqa: F401


def test_expected_paho_version():
    want = os.environ.get("GATEWATCH_EXPECT_PAHO")
    if want:
        assert paho.mqtt.__version__ == want
        assert PAHO2 == want.startswith("2.")
    else:
        assert paho.mqtt.__version__.split(".")[0] in ("1", "2")


def test_parse_url():
    assert parse_url("mqtt://127.0.0.1")["port"] == 1883
    u = parse_url("mqtts://dev%2F1:p%40ss@broker.example:8884")
    assert u == {"host": "broker.example", "port": 8884, "tls": True, "username": "dev/1",
                 "password": "p@ss"}
    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "x"):
        with pytest.raises(ConfigError):
            parse_url(bad)


def test_topics():
    t = Topics()
    assert t.manifest("hl1", "sha256") == "gatewatch/v1/lists/hl1/sha256/manifest"
    assert t.snapshot_chunk("hl1", "pdq", 7, 0) == "gatewatch/v1/lists/hl1/pdq/v7/snapshot/0"
    assert t.delta_chunk("hl1", "pdq", 6, 7, 2) == "gatewatch/v1/lists/hl1/pdq/delta/6-7/2"
    assert t.confirm_resp("r9") == "gatewatch/v1/confirm/resp/r9"
    assert t.tokens_resp("dev1", "r9") == "gatewatch/v1/tokens/resp/dev1/r9"
    assert t.confirm_requests_shared() == ["$share/hub/gatewatch/v1/confirm/eval/#",
                                           "$share/hub/gatewatch/v1/confirm/fetch/#", "$share/hub/gatewatch/v1/tokens/req/#"]
    assert t.confirm_eval(3) == "gatewatch/v1/confirm/eval/3" and t.confirm_fetch() == "gatewatch/v1/confirm/fetch"
    assert t.tokens_req("gw-1", 2) == "gatewatch/v1/tokens/req/gw-1/2"
    assert t.reports_shared("c") == "$share/c/gatewatch/v1/reports/#"
    assert t.source_of_report_topic("gatewatch/v1/reports/hl1") == "hl1"
    assert t.source_of_report_topic("gatewatch/v1/reports/hl1/0123abcd") == "hl1"  # <source>/<ack token>
    assert t.parse_report_topic("gatewatch/v1/reports/hl1/0123abcd") == ("hl1", "0123abcd")
    assert t.source_of_report_topic("gatewatch/v1/reports/hl1/x/y") is None
    assert t.source_of_report_topic("gatewatch/v1/reports//x") is None
    assert Topics("x/y/").status("d") == "x/y/status/d"
    for bad in ("", "a/b", "+", "#", "a#"):
        with pytest.raises(TopicError):
            t.reports(bad)
    with pytest.raises(TopicError):
        Topics("a/#")


def test_partitioned_topics_and_the_partition_pick():
    t = Topics(partitions=16)
    assert t.confirm_eval() == "gatewatch/v1/confirm/eval"  # unpartitioned
    assert t.confirm_eval(7) == "gatewatch/v1/confirm/eval/7"
    assert t.confirm_request_filters() == ["gatewatch/v1/confirm/eval/#", "gatewatch/v1/confirm/fetch/#"]
    assert t.reports("hl1", "0123456789abcdef", 15) == "gatewatch/v1/reports/hl1/0123456789abcdef/15"
    assert t.reports_partition_filter(3) == "gatewatch/v1/reports/+/+/3"
    assert t.parse_report_topic("gatewatch/v1/reports/hl1/0123abcd/15") == ("hl1", "0123abcd")
    # a third level that is not a partition of this layout is no report topic
    for bad in ("16", "-1", "03", "\u0663", "x", "1e3", " 1", "99999999"):
        assert t.parse_report_topic("gatewatch/v1/reports/hl1/0123abcd/" + bad) is None, bad
    for bad in (16, -1, True, "3", 1.0, None.__class__):
        with pytest.raises(TopicError):
            t.confirm_eval(bad)
    assert t.hub_member("collect", "c-1") == "gatewatch/v1/hub/collect/members/c-1"
    with pytest.raises(TopicError):
        t.hub_member("collect", "a/b")
    # the partition comes from a random value: a report id always lands in the same one (resends
    # go where the first copy went), fresh random values spread over all of them
    rid = os.urandom(16).hex()
    assert len({t.pick_partition(rid) for _ in range(5)}) == 1
    assert {t.pick_partition() for _ in range(2000)} == set(range(16))
    assert {t.pick_partition(os.urandom(16).hex()) for _ in range(2000)} == set(range(16))
    for odd in ("", "zz", "\u0663\u0663", b"", b"\xff" * 40):
        assert 0 <= t.pick_partition(odd) < 16


def test_several_broker_urls():
    from agent.mqtt import broker_urls
    urls, confs = broker_urls("mqtt://a:1, mqtt://b:2 mqtt://c")
    assert urls == ["mqtt://a:1", "mqtt://b:2", "mqtt://c"] and [c["port"] for c in confs] == [1, 2, 1883]
    assert broker_urls(["mqtt://a", "mqtt://b"])[0] == ["mqtt://a", "mqtt://b"]
    for bad in ("", [], ["mqtt://a", "mqtts://b"], "mqtt://a,http://b", ["mqtt://a", "mqtt://h:99999"]):
        with pytest.raises(ConfigError):
            broker_urls(bad)
    c = MqttClient(["mqtt://127.0.0.1:1", "mqtt://127.0.0.1:2"], "x", first=1)
    assert (c.port, c.url) == (2, "mqtt://127.0.0.1:2")
    # without ``first`` a client starts at a random node: a fleet spreads over the cluster
    assert {MqttClient("mqtt://127.0.0.1:1,mqtt://127.0.0.1:2", "x").port for _ in range(60)} == {1, 2}


def test_fails_over_to_the_next_broker_and_back(tmp_path):
    """Two independent brokers stand in for two nodes: the client starts on a dead one, moves on,
    and when its broker dies it reconnects to the other one with its subscriptions."""
    from tests.waiting import free_port, wait_for
    a = start_mosquitto(tmp_path / "a")
    b = start_mosquitto(tmp_path / "b")
    dead = "mqtt://127.0.0.1:%d" % free_port()
    got = queue.Queue()
    c = MqttClient([dead, a.url, b.url], "multi", first=0, reconnect=(1, 2))
    try:
        c.connect(timeout=15)
        assert c.port == a.port and c.failovers >= 1
        assert c.subscribe("fo/#", got.put).wait(5)
        a.kill()
        wait_for(lambda: c.connected and c.port == b.port, timeout=20)
        with MqttClient(b.url, "pub-b") as pub:
            wait_for(lambda: pub.publish("fo/x", b"on b", qos=1).wait(5) and not got.empty(), timeout=10)
        assert got.get(timeout=1).payload == b"on b"  # subscribed again on the other node
    finally:
        c.stop()
        a.kill()
        b.kill()
    with pytest.raises(MqttError, match="any of"):
        MqttClient([dead, "mqtt://127.0.0.1:%d" % free_port()], "none").connect(timeout=1.5)


def test_publish_subscribe_qos1(mosquitto):
    got = queue.Queue()
    with MqttClient(mosquitto.url, "sub1") as sub, MqttClient(mosquitto.url, "pub1") as pub:
        assert sub.subscribe("t/+", got.put, qos=1).wait(5)
        acks = [pub.publish("t/%d" % i, b"x%d" % i, qos=1) for i in range(50)]
        assert wait_all(acks, 10) == 50
        msgs = [got.get(timeout=5) for _ in range(50)]
        assert sorted(m.payload for m in msgs) == sorted(b"x%d" % i for i in range(50))
        assert all(m.qos == 1 and not m.retain for m in msgs)


def test_retained_and_shared_subscription(mosquitto):
    with MqttClient(mosquitto.url, "pub2") as pub:
        assert pub.publish("r/manifest", "m1", qos=1, retain=True).wait(5)
        a, b = queue.Queue(), queue.Queue()
        with MqttClient(mosquitto.url, "late") as late, MqttClient(mosquitto.url, "s1") as s1, \
                MqttClient(mosquitto.url, "s2") as s2:
            assert late.subscribe("r/#", a.put).wait(5)
            m = a.get(timeout=5)
            assert (m.payload, m.retain) == (b"m1", True)
            assert s1.subscribe("$share/g/w/x", b.put).wait(5)
            assert s2.subscribe("$share/g/w/x", b.put).wait(5)
            assert wait_all([pub.publish("w/x", b"%d" % i, qos=1) for i in range(20)], 5) == 20
            seen = [b.get(timeout=5).payload for _ in range(20)]
            assert sorted(seen) == sorted(b"%d" % i for i in range(20))  # each once, not twice
            with pytest.raises(queue.Empty):
                b.get(timeout=0.3)


def test_reconnect_resubscribes_and_sends_offline_publishes(tmp_path):
    broker = start_mosquitto(tmp_path)
    try:
        got = queue.Queue()
        with MqttClient(broker.url, "rsub", reconnect=(1, 2), clean_session=False) as sub, \
                MqttClient(broker.url, "rpub", reconnect=(1, 2)) as pub:
            assert sub.subscribe("q/#", got.put).wait(5)
            broker.stop()
            for c in (sub, pub):
                for _ in range(50):
                    if not c.connected:
                        break
                    threading.Event().wait(0.1)
                assert not c.connected
            ack = pub.publish("q/offline", b"later", qos=1)
            assert not ack.wait(0.3)
            broker.start()
            assert ack.wait(15), "QoS 1 publish made while offline was not sent after reconnect"
            assert got.get(timeout=10).payload == b"later"
            assert sub.connects >= 2
    finally:
        broker.kill()


def test_bad_login_is_a_clear_error(tmp_path):
    broker = start_mosquitto(tmp_path, users={"dev": "right"})
    try:
        c = MqttClient(broker.url, "dev", username="dev", password="wrong", reconnect=(1, 1))
        with pytest.raises(MqttError, match="could not connect.*refused"):
            c.connect(timeout=3)
        c.stop()
        with MqttClient("mqtt://dev:right@127.0.0.1:%d" % broker.port, "dev") as ok:
            assert ok.connected
    finally:
        broker.kill()


def test_unreachable_broker_is_a_clear_error():
    from tests.brokers import free_port
    c = MqttClient("mqtt://127.0.0.1:%d" % free_port(), "nobody")
    with pytest.raises(MqttError, match="is the broker running"):
        c.connect(timeout=1.5)
    c.stop()


def test_mqtt5_refused_publish_is_reported_where_paho_can(tmp_path):
    broker = start_mosquitto(tmp_path, users={"u": "p"}, acl="user u\ntopic write ok/#\n")
    try:
        for proto in ("3.1.1", "5"):
            with MqttClient(broker.url, "c" + proto[0], username="u", password="p", protocol=proto) as c:
                assert c.publish("ok/x", b"1", qos=1).wait(5)
                denied = c.publish("denied/x", b"2", qos=1)
                assert denied.wait(5) is not (proto == "5" and PAHO2)
                # MQTT 3.1.1 has no way to say no; paho 1.6 drops the MQTT 5 reason code
                assert denied.failed is (proto == "5" and PAHO2)
    finally:
        broker.kill()
