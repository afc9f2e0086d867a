"""PDQ perceptual hash (256 bits) of a luminance image, in numpy.

Owns the PDQ algorithm only: luma -> Jarosz tent filter -> decimate to 64x64 -> quality metric ->
16x16 DCT -> median threshold, plus the 8 dihedral variants taken from the same DCT. It follows the
published algorithm (Meta's ThreatExchange ``pdq/cpp``, "pdqhash-2017-10-09"); bits and hex agree with
that reference and with the ``pdqhash`` package. It does no file or image decoding (``agent.imaging``
does) and no matching.

Why not port the reference loop by loop: the reference filters the whole image (four 1-D box passes)
and then keeps 64x64 samples. The filter and the decimation are linear and separable, so both collapse
into one 64xH matrix ``A`` (rows) and one 64xW matrix ``B`` (columns): ``out = A @ luma @ B.T``. Each
row of ``A`` is non-zero only on a band of about H/64 rows, so the first product reads every pixel
about once. The matrices depend only on the image size and are cached.

Bit layout: bit ``i`` is DCT coefficient ``i`` (row-major in the 16x16), i.e.
``(int.from_bytes(hash, "big") >> i) & 1``; ``hash.hex()`` is the reference's hex string.
"""

from __future__ import annotations

import functools
import math
from typing import List, NamedTuple

import numpy as np

__all__ = [
    "PdqResult",
    "DIHEDRAL_NAMES",
    "pdq_from_luma",
    "pdq_from_rgb",
    "pdq_dihedral_from_luma",
    "pdq_dihedral_from_rgb",
    "hamming",
    "hash_to_hex",
]

LUMA_R = 0.299
LUMA_G = 0.587
LUMA_B = 0.114
_LUMA = np.array([LUMA_R, LUMA_G, LUMA_B], dtype=np.float32)

MIN_HASHABLE_DIM = 5  # the reference returns an all-zero hash, quality 0 below this
_OUT = 64  # decimated size
_DENSE_MAX_PIXELS = 1 << 18  # below this one dense matmul beats the banded loop

# The reference order of the dihedral variants.
DIHEDRAL_NAMES = (
    "original",
    "rot90",
    "rot180",
    "rot270",
    "flipX",
    "flipY",
    "flipPlusOne",
    "flipMinusOne",
)


class PdqResult(NamedTuple):
    """One PDQ hash: 32 bytes (reference hex order), quality 0..100, per-bit margins."""

    hash: bytes
    quality: int
    # |coefficient - median| per bit, float32[256]: small means the bit flips easily (multi-probe LSH).
    margins: np.ndarray


def _dct_matrix() -> np.ndarray:
    """16x64 DCT-II rows 1..16 (DC skipped), scaled as in the reference."""
    i = np.arange(1, 17, dtype=np.float64)[:, None]
    j = np.arange(64, dtype=np.float64)[None, :]
    return math.sqrt(2.0 / 64.0) * np.cos((math.pi / 2.0 / 64.0) * i * (2.0 * j + 1.0))


_DCT = _dct_matrix()
_EVEN = (np.arange(16) % 2 == 0)
# Sign patterns that turn the DCT of the image into the DCT of a rotated/flipped image.
_SIGN_ROW = np.where(_EVEN, -1.0, 1.0)[:, None]  # negate even rows (odd frequencies)
_SIGN_COL = np.where(_EVEN, -1.0, 1.0)[None, :]
_SIGN_CHECKER = np.where((np.add.outer(np.arange(16), np.arange(16)) % 2) == 1, -1.0, 1.0)


def _box_transposed(rows: np.ndarray, window: int) -> np.ndarray:
    """Return ``rows @ Box`` where ``Box`` is the reference's 1-D box filter (clipped window mean)."""
    n = rows.shape[1]
    half = (window + 2) // 2
    left = window - half  # reference window of output k: [k - left, k + half - 1], clipped
    k = np.arange(n)
    count = np.minimum(n - 1, k + half - 1) - np.maximum(0, k - left) + 1
    v = rows / count
    csum = np.zeros((rows.shape[0], n + 1), dtype=np.float64)
    np.cumsum(v, axis=1, out=csum[:, 1:])
    # Column j of Box^T-weighted sum gathers outputs k with j in window(k): k in [j-half+1, j+left].
    lo = np.maximum(0, k - (half - 1))
    hi = np.minimum(n - 1, k + left)
    return csum[:, hi + 1] - csum[:, lo]


class _Axis(NamedTuple):
    dense: np.ndarray  # float32 64 x n: decimate(box(box(x))) as a matrix
    starts: np.ndarray  # per output row: first non-zero column
    weights: tuple  # per output row: float32 band of non-zero weights


@functools.lru_cache(maxsize=32)
def _axis(n: int) -> _Axis:
    """The 64xn reduction matrix for one image axis of length n (cached per size)."""
    if n == _OUT:
        # The reference copies a 64x64 input as is (the filter would be the identity anyway).
        dense = np.eye(_OUT)
    else:
        window = (n + 2 * _OUT - 1) // (2 * _OUT)
        pick = ((np.arange(_OUT) + 0.5) * n / _OUT).astype(np.int64)
        dense = np.zeros((_OUT, n), dtype=np.float64)
        dense[np.arange(_OUT), pick] = 1.0
        # Two X,Y passes in the reference; along one axis they are two box passes.
        dense = _box_transposed(_box_transposed(dense, window), window)
    dense32 = np.ascontiguousarray(dense, dtype=np.float32)
    starts = np.empty(_OUT, dtype=np.int64)
    weights = []
    for i in range(_OUT):
        nz = np.flatnonzero(dense[i] != 0.0)
        s, e = int(nz[0]), int(nz[-1]) + 1
        starts[i] = s
        weights.append(dense32[i, s:e].copy())
    dense32.setflags(write=False)
    return _Axis(dense32, starts, tuple(weights))


def _check_dims(shape) -> None:
    if len(shape) != 2:
        raise ValueError("PDQ needs a 2-D luminance array, got shape %r" % (tuple(shape),))


def _reduce_rows(img: np.ndarray, to_luma) -> np.ndarray:
    """64 x W float32: the row half of ``A @ luma``, converting one band of rows at a time."""
    h, w = img.shape[0], img.shape[1]
    ax = _axis(h)
    if h * w <= _DENSE_MAX_PIXELS:
        return ax.dense @ to_luma(img)
    out = np.empty((_OUT, w), dtype=np.float32)
    for i in range(_OUT):
        s = ax.starts[i]
        band = ax.weights[i]
        # The bands barely overlap, so each pixel is converted about once and no full float copy exists.
        out[i] = band @ to_luma(img[s:s + band.shape[0]])
    return out


def _as_float32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32, copy=False)


def _rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3] @ _LUMA  # float32 luma, as the reference's fillFloatLumaFromRGB


def _downsample64(img: np.ndarray, to_luma) -> np.ndarray:
    h, w = img.shape[0], img.shape[1]
    rows = _reduce_rows(img, to_luma)  # 64 x W
    return rows @ _axis(w).dense.T  # 64 x 64, float32


def _quality(buf: np.ndarray) -> int:
    """The reference's image-domain quality: quantised gradient sum of the 64x64 buffer."""
    hundred = np.float32(100.0)
    d255 = np.float32(255.0)
    dv = np.trunc(((buf[:-1, :] - buf[1:, :]) * hundred) / d255)
    dh = np.trunc(((buf[:, :-1] - buf[:, 1:]) * hundred) / d255)
    total = int(np.abs(dv).sum(dtype=np.float64)) + int(np.abs(dh).sum(dtype=np.float64))
    return min(100, total // 90)


def _dct16(buf: np.ndarray) -> np.ndarray:
    return _DCT @ buf.astype(np.float64) @ _DCT.T


def _bits(coefs: np.ndarray, quality: int) -> PdqResult:
    flat = coefs.reshape(256)
    # Torben's median in the reference returns the lower median: the 128th smallest value.
    median = np.partition(flat, 127)[127]
    bits = flat > median
    # Bit i must be (int >> i) & 1 of a big-endian integer: byte 0 holds bits 255..248.
    packed = np.packbits(bits[::-1].astype(np.uint8))
    margins = np.abs(flat - median).astype(np.float32)
    return PdqResult(packed.tobytes(), int(quality), margins)


def _zero_result() -> PdqResult:
    return PdqResult(bytes(32), 0, np.zeros(256, dtype=np.float32))


def _from(img: np.ndarray, to_luma) -> PdqResult:
    h, w = img.shape[0], img.shape[1]
    if h < MIN_HASHABLE_DIM or w < MIN_HASHABLE_DIM:
        return _zero_result()
    buf = _downsample64(img, to_luma)
    return _bits(_dct16(buf), _quality(buf))


def _dihedral_from(img: np.ndarray, to_luma) -> List[PdqResult]:
    h, w = img.shape[0], img.shape[1]
    if h < MIN_HASHABLE_DIM or w < MIN_HASHABLE_DIM:
        return [_zero_result() for _ in DIHEDRAL_NAMES]
    buf = _downsample64(img, to_luma)
    q = _quality(buf)
    a = _dct16(buf)
    # Rotating/flipping the image transposes the DCT and negates odd frequencies (even indices,
    # since index 0 is frequency 1); the reference derives all 8 variants this way.
    variants = (
        a,
        (a * _SIGN_COL).T,
        a * _SIGN_CHECKER,
        (a * _SIGN_ROW).T,
        a * _SIGN_ROW,
        a * _SIGN_COL,
        a.T,
        (a * _SIGN_CHECKER).T,
    )
    return [_bits(np.ascontiguousarray(v), q) for v in variants]


def _luma_converter(luma: np.ndarray):
    _check_dims(luma.shape)
    if not np.issubdtype(luma.dtype, np.number) or np.issubdtype(luma.dtype, np.complexfloating):
        raise ValueError("PDQ needs a real-valued luminance array, got dtype %s" % luma.dtype)
    if luma.dtype.kind == "f" and luma.size and not np.isfinite(luma).all():
        raise ValueError("luminance array contains NaN or infinity")
    return _as_float32


def _rgb_checked(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError("PDQ needs an HxWx3 RGB array, got shape %r" % (tuple(rgb.shape),))
    if rgb.dtype != np.uint8:
        raise ValueError("PDQ needs uint8 RGB, got dtype %s" % rgb.dtype)
    return rgb


def pdq_from_luma(luma: np.ndarray) -> PdqResult:
    """PDQ hash of a 2-D luminance array (values 0..255; uint8 or float)."""
    luma = np.asarray(luma)
    return _from(luma, _luma_converter(luma))


def pdq_from_rgb(rgb: np.ndarray) -> PdqResult:
    """PDQ hash of an HxWx3 uint8 RGB array (alpha, if present, is ignored as the reference does)."""
    return _from(_rgb_checked(np.asarray(rgb)), _rgb_to_luma)


def pdq_dihedral_from_luma(luma: np.ndarray) -> List[PdqResult]:
    """The 8 dihedral PDQ hashes (``DIHEDRAL_NAMES`` order) from one filter pass and one DCT."""
    luma = np.asarray(luma)
    return _dihedral_from(luma, _luma_converter(luma))


def pdq_dihedral_from_rgb(rgb: np.ndarray) -> List[PdqResult]:
    """The 8 dihedral PDQ hashes of an HxWx3 uint8 RGB array."""
    return _dihedral_from(_rgb_checked(np.asarray(rgb)), _rgb_to_luma)


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length hashes."""
    if len(a) != len(b):
        raise ValueError("hashes differ in length: %d and %d bytes" % (len(a), len(b)))
    return bin(int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).count("1")


def hash_to_hex(h: bytes) -> str:
    """The reference's 64-character hex form."""
    return h.hex()
