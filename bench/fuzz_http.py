"""Fuzz run: the HTTP/1 parser and the proxy's request/response handling, mutated messages.

    python bench/fuzz_http.py                       # 20,000 in-memory cases + 1,000 over sockets, seed 1
    python bench/fuzz_http.py --cases 100000 --live 3000 --seed 7

In-memory cases (tests/intake/proxy/fuzz.py) rotate between the parsers fed mutated bytes, mutated
client streams through one ProxyServer, and mutated origin responses; mutations are bit flips, byte
insertions and deletions, duplicated header lines, number edge cases (non-ASCII digits, signs,
overflow), CRLF damage, repeats and truncation. Each proxy case is bounded (2 s): beyond it, a hang.
The live phase sends mutated requests and origin responses through a real ProxyServer on 127.0.0.1.
Both phases end by checking that the server still answers a valid request correctly (a clean image
passes byte for byte, a listed one is blocked) and holds no connection or buffered byte.
Exit status 0 only when there were no exceptions, hangs or unanswered heads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.intake.proxy.fuzz import run, run_live  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--live", type=int, default=1000, help="cases over real sockets (0: none)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    mem = run(args.cases, args.seed)
    live = run_live(args.live, args.seed) if args.live else None
    if args.json:
        print(json.dumps({"memory": mem, "live": live}, default=str))
    else:
        print("in-memory: %d cases (%d parser, %d request, %d response), %d exceptions, %d hangs, %d unanswered, "
              "%.1f s; afterwards valid request ok: %s, held %d bytes, %d connections"
              % (mem["cases"], mem["parser_cases"], mem["request_cases"], mem["response_cases"], mem["exceptions"],
                 mem["hangs"], mem["unanswered"], mem["seconds"], mem["after_ok"], mem["held_after"],
                 mem["active_after"]))
        print("  answers: %s" % ", ".join("%s %s: %d" % (k[0], k[1], v) for k, v in mem["statuses"].items()))
        if live:
            print("live: %d cases, %d exceptions, %d hangs, %.1f s; afterwards valid request ok: %s, held %d bytes"
                  % (live["cases"], live["exceptions"], live["hangs"], live["seconds"], live["after_ok"],
                     live["held_after"]))
        for ex in mem["examples"] + (live["examples"] if live else []):
            print("  example:", ex)
    bad = mem["exceptions"] or mem["hangs"] or mem["unanswered"] or not mem["after_ok"] or mem["held_after"]
    if live:
        bad = bad or live["exceptions"] or live["hangs"] or not live["after_ok"] or live["held_after"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
