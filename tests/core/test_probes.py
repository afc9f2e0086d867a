"""The device core gives the same band values the hub seals its entries under, for every signal.

tests/data/probes.json holds the probes ``agent.confirm.wire.entry_probes`` gives at the hub
(tests/confirm/test_probes.py checks that it still does); here the core (CPython and MicroPython)
must give the very same bands and values: the scanner's probes of an image start from them.
"""

from tests.core import support

lsh = support.import_core("lsh")


def _vectors():
    return support.load_json(support.data_path("probes.json"))


def _hex(b):
    return "".join("%02x" % x for x in b)


def test_every_signal_is_covered():
    assert sorted(set(v["signal"] for v in _vectors())) == ["md5", "neural", "pdq", "sha1", "sha256"]


def test_core_bands_equal_the_hubs_probes():
    for v in _vectors():
        h = bytes(int(v["hash"][i:i + 2], 16) for i in range(0, len(v["hash"]), 2))
        got = []
        for band, value in lsh.entry_bands(v["signal"], h, v["lsh"]):
            got.append([band, _hex(value) if band == lsh.EXACT_BAND else "%016x" % value])
        assert got == v["probes"], (v["signal"], v["lsh"])
