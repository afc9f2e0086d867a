"""Binary fuse filters with numpy: building one (the hub) and looking up many keys at once (the scanner).

Owns: the numpy twin of ``agent.core.fuse`` (bit-for-bit the same slots and fingerprints; tests compare
both) and the construction. Must not touch files or list semantics.

Construction is the usual peeling of a 3-hypergraph (Graf & Lemire 2022, the sizes of their reference
``binary_fuse16_allocate``): every key marks its three slots; a slot that only one key marks is peeled
with that key, which may leave another slot with a single key, and so on; when every key has been
peeled, fingerprints are assigned in reverse order, each key's own slot taking whatever makes the XOR
of its three slots equal its fingerprint. A rare failure (a 2-core of the hypergraph) retries with a
fresh salt. The peeling loop is plain Python over lists: 33 s for the 7 M band keys of 1 M PDQ entries
(docs/benchmarks.md, "Candidate rules and filters").
"""

from __future__ import annotations

import math
import secrets
from typing import Optional, Tuple

import numpy as np

from agent.core import fuse as core_fuse
from agent.core.bloom import u64_pair
from agent.matching.bloom_batch import _fmix64, as_keys

_S18 = np.uint64(18)
_S32 = np.uint64(32)
_LO32 = np.uint64(0xFFFFFFFF)
MAX_TRIES = 100


def sizes(n: int) -> Tuple[int, int, int]:
    """(segment_length, segment_count, array_length) for ``n`` keys (binary fuse, arity 3)."""
    n = max(n, 2)
    segment_length = min(1 << int(math.floor(math.log(n) / math.log(3.33) + 2.25)), core_fuse.MAX_SEGMENT_LENGTH)
    segment_length = max(segment_length, 4)
    size_factor = max(1.125, 0.875 + 0.25 * math.log(1000000) / math.log(n))
    capacity = int(round(n * size_factor))
    init_segments = max((capacity + segment_length - 1) // segment_length - 2, 0)
    array_length = (init_segments + 2) * segment_length
    segment_count = (array_length + segment_length - 1) // segment_length
    segment_count = 1 if segment_count <= 2 else segment_count - 2
    return segment_length, segment_count, (segment_count + 2) * segment_length


def key_hashes(keys, salt: bytes) -> np.ndarray:
    """``agent.core.fuse.key_hash`` of many keys: (N,) uint64."""
    k = as_keys(keys)
    s0, s1 = u64_pair(salt)
    with np.errstate(over="ignore"):
        return _fmix64(k[:, 0] ^ np.uint64(s0) ^ _fmix64(k[:, 1] ^ np.uint64(s1)))


def slots(h: np.ndarray, segment_length: int, segment_count_length: int):
    """The three slots of many hashes (``agent.core.fuse.slots``), as intp arrays."""
    scl = np.uint64(segment_count_length)  # < 2^32: the 64x32-bit high product cannot overflow
    with np.errstate(over="ignore"):
        h0 = ((h >> _S32) * scl + (((h & _LO32) * scl) >> _S32)) >> _S32
    mask = np.uint64(segment_length - 1)
    length = np.uint64(segment_length)
    h1 = (h0 + length) ^ ((h >> _S18) & mask)
    h2 = (h0 + length + length) ^ (h & mask)
    return h0.astype(np.intp), h1.astype(np.intp), h2.astype(np.intp)


def fingerprints(h: np.ndarray) -> np.ndarray:
    return ((h ^ (h >> _S32)) & np.uint64(0xFFFF)).astype(np.uint16)


def contains_many(filt: core_fuse.Fuse16, keys) -> np.ndarray:
    """Membership of many keys: a boolean array."""
    h = key_hashes(keys, filt.salt)
    words = np.frombuffer(filt.content, dtype="<u2")  # a view: no copy of the filter per scan
    a, b, c = slots(h, filt.segment_length, filt.segment_count_length)
    return (words[a] ^ words[b] ^ words[c]) == fingerprints(h)


def _peel(h0, h1, h2, array_length):
    """Keys in peeling order with the slot each was peeled from, or None when the peeling sticks."""
    n = len(h0)
    count = np.zeros(array_length, dtype=np.int64)
    xor = np.zeros(array_length, dtype=np.int64)
    idx = np.arange(n, dtype=np.int64)
    for s in (h0, h1, h2):
        np.add.at(count, s, 1)
        np.bitwise_xor.at(xor, s, idx)
    count, xor = count.tolist(), xor.tolist()
    s0, s1, s2 = h0.tolist(), h1.tolist(), h2.tolist()
    stack = [i for i, c in enumerate(count) if c == 1]
    order, where = [], []
    while stack:
        s = stack.pop()
        if count[s] != 1:
            continue
        k = xor[s]
        order.append(k)
        where.append(s)
        for t in (s0[k], s1[k], s2[k]):
            xor[t] ^= k
            count[t] -= 1
            if count[t] == 1:
                stack.append(t)
    return (order, where) if len(order) == n else None


def build(keys, salt: Optional[bytes] = None) -> Tuple[bytes, dict]:
    """(content, params) of a fuse filter holding ``keys``; params has salt (hex), segment_length,
    segment_count, array_length and keys (distinct keys held). ``salt`` pins the first try (tests)."""
    k = as_keys(keys)
    segment_length, segment_count, array_length = sizes(len(k))
    for attempt in range(MAX_TRIES):
        s = salt if (salt is not None and attempt == 0) else secrets.token_bytes(16)
        h = np.unique(key_hashes(k, s))  # equal hashes are the same key to the filter
        a, b, c = slots(h, segment_length, segment_count * segment_length)
        peeled = _peel(a, b, c, array_length)
        if peeled is None:
            continue
        order, where = peeled
        f = fingerprints(h).tolist()
        a, b, c = a.tolist(), b.tolist(), c.tolist()
        words = [0] * array_length
        for key, slot in zip(reversed(order), reversed(where)):
            words[slot] = f[key] ^ words[a[key]] ^ words[b[key]] ^ words[c[key]]  # words[slot] is 0 here
        content = np.asarray(words, dtype="<u2").tobytes()
        return content, {"salt": s.hex(), "segment_length": segment_length, "segment_count": segment_count,
                         "array_length": array_length, "keys": int(len(h))}
    raise RuntimeError("no fuse filter for %d keys after %d salts" % (len(k), MAX_TRIES))
