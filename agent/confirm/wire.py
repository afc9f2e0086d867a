"""What device and hub exchange to confirm a hit, and the entries both sides know an entry by.

Owns: ``Entry``, the probes under which an entry is found (``entry_probes``: one per band for a
perceptual hash, the digest for an exact one; the device's scanner produces the same probes from an
image), the hub's plain entries file and its index (``EntryIndex``, for `lists build` output and
`gatewatch scan --confirm-with`), and every message of private confirmation with its limits: each
parser checks types, sizes and counts and raises ConfirmError for anything else. Must not touch:
MQTT (``agent.confirm.client``, ``tools.confirm_service``), the decision (``agent.matching``).

Messages are JSON objects with base64 binary fields (docs/privacy.md has the whole protocol):

- evaluation request, ``<p>/confirm/eval``: ``{"v": 2, "key": KEYID, "reply": RID, "token": {"n": B64,
  "y": B64}, "e": [4 x B64 blinded element]}``; answer on ``<p>/confirm/resp/RID``: ``{"v": 2,
  "reply": RID, "e": [4 x B64], "ticket": B64, "ttl": [positive, negative]}`` or ``{"v": 2, "reply":
  RID, "error": WORD}``.
- bucket fetch, ``<p>/confirm/fetch``: ``{"v": 2, "list": "source/list", "version": N, "ticket": B64,
  "reply": RID, "b": [4 x bucket index]}``; answer: ``{"v": 2, "reply": RID, "version": N,
  "buckets": [{"i": index, "data": B64, "proof": [B64 ...]}]}`` or an error.
- token issuance, ``<p>/tokens/req/<login>``: ``{"v": 2, "source": S, "reply": RID, "e": [B64 ...]}``;
  answer on ``<p>/tokens/resp/<login>/RID``: ``{"v": 2, "reply": RID, "epoch": E, "e": [B64 ...],
  "proof": B64}`` or an error.

Nothing in a request names the device: no client id, no login (but on the issuance topic, which
carries no image-dependent data), and the reply topic is a fresh random id.
"""

from __future__ import annotations

import base64
import binascii
import glob
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from agent.core import lsh as core_lsh
from agent.core.errors import ConfigError, ConfirmError
from agent.core.signals import EXACT_SIGNALS, HEX_LENGTHS
from agent.confirm import group
from agent.confirm.sealed import EXACT_BAND, band_value_bytes

PROTOCOL = 2
ELEMENTS = 4  # blinded elements in every evaluation request: padded, so the count says nothing
BUCKETS_PER_FETCH = 4  # bucket indices in every fetch request, padded likewise
MAX_TOKENS_PER_ISSUE = 64
MAX_MESSAGE = 512 * 1024
MAX_BUCKET_INDEX = 1 << 22
MAX_ENTRIES_PER_ANSWER = 1024
_RID = re.compile(r"[0-9a-f]{32}")
_KEYID = re.compile(r"[0-9a-f]{16}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._-]{1,64}")

Probe = Tuple[int, bytes]  # (band, full band value as 8 bytes) or (EXACT_BAND, digest)


class Entry:
    """One list entry as the hub knows it: an identifier and the full hash."""

    __slots__ = ("id", "hash")

    def __init__(self, ident: str, hash_bytes: bytes) -> None:
        self.id = ident
        self.hash = hash_bytes

    def to_json(self) -> dict:
        """JSON form."""
        return {"id": self.id, "hash": self.hash.hex()}

    def __eq__(self, other):
        return isinstance(other, Entry) and (self.id, self.hash) == (other.id, other.hash)

    def __hash__(self):
        return hash((self.id, self.hash))

    def __repr__(self):
        return "Entry(%r, %s)" % (self.id, self.hash.hex())


def entry_probes(signal: str, h: bytes, lsh: Optional[dict]) -> List[Probe]:
    """The probes under which an entry with hash ``h`` is found (and sealed at the hub)."""
    bands = core_lsh.entry_bands(signal, h, None if signal in EXACT_SIGNALS else lsh)
    return [(j, v if j == EXACT_BAND else band_value_bytes(v)) for j, v in bands]


class EntryIndex:
    """The plain entries of one list version (the hub's entries file), found by probe."""

    def __init__(self, doc: dict) -> None:
        self.source = doc["source"]
        self.name = doc["list"]
        self.signal = doc["signal"]
        self.version = doc["version"]
        self.lsh = doc.get("lsh")
        want = HEX_LENGTHS.get(self.signal)
        self.entries = [Entry(e["id"], bytes.fromhex(e["hash"])) for e in doc["entries"]]
        if want is None or any(len(e.hash) * 2 != want for e in self.entries):
            raise ValueError("entries do not fit signal %r" % self.signal)
        self._index: Dict[Probe, List[Entry]] = {}
        for e in self.entries:
            for p in entry_probes(self.signal, e.hash, None if self.signal in EXACT_SIGNALS else self.lsh):
                self._index.setdefault(p, []).append(e)

    @property
    def ident(self) -> str:
        """'source/list'."""
        return "%s/%s" % (self.source, self.name)

    @classmethod
    def load(cls, path: str) -> "EntryIndex":
        """Read a hub entries file written by `gatewatch-hub lists build`."""
        try:
            with open(path, "r", encoding="utf-8") as f:
                return cls(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError("cannot read hub entries %s: %s" % (path, e))

    @classmethod
    def load_dir(cls, directory: str) -> Dict[str, "EntryIndex"]:
        """Newest hub entries file per list in a ``lists build`` output folder, keyed 'source/list'."""
        paths = sorted(glob.glob(os.path.join(directory, "hub", "*.entries.json")))
        if not paths:
            raise ConfigError("%s has no hub/ entries; pass a 'gatewatch-hub lists build' output folder"
                              % directory)
        out: Dict[str, EntryIndex] = {}
        for p in paths:
            h = cls.load(p)
            if h.ident not in out or h.version > out[h.ident].version:
                out[h.ident] = h
        return out

    def lookup(self, probe: Probe) -> List[Entry]:
        """Entries behind one probe (empty when none)."""
        return list(self._index.get(probe, ()))


class AnsweredEntries:
    """The entries some probes of one list opened, as confirmation found them."""

    def __init__(self, ident: str, by_probe: Dict[Probe, List[Entry]]):
        self.ident = ident
        self.by_probe = by_probe

    def lookup(self, probe: Probe) -> List[Entry]:
        """Entries behind one probe (empty when none)."""
        return list(self.by_probe.get(probe, ()))


# ---------------------------------------------------------------- messages

def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def unb64(text, size: Optional[int] = None, what: str = "field", max_size: int = MAX_MESSAGE) -> bytes:
    """Bytes of a base64 field; ConfirmError for anything but canonical base64 of the right size."""
    if not isinstance(text, str) or len(text) > max_size * 4 // 3 + 4:
        raise ConfirmError("%s is not base64 text" % what)
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ConfirmError("%s is not base64" % what)
    if size is not None and len(raw) != size:
        raise ConfirmError("%s must be %d bytes" % (what, size))
    return raw


def dumps(obj: dict) -> bytes:
    """A message's bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


def loads(payload: bytes, what: str) -> dict:
    """A message as a dict of protocol 2; ConfirmError otherwise."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > MAX_MESSAGE:
        raise ConfirmError("%s over %d bytes" % (what, MAX_MESSAGE))
    try:
        doc = json.loads(bytes(payload))
    except (ValueError, UnicodeDecodeError):
        raise ConfirmError("%s is not JSON" % what)
    if not isinstance(doc, dict) or doc.get("v") != PROTOCOL or type(doc.get("v")) is not int:
        raise ConfirmError("%s is not a protocol %d message" % (what, PROTOCOL))
    return doc


def _hex_field(doc: dict, field: str, pattern, what: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfirmError(what)
    return value


def reply_id(doc: dict) -> str:
    """The request's reply id (32 lowercase hex digits)."""
    return _hex_field(doc, "reply", _RID, "reply id must be 32 lowercase hex digits")


def elements(doc: dict, count: Optional[int], max_count: int = ELEMENTS) -> List[bytes]:
    """The 32-byte elements of field "e" (exactly ``count`` of them when given)."""
    items = doc.get("e")
    if not isinstance(items, list) or not 1 <= len(items) <= max_count or (count is not None and len(items) != count):
        raise ConfirmError("field 'e' must hold %s elements" % (count if count is not None else "1..%d" % max_count))
    out = [unb64(x, 32, "element") for x in items]
    for e in out:
        group.check_element(e)  # the identity or a non-canonical encoding is no element
    return out


def key_id(doc: dict) -> str:
    """The OPRF key id of an evaluation request."""
    return _hex_field(doc, "key", _KEYID, "key id must be 16 lowercase hex digits")


def token(doc: dict) -> Tuple[bytes, bytes]:
    """(nonce, output) of the token a request spends."""
    t = doc.get("token")
    if not isinstance(t, dict):
        raise ConfirmError("request carries no token")
    return unb64(t.get("n"), 32, "token nonce"), unb64(t.get("y"), 64, "token output")


def list_ident(doc: dict) -> str:
    """'source/list' of a fetch request."""
    ident = doc.get("list")
    if not isinstance(ident, str) or not _NAME.fullmatch(ident):
        raise ConfirmError("list must be 'source/list'")
    return ident


def whole(doc: dict, field: str, lo: int, hi: int) -> int:
    """A whole-number field in [lo, hi] (bool is no number here)."""
    v = doc.get(field)
    if type(v) is not int or not lo <= v <= hi:
        raise ConfirmError("field '%s' must be a whole number in %d..%d" % (field, lo, hi))
    return v


def bucket_indices(doc: dict) -> List[int]:
    """The bucket indices of a fetch request (exactly BUCKETS_PER_FETCH)."""
    items = doc.get("b")
    if not isinstance(items, list) or len(items) != BUCKETS_PER_FETCH:
        raise ConfirmError("field 'b' must hold %d bucket indices" % BUCKETS_PER_FETCH)
    out = []
    for i in items:
        if type(i) is not int or not 0 <= i < MAX_BUCKET_INDEX:
            raise ConfirmError("bucket index out of range")
        out.append(i)
    return out


def error_answer(rid: str, word: str) -> bytes:
    """An error answer (a word from a fixed set: never request data echoed back)."""
    return dumps({"v": PROTOCOL, "reply": rid, "error": word})


def answer_error(doc: dict) -> Optional[str]:
    """The error word of an answer, or None."""
    e = doc.get("error")
    if e is None:
        return None
    return e if isinstance(e, str) and len(e) <= 64 else "malformed-error"


def parse_buckets(doc: dict, depth: int) -> Dict[int, Tuple[bytes, List[bytes]]]:
    """{index: (bucket bytes, proof)} of a fetch answer (proofs of ``depth`` hashes)."""
    items = doc.get("buckets")
    if not isinstance(items, list) or len(items) > BUCKETS_PER_FETCH:
        raise ConfirmError("field 'buckets' malformed")
    out = {}
    for it in items:
        if not isinstance(it, dict) or type(it.get("i")) is not int or not isinstance(it.get("proof"), list):
            raise ConfirmError("bucket item malformed")
        if len(it["proof"]) != depth:
            raise ConfirmError("bucket proof has %d hashes, the list's tree needs %d" % (len(it["proof"]), depth))
        out[it["i"]] = (unb64(it.get("data"), None, "bucket"), [unb64(p, 32, "proof hash") for p in it["proof"]])
    return out


def pad_elements(real: Sequence[bytes], random_element) -> List[bytes]:
    """``real`` followed by fresh random elements up to ELEMENTS (indistinguishable from blinded ones)."""
    return list(real) + [random_element() for _ in range(ELEMENTS - len(real))]
