"""agent.hashing.samples: the benign stand-in images every other test, the demo and the benchmarks build on."""

import io
import itertools
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from agent.hashing import imaging, pdq, samples


@pytest.fixture(scope="module")
def photos():
    return [samples.generate_image(s) for s in range(8)]


@pytest.fixture(scope="module")
def photo_hashes(photos):
    return [pdq.pdq_from_rgb(np.asarray(p)) for p in photos]


def test_generate_image_is_deterministic_rgb_of_the_requested_size():
    a = samples.generate_image(42, (320, 200))
    b = samples.generate_image(42, (320, 200))
    assert a.mode == "RGB" and a.size == (320, 200)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != samples.generate_image(43, (320, 200)).tobytes()
    assert samples.generate_image(1).size == (1024, 768)


def test_generated_images_have_high_quality_and_unrelated_hashes(photo_hashes):
    qualities = [h.quality for h in photo_hashes]
    assert sum(q >= 80 for q in qualities) >= len(qualities) - 1, qualities
    dists = [pdq.hamming(a.hash, b.hash) for a, b in itertools.combinations(photo_hashes, 2)]
    assert 110 <= np.mean(dists) <= 146, np.mean(dists)
    assert min(dists) >= 70  # far from any plausible match threshold (PDQ uses ~31)


def test_generated_images_look_natural_not_noise(photos):
    arr = np.asarray(photos[0], dtype=np.float32)
    # Broad structure: a 1/16 downscale keeps most of the variance (pure noise would lose it).
    small = np.asarray(photos[0].resize((64, 48), Image.BOX), dtype=np.float32)
    assert small.std() > 0.5 * arr.std()
    assert arr.std() > 25  # and there is real contrast
    assert len(np.unique(arr.reshape(-1, 3)[::97], axis=0)) > 500  # many colours


@pytest.mark.parametrize("bad", [(-1, 10), (0, 0)])
def test_generate_image_refuses_bad_size(bad):
    with pytest.raises(ValueError):
        samples.generate_image(1, bad)


def test_generate_image_refuses_bad_seed():
    with pytest.raises(TypeError):
        samples.generate_image("1")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_encode_produces_each_format(fmt):
    img = samples.generate_image(3, (120, 90))
    data = samples.encode(img, fmt)
    assert imaging.sniff(data) == fmt
    assert Image.open(io.BytesIO(data)).size == (120, 90)


def test_encode_jpeg_quality_and_png_lossless():
    img = samples.generate_image(3, (200, 150))
    assert len(samples.encode(img, "JPEG", 30)) < len(samples.encode(img, "JPEG", 95))
    back = Image.open(io.BytesIO(samples.encode(img, "PNG"))).convert("RGB")
    assert back.tobytes() == img.tobytes()
    with pytest.raises((KeyError, ValueError, OSError)):
        samples.encode(img, "NOSUCHFORMAT")


def test_transforms_do_what_they_say():
    img = samples.generate_image(6, (400, 300))
    arr = np.asarray(img)
    assert np.array_equal(np.asarray(samples.transform(img, "flip")), arr[:, ::-1])
    assert np.array_equal(np.asarray(samples.transform(img, "rotate90")), np.rot90(arr, 1))
    assert np.array_equal(np.asarray(samples.transform(img, "png")), arr)
    assert samples.transform(img, "half").size == (200, 150)
    assert samples.transform(img, "crop5").size == (380, 284)  # 2.5% (rounded) off every edge
    j = samples.transform(img, "jpeg50")
    assert j.mode == "RGB" and j.size == img.size and j.tobytes() != img.tobytes()
    assert set(samples.TRANSFORMS) == {"jpeg50", "half", "flip", "png", "crop5", "rotate90"}
    with pytest.raises(ValueError, match="unknown transform"):
        samples.transform(img, "blur")


def test_transformed_images_stay_near_the_original_hash(photos, photo_hashes):
    """Figures measured: jpeg50 <= 6, half <= 12, png 0; flip/rotate90 via dihedral <= 12.

    crop5 moves PDQ by 36..64 bits (PDQ is not crop-robust); it is here to show a non-match.
    """
    for img, h in list(zip(photos, photo_hashes))[:4]:
        for kind, bound in (("jpeg50", 12), ("half", 14), ("png", 0)):
            d = pdq.hamming(pdq.pdq_from_rgb(np.asarray(samples.transform(img, kind))).hash, h.hash)
            assert d <= bound, (kind, d)
        for kind in ("flip", "rotate90"):
            moved = pdq.pdq_dihedral_from_rgb(np.asarray(samples.transform(img, kind)))
            assert min(pdq.hamming(v.hash, h.hash) for v in moved) <= 16, kind
        cropped = pdq.pdq_from_rgb(np.asarray(samples.transform(img, "crop5"))).hash
        assert pdq.hamming(cropped, h.hash) > 16


def test_sample_images_are_bundled_rgb_and_never_touch_the_network(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("sample_images must not open sockets")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    items = samples.sample_images()
    names = [n for n, _ in items]
    assert len(names) == len(set(names)) >= 15
    for must in ("astronaut", "camera", "coffee", "chelsea", "rocket"):
        assert must in names
    for name, img in items:
        assert isinstance(img, Image.Image) and img.mode == "RGB", name
        assert min(img.size) >= 64, name


def test_sample_images_are_mostly_good_pdq_inputs():
    hashes = [pdq.pdq_from_rgb(np.asarray(img)) for _, img in samples.sample_images()]
    assert sum(h.quality >= 80 for h in hashes) >= len(hashes) - 3
    assert len({h.hash for h in hashes}) == len(hashes)


def test_tiny_png_is_small_stable_and_needs_no_skimage():
    data = samples.tiny_png()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) < 4096
    assert data == samples.tiny_png()
    h = imaging.hash_image(data)
    assert (h.format, h.width, h.height) == ("PNG", 64, 48)
    assert h.pdq_quality >= 80
    code = (
        "import sys; from agent.hashing import samples, imaging; "
        "imaging.hash_image(samples.tiny_png()); samples.generate_image(1, (32, 32)); "
        "print('skimage' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
