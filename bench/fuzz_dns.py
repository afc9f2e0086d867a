"""Fuzz run: the DNS forwarder's query handling (agent.intake.dns.message), mutated queries.

    python bench/fuzz_dns.py                      # 200,000 cases, seed 1
    python bench/fuzz_dns.py --cases 1000000 --seed 7

Mutations (tests/intake/dns/fuzz.py): bit flips, insertions, deletions, truncation, edge-value counts,
planted compression pointers (loops, forward, out of range), odd label lengths, random bytes. Each
message must be looked up (and then get a valid block answer), answered with a header-only error, or
dropped; exit status 0 only when none raised.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.intake.dns.fuzz import run  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=200000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    counts = run(args.cases, args.seed)
    print(json.dumps({"cases": args.cases, "seed": args.seed, "outcomes": counts,
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
