"""agent.hashing.pdq against the reference (the ``pdqhash`` package wraps Meta's C++ PDQ)."""

import io
import statistics

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from agent.hashing import pdq, samples

pdqhash = pytest.importorskip("pdqhash")


def ref_hash(rgb):
    """(hash bytes, quality) from the reference, in our byte order (its vector is MSB first)."""
    vec, quality = pdqhash.compute(np.ascontiguousarray(rgb))
    return np.packbits(np.asarray(vec, dtype=np.uint8)).tobytes(), quality


def ref_dihedral(rgb):
    vecs, quality = pdqhash.compute_dihedral(np.ascontiguousarray(rgb))
    return [np.packbits(np.asarray(v, dtype=np.uint8)).tobytes() for v in vecs], quality


@pytest.fixture(scope="module")
def corpus():
    """skimage's bundled photos plus generated pictures (two sizes), as RGB arrays."""
    items = [(name, np.asarray(img)) for name, img in samples.sample_images()]
    items += [("gen%d" % s, np.asarray(samples.generate_image(s))) for s in range(4)]
    items += [("gen%d-small" % s, np.asarray(samples.generate_image(s, (333, 250)))) for s in range(10, 14)]
    return items


def test_agrees_with_reference_on_sample_and_generated_images(corpus):
    distances = []
    for name, rgb in corpus:
        mine = pdq.pdq_from_rgb(rgb)
        theirs, quality = ref_hash(rgb)
        assert abs(mine.quality - quality) <= 1, name
        if quality >= 80:
            d = pdq.hamming(mine.hash, theirs)
            assert d <= 10, (name, d)
            distances.append(d)
    assert len(distances) >= 20
    assert statistics.median(distances) <= 4
    # In practice the implementations agree bit for bit; keep that visible if it ever regresses.
    assert sum(distances) <= 2 * len(distances)


def test_hex_is_the_reference_hex_string(corpus):
    name, rgb = corpus[0]
    mine = pdq.pdq_from_rgb(rgb)
    vec, _ = pdqhash.compute(rgb)
    ref_hex = "%064x" % int("".join(str(int(b)) for b in vec), 2)
    assert pdq.hash_to_hex(mine.hash) == ref_hex == mine.hash.hex()
    assert len(mine.hash) == 32


def test_bit_i_is_coefficient_i_above_the_median_and_margins_are_distances(corpus):
    _, rgb = corpus[1]
    mine = pdq.pdq_from_rgb(rgb)
    floats, _ = pdqhash.compute_float(rgb)
    coefs = np.asarray(floats, dtype=np.float64)[::-1]  # compute_float returns coefficient 255 first
    median = np.sort(coefs)[127]
    as_int = int.from_bytes(mine.hash, "big")
    for i in range(256):
        assert ((as_int >> i) & 1) == int(coefs[i] > median), i
    assert mine.margins.dtype == np.float32 and mine.margins.shape == (256,)
    np.testing.assert_allclose(mine.margins, np.abs(coefs - median), rtol=1e-3, atol=1e-2)
    assert bin(as_int).count("1") == 128


def test_dihedral_variants_agree_with_reference(corpus):
    for name, rgb in corpus[::3]:
        mine = pdq.pdq_dihedral_from_rgb(rgb)
        theirs, quality = ref_dihedral(rgb)
        assert len(mine) == 8 == len(pdq.DIHEDRAL_NAMES)
        assert all(m.quality == mine[0].quality for m in mine)
        if quality >= 80:
            for k, (m, t) in enumerate(zip(mine, theirs)):
                assert pdq.hamming(m.hash, t) <= 10, (name, pdq.DIHEDRAL_NAMES[k])
        assert mine[0].hash == pdq.pdq_from_rgb(rgb).hash


def test_dihedral_variants_predict_hashes_of_transformed_images():
    luma = np.asarray(samples.generate_image(5, (512, 384)).convert("L"), dtype=np.float32)
    variants = pdq.pdq_dihedral_from_luma(luma)
    transformed = {
        "rot90": np.rot90(luma, 1),
        "rot180": np.rot90(luma, 2),
        "rot270": np.rot90(luma, 3),
        "flipX": luma[::-1],
        "flipY": luma[:, ::-1],
        "flipPlusOne": luma.T,
        "flipMinusOne": np.rot90(luma, 2).T,
    }
    for name, arr in transformed.items():
        h = pdq.pdq_from_luma(np.ascontiguousarray(arr)).hash
        dists = [pdq.hamming(h, v.hash) for v in variants]
        assert pdq.DIHEDRAL_NAMES[int(np.argmin(dists))] == name
        assert min(dists) <= 20, (name, dists)


def test_luma_and_rgb_entry_points_agree():
    rgb = np.asarray(samples.generate_image(9, (300, 200)))
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert pdq.pdq_from_luma(luma).hash == pdq.pdq_from_rgb(rgb).hash
    # uint8 greyscale (what Pillow's "L" gives) is accepted as is.
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    assert pdq.hamming(pdq.pdq_from_luma(grey).hash, pdq.pdq_from_rgb(rgb).hash) <= 8
    # Alpha is ignored, as in the reference.
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    assert pdq.pdq_from_rgb(rgba).hash == pdq.pdq_from_rgb(rgb).hash


def test_large_image_uses_banded_path_and_still_agrees():
    rng = np.random.default_rng(3)
    base = Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8)).resize((2400, 1800), Image.BICUBIC)
    rgb = np.asarray(base)
    mine = pdq.pdq_from_rgb(rgb)
    theirs, quality = ref_hash(rgb)
    assert pdq.hamming(mine.hash, theirs) <= 4
    assert abs(mine.quality - quality) <= 1


def test_scaled_decode_with_full_shape_approximates_full_resolution():
    img = samples.generate_image(2)
    data = samples.encode(img, "JPEG", 90)
    full = Image.open(io.BytesIO(data))
    full_hash = pdq.pdq_from_luma(np.asarray(full.convert("L"))).hash
    small = Image.open(io.BytesIO(data))
    small.draft("L", (128, 128))
    small_arr = np.asarray(small)
    assert small_arr.shape == (192, 256)
    with_shape = pdq.pdq_from_luma(small_arr, full_shape=(768, 1024)).hash
    without = pdq.pdq_from_luma(small_arr).hash
    assert pdq.hamming(with_shape, full_hash) <= 8
    # Weighting by block is what makes the scaled decode usable: plain hashing drifts further.
    assert pdq.hamming(with_shape, full_hash) <= pdq.hamming(without, full_hash)


def test_tiny_images_follow_the_reference_minimum():
    rgb = np.asarray(samples.generate_image(1, (4, 30)))
    r = pdq.pdq_from_rgb(rgb)
    theirs, quality = ref_hash(rgb)
    assert r.hash == bytes(32) == theirs and r.quality == 0 == quality
    assert len(pdq.pdq_dihedral_from_rgb(rgb)) == 8
    # 64x64 is the reference's pass-through size; 5x5 the smallest it hashes.
    for shape in ((64, 64), (5, 5), (63, 65)):
        rgb = np.asarray(samples.generate_image(2, (shape[1], shape[0])))
        mine = pdq.pdq_from_rgb(rgb)
        theirs, quality = ref_hash(rgb)
        assert pdq.hamming(mine.hash, theirs) <= 2, shape
        assert abs(mine.quality - quality) <= 1


def test_flat_image_has_zero_quality():
    assert pdq.pdq_from_luma(np.full((200, 300), 128, np.uint8)).quality == 0


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10, 10), np.float32),
        np.zeros(100, np.float32),
        np.full((10, 10), np.nan, np.float32),
        np.zeros((10, 10), np.complex64),
        np.array([["a"] * 10] * 10),
    ],
)
def test_bad_luma_is_refused(bad):
    with pytest.raises(ValueError):
        pdq.pdq_from_luma(bad)
    with pytest.raises(ValueError):
        pdq.pdq_dihedral_from_luma(bad)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 2), np.uint8), np.zeros((10, 10, 3), np.float32)],
)
def test_bad_rgb_is_refused(bad):
    with pytest.raises(ValueError):
        pdq.pdq_from_rgb(bad)


@pytest.mark.parametrize("shape", [(10, 10), "x", (1000, 1000), (5,)])
def test_bad_full_shape_is_refused(shape):
    with pytest.raises(ValueError):
        pdq.pdq_from_luma(np.zeros((20, 20), np.uint8), full_shape=shape)


def test_hamming():
    a = bytes(32)
    assert pdq.hamming(a, a) == 0
    assert pdq.hamming(a, b"\xff" * 32) == 256
    assert pdq.hamming(a, b"\x00" * 31 + b"\x05") == 2
    with pytest.raises(ValueError):
        pdq.hamming(a, bytes(31))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(5, 300),
    w=st.integers(5, 300),
    cells=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_agrees_with_reference_except_on_knife_edge_bits(h, w, cells, seed):
    """Any size: bits may differ only where the coefficient sits on the median (float rounding)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((cells, cells, 3)) * 255).astype(np.uint8))
    rgb = np.asarray(small.resize((w, h), Image.BICUBIC))
    mine = pdq.pdq_from_rgb(rgb)
    theirs, quality = ref_hash(rgb)
    assert abs(mine.quality - quality) <= 1
    diff = int.from_bytes(mine.hash, "big") ^ int.from_bytes(theirs, "big")
    scale = float(np.max(mine.margins)) or 1.0
    for i in range(256):
        if (diff >> i) & 1:
            assert mine.margins[i] <= 1e-4 * scale, (i, mine.margins[i])


# Oracles: the straightforward constructions the banded run-time filter is checked against.
def _box_transposed(rows, window):
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



def _reference_rows(n):
    """float64 64xn: the reference's decimate(box(box(x))) along one axis, as a dense matrix."""
    if n == pdq._OUT:
        return np.eye(pdq._OUT)  # the reference copies a 64x64 input as is
    window = (n + 2 * pdq._OUT - 1) // (2 * pdq._OUT)
    pick = ((np.arange(pdq._OUT) + 0.5) * n / pdq._OUT).astype(np.int64)
    dense = np.zeros((pdq._OUT, n), dtype=np.float64)
    dense[np.arange(pdq._OUT), pick] = 1.0
    # Two X,Y passes in the reference; along one axis they are two box passes.
    return _box_transposed(_box_transposed(dense, window), window)


def _block_map(n_full, n):
    """The reduced pixel that covers each full-resolution index."""
    return pdq._block_index(np.arange(n_full), n_full, n)


def _dense(ax, n):
    out = np.zeros((64, n))
    for i, (s, w) in enumerate(zip(ax.starts, ax.weights)):
        out[i, s:s + len(w)] = w
    return out


@pytest.mark.parametrize("n", list(range(5, 140, 7)) + [255, 256, 257, 511, 768, 1023, 1411, 4000, 20000])
def test_banded_filter_equals_the_dense_reference_construction(n):
    """The per-row local construction used at run time equals decimate(box(box(.))) built densely."""
    ref = _reference_rows(n)
    np.testing.assert_allclose(_dense(pdq._axis(n, n), n), ref, atol=1e-6)
    np.testing.assert_allclose(ref.sum(axis=1), 1.0)
    for scale in (2, 4, 8):
        m = -(-n // scale)
        reduced = np.zeros((64, m))
        np.add.at(reduced.T, _block_map(n, m), ref.T)
        np.testing.assert_allclose(_dense(pdq._axis(m, n), m), reduced, atol=1e-6)


def test_row_source_gives_the_array_result_and_checks_its_bands():
    rgb = np.asarray(samples.generate_image(8, (400, 300)))
    source = pdq.RowSource(rgb.shape, lambda a, b: rgb[a:b])
    got, want = pdq.pdq_from_rows(source)[0], pdq.pdq_from_rgb(rgb)
    assert got.hash == want.hash and got.quality == want.quality
    np.testing.assert_array_equal(got.margins, want.margins)
    dihedral = pdq.pdq_from_rows(source, dihedral=True)
    assert [d.hash for d in dihedral] == [d.hash for d in pdq.pdq_dihedral_from_rgb(rgb)]
    luma = rgb[:, :, 1]
    assert pdq.pdq_from_rows(pdq.RowSource(luma.shape, lambda a, b: luma[a:b]))[0].hash == pdq.pdq_from_luma(luma).hash
    liar = pdq.RowSource(rgb.shape, lambda a, b: rgb[a:a + 1])
    with pytest.raises(ValueError, match="returned shape"):
        pdq.pdq_from_rows(liar)
    with pytest.raises(ValueError):
        pdq.RowSource((10, 10, 4), lambda a, b: None)
    with pytest.raises(TypeError):
        pdq.pdq_from_rows(rgb)
