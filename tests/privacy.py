"""Privacy checks for end-to-end tests: capture every payload on the broker and look for leaks.

    with PayloadCapture(broker.url) as cap:        # subscribes to '#' before the device starts
        ... run the device ...
    cap.assert_clean([client_ip, user_agent, cookie, request_line, pdq_hex_of_clean_image])

``assert_payload_clean(payload, forbidden)`` looks for each forbidden item in the forms it could
take inside a payload: as is, any letter case, percent-encoded, JSON-escaped, and for hex digests
also the raw bytes and base64 (a perceptual hash leaks the picture in any encoding).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import uuid
from urllib.parse import quote, quote_plus

_HEX = re.compile(r"^[0-9a-fA-F]+$")


def _variants(item):
    """Byte strings under which ``item`` could appear in a payload."""
    if isinstance(item, (bytes, bytearray)):
        raw = bytes(item)
        out = {raw}
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        out.add(base64.b64encode(raw))
        out.add(binascii.hexlify(raw))
        if text is None:
            return {v for v in out if v}
    else:
        text = str(item)
        out = set()
    js = json.dumps(text)[1:-1]
    for t in {text, quote(text, safe=""), quote(text, safe="/:"), quote_plus(text), js,
              js.replace("/", "\\/"), json.dumps(text, ensure_ascii=False)[1:-1]}:
        out.add(t.encode("utf-8"))
    if _HEX.match(text) and len(text) % 2 == 0 and len(text) >= 16:
        raw = bytes.fromhex(text)
        out |= {raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"="),
                base64.b64encode(raw).rstrip(b"=")}
    return {v for v in out if v}


def assert_payload_clean(payload, forbidden):
    """Fail if ``payload`` (bytes) contains any forbidden item in any usual encoding."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    low = payload.lower()
    for item in forbidden:
        for v in _variants(item):
            if v in payload or v.lower() in low:
                raise AssertionError("payload leaks %r (as %r): %r" % (item, v[:60], payload[:300]))


class PayloadCapture:
    """Subscribes to ``#`` on a broker and records (topic, payload) of everything published."""

    def __init__(self, url, username=None, password=None, topic="#"):
        from agent.mqtt import MqttClient

        self.messages = []
        self._lock = threading.Lock()
        self._client = MqttClient(url, "capture-%s" % uuid.uuid4().hex[:8], username=username,
                                  password=password, reconnect=(1, 2))
        self._topic = topic

    def _on(self, message):
        with self._lock:
            self.messages.append((message.topic, message.payload))

    def __enter__(self):
        self._client.connect()
        if not self._client.subscribe(self._topic, self._on, qos=1).wait(5):
            raise AssertionError("capture could not subscribe to %s" % self._topic)
        return self

    def __exit__(self, *exc):
        self._client.stop()

    def payloads(self, topic_part=""):
        """Payloads whose topic contains ``topic_part``."""
        with self._lock:
            return [p for t, p in self.messages if topic_part in t]

    def assert_clean(self, forbidden, topic_part=""):
        """Every captured topic and payload is free of every forbidden item; returns how many."""
        with self._lock:
            msgs = [(t, p) for t, p in self.messages if topic_part in t]
        for topic, payload in msgs:
            assert_payload_clean(topic.encode("utf-8"), forbidden)
            assert_payload_clean(payload, forbidden)
        return len(msgs)

    def wait_for(self, predicate, timeout=10.0):
        """Wait until ``predicate(messages)`` is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.05)
        return False
