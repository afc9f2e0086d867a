"""Bloom filter of the core: position function against pinned vectors, layout, sizing, bad input.

Runs unchanged under CPython (pytest) and MicroPython (tests/core/mp_runner.py). The vectors pin
the portable layout of docs/list-format.md: any change to them breaks every deployed list.
"""

from tests.core import support

bloom = support.import_core("bloom")
errors = support.import_core("errors")

SALT = bytes(range(16))
KEY = bytes(range(16, 32))


def test_fmix64_known_values():
    # MurmurHash3's published finaliser: fmix64(1) is a widely quoted constant.
    assert bloom.fmix64(0) == 0
    assert bloom.fmix64(1) == 0xB456BCFC34C2CB2C
    assert bloom.fmix64(0xFFFFFFFFFFFFFFFF) == 0x64B5720B4B825F21


def test_fmix64_stays_in_64_bits():
    x = 0x0123456789ABCDEF
    for _ in range(100):
        x = bloom.fmix64(x)
        assert 0 <= x <= bloom.MASK64


def test_u64_pair_is_little_endian():
    lo, hi = bloom.u64_pair(bytes([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]))
    assert lo == 1
    assert hi == 0x8000000000000000


def test_hashes_and_positions_pinned():
    b = bloom.Bloom(1 << 20, 7, SALT)
    assert b.hashes(KEY) == (17093526027110918047, 12798063947072061757)
    assert b.positions(KEY) == [352805, 831664, 415174, 949846, 503832, 46227, 762184]


def test_positions_pinned_odd_size():
    b = bloom.Bloom(1000003, 10, b"\xaa" * 16)
    assert b.positions(b"\x00" * 16) == [822731, 260287, 476035, 630901, 960090,
                                         518992, 235775, 53736, 75861, 998771]


def test_positions_depend_on_salt():
    a = bloom.Bloom(1 << 20, 7, SALT).positions(KEY)
    b = bloom.Bloom(1 << 20, 7, b"\x01" + SALT[1:]).positions(KEY)
    assert a != b


def test_bits_are_least_significant_first():
    b = bloom.Bloom(64, 1, SALT)
    b.add(KEY)
    (p,) = b.positions(KEY)
    assert b.bits[p >> 3] == 1 << (p & 7)
    assert sum(1 for x in b.bits if x) == 1
    assert b.popcount() == 1


def test_add_then_contains():
    m, k = bloom.optimal_parameters(200, 0.01)
    b = bloom.Bloom(m, k, SALT)
    keys = [bytes([i, i >> 8]) + b"k" * 14 for i in range(200)]
    for key in keys:
        b.add(key)
    for key in keys:
        assert key in b
        assert b.contains(key)


def test_false_positive_rate_near_design():
    n, rate = 300, 0.02
    m, k = bloom.optimal_parameters(n, rate)
    b = bloom.Bloom(m, k, SALT)
    for i in range(n):
        b.add(b"in" + bytes([i & 0xFF, i >> 8]) + b"\x00" * 12)
    trials = 3000
    fp = 0
    for i in range(trials):
        if (b"out" + bytes([i & 0xFF, i >> 8]) + b"\x00" * 11) in b:
            fp += 1
    # 2% of 3000 is 60; a window of about +-4 sigma keeps this deterministic test honest.
    assert 25 <= fp <= 100, fp


def test_optimal_parameters_textbook():
    assert bloom.optimal_parameters(1000, 0.01) == (9586, 7)
    assert bloom.optimal_parameters(1000000, 1e-6) == (28755176, 20)
    assert bloom.optimal_parameters(0, 0.5)[0] == 64  # never below the minimum size


def test_expected_fp_rate_matches_design():
    m, k = bloom.optimal_parameters(10000, 1e-3)
    r = bloom.expected_fp_rate(m, k, 10000)
    assert 0.9e-3 < r < 1.1e-3, r


def test_optimal_parameters_rejects_bad_rates():
    for rate in (0.0, 1.0, -0.1, 2):
        exc = support.raises(errors.ListFormatError, bloom.optimal_parameters, 10, rate)
        assert "false-positive" in str(exc)
    support.raises(errors.ListFormatError, bloom.optimal_parameters, 10 ** 10, 1e-9)


def test_constructor_rejects_bad_parameters():
    support.raises(errors.ListFormatError, bloom.Bloom, 63, 3, SALT)
    support.raises(errors.ListFormatError, bloom.Bloom, 1 << 32, 3, SALT)
    support.raises(errors.ListFormatError, bloom.Bloom, 1024, 0, SALT)
    support.raises(errors.ListFormatError, bloom.Bloom, 1024, 65, SALT)
    support.raises(errors.ListFormatError, bloom.Bloom, 1024, 3, b"short")
    exc = support.raises(errors.ListFormatError, bloom.Bloom, 1024, 3, SALT, bytearray(127))
    assert "128" in str(exc)


def test_errors_share_the_root_on_every_interpreter():
    # Every core error is a GatewatchError on CPython and MicroPython alike, so one
    # ``except GatewatchError`` catches them everywhere; MicroPython allows a class only one
    # built-in exception base, so only CPython adds the matching built-in.
    for cls in (errors.ListFormatError, errors.DeltaError, errors.ReportError, errors.ImageError,
                errors.TrustError, errors.ConfigError):
        assert issubclass(cls, errors.GatewatchError), cls
    if not support.IS_MICROPYTHON:
        assert issubclass(errors.ListFormatError, ValueError)
        assert issubclass(errors.TrustError, PermissionError)


def test_wrong_key_length_is_refused():
    b = bloom.Bloom(1024, 3, SALT)
    support.raises(ValueError, b.positions, b"\x00" * 15)
    support.raises(ValueError, b.add, b"\x00" * 17)
    support.raises(ValueError, b.contains, b"")
    assert b.popcount() == 0  # nothing changed
