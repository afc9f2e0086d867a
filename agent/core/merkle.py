"""The transparency log's Merkle tree (RFC 9162, section 2.1): leaves, hashes, proofs; MicroPython-safe.

Owns: the leaf that stands for one list version (its byte layout), the leaf and node hashes, and
making and checking inclusion and consistency proofs. Must not touch: tree heads and their
signatures (``agent.lists.translog``), where proofs come from (files, MQTT), the hub's log store
(``tools.translog``).

Hashes (RFC 9162): a leaf hashes as SHA-256(0x00 || leaf), a node as SHA-256(0x01 || left || right),
and the tree of n leaves splits at k, the largest power of two below n: MTH(D[0:n]) =
node(MTH(D[0:k]), MTH(D[k:n])). The leaf of a list version, all integers little-endian::

    offset  size  field
    0       4     magic b"GWLF"
    4       1     format (1)
    5       1     length S of the source name, then S bytes of it (ASCII)
    ...     1     length L of the list name, then L bytes of it
    ...     1     length G of the signal name, then G bytes of it
    ...     8     u64 version
    ...     32    SHA-256 of the list file's signed bytes (magic, manifest length, manifest)

The signed bytes bind creation and expiry time, the filter and the content's digest, so the leaf
stands for exactly one list file; the names and version are in the leaf too, so that anyone reading
the log sees what each leaf is without the list file.
"""

import hashlib
import struct

try:
    from agent.core.errors import ProofError
except ImportError:  # MicroPython
    from core.errors import ProofError

LEAF_MAGIC = b"GWLF"
LEAF_FORMAT = 1
HASH_BYTES = 32
#: largest tree a device accepts a proof for: 2**48 list versions (the manifests' bound on versions)
MAX_SIZE = 1 << 48
#: no valid proof in a tree of at most MAX_SIZE leaves has more hashes than this (48 levels + 1)
MAX_PROOF = 64
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def _sha256(data):
    return hashlib.sha256(data).digest()


def leaf_hash(leaf):
    """SHA-256(0x00 || leaf)."""
    return _sha256(b"\x00" + bytes(leaf))


def node_hash(left, right):
    """SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + bytes(left) + bytes(right))


def _name(what, value):
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise ProofError("log leaf %s must be 1-64 characters" % what)
    for ch in value:
        if ch not in _NAME_CHARS:
            raise ProofError("log leaf %s %r holds a character outside letters, digits, '.', '_', '-'"
                             % (what, value))
    raw = value.encode()
    return bytes([len(raw)]) + raw


def leaf_bytes(source, name, signal, version, signed_digest):
    """The leaf of one list version (layout in the module docstring)."""
    if type(version) is not int or not 1 <= version < (1 << 64):
        raise ProofError("log leaf version must be a whole number from 1 to 2**64-1")
    if not isinstance(signed_digest, (bytes, bytearray)) or len(signed_digest) != HASH_BYTES:
        raise ProofError("log leaf digest must be 32 bytes")
    return (LEAF_MAGIC + bytes([LEAF_FORMAT]) + _name("source", source) + _name("list", name)
            + _name("signal", signal) + struct.pack("<Q", version) + bytes(signed_digest))


def leaf_of_list(manifest, signed_bytes):
    """The leaf of a list file from its manifest and signed bytes (``ListFile.signed_bytes()``)."""
    return leaf_bytes(manifest["source"], manifest["list"], manifest["signal"], manifest["version"],
                      _sha256(bytes(signed_bytes)))


def parse_leaf(leaf):
    """(source, list, signal, version, signed digest) of a leaf; ProofError when malformed."""
    leaf = bytes(leaf)
    if len(leaf) < 8 or leaf[:4] != LEAF_MAGIC or leaf[4] != LEAF_FORMAT:
        raise ProofError("not a gatewatch log leaf (bad magic or format)")
    off = 5
    names = []
    for what in ("source", "list", "signal"):
        n = leaf[off] if off < len(leaf) else 0
        raw = leaf[off + 1:off + 1 + n]
        if n == 0 or len(raw) != n:
            raise ProofError("log leaf truncated in its %s name" % what)
        try:
            text = raw.decode()
        except UnicodeError:
            raise ProofError("log leaf %s name is not text" % what)
        _name(what, text)
        names.append(text)
        off += 1 + n
    if len(leaf) != off + 8 + HASH_BYTES:
        raise ProofError("log leaf has %d bytes, its names leave room for %d" % (len(leaf), off + 8 + HASH_BYTES))
    version = struct.unpack_from("<Q", leaf, off)[0]
    if version < 1:
        raise ProofError("log leaf version must be at least 1")
    return names[0], names[1], names[2], version, leaf[off + 8:]


def split_point(n):
    """k, the largest power of two smaller than ``n`` (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root_of(hashes):
    """MTH of a list of leaf hashes (the definition itself; for small trees and tests)."""
    n = len(hashes)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return hashes[0]
    k = split_point(n)
    return node_hash(root_of(hashes[:k]), root_of(hashes[k:]))


def inclusion_proof(index, size, mth):
    """PATH(index, D[0:size]) of RFC 9162, deepest hash first; ``mth(lo, hi)`` gives MTH(D[lo:hi])."""
    if not 0 <= index < size:
        raise ProofError("leaf %d is not in a tree of %d leaves" % (index, size))
    out = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index - lo < k:
            out.append(mth(lo + k, hi))
            hi = lo + k
        else:
            out.append(mth(lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def consistency_proof(old_size, new_size, mth):
    """PROOF(old_size, D[0:new_size]) of RFC 9162 (0 < old_size <= new_size); empty when equal."""
    if not 0 < old_size <= new_size:
        raise ProofError("no consistency proof from %d to %d leaves" % (old_size, new_size))
    out = []
    m, lo, hi, complete = old_size, 0, new_size, True
    while m != hi - lo:
        k = split_point(hi - lo)
        if m <= k:
            out.append(mth(lo + k, hi))
            hi = lo + k
        else:
            out.append(mth(lo, lo + k))
            m -= k
            lo = lo + k
            complete = False
    if not complete:
        out.append(mth(lo, hi))
    out.reverse()
    return out


def _check_hashes(what, hashes):
    if not isinstance(hashes, (list, tuple)):
        raise ProofError("%s must be a list of hashes" % what)
    if len(hashes) > MAX_PROOF:
        raise ProofError("%s has %d hashes; no proof in a log of at most 2**48 leaves has over %d"
                         % (what, len(hashes), MAX_PROOF))
    for h in hashes:
        if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_BYTES:
            raise ProofError("%s holds something that is not a 32-byte hash" % what)


def _check_size(what, n, lo):
    if type(n) is not int or not lo <= n <= MAX_SIZE:
        raise ProofError("%s must be a whole number from %d to 2**48" % (what, lo))


def verify_inclusion(leaf_h, index, size, path, root):
    """Check that the leaf hashing to ``leaf_h`` is leaf ``index`` of the tree of ``size`` leaves with
    ``root`` (RFC 9162, 2.1.3.2); ProofError says why not."""
    _check_size("tree size", size, 1)
    _check_size("leaf index", index, 0)
    _check_hashes("inclusion proof", path)
    _check_hashes("leaf hash and root", [leaf_h, root])
    if index >= size:
        raise ProofError("leaf index %d is not below the tree size %d" % (index, size))
    fn, sn = index, size - 1
    r = bytes(leaf_h)
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is longer than a tree of %d leaves allows" % size)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than a tree of %d leaves needs" % size)
    if r != bytes(root):
        raise ProofError("inclusion proof does not lead to the tree head's root: this leaf is not "
                         "leaf %d of that tree" % index)


def verify_consistency(old_size, new_size, old_root, new_root, proof):
    """Check that the tree of ``old_size`` leaves with ``old_root`` is a prefix of the one of
    ``new_size`` with ``new_root`` (RFC 9162, 2.1.4.2); ProofError says why not."""
    _check_size("old tree size", old_size, 1)
    _check_size("new tree size", new_size, 1)
    _check_hashes("consistency proof", proof)
    _check_hashes("tree roots", [old_root, new_root])
    old_root, new_root = bytes(old_root), bytes(new_root)
    if old_size > new_size:
        raise ProofError("a tree of %d leaves cannot extend one of %d" % (new_size, old_size))
    if old_size == new_size:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("two tree heads of %d leaves with different roots (a fork)" % old_size)
        return
    if not proof:
        raise ProofError("consistency proof from %d to %d leaves is empty" % (old_size, new_size))
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = bytes(path[0])
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than trees of %d and %d leaves allow"
                             % (old_size, new_size))
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than trees of %d and %d leaves need" % (old_size, new_size))
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root: the tree of %d leaves was "
                         "rewritten (an earlier leaf changed)" % old_size)
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root of %d leaves" % new_size)
