"""Policy: turns a scan result (plus the hub's confirmation) into block/allow and a report or none.

Owns the mode (block, report-only, monitor) and what happens when the hub cannot be reached. It does
no hashing, no network I/O of its own (it calls the confirmer it is given) and writes nothing.

Defaults, and why:

- ``mode = "block"``: the point of the agent is that known material does not load.
- ``exact_unconfirmed = "block"``: an exact-list (sha256/sha1/md5, url/domain) hit is near-certain (the filter's
  design false-positive rate, 1e-6 by default), so while the hub is unreachable the agent still
  blocks it; the cost of the rare false positive is one image not loading.
- ``candidate_unconfirmed = "allow"``: a perceptual candidate is not a match until the hub's full
  entries say so (a few in 10,000 unrelated images can be candidates), so without the hub it loads.
- Reports: only ever for a hit that the hub's entries confirmed, in every mode and state. A hit
  that could not be confirmed is counted and kept in memory (bounded, ``reconfirm_hours``) to ask
  the hub again when it is back; it is reported only if the hub then confirms it. With a ``pending``
  store (agent.reports.pending) it is also recorded on disk, holding only report fields (never a
  hash or key of the image), so that a restart does not lose it for the operator's export.
- Faults (a scan error, a confirmer crash) allow: fail-open on the network path, because an agent
  fault must never take a household or a school offline.
- Allow lists and per-source rules (``agent.sources.settle``) apply to the hits about to act, after
  confirmation (or to local exact hits while the hub is away): an allowed or uncorroborated hit is
  neither blocked nor reported, only counted (``allowed``, ``uncorroborated``) and logged.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable, Optional

from agent.core.errors import ConfigError, GatewatchError
from agent.core.signals import EXACT_SIGNALS  # digests and url/domain: a hit is near-certain
from agent.intake import Decision
from agent.lists import names

log = logging.getLogger("gatewatch.policy")

MODES = ("block", "report-only", "monitor")
UNCONFIRMED = ("block", "allow")


class PolicySettings:
    """The ``[policy]`` section of the configuration."""

    def __init__(self, mode: str = "block", exact_unconfirmed: str = "block",
                 candidate_unconfirmed: str = "allow", confirm_timeout: float = 2.0,
                 reconfirm_hours: float = 24.0, reconfirm_max: int = 1000, sources=None):
        if mode not in MODES:
            raise ConfigError("policy.mode must be one of %s, not %r" % (", ".join(MODES), mode))
        for name, value in (("exact_unconfirmed", exact_unconfirmed),
                            ("candidate_unconfirmed", candidate_unconfirmed)):
            if value not in UNCONFIRMED:
                raise ConfigError("policy.%s must be 'block' or 'allow', not %r" % (name, value))
        if not isinstance(confirm_timeout, (int, float)) or not 0 < confirm_timeout <= 60:
            raise ConfigError("policy.confirm_timeout must be a number of seconds in (0, 60]")
        self.mode = mode
        self.exact_unconfirmed = exact_unconfirmed
        self.candidate_unconfirmed = candidate_unconfirmed
        self.confirm_timeout = float(confirm_timeout)
        if not isinstance(reconfirm_hours, (int, float)) or reconfirm_hours < 0:
            raise ConfigError("policy.reconfirm_hours must be a non-negative number of hours")
        self.reconfirm_hours = float(reconfirm_hours)
        self.reconfirm_max = int(reconfirm_max)
        # per-source action, trust, countries, the two-countries rule, allow overrides (agent.sources)
        from agent.sources import DEFAULT_RULES
        self.sources = sources if sources is not None else DEFAULT_RULES


class Counters:
    """What the policy decided, for status and the demo summary (no subscriber data)."""

    def __init__(self):
        self.scanned = 0
        self.blocked = 0
        self.confirmed = 0
        self.unconfirmed = 0
        self.refuted = 0
        self.reported = 0
        self.errors = 0
        self.reconfirmed = 0  # unconfirmed hits the hub confirmed later (and so reported)
        self.pending = 0  # unconfirmed hits waiting to be asked again
        self.pending_dropped = 0  # given up: too old, or the queue was full
        self.allowed = 0  # hits an allow list overrode: neither blocked nor reported (agent.allow)
        self.uncorroborated = 0  # hits held back by policy.min_countries or a source's trust (agent.sources)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Policy:
    """Decides about one scan result.

    ``confirmer(result) -> {ident: entries}``: the hub's entries behind the result's keys, for the
    lists the hub answered (``agent.confirm.client.Confirmer.ask``; empty when it could not be asked).
    ``scanner_confirm(result, answered) -> result``: the scanner's local decision
    (``Scanner.confirm``): verdict match with confirmed hits, clean when refuted, candidate when
    some list went unanswered.
    ``report(result, url)``: queue a report for a confirmed hit (the spool).
    ``allow``: the allow lists in force (``agent.allow.AllowLists``), or None.
    """

    def __init__(self, settings: PolicySettings, confirmer: Optional[Callable] = None,
                 scanner_confirm: Optional[Callable] = None, report: Optional[Callable] = None,
                 clock: Callable[[], float] = time.monotonic, pending=None, allow=None):
        self.settings = settings
        self.confirmer = confirmer
        self.scanner_confirm = scanner_confirm
        self.report = report
        self.counters = Counters()
        self.clock = clock
        self._pending: "collections.deque" = collections.deque()
        self._pending_lock = threading.Lock()
        self.pending_store = pending  # add(result, url) -> record id; resolve(record id)
        self.allow = allow

    def decide(self, result, url: Optional[str] = None) -> Decision:
        """The decision for one ScanResult of a body fetched from ``url``."""
        self.counters.scanned += 1
        verdict = getattr(result, "verdict", "error")
        if verdict == "error":
            self.counters.errors += 1
            return Decision("allow", "scan-error: %s" % (getattr(result, "reason", "") or "unknown"), result, url)
        if verdict not in ("match", "candidate"):
            return Decision("allow", "clean", result, url)
        confirmed = None  # True / False / None (could not ask)
        try:
            answered = self.confirmer(result) if self.confirmer else {}
            if answered and self.scanner_confirm is not None:
                decided = self.scanner_confirm(result, answered)
                if decided.verdict == "match" and any(h.confirmed for h in decided.hits):
                    confirmed = True
                elif decided.verdict == "clean":
                    confirmed = False
                result = decided
        except Exception as exc:  # fail-open: a confirmer fault is "hub unreachable", never a crash
            log.warning("confirmation failed: %s", exc)
            confirmed = None
        if confirmed is False:
            self.counters.refuted += 1
            return Decision("allow", "refuted-by-hub", result, url)
        settled = self.settle(result)  # allow lists and per-source rules, on the hits about to act
        if settled.verdict != "act":
            return Decision("allow", settled.reason, result, url)
        result, mode = settled.result, settled.mode
        exact = any(h.list.signal in EXACT_SIGNALS for h in getattr(result, "hits", ()))
        if confirmed is True:
            self.counters.confirmed += 1
            if mode != "monitor" and self.report is not None:
                try:
                    self.report(result, url)
                    self.counters.reported += 1
                except Exception as exc:  # the spool failing must not turn into a network outage
                    log.error("could not queue report: %s", exc)
            if mode == "block":
                self.counters.blocked += 1
                return Decision("block", "match-confirmed", result, url)
            return Decision("allow", "match-confirmed-%s" % mode, result, url)
        # the hub could not be asked: no report now; block only as configured; ask again later
        self.counters.unconfirmed += 1
        self._remember(result, url, mode)
        rule = self.settings.exact_unconfirmed if exact else self.settings.candidate_unconfirmed
        if mode == "block" and rule == "block":
            self.counters.blocked += 1
            return Decision("block", "match-unconfirmed", result, url)
        return Decision("allow", "unconfirmed-%s" % ("match" if exact else "candidate"), result, url)

    def settle(self, result):
        """``agent.sources.settle`` with the allow lists in force; counts what it held back."""
        from agent.sources import settle

        settled = settle(result, self.settings.sources, self.allow.index() if self.allow is not None else None,
                         self.settings.mode)
        if settled.verdict == "allowed":
            self.counters.allowed += 1
        elif settled.verdict == "uncorroborated":
            self.counters.uncorroborated += 1
        return settled

    # -- unconfirmed hits, asked again when the hub is back
    def _remember(self, result, url, mode: Optional[str] = None) -> None:
        if self.report is None or (mode or self.settings.mode) == "monitor" or not self.settings.reconfirm_hours:
            return
        with self._pending_lock:
            if len(self._pending) >= self.settings.reconfirm_max:
                self.counters.pending_dropped += 1  # the oldest promise stays; the newest is counted
                return
            record = None
            if self.pending_store is not None:
                try:
                    record = self.pending_store.add(result, url)
                except Exception as exc:  # never a network outage because of the disk
                    log.error("could not record a pending hit: %s", exc)
            self._pending.append((self.clock(), result, url, record))
            self.counters.pending = len(self._pending)

    def _resolve(self, record) -> None:
        if record is not None and self.pending_store is not None:
            try:
                self.pending_store.resolve(record)
            except Exception as exc:
                log.error("could not forget a pending hit: %s", exc)

    def reconfirm(self) -> int:
        """Ask the hub again about every remembered unconfirmed hit; report those it confirms.

        Returns how many were reported. Hits the hub refutes are forgotten; unanswered ones wait
        for the next call until ``reconfirm_hours`` have passed.
        """
        with self._pending_lock:
            items, self._pending = list(self._pending), collections.deque()
        reported = 0
        keep = []
        horizon = self.clock() - self.settings.reconfirm_hours * 3600
        for i, (when, result, url, record) in enumerate(items):
            if when < horizon:
                self.counters.pending_dropped += 1
                self._resolve(record)
                continue
            try:
                answered = self.confirmer(result) if self.confirmer else {}
            except Exception as exc:
                log.warning("reconfirmation failed: %s", exc)
                answered = {}
            if not answered:
                keep.extend(items[i:])  # the hub is still away: do not ask for every item now
                break
            decided = self.scanner_confirm(result, answered)
            if decided.verdict == "match" and any(h.confirmed for h in decided.hits):
                settled = self.settle(decided)  # an allow list may have arrived meanwhile
                if settled.verdict != "act" or settled.mode == "monitor":
                    self._resolve(record)  # confirmed, but not to be reported: counted by settle
                    continue
                decided = settled.result
                try:
                    self.report(decided, url)
                    self.counters.reported += 1
                    self.counters.reconfirmed += 1
                    reported += 1
                    self._resolve(record)
                except Exception as exc:
                    log.error("could not queue report: %s", exc)
                    keep.append((when, result, url, record))
            elif decided.verdict != "clean":
                keep.append((when, result, url, record))
            else:
                self._resolve(record)  # refuted by the hub: no report, no record
        with self._pending_lock:
            self._pending.extendleft(reversed(keep))
            self.counters.pending = len(self._pending)
        return reported


class PolicyInspector:
    """An ``agent.intake.Inspector`` that scans with a scanner and decides with a Policy."""

    def __init__(self, scanner_ref: Callable, policy: Policy):
        # scanner_ref() returns the current Scanner: list updates swap it in one step
        self.scanner_ref = scanner_ref
        self.policy = policy

    def inspect(self, body: bytes, content_type: Optional[str] = None, url: Optional[str] = None) -> Decision:
        """Scan ``body`` and decide; any fault allows (fail-open)."""
        try:
            scanner = self.scanner_ref()
            if scanner is None:
                return Decision("allow", "no-lists", None, url)
            result = scanner.scan_bytes(body, content_type=content_type, url=url)
        except Exception as exc:
            self.policy.counters.errors += 1
            log.warning("scan failed: %s", exc)
            return Decision("allow", "scan-error: %s" % type(exc).__name__, None, url)
        return self.policy.decide(result, url)

    def inspect_url(self, url: str) -> Decision:
        """Look a request's URL up in the url and domain lists and decide, before it is fetched."""
        return self._decide_names(self._lookup(lambda scanner: scanner.lookup_url(url)), lambda: url)

    def inspect_name(self, name) -> Decision:
        """Look a host name up in the domain lists (DNS, TLS server name, CONNECT) and decide.

        The decision's URL is '//host': a report then names the host alone (no URL was seen).
        """
        return self._decide_names(self._lookup(lambda scanner: scanner.lookup_domain(name)), lambda: _host_url(name))

    def inspect_url_fast(self, url: str) -> Optional[Decision]:
        """``inspect_url`` when it needs no wait (nothing listed: allow); None when a hit needs the policy,
        which may ask the hub (the caller then runs ``inspect_url`` in a thread)."""
        return self._clean_or_none(self._lookup(lambda scanner: scanner.lookup_url(url)), url)

    def inspect_name_fast(self, name) -> Optional[Decision]:
        """``inspect_name`` when it needs no wait (nothing listed: allow); None otherwise."""
        return self._clean_or_none(self._lookup(lambda scanner: scanner.lookup_domain(name)), None)

    def _lookup(self, lookup):
        """The scanner's results, or a Decision when there is nothing to look up with or it failed."""
        try:
            scanner = self.scanner_ref()
            if scanner is None:
                return Decision("allow", "no-lists", None, None)
            return lookup(scanner)
        except Exception as exc:
            self.policy.counters.errors += 1
            log.warning("name lookup failed: %s", exc)
            return Decision("allow", "scan-error: %s" % type(exc).__name__, None, None)

    def _clean_or_none(self, results, url) -> Optional[Decision]:
        if isinstance(results, Decision):
            return results
        if len(results) == 1 and results[0].verdict == "clean":
            self.policy.counters.scanned += 1
            return Decision("allow", "clean", results[0], url)
        return None

    def _decide_names(self, results, url_of) -> Decision:
        """Every result of a name lookup goes through the policy, most specific first; the first block
        wins (a hit the hub refutes does not hide a less specific one). Any fault allows (fail-open)."""
        if isinstance(results, Decision):
            return results
        url = url_of()
        decision = Decision("allow", "clean", None, url)
        for result in results:
            decision = self.policy.decide(result, url)
            if decision.action == "block":
                break
        return decision


def _host_url(name) -> Optional[str]:
    """'//host' for a report of a name hit (the canonical host alone), None when it has none."""
    try:
        return "//%s" % names.canonical_host(name)
    except GatewatchError:
        return None
