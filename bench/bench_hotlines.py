"""Benchmark: the hotline hub's case ingestion on SQLite and PostgreSQL, and the two-hub fault run.

    python bench/bench_hotlines.py              # ingestion on both databases (-n reports, default 3000)
    python bench/bench_hotlines.py --faults -n 1200   # fault run: hubs SIGKILLed, 0 lost, 0 doubled

Ingestion: N valid reports (100 hosting URLs on address literals, so no DNS: the country database is
still asked every time; 40 devices over 3 days; a third routed to another hotline, so every report
also rewrites an outbox row) go through HotlineHub.ingest_report, one transaction each, as the
collector does before it acknowledges. Baseline, in the same run on the same database: the bare
insert rate, one row (id, 300 bytes of JSON) per transaction with the same durability settings,
interleaved with the ingestion in five slices. The ratio says what the case logic costs over the
database's own commit.

Fault run: real processes. mosquitto; hub A (`gatewatch-hub hotline serve`, collecting its fleet's
reports, covering NL and DE) and hub B (FR, DK), each on SQLite; dnsmasq maps the driver's hosting
names to addresses the shipped database places in those countries; tests/report_driver.py is the
agent (spool + reporter, resending until A acknowledges), every report a new hosting URL, the lists of
two sources (hotline-a, hotline-b: B gets a copy of every case of its own list). B is SIGKILLed and
restarted, then A, then the agent, while reports keep coming. Afterwards B must hold exactly the cases
the routing rule sends it, each with exactly one report, and A every report once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.core.report import hosting_from_url, make_report  # noqa: E402


def bench_reports(n):
    return [make_report("hotline-a", "known", 1, "sha256", 0, "known-%d" % (i % 7),
                        hosting=hosting_from_url("http://%s/img/%d.jpg" % (("145.100.100.100", "80.67.169.12",
                                                                              "194.25.0.60")[i % 3], i % 100), "url"),
                        now=1_800_000_000 + (i % 3) * 86400, device_secret=b"dev-%d" % (i % 40),
                        agent_version="0.1.0") for i in range(n)]


def measure(db_bare, db_cases, n, net, rounds=5):
    """(ingest rate, bare rate, (cases, reports, outbox rows)): the two interleaved in ``rounds`` slices,
    so that a change of the shared machine's disk latency during the run hits both alike."""
    from tools.hotline.geo import CountryDb, HostingLocator
    from tools.hotline.hub import HotlineHub
    from tools.hotline.store import open_store
    bare = open_store(db_bare)  # the same connection settings (WAL + synchronous=FULL / PostgreSQL defaults)
    with bare.tx() as t:
        t.run("CREATE TABLE IF NOT EXISTS bare (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
    store = open_store(db_cases)
    hub = HotlineHub("hotline-a", net.directory, store, net.key("hotline-a"),
                     HostingLocator(CountryDb(), "127.0.0.1:9"), ["hotline-a"])
    reps = bench_reports(n)
    body = json.dumps({"pad": "x" * 280})
    t_bare = t_cases = 0.0
    step = -(-n // rounds)
    for lo in range(0, n, step):
        t0 = time.perf_counter()
        for i in range(lo, min(n, lo + step)):
            with bare.tx() as t:
                t.run("INSERT INTO bare (id, body) VALUES (?, ?)", ("%032x" % i, body))
        t1 = time.perf_counter()
        for r in reps[lo:lo + step]:
            hub.ingest_report(r)
        t2 = time.perf_counter()
        t_bare += t1 - t0
        t_cases += t2 - t1
    got = (store.count_cases(), store.count_reports(), len(store.outbox()))
    store.close()
    bare.close()
    return n / t_cases, n / t_bare, got


def run_ingest(n):
    from tests.hub.hotline.kit import Network
    from tests.postgres import PostgresCluster
    folder = Path(tempfile.mkdtemp(prefix="bench-hotlines-"))
    net = Network(folder / "net", {"hotline-a": ["NL"], "hotline-b": ["FR"], "hotline-c": ["DE"]})
    pg = PostgresCluster().start()
    rows = []
    try:
        for name, make in (("SQLite", lambda k: str(folder / ("%s.sqlite" % k))), ("PostgreSQL", lambda k: pg.database())):
            rate, bare, got = measure(make("bare"), make("cases"), n, net)
            rows.append((name, rate, bare, got))
    finally:
        pg.stop()
    print("\n%d reports, one transaction each, interleaved with the baseline in 5 slices (%s)\n"
          % (n, time.strftime("%Y-%m-%d")))
    print("| database | cases ingested per second | bare inserts per second | ingest / bare | cases, reports, outbox rows |")
    print("|---|---:|---:|---:|---|")
    for name, rate, bare, got in rows:
        print("| %s | %.0f | %.0f | %.2f | %d, %d, %d |" % (name, rate, bare, rate / bare, got[0], got[1], got[2]))


def run_faults(total, rate):
    from tests.brokers import start_mosquitto
    from tests.dnsserver import TestDns
    from tests.hub.hotline.kit import ADDRESS, Network
    from tests.hub.hotline.procs import HubProcess, read_db
    from tests import report_driver
    from tests.waiting import free_port
    from tools.hotline.cases import case_id
    import sqlite3

    folder = Path(tempfile.mkdtemp(prefix="bench-hotlines-faults-"))
    t0 = time.monotonic()
    # the driver's hosting names (tests/report_driver.py: cdn0..cdn4.example)
    where = {"cdn0.example": "FR", "cdn1.example": "NL", "cdn2.example": "DE", "cdn3.example": "DK",
             "cdn4.example": "FR"}
    dns = TestDns({h: ADDRESS[c] for h, c in where.items()}, zones=("example",)).start()
    net = Network(folder / "net", {"hotline-a": ["NL", "DE"], "hotline-b": ["FR", "DK"]},
                  ports={"hotline-a": free_port(), "hotline-b": free_port()})
    broker = start_mosquitto(folder)
    log = open(folder / "hubs.log", "a")
    a = HubProcess(net, "hotline-a", folder / "a.sqlite", dns.server, broker.url,
                   ["hotline-a,hotline-b"], log=log)
    b = HubProcess(net, "hotline-b", folder / "b.sqlite", dns.server, log=log)
    seed = "hotline-faults"
    drivers = []
    events = []

    def driver(start):
        d = report_driver.DriverProcess(broker.url, folder / "spool", start, total, rate,
                                        ["--seed", seed, "--resend-after", "1", "--resend-max", "2",
                                         "--drain-timeout", "240"])
        drivers.append(d)
        return d

    try:
        a.start()
        b.start()
        d = driver(0)
        d.wait_hits(total // 5, timeout=120)
        b.kill()
        events.append("B SIGKILLed at hit %d" % len(d.hits))
        d.wait_hits(total // 3, timeout=120)
        b.start()
        events.append("B back at hit %d" % len(d.hits))
        d.wait_hits(total // 2, timeout=120)
        a.kill()
        events.append("A SIGKILLed at hit %d" % len(d.hits))
        d.wait_hits(3 * total // 5, timeout=120)
        a.start()
        events.append("A back at hit %d" % len(d.hits))
        d.wait_hits(3 * total // 4, timeout=120)
        d.kill()
        resume = max(d.hits) + 1
        events.append("agent SIGKILLed at hit %d" % resume)
        d = driver(resume)
        rc = d.proc.wait(300)
        # what the routing rule owes B: cases hosted in FR/DK, and copies of hotline-b's list
        expected_b = set()
        for i in range(total):
            r = report_driver.hit_report(seed, i)
            url = r["hosting"]["url"]
            host = url.split("/")[2]
            if where[host] in ("FR", "DK") or r["source"] == "hotline-b":
                expected_b.add(case_id(url, host, r["time"][:7]))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            cases_b, counts_b, _ = read_db(b.db)
            _, _, outbox_a = read_db(a.db)
            if len(cases_b) >= len(expected_b) and not outbox_a:
                break
            time.sleep(0.5)
        cases_b, counts_b, _ = read_db(b.db)
        cases_a, counts_a, outbox_a = read_db(a.db)
        con = sqlite3.connect(str(a.db))
        reports_a = con.execute("SELECT COUNT(*), COUNT(DISTINCT report_id) FROM case_reports").fetchone()
        con.close()
        got_b = {c["id"] for c in cases_b}
        fig = {"reports": total, "agent_rc": rc, "drained": "drained" in d.lines,
               "A reports counted": reports_a[0], "A distinct report ids": reports_a[1], "A cases": len(cases_a),
               "B cases expected": len(expected_b), "B cases": len(cases_b),
               "B lost": len(expected_b - got_b), "B unexpected": len(got_b - expected_b),
               "B counts rows": len(counts_b), "B counts != 1 report": sum(c["reports"] != 1 for c in counts_b),
               "A outbox left": len(outbox_a), "seconds": round(time.monotonic() - t0, 1)}
        return events, fig
    finally:
        for d in drivers:
            if d.proc.poll() is None:
                d.kill()
        a.stop()
        b.stop()
        broker.kill()
        dns.stop()
        log.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=3000, help="reports")
    p.add_argument("--faults", action="store_true", help="the two-hub fault run instead")
    p.add_argument("--rate", type=float, default=150.0, help="fault run: hits per second")
    a = p.parse_args(argv)
    if a.faults:
        events, fig = run_faults(a.n, a.rate)
        print("\n".join(events))
        print(json.dumps(fig, indent=1))
        ok = (fig["B lost"], fig["B unexpected"], fig["B counts != 1 report"], fig["A outbox left"]) == (0, 0, 0, 0) \
            and fig["A distinct report ids"] == fig["reports"] == fig["A reports counted"]
        return 0 if ok else 1
    run_ingest(a.n)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO))
    sys.exit(main())
