"""List deltas of the core: Rice coding, applying, and refusing bad deltas; MicroPython-safe."""

from tests.core import support

delta = support.import_core("delta")


def test_rice_round_trip():
    positions = [0, 1, 5, 100, 101, 4000, 65535]
    for k in (0, 1, 3, 7):
        coded = delta.rice_encode(positions, k)
        assert delta.rice_decode(coded, len(positions), k, 65536) == positions


def test_rice_known_bits():
    # gaps 2, 0 with k=1: "1 0 0" then "0 0" -> bits 1,0,0,0,0 LSB first -> 0x01
    assert delta.rice_encode([2, 3], 1) == b"\x01"
    assert delta.rice_decode(b"\x01", 2, 1, 8) == [2, 3]


def test_rice_refuses():
    support.raises(delta.DeltaError, delta.rice_encode, [3, 3], 1)
    support.raises(delta.DeltaError, delta.rice_decode, b"\xff", 1, 0, 100)  # truncated unary
    support.raises(delta.DeltaError, delta.rice_decode, delta.rice_encode([50], 2), 1, 2, 40)


def test_apply_round_trip():
    src = bytes(range(256)) * 4
    dst = bytearray(src)
    for i in (3, 100, 513, 1000):
        dst[i] ^= 0x21
    dst = b"new head" + bytes(dst)
    d = delta.encode(src, dst)
    assert delta.apply(src, d) == dst
    assert delta.apply(src, d, max_len=len(dst)) == dst


def test_apply_refuses_bad_deltas():
    src = bytes(200)
    dst = bytes(199) + b"\x01"
    d = delta.encode(src, dst)
    exc = support.raises(delta.DeltaError, delta.apply, src[:-1] + b"\x02", d)
    assert "another version" in str(exc)
    support.raises(delta.DeltaError, delta.apply, src, d, 10)
    support.raises(delta.DeltaError, delta.apply, src, b"GWD0" + d[4:])
    support.raises(delta.DeltaError, delta.apply, src, d[:-1])
    support.raises(delta.DeltaError, delta.apply, src, d + b"\x00")
    bad = bytearray(d)
    bad[-1] ^= 0x01  # a flipped bit in the coded positions: wrong result digest or out of range
    support.raises(delta.DeltaError, delta.apply, src, bytes(bad))


def test_every_truncation_is_refused():
    src = bytes(range(64))
    dst = b"x" + bytes(range(1, 64))
    d = delta.encode(src, dst)
    for n in range(len(d)):
        support.raises(delta.DeltaError, delta.apply, src, d[:n])
