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
    assert t.confirm_requests_shared() == "$share/hub/gatewatch/v1/confirm/+"
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
