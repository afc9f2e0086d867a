"""The scanner: bytes in, a verdict out, asking every loaded list.

Owns: turning one body into hashes and asking the lists (exact digests through Bloom filters,
PDQ and neural codes through LSH band keys with multi-probe), and the device-side confirmation
decision given the hub's entries. A neural code is computed only when a neural list is loaded, from
the image already decoded for PDQ; like PDQ it stays on the device (only blinded probes leave it). Must not touch: sockets, MQTT, policy (what to do with a verdict) or reports.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from agent.matching import bloom_batch, fuse_batch
from agent.matching import lsh_batch as lsh_np
from agent.core import lsh as core_lsh
from agent.core.fuse import Fuse16
from agent.core.lsh import hamming
from agent.core.signals import BYTE_SIGNALS, EXACT_SIGNALS, PERCEPTUAL_SIGNALS
from agent.core.errors import ConfigError, GatewatchError, ImageError
from agent.hashing.imaging import DEFAULT_LIMITS, Limits, digests, hash_image
from agent.confirm.sealed import EXACT_BAND, band_value_bytes
from agent.confirm.wire import Entry, EntryIndex
from agent.lists import names
from agent.lists.verify import LoadedList

log = logging.getLogger("gatewatch.scanner")


class Hit(NamedTuple):
    """One list that answered for one body."""

    list: LoadedList
    # the probes that hit: (band, full band value) for perceptual lists, (EXACT_BAND, digest) for exact
    # ones. They stay on the device: confirmation sends only their blinded OPRF inputs (agent.confirm)
    probes: Tuple[Tuple[int, bytes], ...]
    confirmed: bool = False  # exact equality or distance within threshold against the hub's entries
    distance: Optional[int] = None
    entry_id: Optional[str] = None


class ScanResult(NamedTuple):
    """The outcome for one body. ``hashes`` stays on the device: it is never reported."""

    verdict: str
    hits: Tuple[Hit, ...] = ()
    reason: Optional[str] = None
    hashes: object = None  # agent.hashing.imaging.ImageHashes, or None for non-images
    digests: Optional[Dict[str, bytes]] = None
    elapsed: float = 0.0

    @property
    def best(self) -> Optional[Hit]:
        """The hit that decides the verdict: a confirmed one first, then exact before perceptual."""
        if not self.hits:
            return None
        return sorted(self.hits, key=lambda h: (not h.confirmed, h.list.signal not in EXACT_SIGNALS,
                                                h.distance if h.distance is not None else 999))[0]

    def to_json(self, path: Optional[str] = None) -> dict:
        """The JSON line of `gatewatch scan` (no perceptual hash in it)."""
        out: dict = {}
        if path is not None:
            out["path"] = path
        out["verdict"] = self.verdict
        best = self.best
        if best is not None and self.verdict in ("match", "candidate"):
            out.update(source=best.list.source, list=best.list.name, version=best.list.version,
                       signal=best.list.signal)
            if best.distance is not None:
                out["distance"] = best.distance
            if best.entry_id is not None:
                out["entry"] = best.entry_id
        if self.reason:
            out["reason"] = self.reason
        return out


class Scanner:
    """Hashes bodies and asks every loaded list; thread-safe for concurrent ``scan_bytes`` calls."""

    def __init__(self, lists: Sequence[LoadedList] = (), *, limits: Limits = DEFAULT_LIMITS,
                 fast: bool = True, validate: bool = False) -> None:
        self.limits = limits
        self.fast = fast
        self.validate = validate  # decode every body even when no perceptual list needs it
        self.lists: Tuple[LoadedList, ...] = ()
        self.faults: Dict[str, int] = {}  # lookups that raised, per list (status shows them)
        self._faults_lock = threading.Lock()
        self.swap(lists)

    def swap(self, lists: Sequence[LoadedList]) -> None:
        """Replace the loaded lists in one step (readers see the old or the new tuple, never a mix)."""
        self.lists = tuple(lists)

    def fingerprint(self) -> str:
        """Changes whenever the lists in force change (the ICAP ISTag, the status)."""
        ident = ",".join("%s@%d" % (l.ident, l.version) for l in sorted(self.lists, key=lambda l: l.ident))
        return "gw-" + hashlib.sha256(ident.encode()).hexdigest()[:24]

    def _fault(self, lst: LoadedList, exc: Exception) -> None:
        with self._faults_lock:
            n = self.faults.get(lst.ident, 0) + 1
            self.faults[lst.ident] = n
        if n == 1 or n % 1000 == 0:  # a fault per image would flood the log
            log.error("list %s v%d failed a lookup (%d so far): %s: %s; other lists still answer",
                      lst.ident, lst.version, n, type(exc).__name__, exc)

    def scan_bytes(self, data: bytes, content_type: Optional[str] = None,
                   url: Optional[str] = None) -> ScanResult:
        """Scan one body. Never raises for bad input: it becomes verdict 'error' with a reason."""
        start = time.perf_counter()
        lists = self.lists
        if not data:
            return ScanResult("error", reason="empty file", elapsed=time.perf_counter() - start)
        if len(data) > self.limits.max_bytes:
            return ScanResult("error", reason="body of %d bytes exceeds limit %d"
                              % (len(data), self.limits.max_bytes), elapsed=time.perf_counter() - start)
        d = dict(zip(BYTE_SIGNALS, digests(data)))
        hits: List[Hit] = []
        for lst in lists:
            if lst.signal in d:
                try:
                    if d[lst.signal][:16] in lst.filter:
                        hits.append(Hit(lst, ((EXACT_BAND, d[lst.signal]),), distance=0))
                except Exception as exc:  # one broken list must not hide the others' hits
                    self._fault(lst, exc)
        perceptual = [lst for lst in lists if lst.signal in PERCEPTUAL_SIGNALS]
        neural_lists = [lst for lst in perceptual if lst.signal == "neural"]
        hasher = None
        if neural_lists:
            try:
                hasher = _neural_hasher(neural_lists[0].model)
            except ConfigError as exc:  # verify refuses such lists; one built by hand still must not raise
                for lst in neural_lists:
                    self._fault(lst, exc)
                perceptual = [lst for lst in perceptual if lst.signal != "neural"]
        hashes = None
        reason = None
        if perceptual or (self.validate and not hits):
            try:
                hashes = hash_image(data, limits=self.limits, fast=self.fast,
                                    dihedral=any(lst.signal == "pdq" for lst in perceptual), neural=hasher,
                                    neural_variants=hasher is not None)
            except ImageError as e:
                reason = str(e)
        if hashes is not None:
            for lst in perceptual:
                try:
                    hit = self._perceptual(lst, hashes)
                except Exception as exc:
                    self._fault(lst, exc)
                    continue
                if hit is not None:
                    hits.append(hit)
        if any(h.list.signal in EXACT_SIGNALS for h in hits):
            verdict = "match"
        elif hits:
            verdict = "candidate"
        elif reason is not None:
            verdict = "error"
        else:
            verdict = "clean"
        return ScanResult(verdict, tuple(hits), reason if verdict == "error" else None, hashes, d,
                          time.perf_counter() - start)

    def lookup_url(self, url) -> Tuple[ScanResult, ...]:
        """A URL (plain HTTP, ICAP) against the url lists, and its hosts against the domain lists.

        One result per canonical expression that hit (agent.lists.names), most specific first, each
        like an exact-digest result (verdict match, ``digests[signal]`` the expression's digest), so
        that confirmation and policy treat it as they treat a sha256 hit; one clean result when none
        hit, one error result when the URL has no canonical form. Never raises for bad input.
        """
        return self._lookup_names(url, names.url_lookups, ("url", "domain"))

    def lookup_domain(self, name) -> Tuple[ScanResult, ...]:
        """A host name (DNS question, TLS server name, CONNECT target) against the domain lists;
        results as ``lookup_url``."""
        return self._lookup_names(name, names.name_lookups, ("domain",))

    def _lookup_names(self, text, expand, signals) -> Tuple[ScanResult, ...]:
        start = time.perf_counter()
        lists = [lst for lst in self.lists if lst.signal in signals]
        try:
            pairs = expand(text)
        except GatewatchError as e:  # UrlError: too long, no host, not a web URL
            return (ScanResult("error", reason=str(e), elapsed=time.perf_counter() - start),)
        results: List[ScanResult] = []
        for expr, digest in pairs:
            host_only = expr.find("/") == len(expr) - 1  # a domain list holds only 'host/' expressions
            hits = []
            for lst in lists:
                if lst.signal == "domain" and not host_only:
                    continue
                try:
                    if digest[:16] in lst.filter:
                        hits.append(Hit(lst, ((EXACT_BAND, digest),), distance=0))
                except Exception as exc:  # one broken list must not hide the others' hits
                    self._fault(lst, exc)
            if hits:
                results.append(ScanResult("match", tuple(hits), digests={h.list.signal: digest for h in hits},
                                          elapsed=time.perf_counter() - start))
        return tuple(results) or (ScanResult("clean", elapsed=time.perf_counter() - start),)

    def _perceptual(self, lst: LoadedList, hashes) -> Optional[Hit]:
        params = lst.lsh or {}
        # The PDQ quality of the same decode gates both signals: flat and tiny images carry no picture.
        if hashes.pdq is None or hashes.pdq_quality < params.get("min_quality", 0):
            return None
        bands = params["bands"]
        nbits, tag = core_lsh.layout(lst.signal)
        if lst.signal == "neural":
            if hashes.neural is None:
                return None
            if hashes.neural_model != lst.model:
                raise ValueError("list is of neural model %s, the scanner computes %s" % (lst.model, hashes.neural_model))
            # the code and its extra queries (agent.hashing.neural.QUERY_VARIANTS: band lookups only;
            # confirmation compares the code itself); no mirrored variants (docs/neural.md)
            queries = [(hashes.neural, hashes.neural_margins)] + list(hashes.neural_variants or ())
        else:
            queries = [(getattr(v, "hash", None) or getattr(v, "pdq"), getattr(v, "margins", None))
                       for v in (hashes.dihedral or [hashes])]
        per_query = [lsh_np.probes(h, margins, bands, params.get("flip_bits", 0), params.get("depth", 0), nbits)
                     for h, margins in queries]
        pairs = list(dict.fromkeys(p for q in per_query for p in q))
        found = contains_many(lst.filter, lsh_np.probe_keys(pairs, bands, tag))
        if not found.any():
            return None
        hit = {p for p, f in zip(pairs, found) if f}
        min_bands = params.get("min_bands", 1)
        if min_bands > 1:
            # the list's candidate rule: probes of at least min_bands distinct bands of one query (the
            # image or one of its variants) must hit; the probes sent on are that query's hits
            agreeing = [q for q in per_query if len({p[0] for p in q if p in hit}) >= min_bands]
            if not agreeing:
                return None
            hit = {p for q in agreeing for p in q if p in hit}
        probes = tuple(dict.fromkeys((j, band_value_bytes(v)) for j, v in pairs if (j, v) in hit))
        return Hit(lst, probes)

    def confirm(self, result: ScanResult, hub: Dict[str, EntryIndex]) -> ScanResult:
        """Decide hits locally against the hub's entries: exact equality, or distance <= threshold.

        ``hub`` maps 'source/list' to the entries found for the hit's probes (here: a whole
        ``EntryIndex``; over MQTT, the entries the probes' sealed records opened).
        """
        if result.verdict not in ("match", "candidate"):
            return result
        decided: List[Hit] = []
        for hit in result.hits:
            entries = hub.get(hit.list.ident)
            if entries is None:
                decided.append(hit)
                continue
            behind = list(dict.fromkeys(e for p in hit.probes for e in entries.lookup(p)))
            decided.append(confirm_hit(hit, behind, result))
        confirmed = [h for h in decided if h.confirmed]
        if confirmed:
            return result._replace(verdict="match", hits=tuple(confirmed))
        unanswered = [h for h in decided if h.list.ident not in hub]
        if unanswered:
            return result._replace(verdict="candidate", hits=tuple(unanswered))
        return result._replace(verdict="clean", hits=(), reason=None)


def contains_many(filt, keys):
    """Membership of many keys in a list's filter, Bloom or binary fuse."""
    if isinstance(filt, Fuse16):
        return fuse_batch.contains_many(filt, keys)
    return bloom_batch.contains_many(filt, keys)


def _neural_hasher(model: Optional[str]):
    """The process-wide hasher of a neural list's model (loaded once; ConfigError when unavailable)."""
    from agent.hashing import neural

    return neural.get_hasher(model or neural.DEFAULT_MODEL)


def closest(query_hashes: Sequence[bytes], entries: Iterable[Entry]) -> Tuple[Optional[Entry], Optional[int]]:
    """The entry nearest in Hamming distance to any of the query hashes (e.g. its dihedral variants)."""
    best, best_d = None, None
    for e in entries:
        for q in query_hashes:
            d = hamming(q, e.hash)
            if best_d is None or d < best_d:
                best, best_d = e, d
    return best, best_d


def confirm_hit(hit: Hit, entries, result: ScanResult) -> Hit:
    """Confirm one hit against the full entries the hub returned for its keys."""
    signal = hit.list.signal
    if signal in EXACT_SIGNALS:
        digest = result.digests[signal]
        for e in entries:
            if e.hash == digest:
                return hit._replace(confirmed=True, distance=0, entry_id=e.id)
        return hit
    if signal == "neural":
        # the list's own threshold (signed manifest); an entry that is not a 16-byte code never confirms
        threshold = (hit.list.lsh or {}).get("threshold", 28)
        queries = [result.hashes.neural] if result.hashes.neural is not None else []
        entries = [e for e in entries if len(e.hash) == 16]
    else:
        threshold = (hit.list.lsh or {}).get("threshold", 31)
        variants = result.hashes.dihedral or [result.hashes]
        queries = [getattr(v, "hash", None) or getattr(v, "pdq") for v in variants]
    entry, d = closest(queries, entries)
    if entry is not None and d <= threshold:
        return hit._replace(confirmed=True, distance=d, entry_id=entry.id)
    return hit
