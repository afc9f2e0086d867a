"""Between hubs: the HTTPS endpoint that receives cases and the outbox sender that delivers them.

Owns the forwarding protocol's transport (docs/hotlines.md): ``POST <hub>/v1/cases`` with a signed
envelope as the body; 200 and ``{"ok": true}`` only after the receiving hub committed it (the
acknowledgement), 4xx with ``{"error": ...}`` for a message it refuses for good (wrong key, unknown
sender, malformed case), anything else (5xx, no answer) means "try again". The sender keeps each
message in the store's outbox until that acknowledgement and retries with back-off, so nothing is
lost across either hub's restart; the receiver applies a message idempotently, so nothing is
doubled. Must not touch what a message means (``tools.hotline.hub``, ``tools.hotline.cases``).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Optional

from tools.hotline.cases import MAX_MESSAGE_BYTES
from tools.hotline.hub import Refused

log = logging.getLogger(__name__)

PATH = "/v1/cases"
MAX_BODY = MAX_MESSAGE_BYTES + 1024


def peer_app(hub):
    """The WSGI app other hubs talk to (Flask): one route, JSON in and out, no sessions, no cookies."""
    from flask import Flask, jsonify, request

    app = Flask("gatewatch-peer")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    @app.post(PATH)
    def cases():
        if request.content_length is None or request.content_length > MAX_BODY:
            return jsonify(error="a message is at most %d bytes, with a Content-Length" % MAX_BODY), 413
        raw = request.get_data(cache=False)
        try:
            envelope = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            hub.stats["refused"] += 1
            return jsonify(error="the body is not UTF-8 JSON"), 400
        try:
            return jsonify(hub.receive(envelope))
        except Refused as e:
            log.warning("refused a message from another hub: %s", e)
            return jsonify(error=str(e)), e.status

    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    def other(e):
        return jsonify(error="%s: this endpoint takes POST %s" % (e.name, PATH)), e.code

    return app


class Forwarder:
    """Delivers the outbox: signs each message at send time, POSTs it, forgets it on the acknowledgement."""

    def __init__(self, hub, cafile: Optional[str] = None, timeout: float = 10.0, retry_first: float = 1.0,
                 retry_max: float = 300.0, poll: float = 2.0) -> None:
        self.hub = hub
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.timeout = timeout
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.poll = poll
        self.sent = 0
        self.failed = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Forwarder":
        """Run in a background thread until ``stop()``."""
        self._thread = threading.Thread(target=self._run, name="gatewatch-forwarder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current message."""
        self._stop.set()
        self.hub.outbox_changed.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.step()
            except Exception:  # a database hiccup must not end forwarding for good
                log.exception("forwarding step failed; trying again")
                n = 0
            if n == 0:
                self.hub.outbox_changed.wait(self.poll)
                self.hub.outbox_changed.clear()

    def step(self, now: Optional[float] = None) -> int:
        """Try every message that is due once; returns how many were tried."""
        due = self.hub.store.outbox_due(now)
        for item in due:
            if self._stop.is_set():
                break
            self.deliver(item)
        return len(due)

    def deliver(self, item: dict) -> str:
        """One attempt: "done", "retry" or "refused"."""
        store = self.hub.store
        member = self.hub.directory.get(item["dest"])
        if member is None:
            store.outbox_refused(item["dest"], item["case_id"], item["rev"], "not in the hotline directory")
            self.refused += 1
            return "refused"
        req = urllib.request.Request(member.hub + PATH, data=self.hub.sign(item["body"]), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as resp:
                answer = json.loads(resp.read(65536).decode("utf-8"))
            if answer.get("ok") is not True:
                raise ValueError("no acknowledgement in the answer")
        except urllib.error.HTTPError as e:
            text = _error_text(e)
            if 400 <= e.code < 500 and e.code not in (408, 429):
                store.outbox_refused(item["dest"], item["case_id"], item["rev"], "HTTP %d: %s" % (e.code, text))
                log.warning("%s refused case %s: HTTP %d %s", item["dest"], item["case_id"], e.code, text)
                self.refused += 1
                return "refused"
            return self._retry(item, "HTTP %d: %s" % (e.code, text))
        except (OSError, ValueError, ssl.SSLError) as e:
            return self._retry(item, "%s: %s" % (type(e).__name__, e))
        store.outbox_done(item["dest"], item["case_id"], item["rev"])
        self.sent += 1
        return "done"

    def _retry(self, item: dict, error: str) -> str:
        delay = min(self.retry_max, self.retry_first * (2 ** min(item["attempts"], 20)))
        self.hub.store.outbox_retry(item["dest"], item["case_id"], item["rev"], time.time() + delay, error)
        self.failed += 1
        if item["attempts"] in (0, 5) or item["attempts"] % 50 == 0:
            log.info("forward to %s not acknowledged (%s); again in %.0f s", item["dest"], error, delay)
        return "retry"


def _error_text(e) -> str:
    try:
        return str(json.loads(e.read(4096).decode("utf-8")).get("error", ""))[:300]
    except (ValueError, OSError, AttributeError, UnicodeDecodeError):
        return e.reason if isinstance(e.reason, str) else ""
