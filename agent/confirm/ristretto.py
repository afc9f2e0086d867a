"""ristretto255 (RFC 9496) in pure Python: the slow twin of libsodium's, for routers without it.

Owns: field and edwards25519 arithmetic on Python integers, ristretto255's decode, encode and
one-way map, scalar multiplication, and scalars mod L, with the same byte-level interface as
``agent.confirm.group``'s libsodium backend (tests/confirm/test_group.py checks the two agree on
random inputs and on the RFC's vectors). Must not touch: the OPRF, messages.

Why it exists: OpenWrt's ``libsodium`` package is built minimal by default (LIBSODIUM_MINIMAL),
which leaves ristretto255 out, and a device must still confirm privately. This backend is not
constant-time (Python integers are not): its timing may depend on the blinding scalar and the
inputs, which only a process on the device itself could measure; the hub sees one answer per
request whatever the backend. It costs about a millisecond per scalar multiplication on x86
(docs/benchmarks.md has the figures) and is used only when libsodium's is missing.
"""

from __future__ import annotations

import os

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


class RistrettoError(ValueError):
    """Not a canonical encoding of a group element."""


def _neg(x):
    return x & 1  # IS_NEGATIVE: the low bit of the canonical representative


def _abs(x):
    return (P - x) % P if x & 1 else x


def _sqrt_ratio_m1(u, v):
    v3 = v * v % P * v % P
    v7 = v3 * v3 % P * v % P
    r = u * v3 % P * pow(u * v7 % P, (P - 5) // 8, P) % P
    check = v * r % P * r % P
    correct = check == u % P
    flipped = check == (-u) % P
    flipped_i = check == (-u) * SQRT_M1 % P
    if flipped or flipped_i:
        r = r * SQRT_M1 % P
    return correct or flipped, _abs(r)


# sqrt(a*d - 1) with a = -1: RFC 9496 names the odd root (the negation of what _sqrt_ratio_m1 returns)
SQRT_AD_MINUS_ONE = (P - _sqrt_ratio_m1((-D - 1) % P, 1)[1]) % P
INVSQRT_A_MINUS_D = _sqrt_ratio_m1(1, (-1 - D) % P)[1]  # 1/sqrt(a - d)
ONE_MINUS_D_SQ = (1 - D * D) % P
D_MINUS_ONE_SQ = (D - 1) * (D - 1) % P
IDENTITY = (0, 1, 1, 0)


def _add(p1, p2):
    # extended coordinates, a = -1 (Hisil, Wong, Carter, Dawson 2008, "add-2008-hwcd-3")
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * 2 * D % P * t2 % P
    d = z1 * 2 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p1):
    # "dbl-2008-hwcd" for a = -1
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = (h - (x1 + y1) * (x1 + y1)) % P
    g = (a - b) % P
    f = (c + g) % P
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k, point):
    k %= L
    # fixed 4-bit windows, most significant first (not constant-time: see the module docstring)
    table = [IDENTITY, point]
    for _ in range(14):
        table.append(_add(table[-1], point))
    acc = IDENTITY
    for shift in range(252, -1, -4):
        acc = _double(_double(_double(_double(acc))))
        acc = _add(acc, table[(k >> shift) & 15])
    return acc


def decode(s: bytes):
    """The point an encoding names; RistrettoError for a non-canonical or invalid encoding."""
    if len(s) != 32:
        raise RistrettoError("an element is 32 bytes")
    n = int.from_bytes(s, "little")
    if n >= P or _neg(n):
        raise RistrettoError("non-canonical encoding")
    ss = n * n % P
    u1 = (1 - ss) % P
    u2 = (1 + ss) % P
    u2_sqr = u2 * u2 % P
    v = (-(D * u1 % P * u1) - u2_sqr) % P
    was_square, invsqrt = _sqrt_ratio_m1(1, v * u2_sqr % P)
    den_x = invsqrt * u2 % P
    den_y = invsqrt * den_x % P * v % P
    x = _abs(2 * n * den_x % P)
    y = u1 * den_y % P
    t = x * y % P
    if not was_square or _neg(t) or y == 0:
        raise RistrettoError("not an element")
    return (x, y, 1, t)


def encode(point) -> bytes:
    """The canonical 32-byte encoding of a point."""
    x0, y0, z0, t0 = point
    u1 = (z0 + y0) * (z0 - y0) % P
    u2 = x0 * y0 % P
    _, invsqrt = _sqrt_ratio_m1(1, u1 * u2 % P * u2 % P)
    den1 = invsqrt * u1 % P
    den2 = invsqrt * u2 % P
    z_inv = den1 * den2 % P * t0 % P
    rotate = _neg(t0 * z_inv % P)
    if rotate:
        x, y = y0 * SQRT_M1 % P, x0 * SQRT_M1 % P
        den_inv = den1 * INVSQRT_A_MINUS_D % P
    else:
        x, y, den_inv = x0, y0, den2
    if _neg(x * z_inv % P):
        y = (-y) % P
    s = _abs(den_inv * (z0 - y) % P)
    return s.to_bytes(32, "little")


def _map(t):
    r = SQRT_M1 * t % P * t % P
    u = (r + 1) * ONE_MINUS_D_SQ % P
    v = (-1 - r * D) * (r + D) % P
    was_square, s = _sqrt_ratio_m1(u, v)
    s_prime = (-_abs(s * t % P)) % P
    s = s if was_square else s_prime
    c = (P - 1) if was_square else r
    n = (c * (r - 1) % P * D_MINUS_ONE_SQ - v) % P
    w0 = 2 * s * v % P
    w1 = n * SQRT_AD_MINUS_ONE % P
    w2 = (1 - s * s) % P
    w3 = (1 + s * s) % P
    return (w0 * w3 % P, w2 * w1 % P, w1 * w3 % P, w0 * w2 % P)


def _fe(b: bytes) -> int:
    return (int.from_bytes(b, "little") & ((1 << 255) - 1)) % P


BASE = decode(bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76"))


# ---------------------------------------------------------------- the interface group.py uses

def from_hash(uniform: bytes) -> bytes:
    return encode(_add(_map(_fe(uniform[:32])), _map(_fe(uniform[32:64]))))


def is_valid_point(p: bytes) -> bool:
    try:
        decode(p)
        return True
    except RistrettoError:
        return False


def add(p: bytes, q: bytes) -> bytes:
    return encode(_add(decode(p), decode(q)))


def scalarmult(n: bytes, p: bytes):
    """n * p, or None for the identity (libsodium's -1)."""
    point = _mul(int.from_bytes(n, "little") & ((1 << 255) - 1), decode(p))
    out = encode(point)
    return None if out == bytes(32) else out


def scalarmult_base(n: bytes):
    return scalarmult(n, encode(BASE))


def random_element() -> bytes:
    return from_hash(os.urandom(64))


def _s(x: int) -> bytes:
    return (x % L).to_bytes(32, "little")


def scalar_random() -> bytes:
    return _s(int.from_bytes(os.urandom(64), "little"))


def scalar_reduce(wide: bytes) -> bytes:
    return _s(int.from_bytes(wide, "little"))


def scalar_invert(s: bytes):
    n = int.from_bytes(s, "little") % L
    return None if n == 0 else _s(pow(n, L - 2, L))


def scalar_mul(a: bytes, b: bytes) -> bytes:
    return _s(int.from_bytes(a, "little") * int.from_bytes(b, "little"))


def scalar_add(a: bytes, b: bytes) -> bytes:
    return _s(int.from_bytes(a, "little") + int.from_bytes(b, "little"))


def scalar_sub(a: bytes, b: bytes) -> bytes:
    return _s(int.from_bytes(a, "little") - int.from_bytes(b, "little"))
