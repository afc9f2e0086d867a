"""Binary fuse filter of the core (reader): pinned layout, lookups, bad parameters.

Runs unchanged under CPython (pytest) and MicroPython (tests/core/mp_runner.py). The filter below was
built by agent.matching.fuse_batch.build with the salt pinned (tests/matching/test_fuse_batch.py builds
it again and must get these bytes): changing the slot or fingerprint functions breaks every deployed
fuse list, and this test.
"""

from tests.core import support

fuse = support.import_core("fuse")
errors = support.import_core("errors")

SALT = bytes(range(16))
KEYS = [bytes([i]) + b"gatewatch-fuse!" for i in range(20)]
SEGMENT_LENGTH, SEGMENT_COUNT, ARRAY_LENGTH = 16, 1, 48
CONTENT = bytes.fromhex(
    "026e00001ee90000f77b000000000000000000008f2a185cde320000000000000000000076c8000000000000ec9b0000"
    "48ba98a500000000e11a00000000000000000000000000008f9500002f6000009c1000003437f25693d62bc805b8e4dc")


def pinned():
    return fuse.Fuse16(SALT, SEGMENT_LENGTH, SEGMENT_COUNT, ARRAY_LENGTH, CONTENT)


def test_slots_and_fingerprint_pinned():
    f = pinned()
    h = fuse.key_hash(KEYS[0], f.s0, f.s1)
    assert h == 14217765274135448580
    assert fuse.slots(h, SEGMENT_LENGTH, f.segment_count_length) == (12, 18, 40)
    assert fuse.fingerprint(h) == 59956


def test_every_key_is_found():
    f = pinned()
    for key in KEYS:
        assert key in f
        assert f.contains(key)


def test_few_false_positives():
    f = pinned()
    n = sum(1 for i in range(2000) if (bytes([i & 0xFF, i >> 8]) + b"notinthelist!!") in f)
    assert n <= 2, n  # 2^-16 a key: 0.03 expected


def test_a_changed_word_loses_its_keys():
    content = bytearray(CONTENT)
    content[2 * 12] ^= 1  # slot 12: one of KEYS[0]'s three
    f = fuse.Fuse16(SALT, SEGMENT_LENGTH, SEGMENT_COUNT, ARRAY_LENGTH, bytes(content))
    assert KEYS[0] not in f


def test_bad_parameters_are_refused():
    for args in ((SALT, 12, 1, 36, bytes(72)),            # segment length not a power of two
                 (SALT, 2, 1, 6, bytes(12)),              # below 4
                 (SALT, 1 << 19, 1, 3 << 19, bytes(6)),   # above the cap
                 (SALT, 16, 1, 40, bytes(80)),            # array length is not (count + 2) x length
                 (SALT, 16, 1, 48, bytes(95)),            # content of the wrong size
                 (SALT, 16, 0, 32, bytes(64)),            # no segment
                 (SALT, 16, True, 48, bytes(96)),         # a bool is not a count
                 (SALT[:15], 16, 1, 48, bytes(96))):      # short salt
        support.raises(errors.ListFormatError, fuse.Fuse16, *args)


def test_wrong_key_length_is_refused():
    support.raises(ValueError, pinned().contains, b"\x00" * 15)
