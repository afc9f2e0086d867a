"""Exact-list lookups at 1,000,000 entries: single (us) and numpy batch (keys/s).

    python bench/bench_lookup.py [--entries 1000000] [--queries 5000000]

Baseline in the same run: a Python set of the 16-byte keys (what a device would hold if it kept the
plain list, which it must not) for single lookups, and a loop over that set for batches.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from agent.matching import bloom_batch  # noqa: E402
from agent.core.bloom import Bloom, optimal_parameters  # noqa: E402


def per_call(fn, items):
    start = time.perf_counter()
    for x in items:
        fn(x)
    return (time.perf_counter() - start) / len(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=5_000_000)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    members = rng.integers(0, 256, size=(args.entries, 16), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(args.queries, 16), dtype=np.uint8)
    plain = {bytes(k) for k in members}
    singles = [bytes(k) for k in queries[:100_000]]
    t_set = per_call(plain.__contains__, singles)
    start = time.perf_counter()
    for k in singles:
        k in plain  # noqa: B015
    set_rate = len(singles) / (time.perf_counter() - start)
    print("entries %d" % args.entries)
    print("baseline python set: single %.3f us, %.2f M keys/s" % (t_set * 1e6, set_rate / 1e6))
    for fp in (1e-3, 1e-6):
        m, k = optimal_parameters(args.entries, fp)
        b = Bloom(m, k, os.urandom(16))
        bloom_batch.add_many(b, members)
        t_single = per_call(b.__contains__, singles[:50_000])
        start = time.perf_counter()
        hits = bloom_batch.contains_many(b, queries)
        dt = time.perf_counter() - start
        rate = args.queries / dt
        start = time.perf_counter()
        bloom_batch.contains_many(b, members)
        member_rate = args.entries / (time.perf_counter() - start)
        print("bloom fp=%g: %.2f MB (%d bits, k=%d); single %.2f us (%.1fx set); batch %.2f M keys/s absent "
              "(%.1fx set loop), %.2f M keys/s present; measured fp %.2e"
              % (fp, m / 8e6, m, k, t_single * 1e6, t_single / t_set, rate / 1e6, rate / set_rate,
                 member_rate / 1e6, hits.mean()))


if __name__ == "__main__":
    main()
