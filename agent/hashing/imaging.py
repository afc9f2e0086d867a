"""Turning untrusted bytes into hashes: magic-byte sniffing, size and pixel limits, safe decoding,
exact digests (SHA-256, SHA-1, MD5) and the PDQ perceptual hash.

Owns the decode boundary: every failure leaves here as ``agent.core.errors.ImageError`` with a short reason
a log can carry (no subscriber data, no pixels). It owns no matching, policy or I/O beyond the bytes it
is given. Pillow does the decoding; a format allowlist, a header check of the dimensions before any
pixel is allocated and Pillow's own ``formats=`` restriction keep its attack surface small.

Speed: ``fast=True`` (the default on the network path) asks libjpeg to decode JPEGs at 1/2..1/8 scale
straight to luminance (Pillow ``draft``), which skips most of the IDCT, the chroma upsampling and the
colour conversion. The PDQ of the result differs from the full-resolution PDQ by a few bits (measured:
see docs/benchmarks.md "## Hashing"); ``fast=False`` decodes at full resolution and follows the reference
exactly.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from agent.hashing import pdq
from agent.core.errors import ImageError

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "ImageHashes",
    "sniff",
    "digests",
    "header_size",
    "hash_image",
    "FAST_MIN_SIDE",
]


class Limits(NamedTuple):
    """What the scanner agrees to decode. Checked before decoding, from the bytes and the header."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # width*height, checked from the header before decoding
    max_side: int = 20000
    formats: Tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP")


DEFAULT_LIMITS = Limits()

# Smallest side the fast path lets libjpeg scale down to. Each reduced pixel is weighted as the block
# of full-resolution pixels it stands for (agent.hashing.pdq ``full_shape``), so filter width and sample
# positions stay the reference's. Measured on scikit-image's samples and generated photos (JPEG q90):
# at 256 the hash is within 6 bits of the full-resolution one (median 0); at 128 textures such as
# "brick" drift by up to 28 bits, and the decode is barely faster because Huffman decoding dominates.
FAST_MIN_SIDE = 256


class ImageHashes(NamedTuple):
    """Every signal computed for one image. ``pdq``/``margins``/``dihedral`` are None when unavailable;
    ``neural``/``neural_margins`` only when a neural hasher was asked for (``hash_image(neural=...)``)."""

    sha256: bytes
    sha1: bytes
    md5: bytes
    pdq: Optional[bytes]
    pdq_quality: int
    margins: Optional[np.ndarray]
    dihedral: Optional[List[pdq.PdqResult]]
    format: str
    width: int
    height: int
    neural: Optional[bytes] = None  # 16-byte code of agent.hashing.neural; never leaves the device
    neural_margins: Optional[np.ndarray] = None
    neural_model: Optional[str] = None
    # (code, margins) of the neural extra queries (hash_image(neural_variants=True)): band lookups only
    neural_variants: Optional[List[Tuple[bytes, np.ndarray]]] = None


_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)

# Formats we recognise only to name them in the refusal.
_OTHER_MAGIC = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "GZIP"),
)


def sniff(data: bytes) -> Optional[str]:
    """The image format named by the magic bytes: "JPEG", "PNG", "GIF", "WEBP", "BMP" or None."""
    head = bytes(data[:16])
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            if fmt == "BMP" and len(head) < 14:
                return None  # "BM" alone is too weak a signal for a text file starting with BM
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe_unknown(data: bytes) -> str:
    """A short reason for bytes that are not one of our formats."""
    head = bytes(data[:16])
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return "unsupported format %s" % name
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "unsupported format %s" % ("AVIF" if brand.startswith(b"avi") else "HEIF")
        return "not an image (video/mp4?)"
    text = bytes(data[:512]).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script")):
        return "not an image (text/html?)"
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        return "unsupported format SVG" if b"<svg" in text else "not an image (text/xml?)"
    if text.startswith((b"{", b"[")):
        return "not an image (application/json?)"
    sample = bytes(data[:512])
    if sample and all(32 <= c < 127 or c in (9, 10, 13) for c in sample):
        return "not an image (text/plain?)"
    return "not an image (unknown format)"


def digests(data: bytes) -> Tuple[bytes, bytes, bytes]:
    """(sha256, sha1, md5) raw digests of ``data``: the exact-match signals hotlines distribute."""
    return (hashlib.sha256(data).digest(), hashlib.sha1(data).digest(), _md5(data))


def _md5(data: bytes) -> bytes:
    try:
        # Not used for security: it is a list key. FIPS builds refuse plain md5() without this flag.
        return hashlib.md5(data, usedforsecurity=False).digest()
    except TypeError:  # pragma: no cover - Python < 3.9 builds without the keyword
        return hashlib.md5(data).digest()


# --- header parsing: dimensions before Pillow sees the bytes -------------------------------------

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


_JPEG_MAX_SEGMENTS = 1024  # real files have a few dozen before the frame header
_JPEG_MAX_SCANS = 256  # progressive files have about 10 (mozjpeg up to ~20); libjpeg-turbo suggests 100+


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    i, n = 2, len(data)
    segments = 0
    while i + 4 <= n:
        segments += 1
        if segments > _JPEG_MAX_SEGMENTS:
            # Millions of tiny segments would keep Pillow's pure-Python marker loop busy for seconds.
            raise ImageError("corrupt JPEG image (over %d segments before the frame header)" % _JPEG_MAX_SEGMENTS)
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if length < 2:
            return None
        i += 2 + length
    return None


_PNG_MAX_CHUNKS_BEFORE_IDAT = 1024
_PNG_MAX_CHUNKS = 65536  # 20 MiB in 64 KiB IDATs is 320; tiny-IDAT encoders stay far below this
_GIF_MAX_BLOCKS_BEFORE_IMAGE = 4096


def _png_check_chunks(data: bytes) -> None:
    # Pillow walks chunks in Python: 1.5 million empty chunks kept it busy for 10 s.
    i, n, count, seen_idat = 8, len(data), 0, False
    while i + 8 <= n:
        count += 1
        length = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        if kind == b"IDAT":
            seen_idat = True
        elif not seen_idat and count > _PNG_MAX_CHUNKS_BEFORE_IDAT:
            raise ImageError("corrupt PNG image (over %d chunks before the image data)" % _PNG_MAX_CHUNKS_BEFORE_IDAT)
        if count > _PNG_MAX_CHUNKS:
            raise ImageError("corrupt PNG image (over %d chunks)" % _PNG_MAX_CHUNKS)
        if kind == b"IEND":
            return
        i += 12 + length


def _gif_check_blocks(data: bytes) -> None:
    # Same for GIF extension blocks before the first image (Pillow: 1.5 s for 3 million).
    n = len(data)
    if n < 13:
        return
    flags = data[10]
    i = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    blocks = 0
    while i < n:
        blocks += 1
        if blocks > _GIF_MAX_BLOCKS_BEFORE_IMAGE:
            raise ImageError("corrupt GIF image (over %d blocks before the first frame)" % _GIF_MAX_BLOCKS_BEFORE_IMAGE)
        kind = data[i]
        if kind != 0x21:
            return  # image descriptor, trailer or garbage: Pillow takes it from here
        i += 2  # introducer and label, then sub-blocks until a zero length
        while i < n:
            size = data[i]
            i += 1 + size
            if size == 0:
                break
            blocks += 1
            if blocks > _GIF_MAX_BLOCKS_BEFORE_IMAGE:
                raise ImageError(
                    "corrupt GIF image (over %d blocks before the first frame)" % _GIF_MAX_BLOCKS_BEFORE_IMAGE
                )


def header_size(fmt: str, data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) read from the header of ``data`` in format ``fmt``, or None if not found.

    Raises ImageError for headers built to waste time (a JPEG with thousands of empty segments).
    """
    try:
        if fmt == "PNG":
            if len(data) >= 24 and data[12:16] == b"IHDR":
                return struct.unpack(">II", data[16:24])
        elif fmt == "GIF":
            if len(data) >= 10:
                return struct.unpack("<HH", data[6:10])
        elif fmt == "BMP":
            if len(data) >= 26:
                (hdr,) = struct.unpack("<I", data[14:18])
                if hdr == 12:
                    return struct.unpack("<HH", data[18:22])
                w, h = struct.unpack("<ii", data[18:26])
                return abs(w), abs(h)  # negative height means top-down rows
        elif fmt == "WEBP":
            chunk = data[12:16]
            if chunk == b"VP8 " and len(data) >= 30:
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L" and len(data) >= 25:
                (bits,) = struct.unpack("<I", data[21:25])
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X" and len(data) >= 30:
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return w, h
        elif fmt == "JPEG":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _check_size(w: int, h: int, limits: Limits) -> None:
    if w <= 0 or h <= 0:
        raise ImageError("invalid image dimensions %dx%d" % (w, h))
    if w * h > limits.max_pixels:
        raise ImageError("image too large: %dx%d pixels exceeds limit %d" % (w, h, limits.max_pixels))
    if w > limits.max_side or h > limits.max_side:
        raise ImageError("image too large: %dx%d exceeds max side %d" % (w, h, limits.max_side))


def _decode_reason(exc: BaseException, fmt: str) -> str:
    text = str(exc).lower()
    if "truncated" in text or isinstance(exc, EOFError) or "not enough" in text or "premature" in text:
        return "truncated image"
    if isinstance(exc, MemoryError):
        return "image too large to decode in memory"
    if isinstance(exc, UnidentifiedImageError):
        return "corrupt image (not a valid %s file)" % fmt
    # Pillow's messages are short and carry no subscriber data; keep the first line, no object reprs.
    first = re.sub(r"<[^>]*>", "", str(exc).splitlines()[0])[:120].strip() if str(exc) else ""
    return "corrupt %s image (%s)" % (fmt, first or type(exc).__name__)


# --- decoding ------------------------------------------------------------------------------------

def _open(data: bytes, fmt: str, limits: Limits) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Our header check passed but Pillow's guard still tripped: refuse the same way.
        raise ImageError("image too large: %s" % str(exc).split(",")[0]) from None
    except Exception as exc:  # Pillow raises UnidentifiedImageError, SyntaxError, OSError, struct.error...
        raise ImageError(_decode_reason(exc, fmt)) from None
    # Pillow's parsed size is authoritative (e.g. a JPEG whose first SOF we could not find).
    _check_size(img.size[0], img.size[1], limits)
    return img


# Above this many pixels a decoded image is handed to PDQ band by band (pdq.RowSource) instead of as
# one numpy copy: np.asarray(img) costs a full copy (Pillow's tobytes) on top of Pillow's own buffer.
BANDED_MIN_PIXELS = 1 << 22


# Modes whose samples are wider than 8 bits. Pillow's convert() clips them to 0..255 rather than scaling,
# which turns a 16-bit greyscale PNG (decoded as I;16) into flat white; mode I holds the same 0..65535
# samples in Pillow versions that decode 16-bit PNGs to it.
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _wide_to_luma(img: Image.Image) -> np.ndarray:
    """float32 luminance 0..255 of a 16-bit greyscale image: each sample / 257, not clipped.

    A sample v of 0..65535 is v / 257 on PDQ's 0..255 scale, so an 8-bit image stored as 16 bits
    (v * 257) gives back exactly its 8-bit values and real 16-bit detail is kept rather than rounded.
    (16-bit RGB(A) and grey-alpha PNGs reach us as 8-bit RGB/RGBA: Pillow keeps their high byte.)
    """
    a = np.asarray(img)
    if a.dtype.kind == "f":
        a = np.nan_to_num(a)
    return np.clip(a, 0, 65535).astype(np.float32) * np.float32(1.0 / 257.0)


def _pixels(img: Image.Image):
    """The decoded image as PDQ input: uint8 L (HxW) or RGB (HxWx3), array or band-wise source."""
    img.load()
    w, h = img.size
    wide = img.mode in _WIDE_GREY
    direct = img.mode in ("L", "RGB")
    if w * h < BANDED_MIN_PIXELS:
        if wide:
            return _wide_to_luma(img)
        return np.asarray(img) if direct else _to_rgb(img)
    if not direct and not wide:
        img.info.pop("transparency", None)  # see _to_rgb

    def rows(start: int, stop: int) -> np.ndarray:
        band = img.crop((0, start, w, stop))
        if wide:
            return _wide_to_luma(band)
        return np.asarray(band if direct else band.convert("RGB"))

    return pdq.RowSource((h, w) if img.mode == "L" or wide else (h, w, 3), rows)


def _luma_fast(img: Image.Image, fmt: str):
    """Luminance (uint8 HxW) or RGB pixels the cheap way: JPEG scaled decode straight to Y."""
    if fmt == "JPEG" and img.mode in ("RGB", "YCbCr", "L"):
        w, h = img.size
        # draft picks the largest 1/2..1/8 scale that keeps both sides >= the requested size, and
        # mode "L" makes libjpeg output Y only: no chroma upsampling, no colour conversion.
        side = min(FAST_MIN_SIDE, w, h)
        img.draft("L", (side, side))
    return _pixels(img)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """RGB pixels as the reference sees them (``convert("RGB")``: alpha and transparency dropped)."""
    # convert("RGB") drops a palette's transparency anyway, but warns for byte-string transparency;
    # dropping it first gives the same pixels without a warning that a strict filter could raise.
    img.info.pop("transparency", None)
    return np.asarray(img.convert("RGB"))


def _luma_full(img: Image.Image):
    """The reference's input: RGB at full resolution (greyscale kept as luma, which is identical)."""
    return _pixels(img)


def _perceptual(pixels, full_shape, dihedral: bool) -> List[pdq.PdqResult]:
    if isinstance(pixels, pdq.RowSource):
        return pdq.pdq_from_rows(pixels, full_shape, dihedral=dihedral)
    if pixels.ndim == 3:
        if dihedral:
            return pdq.pdq_dihedral_from_rgb(pixels, full_shape)
        return [pdq.pdq_from_rgb(pixels, full_shape)]
    if dihedral:
        return pdq.pdq_dihedral_from_luma(pixels, full_shape)
    return [pdq.pdq_from_luma(pixels, full_shape)]


def hash_image(data: bytes, *, limits: Limits = DEFAULT_LIMITS, fast: bool = True, dihedral: bool = False,
               neural=None, neural_variants: bool = False) -> ImageHashes:
    """Digests and PDQ of one image given as bytes; ImageError (with a reason) if it is not acceptable.

    ``neural``: an ``agent.hashing.neural.NeuralHasher``; its code is computed from the same decoded
    image (no second decode). An exception of the network itself is not an ImageError: it propagates.
    ``neural_variants``: also the codes of the hasher's extra query pictures (what the scanner looks up).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("image data must be bytes, got %s" % type(data).__name__)
    data = bytes(data)
    if not data:
        raise ImageError("empty file")
    if len(data) > limits.max_bytes:
        raise ImageError("file too large: %d bytes exceeds limit %d" % (len(data), limits.max_bytes))
    fmt = sniff(data)
    if fmt is None:
        raise ImageError(_describe_unknown(data))
    if fmt not in limits.formats:
        raise ImageError("unsupported format %s" % fmt)
    size = header_size(fmt, data)
    if fmt == "JPEG" and data.count(b"\xff\xda") > _JPEG_MAX_SCANS:
        # Each progressive scan makes libjpeg pass over the whole coefficient buffer again.
        raise ImageError("corrupt JPEG image (over %d scans)" % _JPEG_MAX_SCANS)
    if fmt == "PNG":
        _png_check_chunks(data)
    elif fmt == "GIF":
        _gif_check_blocks(data)
    if size is None:
        if len(data) < 64:
            raise ImageError("truncated image")
    else:
        _check_size(size[0], size[1], limits)

    img = _open(data, fmt, limits)
    width, height = img.size
    full_shape = (height, width)
    try:
        try:
            pixels = _luma_fast(img, fmt) if fast else _luma_full(img)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError("image too large: %s" % str(exc).split(",")[0]) from None
        except (Exception, MemoryError) as exc:  # OSError, SyntaxError, ValueError, zlib.error, ...
            raise ImageError(_decode_reason(exc, fmt)) from None
        # Decoding is done (errors surfaced above); a RowSource still reads bands from the image.
        results = _perceptual(pixels, full_shape, dihedral)
        code = code_margins = variants = None
        if neural is not None and min(width, height) >= pdq.MIN_HASHABLE_DIM:
            code, code_margins = neural.code_and_margins(img)
            if neural_variants:
                variants = neural.variant_codes(img)
    finally:
        img.close()

    sha256, sha1, md5 = digests(data)
    first = results[0]
    # Below the reference's minimum size PDQ is all zeros: report "no perceptual hash" instead.
    hashable = min(width, height) >= pdq.MIN_HASHABLE_DIM
    return ImageHashes(
        sha256=sha256,
        sha1=sha1,
        md5=md5,
        pdq=first.hash if hashable else None,
        pdq_quality=first.quality if hashable else 0,
        margins=first.margins if hashable else None,
        dihedral=results if (dihedral and hashable) else None,
        format=fmt,
        width=width,
        height=height,
        neural=code,
        neural_margins=code_margins,
        neural_model=neural.manifest.get("name") if code is not None else None,
        neural_variants=variants,
    )

