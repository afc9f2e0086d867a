"""Cases: a confirmed report becomes a case, the case schema between hubs, and who is owed what.

Owns: the case id (one per hosting URL, or host, per calendar month UTC), the case fields taken
from a report and the hub's own geolocation, the message one hub sends another about a case (its
exact schema and strict checks), and the parties of a case (the hotline responsible for the
hosting country, the list's source hotline, the hubs whose devices saw it). Must not touch storage
(``tools.hotline.store``), the network (``tools.hotline.peer``) or DNS (``tools.hotline.geo``).

What a case keeps: where the material is hosted (URL or host, the server's address and country)
and what matched (source, list, entry, signal), with counts. Never a device pseudonym (only
whether a (device, day) pair was already counted, and that stays at the hub that received the
report), never anything about a subscriber.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Dict, List, Optional, Tuple

from agent.core.errors import GatewatchError
from agent.core.report import ReportError, SIGNALS, _hosting, is_local_ip
from tools.hotline.geo import host_of
from tools.hotline.store import STATUSES

MESSAGE_VERSION = 1
MAX_MESSAGE_BYTES = 16384
_HOUR = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:00:00Z$")
_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
_PERIOD = re.compile(r"^[0-9]{4}-[0-9]{2}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
CASE_FIELDS = ("id", "period", "url", "host", "ip", "country", "source", "list", "entry", "signal")


class CaseError(GatewatchError, ValueError):
    """A case or a message about one that breaks the schema (refused, nothing stored)."""


def period_of(hour: str) -> str:
    """The case period of a report hour: its calendar month, ``YYYY-MM``."""
    return hour[:7]


def case_id(url: Optional[str], host: str, period: str) -> str:
    """The case id every hub computes alike: 32 hex of SHA-256 over the hosting key and the period."""
    key = ("url " + url) if url else ("host " + host)
    return hashlib.sha256(("gatewatch-case\n%s\n%s" % (key, period)).encode("utf-8")).hexdigest()[:32]


def case_from_report(report: dict, ip: Optional[str], country: Optional[str], responsible: Optional[str]) -> Optional[dict]:
    """The case fields of a validated report, with the hub's own geolocation; None without a hosting URL/host."""
    hosting = report["hosting"]
    host = host_of(hosting)
    if not host:
        return None
    url = hosting.get("url")
    period = period_of(report["time"])
    return {"id": case_id(url, host, period), "period": period, "url": url, "host": host, "ip": ip,
            "country": country, "source": report["source"], "list": report["list"], "entry": report["entry"],
            "signal": report["signal"], "responsible": responsible}


def parties(case: dict, counts: Dict[str, dict], me: str) -> List[str]:
    """Every hotline that has a stake in ``case`` except ``me``: responsible, source, origins."""
    out = []
    for h in [case.get("responsible"), case.get("source")] + sorted(counts):
        if h and h != me and h not in out:
            out.append(h)
    return out


def may_set_status(case: dict, sender: str) -> bool:
    """Only the hotline responsible for the hosting country, or the list's source (false positives), decides."""
    return sender in (case.get("responsible"), case.get("source"))


def message(me: str, dest: str, case: dict, counts: Dict[str, dict], with_status: bool) -> str:
    """The JSON body (unsigned) of what ``me`` tells ``dest`` about ``case``: its own counts, its decision."""
    own = counts.get(me)
    status = None
    if with_status and may_set_status(case, me) and case["status"] != "new":
        status = {k: case[k] for k in ("status", "takedown_at", "removed_at", "rejected_at")}
    return json.dumps({"v": MESSAGE_VERSION, "from": me, "to": dest,
                       "case": {k: case[k] for k in CASE_FIELDS},
                       "counts": {k: own[k] for k in ("sightings", "reports", "first_seen", "last_seen", "revision")}
                       if own else None,
                       "status": status}, sort_keys=True, separators=(",", ":"))


def _str(obj: dict, key: str, pattern, what: str, optional: bool = False):
    v = obj.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not pattern.match(v):
        raise CaseError("%s %r is malformed (got %r)" % (what, key, v if not isinstance(v, str) else v[:80]))
    return v


def _count(obj: dict, key: str) -> int:
    v = obj.get(key)
    if type(v) is not int or not 0 <= v <= 2 ** 53:
        raise CaseError("counts %r must be a whole number from 0 to 2**53, got %r" % (key, v))
    return v


def check_message(msg) -> Tuple[dict, Optional[dict], Optional[dict]]:
    """(case, counts, status) of a message about a case; CaseError for anything off schema."""
    if not isinstance(msg, dict) or set(msg) != {"v", "from", "to", "case", "counts", "status"}:
        raise CaseError("a case message has exactly the fields v, from, to, case, counts, status")
    if msg["v"] != MESSAGE_VERSION or type(msg["v"]) is not int:
        raise CaseError("case message version %r is not supported (this hub speaks %d)" % (msg["v"], MESSAGE_VERSION))
    _str(msg, "from", _NAME, "message")
    _str(msg, "to", _NAME, "message")
    c = msg["case"]
    if not isinstance(c, dict) or set(c) != set(CASE_FIELDS):
        raise CaseError("case must have exactly the fields %s" % ", ".join(CASE_FIELDS))
    period = _str(c, "period", _PERIOD, "case")
    if not 1 <= int(period[5:]) <= 12:
        raise CaseError("case period %r is not a month" % period)
    for k in ("source", "list"):
        _str(c, k, _NAME, "case")
    if c["signal"] not in SIGNALS:
        raise CaseError("case signal must be one of %s" % ", ".join(SIGNALS))
    e = c["entry"]
    if not isinstance(e, str) or not e or len(e) > 256 or any(ord(ch) < 32 or ord(ch) == 127 for ch in e):
        raise CaseError("case entry must be 1-256 printable characters")
    hosting = {}
    if c["url"] is not None:
        hosting["url"] = c["url"]
    else:
        hosting["host"] = c["host"]
    try:
        _hosting(hosting)
    except ReportError as err:
        raise CaseError("case %s" % err) from None
    if not isinstance(c["host"], str) or host_of(hosting) != c["host"]:
        raise CaseError("case host does not match its url")
    if c["ip"] is not None:
        try:
            _hosting({"ip": c["ip"]})
        except ReportError as err:
            raise CaseError("case %s" % err) from None
        if is_local_ip(c["ip"]):
            raise CaseError("case ip is a local address")
    _str(c, "country", _COUNTRY, "case", optional=True)
    if c["id"] != case_id(c["url"], c["host"], period):
        raise CaseError("case id does not belong to its url and period")
    counts = msg["counts"]
    if counts is not None:
        if not isinstance(counts, dict) or set(counts) != {"sightings", "reports", "first_seen", "last_seen", "revision"}:
            raise CaseError("counts must have exactly sightings, reports, first_seen, last_seen, revision")
        for k in ("sightings", "reports", "revision"):
            _count(counts, k)
        _str(counts, "first_seen", _HOUR, "counts")
        _str(counts, "last_seen", _HOUR, "counts")
        if counts["sightings"] > counts["reports"] or counts["first_seen"] > counts["last_seen"] or \
                counts["revision"] < 1:
            raise CaseError("counts are inconsistent (more sightings than reports, or last before first)")
    status = msg["status"]
    if status is not None:
        if not isinstance(status, dict) or set(status) != {"status", "takedown_at", "removed_at", "rejected_at"}:
            raise CaseError("status must have exactly status, takedown_at, removed_at, rejected_at")
        if status["status"] not in STATUSES[1:]:
            raise CaseError("status must be one of %s" % ", ".join(STATUSES[1:]))
        for k in ("takedown_at", "removed_at", "rejected_at"):
            _str(status, k, _TIME, "status", optional=True)
    return dict(c), counts, status
