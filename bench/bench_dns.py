"""Latency the DNS forwarder adds: dnsmasq alone against dnsmasq forwarding to the agent, same run.

    python bench/bench_dns.py                  # 2,000 queries per path, a 10,000-entry domain list
    python bench/bench_dns.py --queries 5000 --entries 100000 --json

Everything runs on 127.0.0.1: the local test resolver (tests/intake/dns/upstream.py) as the upstream,
two real dnsmasq instances (cache off, so every query is forwarded): A forwards to the upstream, B to
the agent's forwarder (`python -m agent.intake.dns`, a signed domain list of benign generated names)
with the upstream as its fall-back (strict-order). Queries alternate A, B, A, B... with fresh names
(nothing is cached anywhere), one at a time; the figure of interest is B minus A at each percentile,
i.e. what the agent adds per query. Also measured: how long a listed name takes on B (answered by
the agent, no upstream).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dns.message  # noqa: E402

from tests.waiting import free_port, stop_process, wait_port  # noqa: E402


def dnsmasq(port: int, servers, workdir: str) -> subprocess.Popen:
    args = ["dnsmasq", "-k", "--conf-file=/dev/null", "--port=%d" % port, "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--strict-order", "--cache-size=0",
            "--pid-file=", "--user=nobody", "--log-facility=%s" % os.path.join(workdir, "dnsmasq-%d.log" % port)]
    args += ["--server=127.0.0.1#%d" % p for p in servers]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, 10, proc)
    return proc


def started(cmd, env) -> tuple:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=str(REPO))
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError("did not start: %r" % line)
    return proc, int(line.rsplit(":", 1)[1])


def rtt(sock, port: int, name: str) -> float:
    q = dns.message.make_query(name, "A").to_wire()
    t0 = time.perf_counter()
    sock.sendto(q, ("127.0.0.1", port))
    while True:
        data = sock.recv(65535)
        if data[:2] == q[:2]:
            return (time.perf_counter() - t0) * 1000.0


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--entries", type=int, default=10000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if shutil.which("dnsmasq") is None:
        print("dnsmasq is missing (apt package dnsmasq-base)", file=sys.stderr)
        return 2
    from agent.lists.names import read_names
    from tests.listkit import Hub

    work = tempfile.mkdtemp(prefix="gw-bench-dns-")
    os.chmod(work, 0o755)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    try:
        hub = Hub(os.path.join(work, "hub"), source="bench")
        names = ["listed-%d.example.org" % i for i in range(args.entries)]
        hub.build(read_names("\n".join(names), "domain", "bench"), name="doms", signal="domain",
                  capacity=args.entries)
        up, up_port = started([sys.executable, "-m", "tests.intake.dns.upstream", "--port", "0"], env)
        procs.append(up)
        agent, agent_port = started([sys.executable, "-m", "agent.intake.dns", "--listen", "127.0.0.1:0",
                                     "--upstream", "127.0.0.1:%d" % up_port, "--lists", hub.out,
                                     "--trust", hub.pub_path, "--reload", "0"], env)
        procs.append(agent)
        a_port, b_port = free_port(), free_port()
        procs.append(dnsmasq(a_port, [up_port], work))
        procs.append(dnsmasq(b_port, [agent_port, up_port], work))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        for i in range(200):  # warm up both paths (imports, thread pool, caches of the interpreter)
            rtt(sock, a_port, "warm-a-%d.example.net" % i)
            rtt(sock, b_port, "warm-b-%d.example.net" % i)
        tag = random.getrandbits(32)
        a, b, listed = [], [], []
        for i in range(args.queries):
            a.append(rtt(sock, a_port, "q%d-%x.a.example.net" % (i, tag)))
            b.append(rtt(sock, b_port, "q%d-%x.b.example.net" % (i, tag)))
            if i % 4 == 0:
                listed.append(rtt(sock, b_port, "x%d.%s" % (i, names[i % len(names)])))
        out = {"queries_per_path": args.queries, "list_entries": args.entries}
        for p in (50, 90, 99):
            out["dnsmasq_alone_p%d_ms" % p] = round(pct(a, p), 3)
            out["dnsmasq_agent_p%d_ms" % p] = round(pct(b, p), 3)
            out["added_p%d_ms" % p] = round(pct(b, p) - pct(a, p), 3)
            out["listed_p%d_ms" % p] = round(pct(listed, p), 3)
        out["ratio_p50"] = round(pct(b, 50) / pct(a, 50), 2)
        out["mean_added_ms"] = round(statistics.mean(b) - statistics.mean(a), 3)
    finally:
        for p in reversed(procs):
            stop_process(p, 5)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print("%-24s %s" % (k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
