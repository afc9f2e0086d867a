"""Locality-sensitive band keys and short keys of the core (perceptual lists); MicroPython-safe."""

from tests.core import support

lsh = support.import_core("lsh")


def hash_with_bits(bits):
    x = 0
    for i in bits:
        x |= 1 << i
    return x.to_bytes(32, "big")


def test_bit_numbering():
    # Bit i is coefficient i: the last byte's lowest bit is bit 0 (the reference prints hex big-endian).
    assert lsh.hash_int(hash_with_bits([0])) == 1
    assert hash_with_bits([0])[31] == 1
    assert hash_with_bits([255])[0] == 0x80


def test_bands_interleave():
    assert lsh.band_bits(8, 0)[:3] == [0, 8, 16]
    assert lsh.band_bits(8, 7)[-1] == 255
    assert len(lsh.band_bits(16, 3)) == 16
    # bit i lands in band i % B at position i // B
    for i in (0, 1, 17, 100, 255):
        v = lsh.band_values(hash_with_bits([i]), 8)
        assert v[i % 8] == 1 << (i // 8), (i, v)
        assert sum(1 for x in v if x) == 1


def test_band_key_layout():
    key = lsh.band_key(16, 5, 0x1234)
    assert len(key) == 16
    assert key[:8] == (0x1234).to_bytes(8, "little")
    assert int.from_bytes(key[8:], "little") == lsh.TAG | (16 << 8) | 5


def test_near_hashes_share_a_band():
    base = bytes(range(32))
    x = lsh.hash_int(base)
    for flips in ([3], [1, 2, 3, 4, 5, 6, 7], [0, 9, 18, 27, 36, 45, 54]):
        y = x
        for i in flips:
            y ^= 1 << i
        other = y.to_bytes(32, "big")
        assert lsh.hamming(base, other) == len(flips)
        shared = set(lsh.band_keys(base, 8)) & set(lsh.band_keys(other, 8))
        assert shared, flips  # pigeonhole: fewer flips than bands leave one band intact


def test_hamming():
    assert lsh.hamming(b"\x00" * 32, b"\xff" * 32) == 256
    assert lsh.hamming(b"\x0f", b"\x01") == 3
    support.raises(ValueError, lsh.hamming, b"\x00", b"\x00\x00")


def test_entry_bands():
    d = bytes([0xDE, 0xAD, 0xBE, 0xEF, 0x01])
    assert lsh.entry_bands("sha256", d, None) == [(lsh.EXACT_BAND, d)]
    h = code_with_bits([0, 8])
    assert lsh.entry_bands("neural", h, {"bands": 4}) == [(0, 5), (1, 0), (2, 0), (3, 0)]


def test_bad_hash_length():
    support.raises(ValueError, lsh.hash_int, b"\x00" * 31)
    support.raises(ValueError, lsh.band_keys, b"\x00" * 33, 8)


def code_with_bits(bits):
    x = 0
    for i in bits:
        x |= 1 << i
    return x.to_bytes(16, "big")


def test_neural_layout_and_tag():
    # a neural code is 128 bits in PDQ's numbering; its band keys carry their own tag
    assert lsh.layout("pdq") == (256, lsh.TAG)
    assert lsh.layout("neural") == (128, lsh.NEURAL_TAG)
    assert lsh.NEURAL_TAG != lsh.TAG
    support.raises(ValueError, lsh.layout, "md5")
    assert lsh.band_bits(4, 3, 128)[-1] == 127
    assert len(lsh.band_bits(4, 0, 128)) == 32
    for i in (0, 1, 63, 127):
        v = lsh.band_values(code_with_bits([i]), 4, 128)
        assert v[i % 4] == 1 << (i // 4), (i, v)
        assert sum(1 for x in v if x) == 1
    keys = lsh.signal_band_keys("neural", code_with_bits([5]), 4)
    assert len(keys) == 4
    assert int.from_bytes(keys[1][8:], "little") == lsh.NEURAL_TAG | (4 << 8) | 1
    assert keys[1][:8] == (2).to_bytes(8, "little")  # bit 5 is band 1, position 1
    # the same band values under PDQ's tag are other keys: the two signals never answer for each other
    assert lsh.band_key(4, 1, 2) != keys[1]


def test_neural_and_pdq_lengths_are_not_mixed():
    support.raises(ValueError, lsh.band_values, b"\x00" * 32, 4, 128)
    support.raises(ValueError, lsh.band_values, b"\x00" * 16, 4)
    support.raises(ValueError, lsh.entry_bands, "neural", b"\x00" * 32, {"bands": 4})


def test_neural_entry_bands():
    code = code_with_bits([0, 4, 125])
    assert lsh.entry_bands("neural", code, {"bands": 4}) == [(0, 3), (1, 1 << 31), (2, 0), (3, 0)]
