"""Binary fuse filters built with numpy (the hub) and looked up in bulk (the scanner), against the core reader."""

import os

import numpy as np
import pytest

from agent.core import fuse
from agent.matching import fuse_batch
from tests.core import test_fuse as pinned


def random_keys(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 16), dtype=np.uint8)


def reader(content, params):
    return fuse.Fuse16(bytes.fromhex(params["salt"]), params["segment_length"], params["segment_count"],
                       params["array_length"], content)


def test_builds_the_pinned_filter_of_the_core_tests():
    content, params = fuse_batch.build(pinned.KEYS, salt=pinned.SALT)
    assert content == pinned.CONTENT
    assert (params["segment_length"], params["segment_count"], params["array_length"]) == (
        pinned.SEGMENT_LENGTH, pinned.SEGMENT_COUNT, pinned.ARRAY_LENGTH)
    assert params["keys"] == len(pinned.KEYS)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 100, 1000, 50000])
def test_every_key_is_found_at_every_size(n):
    keys = random_keys(n, n)
    content, params = fuse_batch.build(keys)
    f = reader(content, params)
    assert len(content) == 2 * params["array_length"]
    assert fuse_batch.contains_many(f, keys).all()
    for key in keys[:300]:
        assert bytes(key) in f


def test_numpy_lookups_equal_the_core_reader():
    content, params = fuse_batch.build(random_keys(3000, 1))
    f = reader(content, params)
    queries = np.concatenate([random_keys(3000, 1)[:500], random_keys(3000, 2)])
    many = fuse_batch.contains_many(f, queries)
    assert many.tolist() == [bytes(q) in f for q in queries]
    h = fuse_batch.key_hashes(queries, f.salt)
    for i in range(0, len(queries), 97):  # the slot arithmetic too, high product included
        assert int(h[i]) == fuse.key_hash(bytes(queries[i]), f.s0, f.s1)
        assert tuple(int(s[i]) for s in fuse_batch.slots(h, f.segment_length, f.segment_count_length)) == \
            fuse.slots(int(h[i]), f.segment_length, f.segment_count_length)


def test_false_positive_rate_is_two_to_the_minus_sixteen():
    content, params = fuse_batch.build(random_keys(20000, 3))
    f = reader(content, params)
    n = 1_000_000
    fp = int(fuse_batch.contains_many(f, random_keys(n, 4)).sum())
    assert 5 <= fp <= 35, fp  # 15.3 expected; about +-5 sigma


def test_size_is_near_eighteen_bits_a_key_for_many_keys():
    content, params = fuse_batch.build(random_keys(200000, 5))
    assert 8 * len(content) / 200000 < 19.5, len(content)  # 1.125 x 16 bits at millions, a little more here


def test_duplicate_keys_are_held_once():
    keys = random_keys(100, 6)
    content, params = fuse_batch.build(np.concatenate([keys, keys[:40]]))
    assert params["keys"] == 100
    assert fuse_batch.contains_many(reader(content, params), keys).all()


def test_a_stuck_peeling_retries_with_a_fresh_salt(monkeypatch):
    real, calls = fuse_batch._peel, []

    def stuck_once(*a):
        calls.append(1)
        return None if len(calls) == 1 else real(*a)
    monkeypatch.setattr(fuse_batch, "_peel", stuck_once)
    keys = random_keys(500, 7)
    content, params = fuse_batch.build(keys, salt=b"\x01" * 16)
    assert len(calls) == 2 and params["salt"] != (b"\x01" * 16).hex()
    assert fuse_batch.contains_many(reader(content, params), keys).all()


def test_gives_up_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(fuse_batch, "_peel", lambda *a: None)
    with pytest.raises(RuntimeError, match="no fuse filter for 10 keys after 100 salts"):
        fuse_batch.build(random_keys(10, 8))


def test_bad_keys_are_refused():
    with pytest.raises(ValueError):
        fuse_batch.build(os.urandom(17))
