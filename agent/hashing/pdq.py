"""PDQ perceptual hash (256 bits) of a luminance image, in numpy.

Owns the PDQ algorithm only: luma -> Jarosz tent filter -> decimate to 64x64 -> quality metric ->
16x16 DCT -> median threshold, plus the 8 dihedral variants taken from the same DCT. It follows the
published algorithm (Meta's ThreatExchange ``pdq/cpp``, "pdqhash-2017-10-09"); bits and hex agree with
that reference and with the ``pdqhash`` package. It does no file or image decoding (``agent.hashing.imaging``
does) and no matching.

Why not port the reference loop by loop: the reference filters the whole image (four 1-D box passes)
and then keeps 64x64 samples. The filter and the decimation are linear and separable, so both collapse
into one 64xH matrix ``A`` (rows) and one 64xW matrix ``B`` (columns): ``out = A @ luma @ B.T``. Each
row of ``A`` is non-zero only on a band of about H/64 rows, so the first product reads every pixel
about once. Only the bands are built (per row, on a local window; ~0.2 ms) and cached per size.
RGB is reduced per channel and weighted into luma on the 64 rows, so no float copy of the image is
made. ``full_shape`` lets a 1/2..1/8 scaled JPEG decode stand in for the full image: each reduced
pixel gets the summed weights of the block it covers (see ``agent.hashing.imaging``, fast path).

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
    "RowSource",
    "pdq_from_rows",
    "hamming",
    "hash_to_hex",
]

LUMA_R = 0.299
LUMA_G = 0.587
LUMA_B = 0.114

MIN_HASHABLE_DIM = 5  # the reference returns an all-zero hash, quality 0 below this
_OUT = 64  # decimated size

# The reference order of the dihedral variants. Variant k approximates (within ~16 bits, measured;
# the decimation grid is not symmetric) the original hash of the image transformed as:
# rot90 = np.rot90(a, 1) (counter-clockwise, PIL ROTATE_90), rot180, rot270 = np.rot90(a, 3),
# flipX = a[::-1] (upside down), flipY = a[:, ::-1] (mirror), flipPlusOne = a.T,
# flipMinusOne = np.rot90(a, 2).T (anti-transpose).
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


class _Axis(NamedTuple):
    starts: tuple  # per output row: first non-zero column
    weights: tuple  # per output row: float32 band of non-zero weights
    # Even and odd output rows each have non-overlapping bands, so each group is one weighted
    # np.add.reduceat: (output indices, band starts, float32 weight vector of length n). None when
    # bands overlap within a group (images under 64 px on this axis).
    groups: object


def _scale_of(n_full: int, n: int) -> int:
    """The integer JPEG scale (2, 4, 8, 16) that turns n_full into n, or 0 if none does."""
    for scale in (2, 4, 8, 16):
        if -(-n_full // scale) == n:  # libjpeg's scaled size: ceil(n_full / scale)
            return scale
    return 0


def _block_index(k: np.ndarray, n_full: int, n: int) -> np.ndarray:
    """For full-resolution indices k, the index of the reduced pixel that covers each."""
    scale = _scale_of(n_full, n)
    if scale:
        return k // scale
    return np.minimum(n - 1, (k * n) // n_full)


def _reference_bands(n: int):
    """Per output row, over a local window of 2*window+1 input indices: (global indices, weights).

    The same numbers as the dense decimate(box(box(.))) matrix (the tests' oracle) without building it: the tent reaches at
    most window-1 pixels either side of the decimated sample, so each row is computed on its window.
    """
    window = (n + 2 * _OUT - 1) // (2 * _OUT)
    half = (window + 2) // 2
    left = window - half
    pick = ((np.arange(_OUT) + 0.5) * n / _OUT).astype(np.int64)
    local = np.arange(-window, window + 1)
    g = pick[:, None] + local[None, :]
    valid = (g >= 0) & (g < n)
    count = np.minimum(n - 1, g + half - 1) - np.maximum(0, g - left) + 1
    # First pass: the sample's own box window, each input weighted 1/len(window).
    lo_p = np.maximum(0, pick - left)[:, None]
    hi_p = np.minimum(n - 1, pick + half - 1)[:, None]
    first = ((g >= lo_p) & (g <= hi_p)) / (hi_p - lo_p + 1)
    # Second pass: input j feeds every output k whose window holds j, with weight 1/count(k).
    u = np.where(valid, first / np.where(valid, count, 1), 0.0)
    csum = np.zeros((_OUT, u.shape[1] + 1))
    np.cumsum(u, axis=1, out=csum[:, 1:])
    a = np.arange(u.shape[1])
    hi = np.minimum(u.shape[1] - 1, a + left)
    lo = np.maximum(0, a - (half - 1))
    second = csum[:, hi + 1] - csum[:, lo]
    # Differences of a running sum leave 1e-17 crumbs where the weight is exactly 0.
    second = np.where(valid & (np.abs(second) > 1e-12), second, 0.0)
    return g, second


@functools.lru_cache(maxsize=64)
def _axis(n: int, n_full: int) -> _Axis:
    """The bands of the 64xn reduction for one image axis of length n (cached per size).

    When the pixels are a reduced decode of an axis of length ``n_full`` (JPEG scaled decoding),
    each reduced pixel stands for a block of full-resolution pixels; it gets the sum of the
    reference weights of its block. Filter width and sample positions then stay those of the
    full-resolution reference, rather than filtering the already averaged pixels a second time.
    Building one costs ~0.1 ms, so many image sizes in the traffic are cheap (measured: a dense
    64xn build cost 2-5 ms, more than hashing the image).
    """
    g, wts = _reference_bands(n_full)
    if n_full != n:
        m = _block_index(np.clip(g, 0, n_full - 1), n_full, n)
        base = m.min(axis=1)
        r = m - base[:, None]
        width = int(r.max()) + 1
        flat = (np.arange(_OUT)[:, None] * width + r).ravel().astype(np.intp)  # bincount needs intp (32-bit ARM)
        wts = np.bincount(flat, weights=wts.ravel(), minlength=_OUT * width).reshape(_OUT, width)
        g = base[:, None] + np.arange(width)[None, :]
    nz = wts != 0.0
    first = nz.argmax(axis=1)
    last = wts.shape[1] - 1 - nz[:, ::-1].argmax(axis=1)
    starts = []
    weights = []
    for i in range(_OUT):
        starts.append(int(g[i, first[i]]))
        band = wts[i, first[i]:last[i] + 1].astype(np.float32)
        band.setflags(write=False)
        weights.append(band)
    groups = []
    for parity in (0, 1):
        rows = list(range(parity, _OUT, 2))
        if any(starts[a] + len(weights[a]) > starts[b] for a, b in zip(rows, rows[1:])):
            groups = None  # overlapping bands (axes under ~64 px): the per-band loop handles them
            break
        vec = np.zeros(n, dtype=np.float32)
        for a in rows:
            vec[starts[a]:starts[a] + len(weights[a])] = weights[a]
        vec.setflags(write=False)  # shared by every thread hashing an image of this size
        groups.append((np.array(rows), np.array([starts[a] for a in rows]), vec))
    return _Axis(tuple(starts), tuple(weights), groups)


def _check_dims(shape) -> None:
    if len(shape) != 2:
        raise ValueError("PDQ needs a 2-D luminance array, got shape %r" % (tuple(shape),))


# Why einsum and not ``@``: on a busy 2-core gateway OpenBLAS's threads spin against each other and
# a 64x512x64 product took 40 ms instead of 0.5 ms. numpy's own einsum loops are single-threaded,
# vectorised and predictable, and every product here is a thin band anyway.


_LUMA_R32 = np.float32(LUMA_R)
_LUMA_G32 = np.float32(LUMA_G)
_LUMA_B32 = np.float32(LUMA_B)


def _reduce_rows(img: np.ndarray, h_full: int) -> np.ndarray:
    """64 x W float32 luma: ``A @ luma`` band by band (each output row reads ~H/64 input rows).

    RGB is reduced per channel and turned into luma afterwards, on 64 rows instead of H: the filter
    is linear, so this equals the reference's per-pixel luma (to float rounding) and never makes a
    float copy of the image. einsum reads uint8 directly, casting in its inner loop.
    """
    ax = _axis(img.shape[0], h_full)
    rgb = len(img.shape) == 3
    if rgb:
        out = np.empty((_OUT, img.shape[1], 3), dtype=np.float32)
        spec = "k,kwc->wc"
    else:
        out = np.empty((_OUT, img.shape[1]), dtype=np.float32)
        spec = "k,kw->w"
    for i in range(_OUT):
        s = ax.starts[i]
        band = ax.weights[i]
        pixels = img[s:s + band.shape[0]]  # an array, or a RowSource handing out decoded rows
        if rgb:
            pixels = pixels[:, :, :3]
        np.einsum(spec, band, pixels, out=out[i], casting="same_kind")
    if out.ndim == 3:
        # The reference's coefficients (fillFloatLumaFromRGB), in float32.
        luma = out[:, :, 0] * _LUMA_R32
        luma += out[:, :, 1] * _LUMA_G32
        luma += out[:, :, 2] * _LUMA_B32
        return luma
    return out


def _downsample64(img: np.ndarray, full) -> np.ndarray:
    """The reference's 64x64 blurred and decimated luma (float32)."""
    h_full, w_full = full
    rows = _reduce_rows(img, h_full)  # 64 x W
    ax = _axis(img.shape[1], w_full)
    out = np.empty((_OUT, _OUT), dtype=np.float32)
    if ax.groups is not None:
        for cols, starts, vec in ax.groups:
            out[:, cols] = np.add.reduceat(rows * vec, starts, axis=1)
        return out
    for j in range(_OUT):
        s = ax.starts[j]
        band = ax.weights[j]
        np.einsum("k,ik->i", band, rows[:, s:s + band.shape[0]], out=out[:, j])
    return out


def _quality(buf: np.ndarray) -> int:
    """The reference's image-domain quality: quantised gradient sum of the 64x64 buffer."""
    hundred = np.float32(100.0)
    d255 = np.float32(255.0)
    dv = np.trunc(((buf[:-1, :] - buf[1:, :]) * hundred) / d255)
    dh = np.trunc(((buf[:, :-1] - buf[:, 1:]) * hundred) / d255)
    total = int(np.abs(dv).sum(dtype=np.float64)) + int(np.abs(dh).sum(dtype=np.float64))
    return min(100, total // 90)


def _dct16(buf: np.ndarray) -> np.ndarray:
    # Two thin products (16x64 by 64x64, then by 64x16), as the reference's dct64To16.
    t = np.einsum("ik,kl->il", _DCT, buf.astype(np.float64))
    return np.einsum("il,jl->ij", t, _DCT)


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


def _full_shape(img: np.ndarray, full_shape):
    h, w = img.shape[0], img.shape[1]
    if full_shape is None:
        return h, w
    try:
        fh, fw = (int(x) for x in full_shape)
    except (TypeError, ValueError):
        raise ValueError("full_shape must be (height, width), got %r" % (full_shape,)) from None
    if fh < h or fw < w or (fh > 16 * h + 16) or (fw > 16 * w + 16):
        raise ValueError("full_shape %r does not fit a 1/1..1/16 scaled decode of %dx%d" % (full_shape, h, w))
    return fh, fw


def _from(img: np.ndarray, full_shape) -> PdqResult:
    full = _full_shape(img, full_shape)
    if min(full) < MIN_HASHABLE_DIM or min(img.shape[0], img.shape[1]) < 1:
        return _zero_result()
    buf = _downsample64(img, full)
    return _bits(_dct16(buf), _quality(buf))


def _dihedral_from(img: np.ndarray, full_shape) -> List[PdqResult]:
    full = _full_shape(img, full_shape)
    if min(full) < MIN_HASHABLE_DIM or min(img.shape[0], img.shape[1]) < 1:
        return [_zero_result() for _ in DIHEDRAL_NAMES]
    buf = _downsample64(img, full)
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


def _luma_checked(luma: np.ndarray) -> np.ndarray:
    _check_dims(luma.shape)
    if not np.issubdtype(luma.dtype, np.number) or np.issubdtype(luma.dtype, np.complexfloating):
        raise ValueError("PDQ needs a real-valued luminance array, got dtype %s" % luma.dtype)
    if luma.dtype.kind == "f" and luma.size and not np.isfinite(luma).all():
        raise ValueError("luminance array contains NaN or infinity")
    return luma


def _rgb_checked(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError("PDQ needs an HxWx3 RGB array, got shape %r" % (tuple(rgb.shape),))
    if rgb.dtype != np.uint8:
        raise ValueError("PDQ needs uint8 RGB, got dtype %s" % rgb.dtype)
    return rgb


# ``full_shape``: when the array is a 1/2..1/8 scaled decode (JPEG draft) of an image of
# (height, width) = full_shape, hash it as an approximation of the full-resolution image.


def pdq_from_luma(luma: np.ndarray, full_shape=None) -> PdqResult:
    """PDQ hash of a 2-D luminance array (values 0..255; uint8 or float)."""
    luma = np.asarray(luma)
    return _from(_luma_checked(luma), full_shape)


def pdq_from_rgb(rgb: np.ndarray, full_shape=None) -> PdqResult:
    """PDQ hash of an HxWx3 uint8 RGB array (alpha, if present, is ignored as the reference does)."""
    return _from(_rgb_checked(np.asarray(rgb)), full_shape)


def pdq_dihedral_from_luma(luma: np.ndarray, full_shape=None) -> List[PdqResult]:
    """The 8 dihedral PDQ hashes (``DIHEDRAL_NAMES`` order) from one filter pass and one DCT."""
    luma = np.asarray(luma)
    return _dihedral_from(_luma_checked(luma), full_shape)


def pdq_dihedral_from_rgb(rgb: np.ndarray, full_shape=None) -> List[PdqResult]:
    """The 8 dihedral PDQ hashes of an HxWx3 uint8 RGB array."""
    return _dihedral_from(_rgb_checked(np.asarray(rgb)), full_shape)


class RowSource:
    """Rows of an image handed out band by band, so a caller never materialises the whole array.

    ``shape`` is (height, width) for luminance or (height, width, 3) for RGB; ``rows(start, stop)``
    returns that band as a uint8 (or float) array. ``agent.hashing.imaging`` uses it to convert large decoded
    images a band at a time instead of copying them whole.
    """

    def __init__(self, shape, rows):
        self.shape = tuple(int(x) for x in shape)
        if len(self.shape) not in (2, 3) or (len(self.shape) == 3 and self.shape[2] != 3):
            raise ValueError("RowSource shape must be (h, w) or (h, w, 3), got %r" % (shape,))
        self._rows = rows

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("RowSource only hands out contiguous row ranges")
        start = 0 if key.start is None else max(0, key.start)
        stop = self.shape[0] if key.stop is None else min(self.shape[0], key.stop)
        band = np.asarray(self._rows(start, stop))
        if band.shape[:2] != (stop - start, self.shape[1]):
            raise ValueError("RowSource returned shape %r for rows %d..%d" % (band.shape, start, stop))
        return band


def pdq_from_rows(source: RowSource, full_shape=None, dihedral: bool = False) -> List[PdqResult]:
    """PDQ (or, with ``dihedral``, all 8 variants) of an image read band by band from ``source``."""
    if not isinstance(source, RowSource):
        raise TypeError("pdq_from_rows needs a RowSource")
    if dihedral:
        return _dihedral_from(source, full_shape)
    return [_from(source, full_shape)]


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length hashes."""
    if len(a) != len(b):
        raise ValueError("hashes differ in length: %d and %d bytes" % (len(a), len(b)))
    return bin(int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).count("1")


def hash_to_hex(h: bytes) -> str:
    """The reference's 64-character hex form."""
    return h.hex()
