"""Vectorised LSH band keys and multi-probe query keys for perceptual lists (PDQ, neural).

Owns: numpy versions of ``agent.core.lsh`` (identical results; tests compare them) and the choice of
probes at query time. Must not touch Bloom internals or files.
"""

from __future__ import annotations

from itertools import combinations
from typing import List, Optional, Sequence, Tuple

import numpy as np

from agent.core import lsh as core_lsh


def hash_bits(hashes: np.ndarray, nbits: int = core_lsh.HASH_BITS) -> np.ndarray:
    """(N, nbits/8) uint8 hashes -> (N, nbits) uint8 bits, column i = bit i (coefficient i)."""
    hashes = np.asarray(hashes, dtype=np.uint8).reshape(-1, nbits // 8)
    return np.unpackbits(hashes[:, ::-1], axis=1, bitorder="little")


def band_values_many(hashes: np.ndarray, bands: int, nbits: int = core_lsh.HASH_BITS) -> np.ndarray:
    """(N, nbits/8) uint8 hashes -> (N, B) uint64 band values."""
    bits = hash_bits(hashes, nbits)
    out = np.zeros((bits.shape[0], bands), dtype=np.uint64)
    for j in range(bands):
        cols = bits[:, j::bands].astype(np.uint64)
        weights = np.left_shift(np.uint64(1), np.arange(cols.shape[1], dtype=np.uint64))
        out[:, j] = (cols * weights).sum(axis=1, dtype=np.uint64)
    return out


def band_keys_many(hashes: np.ndarray, bands: int, nbits: int = core_lsh.HASH_BITS,
                   tag: int = core_lsh.TAG) -> np.ndarray:
    """(N, nbits/8) hashes -> (N*B, 2) uint64 Bloom keys, band-major within each hash."""
    values = band_values_many(hashes, bands, nbits)
    n = values.shape[0]
    keys = np.empty((n, bands, 2), dtype=np.uint64)
    keys[:, :, 0] = values
    keys[:, :, 1] = np.uint64(tag | (bands << 8)) + np.arange(bands, dtype=np.uint64)
    return keys.reshape(-1, 2)


def probes(pdq: bytes, margins: Optional[np.ndarray], bands: int, flip_bits: int,
           depth: int, nbits: int = core_lsh.HASH_BITS) -> List[Tuple[int, int]]:
    """The (band, value) pairs to look up for one query hash.

    Each band is probed as it is and, when margins are known, with every combination of up to
    ``depth`` of its ``flip_bits`` least reliable bits flipped: a transformed copy of an image flips
    mostly bits whose DCT coefficient sat near the median, which is exactly what margins measure.
    """
    values = core_lsh.band_values(pdq, bands, nbits)
    out = []
    for j, v in enumerate(values):
        out.append((j, v))
        if margins is None or flip_bits <= 0 or depth <= 0:
            continue
        idx = np.arange(j, nbits, bands)
        order = np.argsort(np.asarray(margins)[idx], kind="stable")[:flip_bits]
        for r in range(1, depth + 1):
            for combo in combinations(order.tolist(), r):
                mask = 0
                for t in combo:
                    mask |= 1 << t
                out.append((j, v ^ mask))
    return out


def probe_keys(pairs: Sequence[Tuple[int, int]], bands: int, tag: int = core_lsh.TAG) -> np.ndarray:
    """(band, value) pairs -> (N, 2) uint64 Bloom keys."""
    arr = np.empty((len(pairs), 2), dtype=np.uint64)
    for i, (j, v) in enumerate(pairs):
        arr[i, 0] = v
        arr[i, 1] = tag | (bands << 8) | j
    return arr
