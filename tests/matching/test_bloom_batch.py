"""Bloom filter: the pure-Python core and the numpy twin agree; sizing and measured false positives."""

import math
import os

import numpy as np
import pytest

from agent.matching import bloom_batch
from agent.core.bloom import Bloom, optimal_parameters, expected_fp_rate
from agent.core.errors import ListFormatError


def random_keys(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 16), dtype=np.uint8)


def test_core_and_numpy_positions_agree():
    b = Bloom(1_000_003, 13, os.urandom(16))
    keys = random_keys(500, 1)
    batch = bloom_batch.positions(b, keys)
    for i in range(len(keys)):
        assert [int(p) for p in batch[i]] == b.positions(bytes(keys[i]))


def test_add_and_lookup_agree_between_core_and_numpy():
    b1 = Bloom(20_000, 7, b"\x01" * 16)
    b2 = Bloom(20_000, 7, b"\x01" * 16)
    keys = random_keys(1000, 2)
    for k in keys:
        b1.add(bytes(k))
    bloom_batch.add_many(b2, keys)
    assert b1.bits == b2.bits
    assert bloom_batch.contains_many(b1, keys).all()
    assert all(bytes(k) in b2 for k in keys)
    probe = random_keys(5000, 3)
    assert list(bloom_batch.contains_many(b1, probe)) == [bytes(k) in b1 for k in probe]


def test_salt_changes_every_position():
    key = bytes(range(16))
    a = Bloom(10_000, 5, b"\x00" * 16).positions(key)
    b = Bloom(10_000, 5, b"\x01" + b"\x00" * 15).positions(key)
    assert a != b


def test_bad_parameters_are_refused():
    with pytest.raises(ListFormatError):
        Bloom(10, 3, b"\x00" * 16)
    with pytest.raises(ListFormatError):
        Bloom(1000, 3, b"\x00" * 8)
    with pytest.raises(ListFormatError):
        Bloom(1000, 3, b"\x00" * 16, bits=bytearray(3))
    with pytest.raises(ListFormatError):
        optimal_parameters(1000, 1.5)
    with pytest.raises(ValueError):
        Bloom(1000, 3, b"\x00" * 16).contains(b"short")


@pytest.mark.slow
# Query counts put the 1.25x bounds over 4 standard deviations of the Poisson count away
@pytest.mark.parametrize("fp_rate,queries", [(1e-3, 20_000_000), (1e-6, 300_000_000)])
def test_million_entry_filter_meets_its_design_rate(fp_rate, queries):
    n = 1_000_000
    m, k = optimal_parameters(n, fp_rate)
    optimum_bits = -n * math.log(fp_rate) / math.log(2) ** 2
    assert m <= optimum_bits * 1.02, "size must be within 2% of the Bloom optimum"
    b = Bloom(m, k, os.urandom(16))
    members = random_keys(n, 10)
    bloom_batch.add_many(b, members)
    assert bloom_batch.contains_many(b, members).all(), "no false negatives"
    rng = np.random.default_rng(11)
    false = 0
    batch = 5_000_000
    for start in range(0, queries, batch):
        q = rng.integers(0, 2**63, size=(min(batch, queries - start), 2), dtype=np.uint64)
        false += int(bloom_batch.contains_many(b, q).sum())
    measured = false / queries
    design = expected_fp_rate(m, k, n)
    print("fp_rate %g: m=%d bits (%.4f of optimum), k=%d, measured %.3e over %d queries (%.3fx design)"
          % (fp_rate, m, m / optimum_bits, k, measured, queries, measured / fp_rate))
    assert abs(design / fp_rate - 1) < 0.1
    assert fp_rate / 1.25 <= measured <= fp_rate * 1.25, (measured, fp_rate, false)
