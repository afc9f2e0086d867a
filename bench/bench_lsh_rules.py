"""Perceptual (PDQ) candidate rules and filters: t=1 vs t=2 bands, Bloom vs binary fuse, same budget.

    python bench/bench_lsh_rules.py [--entries 1000000] [--images 40] [--random 100000] [--settings 7/6/2] [--quick]

A candidate under rule t is an image one of whose dihedral variants has hits in at least t distinct
bands (t=1 is today's rule: any probe hits). For each LSH setting (bands / flip bits / depth) it builds,
for --entries random 256-bit hashes plus the known images' PDQ hashes (bench_lsh.prepare):
- a Bloom filter of the list format at --budget-mb (today's filter), and
- the list format's binary fuse filter with 16-bit fingerprints (`lists build --filter fuse16`:
  agent.core.fuse, built by agent.matching.fuse_batch); its size is what it is (about 18 bits per
  key), printed, and may exceed the budget.
Then it measures, per filter and rule:
- recall by distance bucket on real transforms (as bench_lsh), and on uniform random flips d <= 16;
- false candidates per unrelated image, COUNTED on --random random queries (8 independent random
  256-bit hashes per query, each band probed with its own random "least reliable" bits), so band
  collisions with real entries and filter false positives are both in the count; next to it the value
  computed from the measured per-probe positive rate assuming independent probes (a check of the count,
  and the only figure below one event in --random queries);
- probes per image (generated benign unrelated images, as bench_lsh) and bytes per list entry.
The baseline in the same run is today's default: 7 bands / 6 flip bits / depth 2, Bloom, t=1.
A fuse filter is static: a list delta means rebuilding the whole filter at the hub and shipping it (no
in-place add as a Bloom filter allows); that cost is not measured here.
"""

from __future__ import annotations

import os
import sys
import time
from itertools import combinations

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.bench_lsh import BUCKETS, KINDS, arguments, build, setup  # noqa: E402
from agent.core import fuse as core_fuse  # noqa: E402
from agent.matching import bloom_batch, fuse_batch, lsh_batch as lsh_np  # noqa: E402

VARIANTS = 8  # dihedral variants per image
DEFAULT = (7, 6, 2)
FUSE_SPACE = 1.125  # bits per key per fingerprint bit of a 3-wise binary fuse filter at millions of keys


class Fuse16:
    """The list format's binary fuse filter (agent.core.fuse, built by agent.matching.fuse_batch)."""

    def __init__(self, keys: np.ndarray):
        content, params = fuse_batch.build(keys)
        self.filter = core_fuse.Fuse16(bytes.fromhex(params["salt"]), params["segment_length"],
                                       params["segment_count"], params["array_length"], content)
        self.nbytes = len(content)

    def contains_many(self, keys: np.ndarray) -> np.ndarray:
        return fuse_batch.contains_many(self.filter, keys)


def variant_band_hits(lookup, variants, bands, flip_bits, depth):
    """(V, B) bool: which bands of which variant have a probe in the filter; and unique probes."""
    per_variant = [lsh_np.probes(h, m, bands, flip_bits, depth) for h, m in variants]
    unique = list(dict.fromkeys(p for pairs in per_variant for p in pairs))
    hit = dict(zip(unique, lookup(lsh_np.probe_keys(unique, bands))))
    out = np.zeros((len(variants), bands), dtype=bool)
    for v, pairs in enumerate(per_variant):
        for j, value in pairs:
            out[v, j] |= hit[(j, value)]
    return out, len(unique)


def candidates(hits: np.ndarray, t: int) -> bool:
    return bool((hits.sum(axis=-1) >= t).any())


def random_probe_keys(rng, queries, bands, flip_bits, depth):
    """(queries, VARIANTS, B, P, 2) uint64 keys of random hashes probed like the device probes them.

    Each variant is an independent uniform 256-bit hash; each band flips up to ``depth`` of
    ``flip_bits`` random positions (margins of an unrelated image carry no information about the list).
    """
    combos = [()] + [c for r in range(1, depth + 1) for c in combinations(range(flip_bits), r)]
    out = np.empty((queries, VARIANTS, bands, len(combos), 2), dtype=np.uint64)
    for j in range(bands):
        length = len(range(j, 256, bands))
        values = rng.integers(0, 2 ** length, size=(queries, VARIANTS), dtype=np.uint64)
        pos = np.argsort(rng.random((queries, VARIANTS, length)), axis=-1)[..., :flip_bits]
        bit = np.left_shift(np.uint64(1), pos.astype(np.uint64))
        for c, combo in enumerate(combos):
            mask = np.zeros((queries, VARIANTS), dtype=np.uint64)
            for i in combo:
                mask |= bit[..., i]
            out[:, :, j, c, 0] = values ^ mask
        out[:, :, j, :, 1] = np.uint64(lsh_np.core_lsh.TAG | (bands << 8) | j)
    return out


def random_false_candidates(lookup, rng, queries, bands, flip_bits, depth, chunk=1000):
    """Counted false candidates on random queries: (t=1 count, t=2 count, per-probe positive rate)."""
    t1 = t2 = positives = probes = 0
    for start in range(0, queries, chunk):
        n = min(chunk, queries - start)
        keys = random_probe_keys(rng, n, bands, flip_bits, depth)
        shape = keys.shape[:-1]
        hit = lookup(keys.reshape(-1, 2)).reshape(shape)
        positives += int(hit.sum())
        probes += hit.size
        band_hit = hit.any(axis=-1)  # (n, V, B)
        t1 += int(band_hit.any(axis=(1, 2)).sum())
        t2 += int((band_hit.sum(axis=-1) >= 2).any(axis=1).sum())
    return t1, t2, positives / probes


def computed_false_candidates(q, bands, probes_per_band, t):
    """Expected false candidates per image if every probe is positive independently with rate q."""
    p = 1.0 - (1.0 - q) ** probes_per_band  # a band of one variant hit
    at_least = 1.0 - (1.0 - p) ** bands if t == 1 else \
        1.0 - (1.0 - p) ** bands - bands * p * (1.0 - p) ** (bands - 1)
    return 1.0 - (1.0 - at_least) ** VARIANTS


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--random", type=int, default=100_000, help="random unrelated queries per setting")
    ap.add_argument("--quick", action="store_true", help="smoke run: small list, few images and queries")
    ap.add_argument("--settings", default="7/6/2,6/6/2,6/8/2,6/10/2,7/8/2,8/6/2",
                    help="LSH settings bands/flip_bits/depth, comma-separated (default %(default)s)")
    args = ap.parse_args()
    if args.quick:
        # the same bits per entry as the budget gives at --entries
        args.budget_mb *= 20_000 / args.entries
        args.entries, args.images, args.random = 20_000, 4, 2_000
    rng, real, synthetic, unrelated, entries, bits_per_entry = setup(args)
    dist = np.array([d for d, _ in real])
    sd = np.array([d for d, _ in synthetic])
    settings = [tuple(int(x) for x in item.split("/")) for item in args.settings.split(",")]
    print("Bloom budget %.1f MB for %d entries = %.1f bits/entry; %d random queries per setting"
          % (args.budget_mb, args.entries, bits_per_entry, args.random))
    header = ["bands/flip/depth", "filter", "t"] + ["%d-%d" % b for b in BUCKETS] + \
             ["syn<=16", "probes/img", "pos/probe", "false cand/img counted", "computed", "bytes/entry"]
    print(" | ".join(header))
    for bands, flip_bits, depth in settings:
        keys = lsh_np.band_keys_many(entries, bands)
        bloom = build(entries, bands, bits_per_entry)
        t = time.time()
        fuse = Fuse16(keys)
        build_s = time.time() - t
        probes_per_band = len(lsh_np.probes(bytes(32), np.arange(256.0), bands, flip_bits, depth)) // bands
        for name, lookup, nbytes in (("bloom", lambda k: bloom_batch.contains_many(bloom, k), len(bloom.bits)),
                                     ("fuse16", fuse.contains_many, fuse.nbytes)):
            real_hits = [variant_band_hits(lookup, v, bands, flip_bits, depth)[0] for _, v in real]
            syn_hits = [variant_band_hits(lookup, v, bands, flip_bits, depth)[0] for _, v in synthetic]
            unrel = [variant_band_hits(lookup, v, bands, flip_bits, depth)[1] for v in unrelated]
            t = time.time()
            c1, c2, q = random_false_candidates(lookup, rng, args.random, bands, flip_bits, depth)
            count_s = time.time() - t
            for rule, count in ((1, c1), (2, c2)):
                found = np.array([candidates(h, rule) for h in real_hits])
                row = ["%d/%d/%d" % (bands, flip_bits, depth), name, str(rule)]
                for lo, hi in BUCKETS:
                    sel = (dist >= lo) & (dist <= hi)
                    row.append("%.3f (%d)" % (found[sel].mean(), sel.sum()) if sel.any() else "-")
                syn = np.array([candidates(h, rule) for h in syn_hits])
                row.append("%.3f" % syn[sd <= 16].mean())
                row.append("%.0f" % np.mean(unrel))
                row.append("%.2e" % q)
                row.append("%.1e (%d/%d)" % (count / args.random, count, args.random))
                row.append("%.1e" % computed_false_candidates(q, bands, probes_per_band, rule))
                row.append("%.1f" % (nbytes / len(entries)))
                if (bands, flip_bits, depth, name, rule) == DEFAULT + ("bloom", 1):
                    row.append("(baseline)")
                print(" | ".join(row), flush=True)
                if rule == 2:
                    lost = [(KINDS[i % len(KINDS)], d) for i, (d, _) in enumerate(real)
                            if d <= BUCKETS[-1][1] and candidates(real_hits[i], 1) and not found[i]]
                    print("  t=2 loses what t=1 finds (d <= %d): %s" % (
                        BUCKETS[-1][1], ", ".join("%s d=%d" % x for x in sorted(lost)) or "nothing"))
            print("  (%s: %d random queries counted in %.0fs%s)" % (
                name, args.random, count_s, "; fuse built in %.1fs" % build_s if name == "fuse16" else ""),
                flush=True)
        # computed, not built: a binary fuse filter whose fingerprint is as long as the Bloom budget
        # allows (3-wise binary fuse: FUSE_SPACE x fingerprint bits per key, Graf & Lemire 2022), false
        # positives 2**-f per probe plus band collisions with the list's (uniform random) entries
        f = int(bits_per_entry / bands / FUSE_SPACE)
        collide = np.mean([len(entries) / 2.0 ** len(range(j, 256, bands)) for j in range(bands)])
        for rule in (1, 2):
            print(" | ".join(["%d/%d/%d" % (bands, flip_bits, depth), "fuse%d (computed)" % f, str(rule)]
                             + ["-"] * (len(BUCKETS) + 2)
                             + ["%.2e" % (2.0 ** -f + collide), "-",
                                "%.1e" % computed_false_candidates(2.0 ** -f + collide, bands, probes_per_band,
                                                                   rule),
                                "%.1f" % (FUSE_SPACE * f * bands / 8)]), flush=True)


if __name__ == "__main__":
    main()
