"""Fuzz run: the parsers of the name checks, mutated input: DNS queries (the forwarder) and TLS
ClientHellos (the splice).

    python bench/fuzz_names.py                         # 200,000 cases each, seed 1
    python bench/fuzz_names.py --cases 1000000 --seed 7

DNS (tests/intake/dns/fuzz.py): bit flips, insertions, deletions, truncation, edge-value counts,
planted compression pointers (loops, forward, out of range), odd label lengths, random bytes; each
message must be looked up (and then get a valid block answer), answered with a header-only error or
dropped. TLS (tests/intake/tls/hellos.py): real OpenSSL hellos and hand-built ones split over records
with ECH, mutated; each must give a hello (a printable name or none), "need more", NotTls or
Malformed. Exit status 0 only when nothing else was raised.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.intake.tls.clienthello import Malformed, NotTls, parse_hello  # noqa: E402
from tests.intake.dns import fuzz as dns_fuzz  # noqa: E402
from tests.intake.tls.hellos import built_hello, ext, mutate, real_hello, sni_ext  # noqa: E402


def tls_run(cases: int, seed: int) -> dict:
    rng = random.Random(seed)
    seeds = [real_hello("fuzz.example.org"), real_hello(None),
             built_hello(sni_ext(b"a.example") + ext(0xFE0D, b"e" * 9), record_split=11)]
    out = {"hello": 0, "more": 0, "refused": 0}
    for _ in range(cases):
        try:
            h = parse_hello(mutate(rng, rng.choice(seeds)))
        except (NotTls, Malformed):
            out["refused"] += 1
            continue
        out["more" if h is None else "hello"] += 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=200000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    result = {"cases": args.cases, "seed": args.seed}
    for name, run in (("dns", dns_fuzz.run), ("tls", tls_run)):
        t0 = time.perf_counter()
        result[name] = run(args.cases, args.seed)
        result[name + "_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
