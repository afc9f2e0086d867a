"""tests/privacy.py must catch leaks in every usual encoding (a checker that cannot fail is no check)."""
from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from agent.core.report import encode_report, hosting_from_url, make_report
from tests.privacy import PayloadCapture, assert_payload_clean
from tests.brokers import mosquitto  # noqa: F401
from agent.mqtt import MqttClient

PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
UA = "Mozilla/5.0 (X11; Linux x86_64) Test/1.0"
FORBIDDEN = ["192.168.1.44", UA, "sid=abc123secret", "GET /kids/photo.jpg HTTP/1.1", PDQ]


def test_clean_report_passes():
    r = make_report("hl1", "pdq", 2, "pdq", 8, "case-1",
                    hosting=hosting_from_url("https://cdn.example/a.jpg?sid=abc123secret", "url-noquery"),
                    now=1_800_000_000, device_secret=b"k", agent_version="0.1.0")
    assert_payload_clean(encode_report(r), FORBIDDEN)


@pytest.mark.parametrize("leak", [
    b'{"ip":"192.168.1.44"}',
    json.dumps({"ua": UA}).encode(),
    b'{"u":"https://h/x?' + quote("sid=abc123secret", safe="").encode() + b'"}',
    b'{"line":"get /kids/photo.jpg http/1.1"}',
    json.dumps({"h": PDQ.upper()}).encode(),
    json.dumps({"h": base64.b64encode(bytes.fromhex(PDQ)).decode()}).encode(),
    b"raw:" + bytes.fromhex(PDQ),
    json.dumps({"line": "GET /kids/photo.jpg HTTP/1.1"}).replace("/", "\\/").encode(),
])
def test_leaks_are_caught_in_any_encoding(leak):
    with pytest.raises(AssertionError, match="leaks"):
        assert_payload_clean(leak, FORBIDDEN)


def test_capture_sees_every_topic_and_checks_topics_too(mosquitto):
    with PayloadCapture(mosquitto.url) as cap, MqttClient(mosquitto.url, "dev") as dev:
        assert dev.publish("gatewatch/v1/reports/hl1", b'{"ok":1}', qos=1).wait(5)
        assert dev.publish("gatewatch/v1/status/192.168.1.44", b"{}", qos=1).wait(5)
        assert cap.wait_for(lambda msgs: len(msgs) == 2)
        assert cap.assert_clean(FORBIDDEN, "/reports/") == 1
        with pytest.raises(AssertionError, match="leaks"):
            cap.assert_clean(FORBIDDEN)
