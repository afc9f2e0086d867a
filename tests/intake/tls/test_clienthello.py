"""The ClientHello parser: real OpenSSL hellos, every field's edge, split records, and fuzzing."""

import random

import pytest

from agent.intake.tls.clienthello import MAX_HELLO, Hello, Malformed, NotTls, parse_hello
from tests.intake.tls.hellos import built_hello, ext, mutate, real_hello, sni_ext


def test_real_openssl_hellos():
    data = real_hello("Listed.Example.org")
    h = parse_hello(data)
    assert h == Hello(b"Listed.Example.org", False, len(data))
    assert parse_hello(real_hello(None)).server_name is None
    # what follows the hello (early data, the next flight) is not part of it
    assert parse_hello(data + b"\x17\x03\x03\x00\x05hello").length == len(data)


def test_partial_input_asks_for_more_at_every_length():
    data = real_hello("www.example.org")
    for n in range(len(data)):
        assert parse_hello(data[:n]) is None, n


def test_a_hello_split_over_records():
    data = built_hello(sni_ext(b"split.example.org"), record_split=7)
    assert parse_hello(data).server_name == b"split.example.org"


def test_ech_and_unknown_name_types():
    h = parse_hello(built_hello(sni_ext(b"public.example.net") + ext(0xFE0D, b"\x00" * 40)))
    assert h.server_name == b"public.example.net" and h.ech
    assert parse_hello(built_hello(sni_ext(b"x", kind=7))).server_name is None
    assert parse_hello(built_hello(with_ext_block=False)).server_name is None


@pytest.mark.parametrize("data,error", [
    (b"GET / HTTP/1.1\r\n\r\n", NotTls),
    (b"\x16\x02\x00\x00\x05hello", NotTls),
    (b"\x16\x03\x01\x00\x00", Malformed),  # empty record
    (b"\x16\x03\x01\x50\x00" + b"\x00" * 10, Malformed),  # record over 16 KiB
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", Malformed),  # ServerHello, not ClientHello
    (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", Malformed),  # announces 16 MiB
    (built_hello(sni_ext(b"a.example", b"b.example")), Malformed),  # two host names
    (built_hello(sni_ext(b"a.example") + sni_ext(b"b.example")), Malformed),  # the extension twice
    (built_hello(sni_ext(b"bad name\x00")), Malformed),
    (built_hello(sni_ext(b"")), Malformed),
    (built_hello(suites=b"\x13"), Malformed),
    (built_hello(compression=b""), Malformed),
    (built_hello(session=b"s" * 33), Malformed),
    (built_hello(version=0x0203), Malformed),
    (built_hello(ext(0, b"\x00\x09\x00\x00\x05abc")), Malformed),  # name longer than its list
])
def test_hostile_hellos_are_refused_cleanly(data, error):
    with pytest.raises(error):
        parse_hello(data)


def test_a_hello_interrupted_by_another_record_type():
    whole = built_hello(sni_ext(b"a.example"), record_split=10)
    cut = whole[:15] + b"\x17\x03\x03\x00\x01x" + whole[15:]
    with pytest.raises(Malformed):
        parse_hello(cut)


def test_endless_small_records_are_bounded():
    data = b"\x16\x03\x01\x00\x04\x01\x00\x7f\xff" + b"\x16\x03\x01\x00\x01\x00" * 8000
    with pytest.raises(Malformed):
        parse_hello(data)
    assert MAX_HELLO < 0x7fff + 4


def test_fuzzed_hellos_never_raise_anything_else():
    rng = random.Random(2024)
    seeds = [real_hello("fuzz.example.org"), real_hello(None),
             built_hello(sni_ext(b"a.example") + ext(0xFE0D, b"e" * 9), record_split=11)]
    outcomes = {"hello": 0, "more": 0, "refused": 0}
    for _ in range(5000):
        data = mutate(rng, rng.choice(seeds))
        try:
            h = parse_hello(data)
        except (NotTls, Malformed):
            outcomes["refused"] += 1
            continue
        if h is None:
            outcomes["more"] += 1
        else:
            outcomes["hello"] += 1
            assert h.server_name is None or all(0x21 <= c <= 0x7E for c in h.server_name)
            assert 0 < h.length <= len(data)
    assert all(v > 100 for v in outcomes.values()), outcomes
