"""The device core computes the same short keys as the hub's index, for every signal (MicroPython-safe).

tests/data/short_keys.json holds the keys the hub's ``EntryIndex`` gives (tests/confirm/test_short_keys.py
checks that it still does); here the core must give the very same keys, on CPython and MicroPython.
"""

from tests.core import support

lsh = support.import_core("lsh")


def _vectors():
    return support.load_json(support.data_path("short_keys.json"))


def test_every_signal_is_covered():
    assert sorted(set(v["signal"] for v in _vectors())) == ["md5", "neural", "pdq", "sha1", "sha256"]


def test_core_short_keys_equal_the_hubs():
    for v in _vectors():
        h = bytes(int(v["hash"][i:i + 2], 16) for i in range(0, len(v["hash"]), 2))
        assert lsh.short_keys(v["signal"], h, v["lsh"]) == v["keys"], (v["signal"], v["lsh"])


def test_band_keys_carry_no_more_than_key_bits():
    for v in _vectors():
        if v["lsh"] is None:
            continue
        limit = 1 << v["lsh"]["key_bits"]
        for k in v["keys"]:
            assert int(k.split(":")[2], 16) < limit, k
