"""The device's side of the transparency log: tree heads, proofs, and the newest head it has seen.

Owns: the signed tree head (format, field checks, signature by a trusted log key), the proof that
comes with a list version (a ``.proof`` file next to the list, a retained message next to the
manifest), the step messages by which a device walks from the head it holds to another one, the
``<log>.heads`` file of steps in a folder of lists, ``LogState`` (the newest head of each log and
the heads accepted, ``<state>/log-heads.json``, written atomically) and ``LogVerifier``: a list
version of a source that a trusted log key names is accepted only with a valid inclusion proof
under a head that key signed, and only if that head is consistent with every head accepted before
(append-only). Must not touch: the Merkle arithmetic and the leaf layout (``agent.core.merkle``),
the other acceptance rules (``agent.lists.verify``), the network (steps come from a callable the
caller gives), the hub's log (``tools.translog``). Formats: docs/transparency.md.

What is evidence of a fork, and what is only a refusal: two heads signed by the log's key with the
same size and different roots cannot both be true, so they are kept (``forks``, persisted), logged
and shown as a fault. A proof that does not verify, a head nobody signed, a missing step: these
anyone on the path (a broker) can cause, so they refuse the list or head and change nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import struct
import threading
import time
from typing import Callable, Dict, List, Optional

from agent.atomicfile import read_capped, write_atomic
from agent.core import listfile, merkle
from agent.core.errors import GatewatchError, ProofError
from agent.lists.trust import TrustStore, check_name

log = logging.getLogger("gatewatch.translog")

SCHEMA = 1
FORMAT = 1
HEAD_MAGIC = b"GWH1"
HEAD_TYPE = "gatewatch-tree-head"
PROOF_TYPE = "gatewatch-log-proof"
STEP_TYPE = "gatewatch-log-step"
HEAD_FIELDS = ("format", "issued", "key_id", "log", "root", "size", "type")
MAX_MESSAGE = 64 * 1024  # a proof or step is a few kB: two heads and at most 64 hashes
MAX_TIME = 0xFFFFFFFFFF
#: steps one walk may take from the head held to another (each is one message, checked on arrival)
MAX_WALK = 10000
#: heads remembered per log besides the newest (and those backing lists in force)
MAX_SEEN = 4096
STATE_FILE = "log-heads.json"
MAX_STATE_BYTES = 4 << 20
MAX_STEPS_FILE = 64 << 20
_HEX = "0123456789abcdef"


class LogRefused(ProofError):
    """A log proof or tree head was refused; the message says why. ``fork``: the refusal holds two
    heads the log signed that cannot both be true (kept as evidence, shown as a fault);
    ``transient``: worth trying again later (a step not on the broker yet)."""

    def __init__(self, message: str, fork: bool = False, transient: bool = False):
        super().__init__(message)
        self.fork = fork
        self.transient = transient


# ----------------------------------------------------------------------------- formats

def head_message(signed: bytes) -> bytes:
    """The bytes a tree head's signature covers: ``GWH1``, u32 little-endian length, the signed text
    (a magic of its own: neither a list's nor a timestamp's signature can pass for a head's)."""
    return HEAD_MAGIC + struct.pack("<I", len(signed)) + signed


def encode_signed(doc: dict) -> bytes:
    """Canonical bytes of a head's signed part (the manifests' encoding: sorted keys, compact, ASCII)."""
    return listfile.encode_manifest(doc)


def head_wire(signed: bytes, signature: bytes) -> dict:
    """A signed head as it travels inside proofs and steps."""
    return {"schema": SCHEMA, "signed": signed.decode("ascii"), "signature": base64.b64encode(signature).decode("ascii")}


def _dumps(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("ascii")


def proof_bytes(head: dict, index: int, path: List[bytes]) -> bytes:
    """A list version's proof: its leaf's index and inclusion path under a signed head."""
    return _dumps({"schema": SCHEMA, "type": PROOF_TYPE, "head": head, "index": index,
                   "inclusion": [h.hex() for h in path]})


def step_bytes(previous: Optional[dict], head: dict, from_size: int, proof: List[bytes]) -> bytes:
    """One step of the log's chain of heads: the head before (None for the first), the new head, and
    the consistency proof between them."""
    return _dumps({"schema": SCHEMA, "type": STEP_TYPE, "from": previous, "from_size": from_size, "head": head,
                   "consistency": [h.hex() for h in proof]})


class TreeHead:
    """A tree head that parsed and whose signature a trusted key of its log verified."""

    def __init__(self, doc: dict, signed: bytes, signature: bytes, key_id: Optional[str]):
        self.log: str = doc["log"]
        self.size: int = doc["size"]
        self.root: bytes = bytes.fromhex(doc["root"])
        self.issued: int = doc["issued"]
        self.signed = signed
        self.signature = signature
        self.key_id = key_id

    def wire(self) -> dict:
        return head_wire(self.signed, self.signature)

    def as_dict(self) -> dict:
        return {"log": self.log, "size": self.size, "root": self.root.hex(), "issued": self.issued}


def _whole(doc: dict, name: str, lo: int, hi: int, what: str) -> int:
    v = doc.get(name)
    if type(v) is not int or not lo <= v <= hi:  # type(): True is an int too
        raise LogRefused("%s field %r must be a whole number from %d to %d" % (what, name, lo, hi))
    return v


def _hex_hash(value, what: str) -> bytes:
    if type(value) is not str or len(value) != 64 or any(c not in _HEX for c in value):
        raise LogRefused("%s must be 64 lowercase hex digits" % what)
    return bytes.fromhex(value)


def _hash_list(value, what: str) -> List[bytes]:
    if type(value) is not list:
        raise LogRefused("%s must be a list of hashes" % what)
    if len(value) > merkle.MAX_PROOF:
        raise LogRefused("%s has %d hashes; no proof in a log of at most 2**48 leaves has over %d"
                         % (what, len(value), merkle.MAX_PROOF))
    return [_hex_hash(v, "every hash of the %s" % what) for v in value]


def parse_head(obj) -> TreeHead:
    """Layout and fields of a signed head (not its signature); LogRefused says what is wrong."""
    if type(obj) is not dict or set(obj) != {"schema", "signed", "signature"}:
        raise LogRefused("tree head must be an object of exactly schema, signed and signature")
    if type(obj["schema"]) is not int or obj["schema"] != SCHEMA:
        raise LogRefused("tree head schema %r is not supported (this agent reads %d)" % (obj["schema"], SCHEMA))
    text, sig = obj["signed"], obj["signature"]
    if type(text) is not str or type(sig) is not str or not text.isascii() or not sig.isascii():
        raise LogRefused("tree head signed text and signature must be ASCII strings")
    if len(text) > 4096:
        raise LogRefused("tree head signed text is over 4096 characters")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (ValueError, binascii.Error):
        raise LogRefused("tree head signature is not base64")
    if len(signature) != 64:
        raise LogRefused("tree head signature is %d bytes, not 64 (Ed25519)" % len(signature))
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise LogRefused("tree head signed part is not JSON")
    if type(doc) is not dict or set(doc) != set(HEAD_FIELDS):
        raise LogRefused("tree head signed part must hold exactly the fields %s" % ", ".join(HEAD_FIELDS))
    if doc["type"] != HEAD_TYPE:
        raise LogRefused("signed part is not a gatewatch tree head (type %r)" % (doc["type"],))
    _whole(doc, "format", FORMAT, FORMAT, "tree head")
    try:
        check_name("log", doc["log"])
    except GatewatchError as exc:
        raise LogRefused("tree head: %s" % exc)
    _whole(doc, "size", 1, merkle.MAX_SIZE, "tree head")
    _whole(doc, "issued", 0, MAX_TIME, "tree head")
    _hex_hash(doc["root"], "tree head root")
    kid = doc["key_id"]
    if type(kid) is not str or not 1 <= len(kid) <= 64 or not kid.isascii() or not kid.isalnum():
        raise LogRefused("tree head key_id must be 1-64 ASCII letters or digits")
    if encode_signed(doc) != text.encode("ascii"):  # one text per meaning
        raise LogRefused("tree head signed part is not in canonical form")
    return TreeHead(doc, text.encode("ascii"), signature, None)


def verify_head(obj, trust: TrustStore, logs: Optional[List[str]] = None) -> TreeHead:
    """``parse_head``, then: its log has a trusted key (one of ``logs`` when given) and that key signed it."""
    head = parse_head(obj)
    if head.log not in trust.logs():
        raise LogRefused("tree head of log %r, which has no trusted key here" % head.log)
    if logs is not None and head.log not in logs:
        raise LogRefused("tree head of log %r, but this source's lists must be in %s" % (head.log, ", ".join(logs)))
    head.key_id = trust.verify_log_signature(head.log, head_message(head.signed), head.signature)
    if head.key_id is None:
        raise LogRefused("tree head of log %r (size %d): signature does not verify with any trusted key of "
                         "that log (tampered, or signed by another key)" % (head.log, head.size))
    return head


def _load(payload, what: str) -> dict:
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > MAX_MESSAGE:
        raise LogRefused("%s is not a message of at most %d bytes" % (what, MAX_MESSAGE))
    try:
        doc = json.loads(bytes(payload))
    except (ValueError, RecursionError):  # bad UTF-8 and huge numbers are ValueErrors too
        raise LogRefused("%s is not JSON" % what)
    if type(doc) is not dict:
        raise LogRefused("%s is not a JSON object" % what)
    return doc


def parse_proof(payload: bytes):
    """(head object, leaf index, inclusion path) of a list version's proof; LogRefused if malformed."""
    doc = _load(payload, "log proof")
    if set(doc) != {"schema", "type", "head", "index", "inclusion"}:
        raise LogRefused("log proof must hold exactly schema, type, head, index and inclusion")
    if type(doc["schema"]) is not int or doc["schema"] != SCHEMA or doc["type"] != PROOF_TYPE:
        raise LogRefused("not a gatewatch log proof of schema %d" % SCHEMA)
    index = _whole(doc, "index", 0, merkle.MAX_SIZE - 1, "log proof")
    return doc["head"], index, _hash_list(doc["inclusion"], "inclusion proof")


def parse_step(payload: bytes) -> dict:
    """A step's parts: ``from`` (head object or None), ``from_size``, ``head`` and ``consistency``."""
    doc = _load(payload, "log step")
    if set(doc) != {"schema", "type", "from", "from_size", "head", "consistency"}:
        raise LogRefused("log step must hold exactly schema, type, from, from_size, head and consistency")
    if type(doc["schema"]) is not int or doc["schema"] != SCHEMA or doc["type"] != STEP_TYPE:
        raise LogRefused("not a gatewatch log step of schema %d" % SCHEMA)
    _whole(doc, "from_size", 0, merkle.MAX_SIZE, "log step")
    if (doc["from"] is None) != (doc["from_size"] == 0):
        raise LogRefused("log step: only the first step (from_size 0) has no head before it")
    doc["consistency"] = _hash_list(doc["consistency"], "consistency proof")
    return doc


# ----------------------------------------------------------------------------- steps in a folder

def steps_file_name(log_name: str) -> str:
    """The file of a log's steps in a folder of lists (the hub's ``heads`` file, copied)."""
    return "%s.heads" % check_name("log", log_name)


class FolderSteps:
    """Steps from ``<folder>/<log>.heads``, one JSON step a line, looked up by ``from_size``."""

    def __init__(self, directory: str):
        self.directory = directory
        self._index: Dict[str, Dict[int, bytes]] = {}

    def __call__(self, log_name: str, from_size: int) -> Optional[bytes]:
        if log_name not in self._index:
            self._index[log_name] = self._read(log_name)
        return self._index[log_name].get(from_size)

    def _read(self, log_name: str) -> Dict[int, bytes]:
        path = os.path.join(self.directory, steps_file_name(log_name))
        out: Dict[int, bytes] = {}
        try:
            raw = read_capped(path, MAX_STEPS_FILE)
        except (OSError, ValueError) as exc:
            log.warning("not reading %s: %s", path, getattr(exc, "strerror", None) or exc)
            return out
        if raw is None:
            return out
        for line in raw.splitlines():
            try:
                size = json.loads(line).get("from_size")
            except (ValueError, AttributeError, RecursionError):
                continue  # a bad line is one step missing; the walk says so if it needs it
            if type(size) is int:
                out.setdefault(size, bytes(line))
        return out


# ----------------------------------------------------------------------------- what the device keeps

class LogState:
    """The newest head of each log, the heads accepted before (size -> root) and fork evidence.

    ``path`` None keeps it in memory only (``gatewatch scan``, the standalone services). A missing
    file is an empty state; a malformed one is logged, kept in ``problem`` and read as empty.
    """

    def __init__(self, path: Optional[str] = None):
        self.path = path
        self.heads: Dict[str, dict] = {}
        self.seen: Dict[str, Dict[int, str]] = {}
        self.forks: Dict[str, dict] = {}
        self.problem: Optional[str] = None
        if path:
            self._load()

    def _load(self) -> None:
        try:
            raw = read_capped(self.path, MAX_STATE_BYTES)
            if raw is None:
                return
            doc = json.loads(raw)
            if type(doc) is not dict or doc.get("format") != FORMAT or type(doc.get("logs")) is not dict:
                raise ValueError("not a format %d log state" % FORMAT)
            heads, seen, forks = {}, {}, {}
            for name, item in doc["logs"].items():
                check_name("log", name)
                if type(item) is not dict or type(item.get("head")) is not dict or type(item.get("seen", {})) is not dict:
                    raise ValueError("bad entry for log %r" % name)
                heads[name] = item["head"]
                seen[name] = {int(k): v for k, v in item.get("seen", {}).items()
                              if k.isdigit() and k.isascii() and type(v) is str}
                if type(item.get("fork")) is dict:
                    forks[name] = item["fork"]
        except OSError as exc:
            self._bad("cannot read: %s" % (exc.strerror or exc))
            return
        except (ValueError, GatewatchError) as exc:
            self._bad("malformed (%s)" % exc)
            return
        self.heads, self.seen, self.forks = heads, seen, forks

    def _bad(self, why: str) -> None:
        self.problem = "%s %s; reading it as empty (the next head is trusted as first seen)" % (self.path, why)
        log.warning("log state %s", self.problem)

    def save(self) -> None:
        if not self.path:
            return
        logs = {}
        for name, head in self.heads.items():
            logs[name] = {"head": head, "seen": {str(k): v for k, v in sorted(self.seen.get(name, {}).items())},
                          "fork": self.forks.get(name)}
        try:
            write_atomic(self.path, json.dumps({"format": FORMAT, "logs": logs}, sort_keys=True).encode("ascii"))
        except OSError as exc:
            log.warning("cannot write the log state %s: %s (the newest head holds until restart)",
                        self.path, exc.strerror or exc)


Steps = Callable[[str, int], Optional[bytes]]


class LogVerifier:
    """The rule of the log on one device: proofs of list versions, and heads only ever growing.

    ``check_list`` for a list version (before it is installed or loaded), ``offer_step`` for a new
    head published on its own. Thread-safe: the updater and the folder loader share one.
    """

    def __init__(self, trust: TrustStore, state: Optional[LogState] = None, clock: Callable[[], float] = time.time):
        self.trust = trust
        self.state = state if state is not None else LogState(None)
        self.clock = clock
        self.held: Dict[str, TreeHead] = {}
        self.refusals: Dict[str, dict] = {}
        self._pins: set = set()  # (log, size) of heads that back lists checked in this process
        self._lock = threading.RLock()
        for name, wire in sorted(self.state.heads.items()):
            try:
                self.held[name] = verify_head(wire, trust)
            except GatewatchError as exc:
                log.warning("stored tree head of log %s no longer verifies (%s); ignoring it", name, exc)

    def required(self, source: str) -> bool:
        """True when a trusted log key names ``source``: its list versions need a log proof."""
        return bool(self.trust.logs_for(source))

    # -- a list version
    def check_list(self, manifest: dict, signed_bytes: bytes, proof: Optional[bytes],
                   steps: Optional[Steps] = None) -> Optional[TreeHead]:
        """Accept the list version of ``manifest`` only with a valid ``proof`` (None when its source
        needs none); raises LogRefused with the reason. ``steps(log, from_size)`` gives step messages
        when the proof's head must be connected to the head held."""
        logs = self.trust.logs_for(manifest["source"])
        if not logs:
            return None
        what = "list %s/%s v%d" % (manifest["source"], manifest["list"], manifest["version"])
        if proof is None:
            raise LogRefused("%s comes without a log proof; the trust store requires %s lists to be in log %s "
                             "(the hub must append it and publish its proof)" % (what, manifest["source"], " or ".join(logs)))
        name = None
        with self._lock:
            try:
                head_obj, index, path = parse_proof(proof)
                head = verify_head(head_obj, self.trust, logs)
                name = head.log
                leaf = merkle.leaf_of_list(manifest, signed_bytes)
                try:
                    merkle.verify_inclusion(merkle.leaf_hash(leaf), index, head.size, path, head.root)
                except ProofError as exc:
                    raise LogRefused("%s is not in log %s under its tree head of size %d (%s); a list the log does "
                                     "not show to everyone is refused" % (what, head.log, head.size, exc))
                self._connect(head, steps)
            except LogRefused as exc:
                self._refused(name, exc)
                raise LogRefused("%s: %s" % (what, exc) if not str(exc).startswith(what) else str(exc),
                                 fork=exc.fork, transient=exc.transient) from None
            self._pins.add((head.log, head.size))
            return head

    # -- a head on its own (the retained head topic)
    def offer_step(self, payload: bytes, steps: Optional[Steps] = None) -> str:
        """A step message of the log (its newest head): 'adopted', 'advanced', 'current' or 'known'
        (an older head already seen); LogRefused otherwise."""
        name = None
        with self._lock:
            try:
                step = parse_step(payload)
                head = verify_head(step["head"], self.trust)
                name = head.log
                held = self.held.get(head.log)
                if held is not None and step["from"] is not None and step["from_size"] == held.size \
                        and head.size > held.size:
                    prev = verify_head(step["from"], self.trust, [head.log])
                    if prev.size != step["from_size"]:
                        raise LogRefused("log step: from_size %d is not the size of its head before (%d)"
                                         % (step["from_size"], prev.size))
                    if prev.root != held.root:
                        self._fork(held, prev)
                    self._consistent(held.size, held.root, head, step["consistency"])
                    self._advance(head, [head])
                    return "advanced"
                return self._connect(head, steps)
            except LogRefused as exc:
                self._refused(name, exc)
                raise

    # -- the rule
    def _connect(self, head: TreeHead, steps: Optional[Steps]) -> str:
        """Make sure ``head`` and the head held are one history (raise LogRefused); adopt it if newer."""
        name = head.log
        held = self.held.get(name)
        if held is None:
            self._advance(head, [head])
            log.info("log %s: first tree head seen, size %d (trusted as first seen)", name, head.size)
            return "adopted"
        if head.size == held.size:
            if head.root != held.root:
                self._fork(held, head)
            return "current"
        known = self.state.seen.get(name, {}).get(head.size)
        if known is not None:
            if known != head.root.hex():
                self._fork(held, head, "a head of size %d with another root than the one accepted here before"
                           % head.size)
            return "known"
        if head.size > held.size:
            chain = self._walk(name, held, head, steps)
            self._advance(head, chain)
            return "advanced"
        chain = self._walk(name, head, held, steps)
        self._remember([head] + chain)
        return "known"

    def _walk(self, name: str, start: TreeHead, target: TreeHead, steps: Optional[Steps]) -> List[TreeHead]:
        """Follow the log's steps from ``start`` up to ``target``; the heads passed on the way."""
        chain: List[TreeHead] = []
        current, size, root = start, start.size, start.root
        for _ in range(MAX_WALK):
            if size == target.size:
                if root != target.root:
                    self._fork(target, chain[-1], "the log's chain of heads reaches size %d with another root" % size)
                return chain
            if size > target.size:
                raise LogRefused("log %s published no tree head of size %d (its heads go from below to %d); "
                                 "a head the log never published is refused" % (name, target.size, size))
            payload = steps(name, size) if steps is not None else None
            if payload is None:
                raise LogRefused("no step of log %s from tree size %d is available to show that the head of size "
                                 "%d extends it (try again once the hub's heads reach this device)"
                                 % (name, size, target.size), transient=True)
            step = parse_step(payload)
            if step["from_size"] != size or step["from"] is None:
                raise LogRefused("log %s: asked for the step from size %d, got one from %d" % (name, size, step["from_size"]))
            prev = verify_head(step["from"], self.trust, [name])
            if prev.size != size:
                raise LogRefused("log step: from_size %d is not the size of its head before (%d)" % (size, prev.size))
            if prev.root != root:
                self._fork(current, prev, "the log signed two tree heads of size %d with different roots" % size)
            nxt = verify_head(step["head"], self.trust, [name])
            self._consistent(size, root, nxt, step["consistency"])
            chain.append(nxt)
            current, size, root = nxt, nxt.size, nxt.root
        raise LogRefused("log %s: more than %d steps between tree sizes; refusing to walk further" % (name, MAX_WALK))

    def _consistent(self, size: int, root: bytes, head: TreeHead, proof: List[bytes]) -> None:
        if head.size <= size:
            raise LogRefused("log %s: a step must grow the tree, from %d to %d does not" % (head.log, size, head.size))
        try:
            merkle.verify_consistency(size, head.size, root, head.root, proof)
        except ProofError as exc:
            raise LogRefused("log %s: consistency proof from size %d to %d does not verify (%s): the log rewrote "
                             "its history, or the proof was altered on the way" % (head.log, size, head.size, exc))

    def _fork(self, a: TreeHead, b: TreeHead, why: Optional[str] = None) -> None:
        """Keep two signed heads that cannot both be true as evidence; raise the fork refusal."""
        why = why or "two tree heads of size %d with different roots" % b.size
        reason = ("log %s is forked: %s (size %d root %s, and size %d root %s, both signed by the log). Someone "
                  "shows devices different histories; keeping the last good lists"
                  % (a.log, why, a.size, a.root.hex()[:16], b.size, b.root.hex()[:16]))
        log.error("%s", reason)
        self.state.forks[a.log] = {"reason": reason, "at": int(self.clock()), "heads": [a.wire(), b.wire()]}
        self.state.save()
        raise LogRefused(reason, fork=True)

    def _advance(self, head: TreeHead, chain: List[TreeHead]) -> None:
        self.held[head.log] = head
        self.state.heads[head.log] = head.wire()
        self._remember(chain + [head], save=False)
        self.refusals.pop(head.log, None)
        self.state.save()

    def _remember(self, heads: List[TreeHead], save: bool = True) -> None:
        for h in heads:
            seen = self.state.seen.setdefault(h.log, {})
            seen[h.size] = h.root.hex()
            if len(seen) > MAX_SEEN:
                keep = set(sorted(seen)[-MAX_SEEN:]) | {s for (n, s) in self._pins if n == h.log}
                for s in [s for s in seen if s not in keep]:
                    del seen[s]
        if save:
            self.state.save()

    def _refused(self, name: Optional[str], exc: LogRefused) -> None:
        self.refusals[name or "?"] = {"reason": str(exc), "at": int(self.clock()), "fork": exc.fork}
        log.warning("log proof refused: %s", exc)

    # -- status
    def fault(self) -> bool:
        """True once a fork was seen (the LED shows a fault until the evidence is cleared)."""
        return bool(self.state.forks)

    def status(self) -> dict:
        """Per log: the head held, fork evidence, the last refusal (for `gatewatch status`)."""
        out = {}
        with self._lock:
            for name in sorted(set(self.trust.logs()) | set(self.held) | set(self.state.forks)):
                h = self.held.get(name)
                fork = self.state.forks.get(name)
                out[name] = {"size": h.size if h else None, "root": h.root.hex() if h else None,
                             "issued": h.issued if h else None,
                             "sources": self.trust.sources_in_log(name),
                             "fork": {"reason": fork.get("reason"), "at": fork.get("at")} if fork else None,
                             "last_refusal": self.refusals.get(name)}
        return out

def proof_path(list_path: str) -> str:
    """The proof file that goes with a list file: the same name with ``.proof`` for ``.gwl``."""
    return (list_path[:-4] if list_path.endswith(".gwl") else list_path) + ".proof"


def read_proof(list_path: str) -> Optional[bytes]:
    """The proof file next to ``list_path`` (bounded), or None when there is none."""
    try:
        with open(proof_path(list_path), "rb") as f:
            return f.read(MAX_MESSAGE + 1)
    except OSError:
        return None
