"""The hub's transparency log: an append-only folder of list-version leaves and signed tree heads.

Owns: the log folder (``log.json``, ``leaves``, ``heads``), appending list versions, signing tree
heads with the log's own key (never a list-signing key), the Merkle tree over the leaves and the
proofs devices need, the proof files and the ``<log>.heads`` file written next to built lists, the
log's MQTT messages, and the audit (``gatewatch-hub log verify``). Must not touch: the formats a
device reads (``agent.core.merkle``, ``agent.lists.translog``: imported from there, never
redefined), list signing, the network (the publisher sends the messages made here).

The folder is public: anyone may copy it and audit it. Layout (docs/transparency.md)::

    log.json   {"format": 1, "log": NAME, "public_key": "<the log key line>"}
    leaves     one leaf a line, lowercase hex (agent.core.merkle leaf layout), appended only
    heads      one step a line (agent.lists.translog.step_bytes): each signed head with the head
               before it and the consistency proof between them, appended only
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from typing import Dict, Iterable, List, Optional, Tuple

from agent.atomicfile import write_atomic
from agent.core import listfile, merkle
from agent.core.errors import ConfigError, GatewatchError, ListFormatError
from agent.lists import translog as device
from agent.lists.store import gwl_files
from agent.lists.trust import TrustStore, check_name, key_id, log_key_line, parse_log_key

FORMAT = 1
LOG_FILE, LEAVES_FILE, HEADS_FILE, LOCK_FILE = "log.json", "leaves", "heads", ".lock"


class LogAuditError(GatewatchError, ValueError):
    """``log verify`` found a bad point in a log; the message names the first one."""


# ----------------------------------------------------------------------------- the tree

class MerkleTree:
    """RFC 9162 tree over leaf hashes, every complete aligned subtree kept (one flat bytes per level),
    so that any subtree hash, root or proof costs O(log n) hashes."""

    def __init__(self, leaf_hashes: bytes):
        self.size = len(leaf_hashes) // 32
        self.levels = [bytes(leaf_hashes)]
        sha = hashlib.sha256
        while len(self.levels[-1]) >= 64:
            prev = self.levels[-1]
            self.levels.append(b"".join(sha(b"\x01" + prev[i:i + 64]).digest()
                                        for i in range(0, len(prev) - 63, 64)))

    @classmethod
    def of_leaves(cls, leaves: Iterable[bytes]) -> "MerkleTree":
        sha = hashlib.sha256
        return cls(b"".join(sha(b"\x00" + leaf).digest() for leaf in leaves))

    def mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for 0 <= lo < hi <= size."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            level = n.bit_length() - 1
            j = (lo >> level) * 32
            return self.levels[level][j:j + 32]
        k = merkle.split_point(n)
        return merkle.node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def root(self, size: Optional[int] = None) -> bytes:
        size = self.size if size is None else size
        return self.mth(0, size) if size else hashlib.sha256(b"").digest()

    def inclusion(self, index: int, size: int) -> List[bytes]:
        return merkle.inclusion_proof(index, size, self.mth)

    def consistency(self, old: int, new: int) -> List[bytes]:
        return merkle.consistency_proof(old, new, self.mth)


# ----------------------------------------------------------------------------- keys

def generate_log_keys(out_dir: str, name: str, log: str, sources: List[str]) -> Tuple[str, str]:
    """Write ``<name>.key`` (0600) and ``<name>.pub`` (the log key line naming ``log`` and ``sources``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tools.build import _makedirs, _undo_on_error, _write, check_out_dir

    check_name("log", log)
    check_name("key", name)
    check_out_dir(out_dir, "--keys-out")
    priv_path, pub_path = os.path.join(out_dir, name + ".key"), os.path.join(out_dir, name + ".pub")
    for p in (priv_path, pub_path):
        if os.path.lexists(p):
            raise ConfigError("%s exists; refusing to overwrite a key (move it away first)" % p)
    private = Ed25519PrivateKey.generate()
    line = log_key_line(private.public_key(), log, sources)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with _undo_on_error() as created:
        _makedirs(out_dir, created)
        _write(priv_path, pem, created, mode=0o600)
        _write(pub_path, line.encode(), created)
    return priv_path, pub_path


# ----------------------------------------------------------------------------- the log folder

def leaf_of_file(data: bytes) -> Tuple[bytes, dict]:
    """(leaf, manifest) of a list file's bytes (unverified: the hub's own files)."""
    lf = listfile.parse(data)
    return merkle.leaf_of_list(lf.manifest, lf.signed_bytes()), lf.manifest


def _read_list(path: str) -> Tuple[bytes, dict]:
    try:
        with open(path, "rb") as f:
            return leaf_of_file(f.read())
    except OSError as e:
        raise ConfigError("cannot read list %s: %s" % (path, e.strerror or e))
    except ListFormatError as e:
        raise ConfigError("%s is not a list file: %s" % (path, e))


class LogStore:
    """One log folder on the hub: its leaves and heads, appended under a lock, never rewritten."""

    def __init__(self, folder: str):
        self.folder = folder
        path = os.path.join(folder, LOG_FILE)
        try:
            with open(path, "r", encoding="utf-8") as f:
                doc = json.load(f)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not a format %d log" % FORMAT)
            self.name = check_name("log", doc["log"])
            self.public, named, self.sources = parse_log_key(doc["public_key"], path)
        except FileNotFoundError:
            raise ConfigError("%s is not a log folder (no %s): create it with `gatewatch-hub log init`" % (folder, LOG_FILE))
        except (OSError, ValueError, KeyError, TypeError, GatewatchError) as e:
            raise ConfigError("%s is damaged: %s" % (path, e))
        if named != self.name:
            raise ConfigError("%s: its key names log %r, not %r" % (path, named, self.name))
        self.key_id = key_id(self.public)
        self._tree: Optional[MerkleTree] = None
        self._leaves: Optional[List[bytes]] = None
        self._where: Optional[Dict[bytes, int]] = None

    @classmethod
    def create(cls, folder: str, name: str, public_key_line: str) -> "LogStore":
        """A new, empty log folder (refuses to touch an existing log)."""
        check_name("log", name)
        if os.path.exists(os.path.join(folder, LOG_FILE)):
            raise ConfigError("%s already holds a log; a log is never started again" % folder)
        os.makedirs(folder, exist_ok=True)
        for n in (LEAVES_FILE, HEADS_FILE):
            write_atomic(os.path.join(folder, n), b"")
        doc = {"format": FORMAT, "log": name, "public_key": public_key_line.strip()}
        write_atomic(os.path.join(folder, LOG_FILE), (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode())
        return cls(folder)

    def trust(self) -> TrustStore:
        """A trust store with this log's key (to read its own heads back)."""
        t = TrustStore()
        t.add_log(self.name, self.public, self.sources)
        return t

    # -- reading
    def leaves(self) -> List[bytes]:
        if self._leaves is None:
            out = []
            with open(os.path.join(self.folder, LEAVES_FILE), "rb") as f:
                for line in f:
                    if line.endswith(b"\n"):  # a line cut short by a crash was never part of a head
                        out.append(bytes.fromhex(line.decode("ascii").strip()))
            self._leaves = out
        return self._leaves

    def steps(self) -> List[bytes]:
        """Every step line (signed head with its proof from the one before), oldest first."""
        with open(os.path.join(self.folder, HEADS_FILE), "rb") as f:
            return [line.rstrip(b"\n") for line in f if line.endswith(b"\n")]

    def newest_head(self) -> Optional[device.TreeHead]:
        steps = self.steps()
        if not steps:
            return None
        return device.verify_head(device.parse_step(steps[-1])["head"], self.trust())

    def tree(self) -> MerkleTree:
        if self._tree is None or self._tree.size != len(self.leaves()):
            self._tree = MerkleTree.of_leaves(self.leaves())
        return self._tree

    def index_of(self, leaf: bytes) -> Optional[int]:
        if self._where is None or len(self._where) != len(self.leaves()):
            self._where = {other: i for i, other in enumerate(self.leaves())}
        return self._where.get(leaf)

    # -- appending
    def append(self, paths: List[str], key) -> Tuple[List[int], Optional[device.TreeHead]]:
        """Append the list files at ``paths`` (those already in the log are kept where they are) and
        sign a new head over every leaf; returns (their indices, the new head or None if nothing new)."""
        if key_id(key.public_key()) != self.key_id:
            raise ConfigError("the key given is not the key of log %s (%s is, per %s): tree heads must be "
                              "signed with the log's own key" % (self.name, self.key_id, LOG_FILE))
        items = [_read_list(p) for p in paths]
        for _leaf, m in items:
            if m["source"] not in self.sources:
                raise ConfigError("list %s/%s is of source %r, which log %s does not hold (it holds %s)"
                                  % (m["source"], m["list"], m["source"], self.name, ", ".join(self.sources)))
        with open(os.path.join(self.folder, LOCK_FILE), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two builds appending at once take turns
            self._leaves = self._tree = self._where = None
            leaves = self.leaves()
            where = {leaf: i for i, leaf in enumerate(leaves)}
            versions = {merkle.parse_leaf(leaf)[:4]: i for i, leaf in enumerate(leaves)}
            new, indices = [], []
            for leaf, m in items:
                if leaf in where:
                    indices.append(where[leaf])
                    continue
                ident = (m["source"], m["list"], m["signal"], m["version"])
                if ident in versions:
                    raise ConfigError("%s/%s v%d is already leaf %d of log %s with another list file; a version "
                                      "is logged once: build a new version" % (m["source"], m["list"], m["version"],
                                                                            versions[ident], self.name))
                where[leaf] = versions[ident] = len(leaves) + len(new)
                indices.append(where[leaf])
                new.append(leaf)
            if not new:
                return indices, None
            with open(os.path.join(self.folder, LEAVES_FILE), "ab") as f:
                f.write(b"".join(leaf.hex().encode("ascii") + b"\n" for leaf in new))
                f.flush()
                os.fsync(f.fileno())
            self._leaves = leaves + new
            head = self._sign(key)
        return indices, head

    def _sign(self, key) -> device.TreeHead:
        """Sign a head over every leaf and append its step (the lock is held)."""
        steps = self.steps()
        tree = self.tree()
        prev = device.parse_step(steps[-1]) if steps else None
        prev_size = device.parse_head(prev["head"]).size if prev else 0
        if tree.size <= prev_size:
            raise ConfigError("log %s: nothing new to sign over (size %d)" % (self.name, tree.size))
        doc = {"type": device.HEAD_TYPE, "format": device.FORMAT, "log": self.name, "size": tree.size,
               "root": tree.root().hex(), "issued": int(time.time()), "key_id": self.key_id}
        signed = device.encode_signed(doc)
        wire = device.head_wire(signed, key.sign(device.head_message(signed)))
        proof = tree.consistency(prev_size, tree.size) if prev_size else []
        line = device.step_bytes(prev["head"] if prev else None, wire, prev_size, proof)
        with open(os.path.join(self.folder, HEADS_FILE), "ab") as f:
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return device.parse_head(wire)

    # -- what devices get
    def head_of_size(self, size: int) -> Optional[device.TreeHead]:
        """The head this log signed at ``size`` leaves, or None."""
        for line in self.steps():
            head = device.parse_head(device.parse_step(line)["head"])
            if head.size == size:
                return head
        return None

    def proof_for(self, leaf: bytes, what: str = "list", size: Optional[int] = None) -> bytes:
        """The proof of ``leaf`` under the newest head (or the head of ``size``); ConfigError when it is
        not (yet) in the log."""
        head = self.newest_head() if size is None else self.head_of_size(size)
        i = self.index_of(leaf)
        if i is None or head is None or i >= head.size:
            s, n, _sig, v, _d = merkle.parse_leaf(leaf)
            raise ConfigError("%s %s/%s v%d is not in log %s: append it first (`gatewatch-hub log append --log %s "
                              "--key LOGKEY FILE`)" % (what, s, n, v, self.name, self.folder))
        return device.proof_bytes(head.wire(), i, self.tree().inclusion(i, head.size))

    def write_folder(self, directory: str) -> int:
        """Write the proof of every list file in ``directory`` that is in the log (under the newest
        head) and the log's ``<log>.heads``; returns how many proofs were written."""
        n = 0
        for path in gwl_files(directory):
            leaf, _m = _read_list(path)
            try:
                proof = self.proof_for(leaf)
            except ConfigError:
                continue  # a list this log does not hold (another source, or not appended)
            write_atomic(device.proof_path(path), proof)
            n += 1
        with open(os.path.join(self.folder, HEADS_FILE), "rb") as f:
            write_atomic(os.path.join(directory, device.steps_file_name(self.name)), f.read())
        return n

    def messages(self, topics, after_size: int = 0) -> List[Tuple[str, bytes]]:
        """Retained MQTT messages: every step to a head bigger than ``after_size`` (the newest head the
        broker holds), then the newest step on the head topic."""
        out = []
        for line in self.steps():
            step = device.parse_step(line)
            if device.parse_head(step["head"]).size > after_size and step["from_size"] > 0:
                out.append((topics.log_step(self.name, step["from_size"]), line))
        steps = self.steps()
        if steps:
            out.append((topics.log_head(self.name), steps[-1]))
        return out


# ----------------------------------------------------------------------------- the audit

def _fail(msg: str) -> None:
    raise LogAuditError(msg)


def _heads_in(path: str) -> List[dict]:
    """Head objects in a file someone kept: a head, a step, a proof, or a device's log-heads.json."""
    try:
        with open(path, "rb") as f:
            raw = f.read(device.MAX_STATE_BYTES + 1)
        doc = json.loads(raw)
    except (OSError, ValueError) as e:
        raise ConfigError("--known-head %s is not readable JSON: %s" % (path, getattr(e, "strerror", None) or e))
    if isinstance(doc, dict) and set(doc) == {"schema", "signed", "signature"}:
        return [doc]
    if isinstance(doc, dict) and isinstance(doc.get("head"), dict):
        return [doc["head"]] + ([doc["from"]] if isinstance(doc.get("from"), dict) else [])
    if isinstance(doc, dict) and isinstance(doc.get("logs"), dict):
        out = []
        for item in doc["logs"].values():
            if isinstance(item, dict) and isinstance(item.get("head"), dict):
                out.append(item["head"])
            for fork_head in (item.get("fork") or {}).get("heads", []) if isinstance(item, dict) else []:
                out.append(fork_head)
        return out
    raise ConfigError("--known-head %s holds no tree head (give a head, a step, a .proof or log-heads.json)" % path)


def audit(folder: str, *, key_path: Optional[str] = None, lists_dir: Optional[str] = None,
          known: Iterable[str] = ()) -> dict:
    """Recompute every leaf and head of the log in ``folder`` and check each head against the one
    before; raise LogAuditError naming the first bad point, else return a summary.

    ``key_path``: the log key the auditor trusts (default: the one log.json names). ``lists_dir``: a
    folder of lists whose every file must be in the log (and whose proofs must verify). ``known``:
    files of heads seen elsewhere (a device's log-heads.json, an earlier audit): each must match.
    """
    store = LogStore(folder)
    if key_path:
        try:
            with open(key_path, "r", encoding="utf-8") as f:
                public, named, _sources = parse_log_key(f.read(4096), key_path)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError("cannot read log key %s: %s" % (key_path, getattr(e, "strerror", None) or e))
        if named != store.name:
            _fail("log.json: this is log %r, the key you trust is for log %r" % (store.name, named))
        if key_id(public) != store.key_id:
            _fail("log.json: names key %s, not the key you trust (%s): someone replaced the log's key"
                  % (store.key_id, key_id(public)))
    trust = store.trust()
    # leaves: each one parses, none repeats, no list version appears with two list files
    leaves: List[bytes] = []
    versions: Dict[tuple, int] = {}
    seen: Dict[bytes, int] = {}
    with open(os.path.join(folder, LEAVES_FILE), "rb") as f:
        for n, line in enumerate(f):
            if not line.endswith(b"\n"):
                _fail("leaf %d: cut short (no end of line); the log file was damaged" % n)
            try:
                leaf = bytes.fromhex(line.decode("ascii").strip())
                fields = merkle.parse_leaf(leaf)
            except (ValueError, UnicodeDecodeError, GatewatchError) as e:
                _fail("leaf %d: not a list-version leaf (%s)" % (n, e))
            if leaf in seen:
                _fail("leaf %d repeats leaf %d; a version is logged once" % (n, seen[leaf]))
            if fields[:4] in versions:
                _fail("leaf %d: %s/%s v%d is already leaf %d with another list file: the source signed two "
                      "different lists under one version" % (n, fields[0], fields[1], fields[3], versions[fields[:4]]))
            seen[leaf] = versions[fields[:4]] = n
            leaves.append(leaf)
    tree = MerkleTree.of_leaves(leaves)
    # heads: each signed by the log, each consistent with the one before, each root recomputed
    prev_head: Optional[device.TreeHead] = None
    heads: Dict[int, bytes] = {}
    lines = store.steps()
    for i, line in enumerate(lines):
        try:
            step = device.parse_step(line)
            head = device.verify_head(step["head"], trust, [store.name])
        except GatewatchError as e:
            _fail("head %d: %s" % (i, e))
        where = "head %d (size %d)" % (i, head.size)
        if prev_head is not None:
            if head.size == prev_head.size:
                _fail("%s: a fork: head %d has the same size with %s root" % (
                    where, i - 1, "another" if head.root != prev_head.root else "the same"))
            if head.size < prev_head.size:
                _fail("%s is smaller than head %d (size %d): a smaller head after a bigger one, the history was "
                      "rewritten" % (where, i - 1, prev_head.size))
            if step["from"] is None or device.parse_head(step["from"]).signed != prev_head.signed:
                _fail("%s: its step does not start from head %d, the head published before it" % (where, i - 1))
            try:
                merkle.verify_consistency(prev_head.size, head.size, prev_head.root, head.root, step["consistency"])
            except GatewatchError as e:
                _fail("%s: not consistent with head %d (size %d): %s" % (where, i - 1, prev_head.size, e))
        elif step["from"] is not None:
            _fail("%s: the first head's step names a head before it" % where)
        if head.size > tree.size:
            _fail("%s covers more leaves than the log holds (%d)" % (where, tree.size))
        if tree.root(head.size) != head.root:
            _fail("%s: its root does not match the leaves: a leaf below index %d was changed after this head was "
                  "signed%s" % (where, head.size, " (the heads up to size %d still match)" % prev_head.size
                                if prev_head is not None else ""))
        heads[head.size] = head.signed
        prev_head = head
    summary = {"log": store.name, "leaves": tree.size, "heads": len(lines),
               "size": prev_head.size if prev_head else 0,
               "root": prev_head.root.hex() if prev_head else None,
               "unsigned_leaves": tree.size - (prev_head.size if prev_head else 0)}
    if lists_dir is not None:
        summary["lists_checked"] = _audit_lists(lists_dir, store, trust, tree, seen, heads)
    checked = 0
    for path in known:
        for obj in _heads_in(path):
            try:
                head = device.verify_head(obj, trust, [store.name])
            except GatewatchError as e:
                _fail("known head in %s: %s" % (path, e))
            if head.size > tree.size or tree.root(head.size) != head.root:
                _fail("known head of size %d in %s does not match the log: the log was rewritten after it was "
                      "seen, or shows others another history (a fork)" % (head.size, path))
            checked += 1
    summary["known_heads_checked"] = checked
    return summary


def _audit_lists(lists_dir: str, store: LogStore, trust: TrustStore, tree: MerkleTree,
                 seen: Dict[bytes, int], heads: Dict[int, bytes]) -> int:
    n = 0
    for path in gwl_files(lists_dir):
        name = os.path.basename(path)
        leaf, m = _read_list(path)
        if m["source"] not in store.sources:
            continue
        i = seen.get(leaf)
        if i is None:
            _fail("%s: %s/%s v%d is not in the log" % (name, m["source"], m["list"], m["version"]))
        proof = device.read_proof(path)
        if proof is not None:
            try:
                head_obj, index, path_hashes = device.parse_proof(proof)
                head = device.verify_head(head_obj, trust, [store.name])
                merkle.verify_inclusion(merkle.leaf_hash(leaf), index, head.size, path_hashes, head.root)
            except GatewatchError as e:
                _fail("%s: its proof does not verify: %s" % (os.path.basename(device.proof_path(path)), e))
            if heads.get(head.size) != head.signed:
                _fail("%s: its proof's head (size %d) is not one the log published" % (
                    os.path.basename(device.proof_path(path)), head.size))
        n += 1
    return n
