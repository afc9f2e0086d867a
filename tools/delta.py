"""Hub-side delta encoder (numpy) for the format of agent.core.delta; decoding stays in the core.

Owns choosing segments and Rice-coding them fast for million-entry lists. It must not change the
byte layout: anything produced here is read by ``agent.core.delta.apply`` on every device.
"""

from __future__ import annotations

import numpy as np

from agent.core import delta as core
from agent.core.delta import DeltaError, apply, parse_header  # noqa: F401  (re-exported)


def diff_positions(a: bytes, b: bytes) -> np.ndarray:
    """Sorted bit positions (LSB-first within bytes) where equal-length ``a`` and ``b`` differ."""
    if len(a) != len(b):
        raise DeltaError("diff_positions needs equal lengths")
    x = np.bitwise_xor(np.frombuffer(a, dtype=np.uint8), np.frombuffer(b, dtype=np.uint8))
    return np.flatnonzero(np.unpackbits(x, bitorder="little")).astype(np.int64)


def rice_encode(positions: np.ndarray, k: int) -> bytes:
    """Vectorised equivalent of ``agent.core.delta.rice_encode``; same bytes."""
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        return b""
    prev = np.concatenate(([-1], positions[:-1]))
    gaps = positions - prev - 1
    if (gaps < 0).any():
        raise DeltaError("positions must be sorted and distinct")
    q = gaps >> k
    lengths = q + 1 + k
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    total = int(starts[-1] + lengths[-1])
    bits = np.zeros(total, dtype=np.uint8)
    nq = int(q.sum())
    if nq:
        # unary ones: for code i, positions starts[i] .. starts[i]+q[i]-1
        base = np.repeat(starts, q)
        within = np.arange(nq, dtype=np.int64) - np.repeat(np.cumsum(q) - q, q)
        bits[base + within] = 1
    rem_start = starts + q + 1
    for j in range(k):
        bits[rem_start + j] = (gaps >> j) & 1
    return np.packbits(bits, bitorder="little").tobytes()


def _xor_segment(src_off: int, length: int, positions: np.ndarray):
    k = core.rice_parameter(int(positions.size), length * 8)
    return (core.XOR_COPY, src_off, length, int(positions.size), k, rice_encode(positions, k))


def encode(source: bytes, result: bytes) -> bytes:
    """A compact delta from ``source`` to ``result`` (both whole list files).

    The two are aligned at their ends, where the filter sits; the head (manifest, signature) of
    the result is sent literally up to the point that minimises the coded size, so the encoder
    needs no knowledge of the list layout and stays correct if that layout grows.
    """
    tail = min(len(source), len(result))
    head = len(result) - tail
    src_tail_off = len(source) - tail
    positions = diff_positions(source[src_tail_off:], result[head:]) if tail else np.zeros(0, np.int64)
    cut = 0  # bytes of the aligned tail sent literally as well
    if positions.size:
        k = core.rice_parameter(int(positions.size), tail * 8)
        per_position = k + 2.0  # bits, close enough for choosing the cut
        byte_idx = positions >> 3
        ends = np.unique(byte_idx) + 1  # candidate cuts: just after a differing byte
        # positions left after cutting at c = those in bytes >= c
        remaining = positions.size - np.searchsorted(byte_idx, ends, side="left")
        cost = 8.0 * ends + per_position * remaining
        best = int(np.argmin(cost))
        if cost[best] < per_position * positions.size:
            cut = int(ends[best])
    segs = []
    if head + cut:
        segs.append(core.literal_segment(result[:head + cut]))
    if tail - cut:
        kept = positions[positions >= cut * 8] - cut * 8
        segs.append(_xor_segment(src_tail_off + cut, tail - cut, kept))
    return core.build(source, result, segs)
