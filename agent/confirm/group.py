"""The ristretto255 group and its scalars: libsodium through ctypes, or the pure-Python twin.

Owns: choosing the backend (libsodium when it has ristretto255, else ``agent.confirm.ristretto``;
``GATEWATCH_CRYPTO=sodium|python`` forces one), the dozen group and scalar operations private
confirmation needs, and refusing anything that is not a canonical group element. Must not touch:
the OPRF protocol (``agent.confirm.oprf``), messages, keys on disk.

Why libsodium through ctypes: ristretto255 (RFC 9496) needs constant-time field arithmetic that no
Python library on a router offers. libsodium has it since 1.0.18 (Debian 12: libsodium23; OpenWrt:
the ``libsodium`` package, built with ristretto255 unless its LIBSODIUM_MINIMAL option is set), and
Python's ctypes (OpenWrt: python3-ctypes) reaches it without a compiler. PyNaCl wraps libsodium
too, but binds no ristretto255 function (checked: 1.6.2), and OpenWrt's python3-pynacl is built
minimal. OpenWrt's own libsodium package is built minimal by default too, without ristretto255:
there the pure-Python backend computes the very same bytes, a few milliseconds per operation, and
``backend()`` names it in the device's status. Nothing falls back to a protocol that would show the
hub a hash: both backends speak the same one.
"""

from __future__ import annotations

import os
import threading

from agent.core.errors import ConfirmError, CryptoUnavailable

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
HASH_BYTES = 64  # crypto_core_ristretto255_HASHBYTES: input of the one-way map
# the group order L = 2^252 + 27742317777372353535851937790883648493
ORDER = 2 ** 252 + 27742317777372353535851937790883648493

_FUNCTIONS = ("crypto_core_ristretto255_from_hash", "crypto_core_ristretto255_is_valid_point",
              "crypto_core_ristretto255_add", "crypto_core_ristretto255_random",
              "crypto_core_ristretto255_scalar_random", "crypto_core_ristretto255_scalar_invert",
              "crypto_core_ristretto255_scalar_reduce", "crypto_core_ristretto255_scalar_mul",
              "crypto_core_ristretto255_scalar_add", "crypto_core_ristretto255_scalar_sub",
              "crypto_scalarmult_ristretto255", "crypto_scalarmult_ristretto255_base")

_lock = threading.Lock()
_impl = None


def _candidates():
    import ctypes.util  # only here: a router without python3-ctypes still runs the pure-Python twin

    env = os.environ.get("GATEWATCH_LIBSODIUM")
    if env:
        yield env
        return
    found = ctypes.util.find_library("sodium")
    if found:
        yield found
    for name in ("libsodium.so.26", "libsodium.so.23", "libsodium.so"):
        yield name


class _Sodium:
    """libsodium's functions, each returning bytes (None where libsodium reports an identity/zero)."""

    name = "libsodium"

    def __init__(self, lib):
        self.lib = lib

    def _call(self, fn, n, *args):
        import ctypes

        out = ctypes.create_string_buffer(n)
        return out.raw if getattr(self.lib, fn)(out, *args) == 0 else None

    def from_hash(self, u):
        return self._call("crypto_core_ristretto255_from_hash", ELEMENT_BYTES, u)

    def is_valid_point(self, p):
        return self.lib.crypto_core_ristretto255_is_valid_point(p) == 1

    def add(self, p, q):
        return self._call("crypto_core_ristretto255_add", ELEMENT_BYTES, p, q)

    def scalarmult(self, n, p):
        return self._call("crypto_scalarmult_ristretto255", ELEMENT_BYTES, n, p)

    def scalarmult_base(self, n):
        return self._call("crypto_scalarmult_ristretto255_base", ELEMENT_BYTES, n)

    def random_element(self):
        import ctypes

        out = ctypes.create_string_buffer(ELEMENT_BYTES)
        self.lib.crypto_core_ristretto255_random(out)
        return out.raw

    def scalar_random(self):
        import ctypes

        out = ctypes.create_string_buffer(SCALAR_BYTES)
        self.lib.crypto_core_ristretto255_scalar_random(out)
        return out.raw

    def scalar_reduce(self, w):
        import ctypes

        out = ctypes.create_string_buffer(SCALAR_BYTES)
        self.lib.crypto_core_ristretto255_scalar_reduce(out, w)
        return out.raw

    def scalar_invert(self, s):
        return self._call("crypto_core_ristretto255_scalar_invert", SCALAR_BYTES, s)

    def _op(self, fn, a, b):
        import ctypes

        out = ctypes.create_string_buffer(SCALAR_BYTES)
        getattr(self.lib, fn)(out, a, b)
        return out.raw

    def scalar_mul(self, a, b):
        return self._op("crypto_core_ristretto255_scalar_mul", a, b)

    def scalar_add(self, a, b):
        return self._op("crypto_core_ristretto255_scalar_add", a, b)

    def scalar_sub(self, a, b):
        return self._op("crypto_core_ristretto255_scalar_sub", a, b)


def _libsodium():
    try:
        import ctypes
    except ImportError as exc:  # OpenWrt without python3-ctypes
        raise CryptoUnavailable("no ctypes module (OpenWrt: python3-ctypes): %s" % exc)
    reasons = []
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            reasons.append("%s: %s" % (name, exc))
            continue
        missing = [f for f in _FUNCTIONS if not hasattr(lib, f)]
        if missing:
            reasons.append("%s has no %s (a minimal build, or older than 1.0.18)" % (name, missing[0]))
            continue
        if lib.sodium_init() < 0:
            reasons.append("%s: sodium_init failed" % name)
            continue
        return _Sodium(lib)
    raise CryptoUnavailable("no libsodium with ristretto255 (Debian: libsodium23; OpenWrt: libsodium built "
                            "without LIBSODIUM_MINIMAL); tried " + "; ".join(reasons or ["nothing found"]))


def load():
    """The backend in use: libsodium's ristretto255 where it exists, else the pure-Python one."""
    global _impl
    if _impl is not None:
        return _impl
    with _lock:
        if _impl is None:
            want = os.environ.get("GATEWATCH_CRYPTO", "").strip().lower()
            if want not in ("", "sodium", "python"):
                raise CryptoUnavailable("GATEWATCH_CRYPTO must be 'sodium' or 'python', not %r" % want)
            if want == "python":
                from agent.confirm import ristretto as impl
            else:
                try:
                    impl = _libsodium()
                except CryptoUnavailable:
                    if want == "sodium":
                        raise
                    from agent.confirm import ristretto as impl
            _impl = impl
    return _impl


def backend() -> str:
    """'libsodium' or 'python': what the device's status shows."""
    impl = load()
    return getattr(impl, "name", "python")


def available() -> bool:
    """True when some backend works here (always, but for a forced missing libsodium)."""
    try:
        load()
        return True
    except CryptoUnavailable:
        return False


def _bytes(value, n: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != n:
        raise ConfirmError("%s must be %d bytes" % (what, n))
    return bytes(value)


_IDENTITY = bytes(ELEMENT_BYTES)


def is_element(p) -> bool:
    """True for the canonical encoding of a group element other than the identity."""
    if not isinstance(p, (bytes, bytearray)) or len(p) != ELEMENT_BYTES or bytes(p) == _IDENTITY:
        return False
    if p[31] & 0x80:  # RFC 9496 refuses it; libsodium 1.0.18 ignores the top bit and would accept it
        return False
    return load().is_valid_point(bytes(p))


def check_element(p, what: str = "group element") -> bytes:
    """``p`` as bytes if it is a canonical non-identity element; ConfirmError otherwise."""
    if not is_element(p):
        raise ConfirmError("%s is not a valid ristretto255 element" % what)
    return bytes(p)


def from_hash(uniform: bytes) -> bytes:
    """The one-way map of 64 uniform bytes to a group element (RFC 9496 section 4.3.4)."""
    return load().from_hash(_bytes(uniform, HASH_BYTES, "hash input"))


def random_element() -> bytes:
    """A uniformly random group element (padding that looks like any blinded value)."""
    return load().random_element()


def add(p: bytes, q: bytes) -> bytes:
    """p + q."""
    out = load().add(check_element(p), check_element(q))
    if out is None or out == _IDENTITY:
        raise ConfirmError("the sum is the identity")
    return out


def mul(scalar: bytes, p: bytes) -> bytes:
    """scalar * p; ConfirmError for an invalid element or an identity result."""
    out = load().scalarmult(_bytes(scalar, SCALAR_BYTES, "scalar"), check_element(p))
    if out is None:
        raise ConfirmError("scalar multiplication gave the identity")
    return out


def mul_base(scalar: bytes) -> bytes:
    """scalar * G."""
    out = load().scalarmult_base(_bytes(scalar, SCALAR_BYTES, "scalar"))
    if out is None:
        raise ConfirmError("the zero scalar has no public element")
    return out


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar."""
    while True:
        s = load().scalar_random()
        if any(s):
            return s


def scalar_reduce(wide: bytes) -> bytes:
    """64 little-endian bytes reduced mod L."""
    return load().scalar_reduce(_bytes(wide, 64, "wide scalar"))


def scalar_invert(s: bytes) -> bytes:
    """1/s mod L; ConfirmError for zero."""
    out = load().scalar_invert(_bytes(s, SCALAR_BYTES, "scalar"))
    if out is None:
        raise ConfirmError("zero has no inverse")
    return out


def scalar_mul(a: bytes, b: bytes) -> bytes:
    """a * b mod L."""
    return load().scalar_mul(_bytes(a, SCALAR_BYTES, "scalar"), _bytes(b, SCALAR_BYTES, "scalar"))


def scalar_add(a: bytes, b: bytes) -> bytes:
    """a + b mod L."""
    return load().scalar_add(_bytes(a, SCALAR_BYTES, "scalar"), _bytes(b, SCALAR_BYTES, "scalar"))


def scalar_sub(a: bytes, b: bytes) -> bytes:
    """a - b mod L."""
    return load().scalar_sub(_bytes(a, SCALAR_BYTES, "scalar"), _bytes(b, SCALAR_BYTES, "scalar"))


def check_scalar(s, what: str = "scalar") -> bytes:
    """``s`` as bytes if it is a canonical scalar in [1, L); ConfirmError otherwise."""
    s = _bytes(s, SCALAR_BYTES, what)
    n = int.from_bytes(s, "little")
    if not 0 < n < ORDER:
        raise ConfirmError("%s is not a canonical non-zero scalar" % what)
    return s


def _use(impl) -> None:
    """Switch the backend (tests compare the two)."""
    global _impl
    _impl = impl
