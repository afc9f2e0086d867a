"""What counts as "could be an image" for the intakes."""

import pytest

from agent.hashing.samples import encode, generate_image
from agent.intake.sniff import SNIFF_BYTES, image_magic, says_nothing, should_scan, type_says_image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_generated_images_have_magic(fmt):
    data = encode(generate_image(3, (64, 48)), fmt)
    assert image_magic(data[:SNIFF_BYTES]) and should_scan("text/plain", data[:SNIFF_BYTES])


@pytest.mark.parametrize("brand", [b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1",
                                   b"msf1"])
def test_heif_family_brands(brand):
    assert image_magic(b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00")


@pytest.mark.parametrize("media, raster", [
    ("image/jpeg", True), ("IMAGE/PNG", True), ("image/png; charset=x", True), (" image/webp ", True),
    ("image/svg+xml", False), ("image/svg+xml; charset=utf-8", False), ("IMAGE/SVG+XML", False),
    ("text/html", False), ("", False), (None, False), ("application/octet-stream", False),
])
def test_type_says_image(media, raster):
    assert type_says_image(media) is raster


def test_not_images_and_odd_inputs():
    assert not should_scan("text/html", b"<!DOCTYPE html>")
    assert not should_scan("", b"")
    assert not should_scan("", None)
    assert should_scan("", b"\xff\xd8\xff" + b"x" * 100)  # only the first SNIFF_BYTES are looked at


def test_says_nothing():
    assert says_nothing(b"", complete=False) and says_nothing(b"\xff\xd8", complete=False)
    assert not says_nothing(b"", complete=True) and not says_nothing(b"x" * SNIFF_BYTES, complete=False)
