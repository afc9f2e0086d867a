"""Fuzz the ICAP intake: the protocol parser (bytes in, events out) and the live asyncio service.

    python bench/fuzz_icap.py                          # 20000 parser + 20000 live cases, seed 2026
    python bench/fuzz_icap.py --parser 100000 --live 5000 --seed 7

Cases are random mutations of valid OPTIONS/RESPMOD/REQMOD exchanges (tests/intake/icap/fuzz.py: bit
flips, byte insertions and deletions, range and header duplication, number edge cases and non-ASCII
digits, chunk-size garbage, truncation), fed in random slices. Printed per part and in all: cases,
exceptions (anything that escaped the parser, or that the service logged at ERROR or its event loop
caught), hangs (a parser case over 2 s, or a live case the service neither answered nor closed
within 5 s of the client's EOF) and seconds. The live part ends by checking that the service still
answers OPTIONS, a listed image (403 page) and a clean one (204). Same seed, same cases.
Exit status 0 only with no exception and no hang.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.intake.icap.fuzz import fuzz_live, fuzz_parser  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parser", type=int, default=20000, help="parser cases (default 20000)")
    p.add_argument("--live", type=int, default=20000, help="live-service cases (default 20000)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    args = p.parse_args(argv)

    results = {}
    t0 = time.perf_counter()
    r = fuzz_parser(args.parser, args.seed)
    r["seconds"] = round(time.perf_counter() - t0, 2)
    results["parser"] = r
    t1 = time.perf_counter()
    r = fuzz_live(args.live, args.seed)
    r["seconds"] = round(time.perf_counter() - t1, 2)
    results["live"] = r
    total = {k: results["parser"][k] + results["live"][k] for k in ("cases", "exceptions", "hangs")}
    total["seconds"] = round(time.perf_counter() - t0, 2)
    results["total"] = total

    if args.json:
        print(json.dumps({k: {kk: (dict(vv) if hasattr(vv, "items") else vv) for kk, vv in v.items()
                              if kk != "failures"} for k, v in results.items()}, default=str))
    else:
        print("seed %d" % args.seed)
        for part in ("parser", "live", "total"):
            r = results[part]
            print("%-7s cases %6d  exceptions %d  hangs %d  seconds %.1f" % (part, r["cases"], r["exceptions"],
                                                                          r["hangs"], r["seconds"]))
        print("parser outcomes: %s; slowest case %.3f s" % (dict(results["parser"]["outcomes"]),
                                                            results["parser"]["max_case_seconds"]))
        print("live answers: %s; slowest case %.3f s; service checks passed: %d" % (
            dict(results["live"]["answers"]), results["live"]["max_case_seconds"], results["live"]["checks"]))
        for part in ("parser", "live"):
            for failure in results[part]["failures"]:
                print("%s failure: %r" % (part, failure))
    return 0 if total["exceptions"] == 0 and total["hangs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
