"""Vectorised Bloom filter positions, insertion and lookup with numpy.

Owns: the numpy twin of ``agent.core.bloom.Bloom.positions``; it must stay bit-for-bit identical
(tests compare both on random keys, and the golden list file pins the layout). Must not touch files
or list semantics.
"""

from __future__ import annotations

import numpy as np

from agent.core.bloom import FMIX_C1, FMIX_C2, GOLDEN, KEY_BYTES, Bloom

_C1 = np.uint64(FMIX_C1)
_C2 = np.uint64(FMIX_C2)
_GOLD = np.uint64(GOLDEN)
_S33 = np.uint64(33)
_S32 = np.uint64(32)
_ONE = np.uint64(1)


def _fmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> _S33)
    x *= _C1
    x ^= x >> _S33
    x *= _C2
    x ^= x >> _S33
    return x


def as_keys(keys) -> np.ndarray:
    """Keys as an (N, 2) little-endian uint64 array, from (N, 16) uint8, bytes, or a list of bytes."""
    if isinstance(keys, np.ndarray):
        arr = keys
    elif isinstance(keys, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(bytes(keys), dtype=np.uint8)
    else:
        arr = np.frombuffer(b"".join(bytes(k) for k in keys), dtype=np.uint8)
    if arr.dtype == np.uint8:
        if arr.size % KEY_BYTES:
            raise ValueError("key bytes are not a multiple of %d" % KEY_BYTES)
        arr = np.ascontiguousarray(arr.reshape(-1, KEY_BYTES)).view("<u8")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError("keys must be (N, 2) uint64 or (N, 16) uint8")
    return arr.astype(np.uint64, copy=False)


def hashes(bloom: Bloom, keys: np.ndarray):
    """Vectorised (h1, h2) for (N, 2) uint64 keys."""
    with np.errstate(over="ignore"):
        x = _fmix64(keys[:, 1] ^ np.uint64(bloom.s1))
        h1 = _fmix64(keys[:, 0] ^ np.uint64(bloom.s0) ^ x)
        h2 = _fmix64(h1 ^ _GOLD) | _ONE
    return h1, h2


def _probe(h1: np.ndarray, h2: np.ndarray, i: int, m: np.uint64) -> np.ndarray:
    with np.errstate(over="ignore"):
        g = _fmix64(h1 + np.uint64(i) * h2) >> _S32
        return (g * m) >> _S32


def positions(bloom: Bloom, keys) -> np.ndarray:
    """All probe positions, shape (N, k), uint64."""
    k = as_keys(keys)
    h1, h2 = hashes(bloom, k)
    m = np.uint64(bloom.m)
    return np.stack([_probe(h1, h2, i, m) for i in range(bloom.k)], axis=1)


def add_many(bloom: Bloom, keys) -> None:
    """Insert many keys at once."""
    pos = positions(bloom, keys).ravel()
    arr = np.frombuffer(bloom.bits, dtype=np.uint8)
    bytes_idx = (pos >> np.uint64(3)).astype(np.intp)
    masks = (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8)).astype(np.uint8)
    np.bitwise_or.at(arr, bytes_idx, masks)


def contains_many(bloom: Bloom, keys) -> np.ndarray:
    """Membership of many keys: a boolean array.

    Probes run one round at a time over the keys still alive: in a filter at its design fill about
    half the bits are set, so a key that is absent survives each round with probability ~1/2 and the
    average absent key costs two probes instead of k.
    """
    k = as_keys(keys)
    h1, h2 = hashes(bloom, k)
    m = np.uint64(bloom.m)
    arr = np.frombuffer(bloom.bits, dtype=np.uint8)
    alive = np.arange(len(k), dtype=np.intp)
    for i in range(bloom.k):
        if not alive.size:
            break
        p = _probe(h1, h2, i, m)
        hit = (arr[(p >> np.uint64(3)).astype(np.intp)] >> (p & np.uint64(7)).astype(np.uint8)) & 1
        keep = hit.astype(bool)
        alive = alive[keep]
        h1 = h1[keep]
        h2 = h2[keep]
    out = np.zeros(len(k), dtype=bool)
    out[alive] = True
    return out
