"""Allow lists on the device: which hits the false positives an analyst rejected override.

Owns: indexing the allow lists among the lists in force (``AllowLists``: rebuilt whenever the set
of lists changes, so an allow list arrives, rolls forward and expires exactly like the others), and
whether one hit is allowed: by the image (its SHA-256, SHA-1 or MD5 digest equal to an entry; its
PDQ hash or neural code within an entry's radius) or by the list entry it matched. Which source's
allow list may override which source's hits is decided by the caller (``agent.sources``, given
here as ``may_override(allow_source, hit_source)``). Must not touch: scanning, the decision
(``agent.policy``), reports, files.

Compared against the hashes the scanner already computed (``ScanResult.digests``, ``.hashes``):
a PDQ entry applies when the device computed the image's PDQ (it does whenever a perceptual list
is loaded), a neural entry when it computed a neural code of the allow list's model. The PDQ
compared is the image's own orientation, not its dihedral variants: an allow entry opens as little
as it can. A degenerate PDQ (quality below ``MIN_QUALITY``: flat or tiny pictures, which share a
few hashes) never matches a perceptual allow entry.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from agent.core.allowlist import PERCEPTUAL, SIGNAL, AllowEntry
from agent.core.signals import EXACT_SIGNALS

MIN_QUALITY = 20  # the PDQ quality gate of perceptual lists (agent.lists.assemble.DEFAULT_LSH)


class AllowMatch(NamedTuple):
    """The allow entry that let one hit pass."""

    list: str  # '<source>/allow'
    version: int
    index: int  # the entry's position in its list (logs name it, never the hash)
    entry: AllowEntry
    distance: Optional[int] = None  # Hamming bits, for PDQ and neural entries

    @property
    def source(self) -> str:
        return self.list.split("/", 1)[0]

    def describe(self) -> str:
        """For the log: which list and entry, and how near; never the image's hash."""
        what = "entry #%d (%s" % (self.index, self.entry.kind)
        if self.entry.kind in PERCEPTUAL:
            what += " within %d, distance %d" % (self.entry.radius, self.distance)
        return "%s v%d %s)" % (self.list, self.version, what)


def _bits(b: bytes) -> int:
    return int.from_bytes(bytes(b), "big")


def _popcount(x: int) -> int:
    return x.bit_count() if hasattr(x, "bit_count") else bin(x).count("1")


class SourceAllow:
    """One source's allow list, indexed for lookups."""

    def __init__(self, lst):
        self.ident = lst.ident
        self.source = lst.source
        self.version = lst.version
        self.model = lst.model  # the neural network its neural entries come from
        self.digests: Dict[Tuple[str, bytes], int] = {}
        self.perceptual: Dict[str, List[Tuple[int, int, int]]] = {}  # signal -> [(bits, radius, index)]
        self.entries: Dict[Tuple[str, str], int] = {}  # ('source/list', entry id) -> index
        self.items: Tuple[AllowEntry, ...] = tuple(lst.allow or ())
        for i, e in enumerate(self.items):
            if e.kind == "entry":
                self.entries.setdefault((e.list, e.entry), i)
            elif e.kind in PERCEPTUAL:
                self.perceptual.setdefault(e.kind, []).append((_bits(e.hash), e.radius, i))
            else:
                self.digests.setdefault((e.kind, bytes(e.hash)), i)

    def _match(self, index: int, distance: Optional[int] = None) -> AllowMatch:
        return AllowMatch(self.ident, self.version, index, self.items[index], distance)

    def image(self, result) -> Optional[AllowMatch]:
        """The entry that allows the image of ``result`` (digests first, then the nearest hash)."""
        digests = getattr(result, "digests", None) or {}
        for signal in EXACT_SIGNALS:
            d = digests.get(signal)
            if d is not None and (signal, bytes(d)) in self.digests:
                return self._match(self.digests[(signal, bytes(d))])
        hashes = getattr(result, "hashes", None)
        if hashes is None or not self.perceptual or getattr(hashes, "pdq_quality", 0) < MIN_QUALITY:
            return None
        best = None
        for signal, code in (("pdq", getattr(hashes, "pdq", None)), ("neural", getattr(hashes, "neural", None))):
            if code is None or signal not in self.perceptual:
                continue
            if signal == "neural" and getattr(hashes, "neural_model", None) != self.model:
                continue  # codes of another network are not comparable
            q = _bits(code)
            for bits, radius, i in self.perceptual[signal]:
                d = _popcount(q ^ bits)
                if d <= radius and (best is None or d < best[0]):
                    best = (d, i)
        return self._match(best[1], best[0]) if best is not None else None

    def entry(self, hit) -> Optional[AllowMatch]:
        """The entry that allows the list entry ``hit`` matched (confirmed hits name it)."""
        entry_id = getattr(hit, "entry_id", None)
        if not entry_id:
            return None
        i = self.entries.get((hit.list.ident, entry_id))
        return self._match(i) if i is not None else None


class AllowIndex:
    """Every allow list in force, by source."""

    def __init__(self, lists: Sequence = ()):
        self.by_source: Dict[str, SourceAllow] = {}
        for lst in lists:
            if getattr(lst, "signal", None) == SIGNAL:
                held = self.by_source.get(lst.source)
                if held is None or lst.version > held.version:
                    self.by_source[lst.source] = SourceAllow(lst)

    def __bool__(self) -> bool:
        return any(s.items for s in self.by_source.values())

    def allowed(self, result, hits: Sequence, may_override: Callable[[str, str], bool]) -> Dict[int, AllowMatch]:
        """{position in ``hits``: the match} for every hit an allow list it answers to overrides."""
        out: Dict[int, AllowMatch] = {}
        images: Dict[str, Optional[AllowMatch]] = {}  # per allow source, computed at most once
        for n, hit in enumerate(hits):
            hit_source = getattr(hit.list, "source", None) or hit.list.ident.split("/", 1)[0]
            for source in sorted(self.by_source):
                if not may_override(source, hit_source):
                    continue
                allow = self.by_source[source]
                m = allow.entry(hit)
                if m is None:
                    if source not in images:
                        images[source] = allow.image(result)
                    m = images[source]
                if m is not None:
                    out[n] = m
                    break
        return out


class AllowLists:
    """The allow lists among ``lists_ref()`` (the lists in force, e.g. the current scanner's), indexed
    again whenever that tuple is replaced (a list update swaps it in one step)."""

    def __init__(self, lists_ref: Callable[[], Sequence]):
        self.lists_ref = lists_ref
        self._lock = threading.Lock()
        self._seen: object = None
        self._index = AllowIndex()

    def index(self) -> AllowIndex:
        """The index of the allow lists in force now."""
        lists = self.lists_ref() or ()
        with self._lock:
            if lists is not self._seen:
                self._index = AllowIndex(lists)
                self._seen = lists
            return self._index
