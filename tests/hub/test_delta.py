"""Delta codec: round trips, equivalence of the numpy and pure encoders, and refusal of bad deltas."""

import hashlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools import delta as hub_delta
from agent.core import delta as core_delta
from agent.core.delta import DeltaError


def _flip(data: bytes, positions) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[p >> 3] ^= 1 << (p & 7)
    return bytes(out)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.data())
def test_round_trip_both_encoders(source, data):
    flips = data.draw(st.lists(st.integers(0, max(0, len(source) * 8 - 1)), max_size=40)) if source else []
    head = data.draw(st.binary(max_size=24))
    drop = data.draw(st.integers(0, min(6, len(source))))
    result = head + _flip(source, flips)[drop:]
    for encode in (hub_delta.encode, core_delta.encode):
        d = encode(source, result)
        assert core_delta.apply(source, d) == result


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 200000), unique=True, max_size=300), st.integers(0, 14))
def test_rice_numpy_equals_pure(positions, k):
    positions = sorted(positions)
    coded = core_delta.rice_encode(positions, k)
    assert hub_delta.rice_encode(np.array(positions, dtype=np.int64), k) == coded
    assert core_delta.rice_decode(coded, len(positions), k, 200001) == positions


def test_sparse_filter_change_is_compact():
    rng = np.random.default_rng(7)
    size = 200_000  # bytes of "filter"
    source = b"manifest-v1" + rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    pos = np.sort(rng.choice(size * 8, 2000, replace=False))
    result = b"manifest-v2-longer" + _flip(source[11:], pos.tolist())
    d = hub_delta.encode(source, result)
    assert core_delta.apply(source, d) == result
    # ~2000 positions over 1.6M bits: Rice costs ~12 bits each; the literal head is tiny.
    assert len(d) < 2000 * 2 + 200, len(d)


def _delta():
    source = os.urandom(500)
    result = b"hdr" + _flip(source, [3, 77, 900, 3999])
    return source, result, hub_delta.encode(source, result)


def test_refuses_delta_for_another_source():
    source, result, d = _delta()
    with pytest.raises(DeltaError, match="another version"):
        core_delta.apply(_flip(source, [1]), d)


def test_refuses_tampered_delta():
    source, result, d = _delta()
    for i in range(core_delta.HEADER_LEN, len(d)):
        bad = bytearray(d)
        bad[i] ^= 0x10
        with pytest.raises(DeltaError):
            core_delta.apply(source, bytes(bad))


def test_refuses_truncated_and_trailing():
    source, result, d = _delta()
    for cut in (0, 3, core_delta.HEADER_LEN, len(d) - 1):
        with pytest.raises(DeltaError):
            core_delta.apply(source, d[:cut])
    with pytest.raises(DeltaError, match="trailing"):
        core_delta.apply(source, d + b"\0")


def test_refuses_result_over_cap():
    source, result, d = _delta()
    with pytest.raises(DeltaError, match="cap"):
        core_delta.apply(source, d, max_len=len(result) - 1)
    assert core_delta.apply(source, d, max_len=len(result)) == result


def test_header_names_result_digest():
    source, result, d = _delta()
    src_len, src_sha, dst_len, dst_sha, nseg = core_delta.parse_header(d)
    assert (src_len, dst_len) == (len(source), len(result))
    assert src_sha == hashlib.sha256(source).digest()
    assert dst_sha == hashlib.sha256(result).digest()
