"""HAL benchmark: cost of the atomic, fsync'd Storage write against a plain write, and of one
nftables block through the linux Firewall against the bare cost of starting nft.

    python bench/bench_hal.py [--dir DIR] [--rounds N]

Prints each figure and its ratio to the baseline measured in the same run. The firewall part
needs root, nft and iproute2 (it works in a network namespace it creates and deletes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hal import linux  # noqa: E402


def _median_ms(fn, rounds):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench_storage(folder, rounds):
    st = linux.Storage(root=os.path.join(folder, "atomic"))
    plain_dir = os.path.join(folder, "plain")
    os.makedirs(plain_dir, exist_ok=True)
    rows = []
    for size in (4096, 1024 * 1024):
        data = os.urandom(size)

        def plain():
            with open(os.path.join(plain_dir, "f"), "wb") as f:
                f.write(data)

        base = _median_ms(plain, rounds)
        atomic = _median_ms(lambda: st.write("f", data), rounds)
        rows.append((size, base, atomic))
        print("storage %8d B: plain write %.3f ms, atomic write (temp+fsync+rename+dir fsync) %.3f ms, ratio %.1fx"
              % (size, base, atomic, atomic / base))
    print("storage bytes counted this hour: %d" % st.bytes_written())
    return rows


def bench_firewall(rounds):
    if shutil.which("nft") is None or os.geteuid() != 0:
        print("firewall: skipped (needs root and nft)")
        return None
    ns = "gwbench-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        prefix = ("ip", "netns", "exec", ns, "nft")
        fw = linux.Firewall(nft=prefix)
        fw.block("192.0.2.1", 60)
        base = _median_ms(lambda: subprocess.run(list(prefix) + ["list", "tables"], capture_output=True, check=True), rounds)
        counter = [0]

        def block():
            counter[0] += 1
            fw.block("198.51.100.%d" % (counter[0] % 250 + 1), 60)

        blk = _median_ms(block, rounds)
        lst = _median_ms(fw.list, rounds)
        print("firewall: bare 'nft list tables' %.2f ms, block() %.2f ms (ratio %.2fx), list() %.2f ms (ratio %.2fx)"
              % (base, blk, blk / base, lst, lst / base))
        return base, blk, lst
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="folder on the medium to measure (default: a temporary folder)")
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="gwbench-", dir=args.dir)
    try:
        bench_storage(folder, args.rounds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    bench_firewall(max(5, args.rounds // 5))


if __name__ == "__main__":
    main()
