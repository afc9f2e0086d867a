"""The acceptance rules: a list file's bytes become a ``LoadedList`` only if every rule holds.

Owns: the rules of docs/list-format.md ("Acceptance"): size cap, layout and field ranges
(``agent.core.listfile``), a signature by the source's trusted key, unexpired, not created in the
future, newer than the version held, content matching its signed digest, a signal this agent can
match (for a neural list: a TFLite runtime and the model it names, checked against its sha256), and
a filter that is not so full that it would match almost anything. Must not touch: files
of the state folder (``agent.lists.store``), the network, signing.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Optional

from agent.core import allowlist, fuse, listfile
from agent.core.bloom import Bloom
from agent.core.errors import ConfigError, ListFormatError, TrustError
from agent.core.signals import SIGNALS
from agent.lists.trust import TrustStore

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
CLOCK_SKEW = 600  # seconds a manifest's creation time may lie in our future
# A Bloom filter built at its design capacity is half full; 0.75 full gives a false-positive rate
# of 0.75**k (0.4% at k=20): a filter fuller than that is broken, or built to match everything.
MAX_FILL = 0.75


def iso(t: float) -> str:
    """UTC time for messages."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def neural_unavailable(model: str) -> Optional[str]:
    """None when this agent can compute codes of the neural ``model``, else why not (no runtime, model
    file missing or not matching its manifest). Loads the model once per process (agent.hashing.neural)."""
    try:
        from agent.hashing import neural
    except ImportError as e:  # numpy/Pillow missing: the hasher cannot even be imported
        return "neural hasher unavailable: %s" % e
    try:
        neural.get_hasher(model)
    except ConfigError as e:  # RuntimeMissing, ModelError
        return str(e)
    except Exception as e:  # a runtime that fails to load the model: refuse the list, never crash the load
        return "neural model %s failed to load: %s: %s" % (model, type(e).__name__, e)
    return None


def _ones(content: bytes) -> int:
    n = 0
    step = 1 << 20  # bound the temporary integer to 1 MB of content at a time
    for off in range(0, len(content), step):
        chunk = int.from_bytes(content[off:off + step], "little")
        n += chunk.bit_count() if hasattr(chunk, "bit_count") else bin(chunk).count("1")
    return n


class LoadedList:
    """A list that passed every acceptance rule, ready for lookups."""

    def __init__(self, lf: listfile.ListFile, path: Optional[str] = None) -> None:
        m = lf.manifest
        self.file = lf
        self.manifest = m
        self.path = path
        self.source = m["source"]
        self.name = m["list"]
        self.signal = m["signal"]
        self.version = m["version"]
        self.lsh = m.get("lsh")
        self.model = m.get("model")  # the neural network a neural list's codes come from
        # an allow list (signal "allow") holds entries and no filter: the scanner never asks it,
        # agent.allow reads ``allow`` (docs/list-format.md, "Allow lists")
        self.allow = lf.allow
        if self.signal == allowlist.SIGNAL:
            self.filter = None
            self.model = m["allow"].get("model")
        else:
            f = m["filter"]
            if f["type"] == fuse.TYPE:
                self.filter = fuse.Fuse16(bytes.fromhex(f["salt"]), f["segment_length"], f["segment_count"],
                                          f["array_length"], lf.content)
            else:
                self.filter = Bloom(f["m"], f["k"], bytes.fromhex(f["salt"]), bits=lf.content)

    @property
    def bloom(self):
        """The list's membership filter (``filter``), by the name it had while Bloom was the only kind."""
        return self.filter

    @property
    def entries(self) -> int:
        """How many entries the list holds (the filter's count, or the allow list's)."""
        m = self.manifest
        return m["allow"]["entries"] if self.signal == allowlist.SIGNAL else m["filter"]["entries"]

    @property
    def ident(self) -> str:
        """'source/list'."""
        return "%s/%s" % (self.source, self.name)

    def expired(self, now: Optional[float] = None) -> bool:
        """True once the signed expiry time has passed."""
        return self.manifest["expires"] <= (time.time() if now is None else now)


def verify_bytes(data: bytes, trust: TrustStore, *, now: Optional[float] = None,
                 held_version: Optional[int] = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 path: Optional[str] = None) -> LoadedList:
    """Apply every acceptance rule to list file bytes; return the LoadedList or raise TrustError."""
    now = time.time() if now is None else now
    where = path or "list"
    if len(data) > max_bytes:
        raise TrustError("%s is %d bytes, over the size cap of %d bytes" % (where, len(data), max_bytes))
    try:
        lf = listfile.parse(data)
    except ListFormatError as e:
        raise TrustError("%s is malformed: %s" % (where, e))
    m = lf.manifest
    what = "list %s/%s v%d" % (m["source"], m["list"], m["version"])
    trust.verify(lf)
    if m["expires"] <= now:
        raise TrustError("%s expired at %s; the hub must publish a fresh version" % (what, iso(m["expires"])))
    if m["created"] > now + CLOCK_SKEW:
        raise TrustError("%s claims creation in the future (%s); check the device clock" % (what, iso(m["created"])))
    if held_version is not None and m["version"] <= held_version:
        raise TrustError("%s is not newer than v%d held; rollback or replay refused" % (what, held_version))
    if hashlib.sha256(lf.content).hexdigest() != m["content_sha256"]:
        raise TrustError("%s: content does not match the signed digest (corrupt or tampered)" % what)
    if m["signal"] not in SIGNALS and m["signal"] != allowlist.SIGNAL:
        raise TrustError("%s holds %r hashes, which this agent cannot compute; it would never match"
                         % (what, m["signal"]))
    if m["signal"] == "neural":
        reason = neural_unavailable(m["model"])
        if reason is not None:
            raise TrustError("%s holds neural codes of model %s, which this agent cannot compute (%s); "
                             "it would never match" % (what, m["model"], reason))
    # a fuse filter matches a key that is not in it at 2^-16 whatever its content holds: no fill check
    bloom = "filter" in m and m["filter"]["type"] == "bloom"
    fill = _ones(lf.content) / float(m["filter"]["m"]) if bloom else 0.0
    if fill > MAX_FILL:
        raise TrustError("%s: its filter is %.0f%% full (a list built by the hub is at most half full); "
                         "it would match almost any image" % (what, 100 * fill))
    try:
        return LoadedList(lf, path)
    except ListFormatError as e:
        raise TrustError("%s is malformed: %s" % (where, e))


def load_list_file(path: str, trust: TrustStore, **kw) -> LoadedList:
    """Read and verify one list file."""
    cap = kw.get("max_bytes", DEFAULT_MAX_BYTES)
    try:
        size = os.path.getsize(path)
        if size <= cap:
            with open(path, "rb") as f:
                data = f.read(cap + 1)
    except OSError as e:  # TrustError is an OSError too: keep it out of this block
        raise TrustError("cannot read list %s: %s" % (path, e.strerror or e))
    if size > cap:
        raise TrustError("%s is %d bytes, over the size cap of %d bytes" % (path, size, cap))
    return verify_bytes(data, trust, path=path, **kw)
