"""Reporter: drains the ReportSpool to the broker with QoS 1; a report leaves the spool only when the
HUB says it stored it (or, in the legacy ``ack="broker"`` mode, on the broker's PUBACK).

Owns the delivery loop: which spooled reports are in flight, when they count as delivered, when they
are sent again (back-off), and the random acknowledgement token. Must not touch: report contents
(agent.core.report builds them; the reporter only reads the ``source`` field to pick the topic) and
the spool's files (agent.reports.spool).

Protocol (docs/reports.md): a report is published with QoS 1 to ``<prefix>/reports/<source>/<token>``,
``<token>`` being 16 random hex chars the reporter picks itself (never the client id or login) and
replaces every ``token_seconds`` (a day). The reporter subscribes to ``<prefix>/ack/<token>``; the
collector, once the report is committed (SQLite, once per id), publishes ``{"ids": [...]}`` there.
Only then is the report acknowledged in the spool. The broker's PUBACK only says the broker took
it: with no collector subscribed the broker drops it (MQTT 5 says so with reason 0x10, 3.1.1 does
not say at all), so a PUBACK without a hub ack means "send again later": after ``resend_after``
seconds, doubling up to ``resend_max``. When acknowledgements start arriving again after a silence
(the hub is back) or the broker connection comes back, waiting reports are sent again at once.
Everything stays bounded by the spool's caps (drops counted there).

Delivery is at-least-once end to end; the random report id makes it exactly-once at the hub, which
acknowledges duplicates again. Acks are written to the spool in batches (``ack_delay``) so that flash
sees one write per batch.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time

from agent.core.errors import ConfigError
from agent.core.report import encode_report
from agent.mqtt import Topics

log = logging.getLogger(__name__)

ACK_MODES = ("hub", "broker")
NO_MATCHING_SUBSCRIBERS = 0x10
MAX_ACK_BYTES = 64 * 1024
_HEX = frozenset("0123456789abcdef")


def new_ack_token():
    """16 random hex chars: the acknowledgement token (unrelated to the client id or login)."""
    return os.urandom(8).hex()


def parse_ack(payload):
    """The report ids of an acknowledgement ``{"ids": ["<32 hex>", ...]}``; [] if it is not one."""
    if len(payload) > MAX_ACK_BYTES:
        return []
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeError):
        return []
    ids = obj.get("ids") if isinstance(obj, dict) else None
    if not isinstance(ids, list):
        return []
    return [i for i in ids if isinstance(i, str) and len(i) == 32 and set(i) <= _HEX]


class Reporter:
    """Publishes spooled reports with QoS 1 from a thread and forgets them once acknowledged.

    ``window`` bounds the reports awaiting PUBACK (and so paho's memory while the broker is away);
    a report without PUBACK for ``ack_timeout`` seconds while connected is published again.
    ``ack``: "hub" (default: keep until the collector acknowledges) or "broker" (PUBACK; for hubs
    whose collector does not acknowledge yet).
    """

    def __init__(self, client, spool, topics=None, *, window=32, ack_timeout=30.0, ack_delay=0.2,
                 poll=0.5, refused_retry=60.0, clock=time.monotonic, ack="hub", resend_after=30.0,
                 resend_max=3600.0, token_seconds=86400.0, token_factory=new_ack_token):
        if ack not in ACK_MODES:
            raise ConfigError("reports.ack %r unknown; use hub or broker" % (ack,))
        self.client = client
        self.spool = spool
        self.topics = topics or Topics()
        self.window = window
        self.ack_timeout = ack_timeout
        self.ack_delay = ack_delay
        self.poll = poll
        self.ack_mode = ack
        self.resend_after = float(resend_after)
        self.resend_max = max(float(resend_max), self.resend_after)
        self.token_seconds = token_seconds
        self._token_factory = token_factory
        self._clock = clock
        self._inflight = {}      # report id -> (PublishAck, sent at, attempts)
        self._waiting = {}       # report id -> (next try, attempts): the broker has it, the hub not yet
        self._to_ack = []
        self._hub_acks = []      # ids from ack messages (appended on the network thread)
        self._hub_lock = threading.Lock()
        self.refused_retry = refused_retry
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._dirty = True       # something may be sendable without waiting for a back-off
        self._seen_connects = None
        self._last_hub_ack = None
        self.token = None
        self._token_born = None
        self._old_token = None
        self.published = 0
        self.delivered = 0       # acknowledged where it counts (hub, or broker in broker mode)
        self.republished = 0
        self.refused = 0
        self.invalid = 0
        self.no_subscribers = 0  # MQTT 5 PUBACKs saying nobody took the report (kept)
        self.hub_acked = 0
        if ack == "hub":
            self._rotate_token()

    # acknowledgement token ------------------------------------------------------------------
    def _rotate_token(self):
        old = self.token
        self.token = self._token_factory()
        self._token_born = self._clock()
        # the previous token stays subscribed for one more period: acks for reports sent under it
        # may still come; reports resent from now on carry the new one
        if self._old_token is not None and hasattr(self.client, "unsubscribe"):
            try:
                self.client.unsubscribe(self.topics.ack(self._old_token))
            except Exception:
                pass
        self._old_token = old
        if hasattr(self.client, "subscribe"):
            self.client.subscribe(self.topics.ack(self.token), self._on_ack, qos=1)

    def _on_ack(self, message):
        """Network thread: remember acknowledged ids; the sender thread applies them."""
        if message.retain:
            return  # only the hub writes here; a retained ack would be stale anyway
        ids = parse_ack(message.payload)
        if ids:
            with self._hub_lock:
                self._hub_acks.extend(ids)
            self._wake.set()

    # producer side ------------------------------------------------------------------------
    def submit(self, report):
        """Encode a report dict, spool it durably and wake the sender; False if the spool dropped it."""
        ok = self.spool.put(report["id"], encode_report(report))
        self._dirty = True
        self._wake.set()
        return ok

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

    def _backoff(self, attempts):
        return min(self.resend_max, self.resend_after * (2 ** max(0, attempts - 1)))

    def _collect_acks(self):
        now = self._clock()
        connected = self.client.connected
        if self.ack_mode == "hub" and now - self._token_born >= self.token_seconds:
            self._rotate_token()
        connects = getattr(self.client, "connects", None)
        if connects != self._seen_connects:
            # (re)connected: what waited for the hub may have died with the broker; try again now
            if self._seen_connects is not None:
                self._retry_waiting_now(now)
            self._seen_connects = connects
        with self._hub_lock:
            hub_ids, self._hub_acks = self._hub_acks, []
        if hub_ids:
            if self._last_hub_ack is None or now - self._last_hub_ack > self.resend_after:
                self._retry_waiting_now(now)  # the hub is back after a silence
            self._last_hub_ack = now
            for rid in hub_ids:
                known = self._waiting.pop(rid, None) is not None
                known = self._inflight.pop(rid, None) is not None or known
                if known or rid in self.spool:
                    if rid not in self._to_ack:
                        self._to_ack.append(rid)
                        self.hub_acked += 1
                        self.delivered += 1
            self._dirty = True
        for rid, (ack, sent, attempts) in list(self._inflight.items()):
            if ack.done:
                del self._inflight[rid]
                self._dirty = True
                if ack.failed:
                    # MQTT 5 brokers say so (e.g. not authorized): keep it, try again much later
                    log.warning("broker refused report %s; it stays spooled, next try in %.0fs",
                                rid, self.refused_retry)
                    self._waiting[rid] = (now + max(self.refused_retry, self._backoff(attempts)), attempts)
                    self.refused += 1
                elif getattr(ack, "reason", 0) == NO_MATCHING_SUBSCRIBERS or self.ack_mode == "hub":
                    if getattr(ack, "reason", 0) == NO_MATCHING_SUBSCRIBERS:
                        self.no_subscribers += 1  # the broker says nobody took it: keep it
                    self._waiting[rid] = (now + self._backoff(attempts), attempts)
                else:
                    self._to_ack.append(rid)
                    self.delivered += 1
            elif connected and now - sent > self.ack_timeout:
                # no PUBACK although connected: publish again (the hub dedups by id)
                del self._inflight[rid]
                self.republished += 1
                self._dirty = True

    def _retry_waiting_now(self, now):
        for rid, (_when, attempts) in list(self._waiting.items()):
            self._waiting[rid] = (now, attempts)
        if self._waiting:
            self._dirty = True

    def _flush_acks(self):
        if self._to_ack:
            batch, self._to_ack = self._to_ack, []
            self.spool.ack(batch)

    def _send_more(self):
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        now = self._clock()
        due = [rid for rid, (when, _a) in self._waiting.items() if when <= now]
        if not self._dirty and not due:
            return  # nothing new and no back-off over: spare the spool a scan
        self._dirty = False
        exclude = set(self._inflight) | set(self._to_ack) | \
            {rid for rid, (when, _a) in self._waiting.items() if when > now}
        batch = self.spool.pending(limit=room, exclude=exclude)
        if len(batch) == room:
            self._dirty = True  # more may follow once the window has room
        for rid, payload in batch:
            try:
                source = json.loads(payload.decode("utf-8"))["source"]
                # the partition comes from the random report id: a resend goes where the first did
                topic = (self.topics.reports(source, self.token, self.topics.pick_partition(rid)) if self.ack_mode == "hub"
                         else self.topics.reports(source))
            except (ValueError, KeyError, TypeError, UnicodeError) as exc:
                # cannot ever be delivered: drop it, counted, rather than block the queue
                log.error("spooled report %s is unreadable (%s); dropping it", rid, exc)
                self.invalid += 1
                self._to_ack.append(rid)
                continue
            prev = self._waiting.pop(rid, None)
            attempts = (prev[1] if prev else 0) + 1
            if prev is not None:
                self.republished += 1
            self._inflight[rid] = (self.client.publish(topic, payload, qos=1), self._clock(), attempts)
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
                "awaiting_hub_ack": len(self._waiting), "ack_mode": self.ack_mode,
                "published": self.published, "delivered": self.delivered, "hub_acked": self.hub_acked,
                "republished": self.republished, "refused": self.refused, "invalid": self.invalid,
                "no_subscribers": self.no_subscribers}
