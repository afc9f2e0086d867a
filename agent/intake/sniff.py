"""Which response bodies an intake hands to the scanner, decided from the first bytes and the type.

Owns only that cheap pre-decision; the scanner does its own, stricter sniffing and decoding.

Why "either says image" and not "both": the Content-Type is the server's claim and is often wrong in
both directions (images served as application/octet-stream or text/plain, thumbnails behind a CDN
with no type at all). Missing a listed image because its server lied about the type is the failure
we care about; scanning a body that claims image/* but is not one costs one failed magic check in the
scanner. So a body is scanned when its declared type is a raster image/* OR its first bytes are the
magic of an image format. SVG is text (no pixels to hash) and is never scanned.
"""

from __future__ import annotations

SNIFF_BYTES = 16  # enough for every signature below

_NOT_RASTER = ("image/svg+xml",)
# ISO-BMFF major brands of still images (AVIF, HEIF/HEIC and their sequences).
_HEIF_BRANDS = frozenset([b"avif", b"avis", b"avio", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                          b"hevs", b"mif1", b"msf1", b"mif2"])


def image_magic(head: bytes) -> bool:
    """Whether ``head`` starts with the signature of a raster image format."""
    return (
        head.startswith(b"\xff\xd8\xff")  # JPEG
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith((b"GIF87a", b"GIF89a"))
        or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")
        or head.startswith(b"BM")
        or head.startswith((b"II*\x00", b"MM\x00*"))  # TIFF
        or head.startswith(b"\x00\x00\x01\x00")  # ICO
        or (head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS)
        or head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL "))  # JPEG XL
    )


def type_says_image(media_type: str) -> bool:
    """Whether a media type (any case, parameters ignored) names a raster image."""
    media_type = str(media_type or "").split(";", 1)[0].strip(" \t").lower()
    return media_type.startswith("image/") and media_type not in _NOT_RASTER


def says_nothing(head: bytes, complete: bool) -> bool:
    """Whether ``head`` is too short to rule an image out (fewer than SNIFF_BYTES and more may follow)."""
    return not complete and len(head) < SNIFF_BYTES


def should_scan(media_type: str, head: bytes) -> bool:
    """Scan when the declared type OR the magic bytes say raster image (see module docstring)."""
    return type_says_image(media_type) or image_magic(bytes(head or b"")[:SNIFF_BYTES])
