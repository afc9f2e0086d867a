"""What outlives a reset of the lists folder, and the run-time rules of freshness and expiry.

Owns: ``<state>/versions.json`` (``VersionRecord``: the highest version accepted of each list and
the last signed timestamp of each source, written atomically, outside ``lists/``), which lists have
expired (``split_expired``), and when a source is stale (``is_stale``). Must not touch: the
acceptance rules of a list file (``agent.lists.verify``), the timestamp format
(``agent.updates.timestamp``), the network.

Which reset it survives: deleting or emptying ``<state>/lists`` (a corrupt flash partition, an
operator clearing lists, a restore of an old lists backup). What it cannot survive: a factory
reset that wipes the whole state folder; then only the lists' own expiry and a fresh signed
timestamp from the hub (which names the current versions) bound a rollback.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Dict, Optional, Tuple

from agent.atomicfile import read_capped, write_atomic
from agent.lists.store import beside

log = logging.getLogger("gatewatch.updater")

FILE_NAME = "versions.json"
FORMAT = 1
MAX_BYTES = 1 << 20
MAX_VERSION = 0xFFFFFFFFFFFF
_IDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_path(lists_dir: str) -> str:
    """``<state>/versions.json`` for the state folder's ``<state>/lists``: beside it, not inside
    (``agent.lists.store.beside``)."""
    return beside(lists_dir, FILE_NAME)


class VersionRecord:
    """The highest version accepted per list ("source/list") and the last timestamp per source.

    A missing file is an empty record; an unreadable or malformed one is logged, kept in
    ``problem`` and read as empty (it is rewritten at the next install). Write errors are logged
    and never stop an update: the floor then holds until the next restart only.
    """

    def __init__(self, path: str):
        self.path = path
        self.lists: Dict[str, int] = {}
        self.timestamps: Dict[str, str] = {}
        self.problem: Optional[str] = None
        self._load()

    def _load(self) -> None:
        try:
            raw = read_capped(self.path, MAX_BYTES)
            if raw is None:
                return
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not a format %d record" % FORMAT)
            lists, stamps = doc.get("lists", {}), doc.get("timestamps", {})
            if not isinstance(lists, dict) or not isinstance(stamps, dict):
                raise ValueError("lists and timestamps must be objects")
            for ident, v in lists.items():
                if not _IDENT_RE.match(ident) or not ident.isascii() or type(v) is not int \
                        or not 1 <= v <= MAX_VERSION:
                    raise ValueError("bad entry %r" % (ident,))
            for source, payload in stamps.items():
                if not _SOURCE_RE.match(source) or not source.isascii() or type(payload) is not str:
                    raise ValueError("bad timestamp entry %r" % (source,))
        except OSError as exc:
            self._bad("cannot read: %s" % (exc.strerror or exc))
            return
        except ValueError as exc:
            self._bad("malformed (%s)" % exc)
            return
        self.lists = dict(lists)
        self.timestamps = dict(stamps)

    def _bad(self, why: str) -> None:
        self.problem = "%s %s; reading it as empty (rollback protection restarts from the lists held)" % (
            self.path, why)
        log.warning("version record %s", self.problem)

    def floor(self, ident: str) -> int:
        """The highest version of ``ident`` ever accepted here (0: none)."""
        return self.lists.get(ident, 0)

    def note_version(self, ident: str, version: int) -> None:
        """Remember that ``version`` of ``ident`` was accepted (only ever raises the floor)."""
        if version > self.floor(ident):
            self.lists[ident] = version
            self.save()

    def note_timestamp(self, source: str, payload: bytes) -> None:
        """Remember the last accepted timestamp message of ``source``."""
        self.timestamps[source] = payload.decode("ascii")
        self.save()

    def save(self) -> bool:
        doc = {"format": FORMAT, "lists": self.lists, "timestamps": self.timestamps}
        try:
            write_atomic(self.path, json.dumps(doc, sort_keys=True, indent=1).encode("ascii"))
            return True
        except OSError as exc:
            log.warning("cannot write the version record %s: %s (rollback protection holds until restart)",
                        self.path, exc.strerror or exc)
            return False


def split_expired(lists: Dict[str, object], now: float) -> Tuple[Dict[str, object], Dict[str, object]]:
    """(still valid, expired) of a dict ident -> LoadedList, by each list's signed expiry."""
    kept, dropped = {}, {}
    for ident, lst in lists.items():
        (dropped if lst.expired(now) else kept)[ident] = lst
    return kept, dropped


def expire_lists(lists: Dict[str, object], now: float):
    """``split_expired``, plus one ``agent.lists.store.Refusal`` (logged) per expired list, worded like
    the refusal at a start: (still valid, refusals)."""
    from agent.lists.store import Refusal
    from agent.lists.verify import iso

    kept, gone = split_expired(lists, now)
    refusals = []
    for ident, lst in sorted(gone.items()):
        reason = ("list %s v%d expired at %s; dropped from the lists in force at run time (the hub must "
                  "publish a fresh version)" % (ident, lst.version, iso(lst.manifest["expires"])))
        log.warning("%s", reason)
        refusals.append(Refusal(os.path.basename(lst.path) if lst.path else ident, reason))
    return kept, refusals


def is_stale(last_issued: Optional[float], last_expires: Optional[float], since: float, now: float,
             stale_after: float) -> bool:
    """No fresh word from a source: its newest timestamp was issued over ``stale_after`` seconds ago
    or has expired; with none at all, ``stale_after`` seconds have passed since ``since`` (start).
    ``stale_after`` 0 turns the rule off."""
    if stale_after <= 0:
        return False
    if last_issued is None:
        return now - since > stale_after
    return now - last_issued > stale_after or (last_expires is not None and last_expires <= now)
