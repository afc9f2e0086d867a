"""Reporter: drains the ReportSpool to the broker with QoS 1; a report leaves the spool only on PUBACK.

Owns the delivery loop: which spooled reports are in flight, when they count as delivered, and when
they are sent again. Must not touch: report contents (agent.core.report builds them; the reporter only
reads the ``source`` field to pick the topic) and the spool's files (agent.reports.spool).

Delivery is at-least-once: a report is published, and acknowledged in the spool only after the
broker's PUBACK. A lost connection, a SIGKILL or a power cut at any point means the report is still
in the spool and is published again later; the random report id lets the hub store it exactly once.
Acks are written to the spool in batches (``ack_delay``) so that flash sees one write per batch.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from agent.core.report import encode_report
from agent.mqtt import Topics

log = logging.getLogger(__name__)


class Reporter:
    """Publishes spooled reports to ``<prefix>/reports/<source>`` with QoS 1 from a thread.

    ``window`` bounds the reports in flight (and so paho's memory while the broker is away);
    a report unacknowledged for ``ack_timeout`` seconds while connected is published again.
    """

    def __init__(self, client, spool, topics=None, *, window=32, ack_timeout=30.0, ack_delay=0.2,
                 poll=0.5, refused_retry=60.0, clock=time.monotonic):
        self.client = client
        self.spool = spool
        self.topics = topics or Topics()
        self.window = window
        self.ack_timeout = ack_timeout
        self.ack_delay = ack_delay
        self.poll = poll
        self._clock = clock
        self._inflight = {}      # report id -> (PublishAck, sent at)
        self._to_ack = []
        self._refused = {}       # report id -> monotonic time of the next try
        self.refused_retry = refused_retry
        self.refused = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self.published = 0
        self.delivered = 0
        self.republished = 0
        self.invalid = 0

    # producer side ------------------------------------------------------------------------
    def submit(self, report):
        """Encode a report dict, spool it durably and wake the sender; False if the spool dropped it."""
        ok = self.spool.put(report["id"], encode_report(report))
        self._wake.set()
        return ok

    def wake(self):
        """Tell the sender that the spool has new reports."""
        self._wake.set()

    # sender ---------------------------------------------------------------------------------
    def start(self):
        """Start the sender thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="gatewatch-reporter", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout=5.0):
        """Stop the sender; acknowledged reports are written to the spool first."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._collect_acks()
        self._flush_acks()

    def _run(self):
        last_flush = self._clock()
        while not self._stop.is_set():
            self._wake.wait(self.poll if not self._inflight else min(self.poll, 0.05))
            self._wake.clear()
            try:
                self._collect_acks()
                now = self._clock()
                if self._to_ack and (now - last_flush >= self.ack_delay or not self._inflight):
                    self._flush_acks()
                    last_flush = now
                if self.client.connected:
                    self._send_more()
            except Exception:  # keep delivering; the spool keeps the reports meanwhile
                log.exception("reporter cycle failed; retrying")
                self._stop.wait(1.0)

    def step(self):
        """One synchronous cycle (collect acks, write them, publish more); for tests and drivers."""
        self._collect_acks()
        self._flush_acks()
        if self.client.connected:
            self._send_more()

    def _collect_acks(self):
        now = self._clock()
        connected = self.client.connected
        for rid, (ack, sent) in list(self._inflight.items()):
            if ack.done:
                del self._inflight[rid]
                if ack.failed:
                    # MQTT 5 brokers say so (e.g. not authorized): keep it, try again much later
                    log.warning("broker refused report %s; it stays spooled, next try in %.0fs",
                                rid, self.refused_retry)
                    self._refused[rid] = now + self.refused_retry
                    self.refused += 1
                else:
                    self._to_ack.append(rid)
                    self.delivered += 1
            elif connected and now - sent > self.ack_timeout:
                # no PUBACK although connected: publish again (the hub dedups by id)
                del self._inflight[rid]
                self.republished += 1

    def _flush_acks(self):
        if self._to_ack:
            batch, self._to_ack = self._to_ack, []
            self.spool.ack(batch)

    def _send_more(self):
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        now = self._clock()
        for rid, when in list(self._refused.items()):
            if when <= now:
                del self._refused[rid]
        exclude = set(self._inflight) | set(self._to_ack) | set(self._refused)
        for rid, payload in self.spool.pending(limit=room, exclude=exclude):
            try:
                source = json.loads(payload.decode("utf-8"))["source"]
                topic = self.topics.reports(source)
            except (ValueError, KeyError, TypeError, UnicodeError) as exc:
                # cannot ever be delivered: drop it, counted, rather than block the queue
                log.error("spooled report %s is unreadable (%s); dropping it", rid, exc)
                self.invalid += 1
                self._to_ack.append(rid)
                continue
            self._inflight[rid] = (self.client.publish(topic, payload, qos=1), self._clock())
            self.published += 1

    # observation ----------------------------------------------------------------------------
    def drain(self, timeout):
        """Block until the spool is empty and every ack is written; True if so within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.spool) == 0 and not self._inflight and not self._to_ack:
                return True
            self._wake.set()
            time.sleep(0.05)
        return False

    def stats(self):
        """Counters for `gatewatch status` and the status topic (nothing about subscribers)."""
        s = self.spool.stats()
        return {"spool_depth": s["depth"], "spool_dropped": s["dropped"], "in_flight": len(self._inflight),
                "published": self.published, "delivered": self.delivered,
                "republished": self.republished, "refused": self.refused, "invalid": self.invalid}
