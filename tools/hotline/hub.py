"""One hotline's hub, without its transports: what happens to a report, a message, a decision.

Owns the glue between the store, the directory, the geolocation and the case rules: ingesting a
device's report into a case (and queueing the messages the routing rule owes), applying a signed
message from another hub, an analyst's decision, and signing outgoing messages. Must not touch
MQTT (``tools.collector``), HTTP (``tools.hotline.peer``, ``tools.hotline.review``) or SQL.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Callable, Iterable, Optional

from agent.core.errors import ConfigError, GatewatchError, TrustError
from agent.core.report import utc_day
from tools.hotline import cases as C
from tools.hotline.signing import open_envelope, seal

log = logging.getLogger(__name__)

ACTIONS = {"confirm": "takedown_requested", "removed": "removed", "reject": "rejected"}


class Refused(GatewatchError, ValueError):
    """A message another hub sent that this hub refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class HotlineHub:
    """``me``: this hotline's id; ``sources``: the list sources this hub serves (its own lists)."""

    def __init__(self, me: str, directory, store, key, locator=None, sources: Iterable[str] = (),
                 on_reject: Optional[Callable[[dict], None]] = None) -> None:
        if directory.get(me) is None:
            raise ConfigError("hotline %r is not in the directory (members: %s)"
                              % (me, ", ".join(sorted(directory.hotlines))))
        self.me = me
        self.directory = directory
        self.store = store
        self.key = key
        self.locator = locator
        self.sources = frozenset(sources)
        self.on_reject = on_reject
        self.outbox_changed = threading.Event()
        self.stats = {"ingested": 0, "duplicates": 0, "no_hosting": 0, "received": 0, "refused": 0}

    # -- reports from this hub's own devices --------------------------------------------------
    def ingest_report(self, report: dict) -> bool:
        """Count a validated report into its case; True if its id was new. Owed messages are queued."""
        ip, country = self.locator.locate(report["hosting"]) if self.locator else (None, None)
        case = C.case_from_report(report, ip, country, self.directory.responsible(country))
        if case is None:
            self.stats["no_hosting"] += 1
            return True  # nothing to route: the device configured hosting "none"
        day = utc_day(_hour_unix(report["time"]))
        got = self.store.ingest(report["id"], case, self.me, day, report["device"] or "-", report["time"],
                                lambda c, counts: self._owed(c, counts, C.parties(c, {}, self.me), False))
        if got is None:
            self.stats["duplicates"] += 1
            return False
        self.stats["ingested"] += 1
        self.outbox_changed.set()
        return True

    def _owed(self, case, counts, dests, with_status):
        return [(d, C.message(self.me, d, case, counts, with_status)) for d in dests]

    # -- messages from other hubs ---------------------------------------------------------------
    def receive(self, envelope) -> dict:
        """Check and apply a signed message; Refused (with an HTTP status) for anything wrong."""
        signed = envelope.get("signed") if isinstance(envelope, dict) else None
        sender = signed.get("from") if isinstance(signed, dict) else None
        member = self.directory.get(sender) if isinstance(sender, str) else None
        if member is None:
            self.stats["refused"] += 1
            raise Refused(403, "the sender %r is not a hotline of the directory" % (str(sender)[:64],))
        try:
            msg = open_envelope(envelope, [member.key], "message from %s" % sender)
        except TrustError as e:
            self.stats["refused"] += 1
            raise Refused(403, "%s (the directory's key of %s)" % (e, sender))
        try:
            case, counts, status = C.check_message(msg)
        except C.CaseError as e:
            self.stats["refused"] += 1
            raise Refused(400, "malformed case: %s" % e)
        if msg["to"] != self.me:
            self.stats["refused"] += 1
            raise Refused(400, "the message is addressed to %r; this hub is %r" % (msg["to"], self.me))
        if sender == self.me:
            self.stats["refused"] += 1
            raise Refused(400, "a hub does not send messages to itself")
        case["responsible"] = self.directory.responsible(case["country"])
        result = self.store.receive(
            case, sender, counts, status, lambda stored: C.may_set_status(stored, sender),
            lambda c, all_counts, status_changed: [])
        self.stats["received"] += 1
        if status is not None and status["status"] == "rejected" and result != "same":
            stored = self.store.case(case["id"])
            if stored and stored["status"] == "rejected" and self.on_reject and stored["source"] in self.sources:
                log.info("a partner rejected a case of our list as a false positive; the allow input is updated")
                self.on_reject(stored)
        return {"ok": True, "case": case["id"], "result": result}

    # -- analysts -------------------------------------------------------------------------------
    def may_decide(self, case: dict, action: str) -> bool:
        """Whether this hub's analysts may take ``action`` on ``case``."""
        if action == "reject":
            return case["responsible"] in (self.me, None) or case["source"] in self.sources
        return case["responsible"] in (self.me, None)

    def decide(self, case_id: str, action: str, analyst: str) -> dict:
        """An analyst's action (confirm, removed, reject); ConfigError when it does not apply."""
        if action not in ACTIONS:
            raise ConfigError("unknown action %r" % action)
        case = self.store.case(case_id)
        if case is None:
            raise ConfigError("no case %s" % case_id)
        if not self.may_decide(case, action):
            raise ConfigError("case %s is for %s to decide" % (case_id, case["responsible"]))
        if action == "removed" and case["status"] != "takedown_requested":
            raise ConfigError("case %s is %s: a takedown is recorded as done only after it was requested"
                              % (case_id, case["status"]))
        # the status records which hotline decided; analysts are named only in this hub's log
        new = self.store.set_status(case_id, ACTIONS[action], self.me,
                                    lambda c, counts, _ch: self._owed(c, counts, C.parties(c, counts, self.me), True))
        if new is None:
            raise ConfigError("case %s is %s: %s does not apply" % (case_id, case["status"], action))
        log.info("analyst %s: %s on case %s", analyst, action, case_id)
        self.outbox_changed.set()
        if action == "reject" and new["source"] in self.sources and self.on_reject:
            self.on_reject(new)
        return new

    # -- outgoing -------------------------------------------------------------------------------
    def sign(self, body: str) -> bytes:
        """The signed envelope of an outbox body, as bytes to POST."""
        return json.dumps(seal(json.loads(body), self.key), separators=(",", ":")).encode("ascii")


def _hour_unix(hour: str) -> int:
    import calendar
    import time
    return calendar.timegm(time.strptime(hour, "%Y-%m-%dT%H:%M:%SZ"))


class CaseSink:
    """What the report collector stores into: ``add(report)`` ingests into cases (True if new)."""

    def __init__(self, hub: HotlineHub) -> None:
        self.hub = hub

    def add(self, report: dict) -> bool:
        """Ingest one validated report."""
        return self.hub.ingest_report(report)
