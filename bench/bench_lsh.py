"""Perceptual (PDQ) list benchmark: recall against Hamming distance, false candidates, bytes per entry.

    python bench/bench_lsh.py [--entries 1000000] [--images 40]

For each LSH setting it builds a filter of N random 256-bit hashes (stand-ins for a large list) plus
the PDQ hashes of generated benign "known" images, then measures:
- recall by distance bucket for real transforms of the known images (JPEG q50, 50% downscale, PNG,
  flip, 5% crop) as the device sees them (fast decode, dihedral variants);
- recall by distance for uniform random bit flips (no reliability information helps there: the worst
  case for multi-probe);
- probes per image and the measured false-positive rate per probe (millions of random keys), whose
  product is the expected number of false candidates per unrelated image;
- bytes per entry of the filter.
The baseline in the same run is the exact-band setting (no multi-probe).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from agent.matching import bloom_batch, lsh_batch as lsh_np  # noqa: E402
from agent.hashing import samples  # noqa: E402
from agent.core.bloom import Bloom  # noqa: E402
from agent.core.lsh import hamming  # noqa: E402
from agent.hashing.imaging import hash_image  # noqa: E402

BUCKETS = [(0, 4), (5, 8), (9, 12), (13, 16), (17, 24), (25, 31)]
KINDS = ("jpeg50", "half", "png", "flip", "crop5")  # the real transforms, in prepare()'s order


def build(hashes, bands, bits_per_entry):
    n = len(hashes)
    m = int(bits_per_entry * n)
    k = max(1, int(round(m / (n * bands) * np.log(2))))
    b = Bloom(m, k, os.urandom(16))
    bloom_batch.add_many(b, lsh_np.band_keys_many(hashes, bands))
    return b


def found(bloom, queries, bands, flip_bits, depth):
    """queries: list of list of (hash, margins) variants -> (hit per query, probes per query)."""
    hits, probes = [], []
    for variants in queries:
        pairs = []
        for h, margins in variants:
            pairs.extend(lsh_np.probes(h, margins, bands, flip_bits, depth))
        pairs = list(dict.fromkeys(pairs))
        probes.append(len(pairs))
        hits.append(bool(bloom_batch.contains_many(bloom, lsh_np.probe_keys(pairs, bands)).any()))
    return np.array(hits), np.array(probes)


def prepare(images, rng, unrelated_images=20):
    """The queries every LSH bench measures: (known hashes, real, synthetic, unrelated).

    real and synthetic are lists of (true distance, variants); unrelated is a list of variants; a
    variant is (hash, margins) as the device computes it. real[i] is transform KINDS[i % len(KINDS)].
    """
    known = [samples.generate_image(s) for s in range(2000, 2000 + images)]
    known += [img for _, img in samples.sample_images()]
    known_bytes = [samples.encode(img, "JPEG", quality=90) for img in known]
    known_hashes = [hash_image(b, fast=False) for b in known_bytes]
    real = []  # (distance, variants)
    for img_bytes, h0 in zip(known_bytes, known_hashes):
        original = Image.open(io.BytesIO(img_bytes))
        for kind in KINDS:
            t = original if kind == "png" else samples.transform(original, kind)
            data = samples.encode(t, "PNG" if kind == "png" else "JPEG", quality=90)
            hq = hash_image(data, fast=True, dihedral=True)
            d = min(hamming(v.hash, h0.pdq) for v in hq.dihedral)
            real.append((d, [(v.hash, v.margins) for v in hq.dihedral]))
    synthetic = []
    for h0 in known_hashes:
        bits = int.from_bytes(h0.pdq, "big")
        for d in (4, 8, 12, 16, 20, 24, 28, 31):
            flip = rng.choice(256, size=d, replace=False)
            x = bits
            for i in flip:
                x ^= 1 << int(i)
            synthetic.append((d, [(x.to_bytes(32, "big"), None)]))
    unrelated = []
    for s in range(9000, 9000 + unrelated_images):
        hq = hash_image(samples.encode(samples.generate_image(s), "JPEG"), fast=True, dihedral=True)
        unrelated.append([(v.hash, v.margins) for v in hq.dihedral])
    return known_hashes, real, synthetic, unrelated


def list_entries(known_hashes, n, rng):
    """(n + known, 32) uint8: n random 256-bit hashes standing in for a large list, plus the known ones."""
    filler = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    return np.concatenate([filler, np.frombuffer(b"".join(h.pdq for h in known_hashes), np.uint8)
                           .reshape(-1, 32)])


def arguments(doc):
    """The options every LSH bench takes (list size, known images, filter budget)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--budget-mb", type=float, default=16.0, help="filter size budget for --entries")
    return ap


def setup(args):
    """rng, queries (prepare) and list entries (list_entries) for parsed ``arguments``, and bits per entry."""
    rng = np.random.default_rng(1)
    t0 = time.time()
    known_hashes, real, synthetic, unrelated = prepare(args.images, rng)
    print("prepared %d real and %d synthetic queries in %.1fs" % (len(real), len(synthetic), time.time() - t0))
    entries = list_entries(known_hashes, args.entries, rng)
    return rng, real, synthetic, unrelated, entries, args.budget_mb * 8e6 / args.entries


def main() -> None:
    args = arguments(__doc__).parse_args()
    rng, real, synthetic, unrelated, entries, bits_per_entry = setup(args)
    settings = [(8, 0, 0), (8, 4, 1), (8, 6, 2), (6, 6, 2), (6, 8, 2), (7, 6, 2), (10, 4, 1)]
    print("filter budget %.1f MB for %d entries = %.1f bits/entry" % (args.budget_mb, args.entries,
                                                                     bits_per_entry))
    header = ["bands", "flip", "depth"] + ["%d-%d" % b for b in BUCKETS] + \
             ["syn<=16", "syn17-31", "probes/img", "fp/probe", "false cand/img"]
    print(" | ".join(header))
    base_recall = None
    for bands, flip_bits, depth in settings:
        bloom = build(entries, bands, bits_per_entry)
        rh, _ = found(bloom, [v for _, v in real], bands, flip_bits, depth)
        dist = np.array([d for d, _ in real])
        row = [str(bands), str(flip_bits), str(depth)]
        for lo, hi in BUCKETS:
            sel = (dist >= lo) & (dist <= hi)
            row.append("%.3f (%d)" % (rh[sel].mean(), sel.sum()) if sel.any() else "-")
        sh, _ = found(bloom, [v for _, v in synthetic], bands, flip_bits, depth)
        sd = np.array([d for d, _ in synthetic])
        row.append("%.3f" % sh[sd <= 16].mean())
        row.append("%.3f" % sh[sd > 16].mean())
        _, up = found(bloom, unrelated, bands, flip_bits, depth)
        q = rng.integers(0, 2**63, size=(5_000_000, 2), dtype=np.uint64)
        fp = bloom_batch.contains_many(bloom, q).mean()
        # band collisions with real entries add N / 2**L per probe on top of Bloom false positives
        collide = args.entries / 2.0 ** (256 // bands)
        row.append("%.0f" % up.mean())
        row.append("%.2e" % (fp + collide))
        row.append("%.2e" % (up.mean() * (fp + collide)))
        r16 = rh[dist <= 16].mean()
        if base_recall is None:
            base_recall = r16
        print(" | ".join(row) + "   (recall<=16 vs exact-band baseline: %.2fx)" % (r16 / max(base_recall, 1e-9)))
    print("bytes per entry: %.1f (filter %.1f MB)" % (bits_per_entry / 8, bits_per_entry * len(entries) / 8e6))


if __name__ == "__main__":
    main()
