"""Benchmark: the report spool's flash cost and report delivery through a real mosquitto.

    python bench/bench_reports.py              # both parts (needs mosquitto for the second)
    python bench/bench_reports.py --spool      # spool only
    python bench/bench_reports.py -n 2000      # reports per run
    python bench/bench_reports.py --faults -n 1200   # fault run: 0 lost, 0 duplicated at the hub

Spool: N reports (~330 bytes of JSON each) are spooled one by one (each put durable) and then
acknowledged in batches of 32, as the Reporter does. Counted by wrapping os.fsync / os.rename /
os.replace / os.unlink / open(): fsyncs, file creations, renames, unlinks and bytes written, plus
the wall time. Baseline, measured in the same run: the obvious alternative, one file per report
(write temp, fsync, rename, fsync the folder; unlink + fsync the folder on ack). On UBIFS/JFFS2
every fsync and every metadata change is a flash program, so the counts are the figure that matters.

Delivery: N reports spooled, then drained by the Reporter (QoS 1; deleted on PUBACK with
ack=broker, on the collector's acknowledgement with ack=hub, the default) into the hub collector
(SQLite, exactly once). Baseline: the same payloads published with plain QoS 1 and no
spool by one client, waiting for every PUBACK, received by the same collector.
"""
from __future__ import annotations

import argparse
import builtins
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.core.report import encode_report, hosting_from_url, make_report  # noqa: E402
from agent.reports.spool import ReportSpool  # noqa: E402


def reports(n):
    return [make_report("hotline-a", "sha256", 7, "sha256", 0, "sha256:%016x" % i,
                        hosting=hosting_from_url("https://cdn%d.example/img/%d.jpg" % (i % 9, i), "url",
                                                 ip="203.0.113.%d" % (i % 250 + 1), country="NL"),
                        now=1_800_000_000 + i, device_secret=b"bench", region="NL-NH",
                        agent_version="0.1.0") for i in range(n)]


class IoCounter:
    """Counts file-system calls that cost flash programs, by wrapping the os functions."""

    def __init__(self):
        self.n = {"fsync": 0, "create": 0, "rename": 0, "unlink": 0, "bytes": 0}
        self._saved = {}

    def __enter__(self):
        n = self.n
        real = {name: getattr(os, name) for name in ("fsync", "rename", "replace", "unlink", "open")}
        real_open = builtins.open
        self._saved = dict(real, builtin_open=real_open)

        def fsync(fd):
            n["fsync"] += 1
            return real["fsync"](fd)

        def rename(a, b):
            n["rename"] += 1
            return real["rename"](a, b)

        def replace(a, b):
            n["rename"] += 1
            return real["replace"](a, b)

        def unlink(p, *a, **k):
            n["unlink"] += 1
            return real["unlink"](p, *a, **k)

        def os_open(p, flags, *a, **k):
            if flags & os.O_CREAT and not os.path.exists(p):
                n["create"] += 1
            return real["open"](p, flags, *a, **k)

        class CountingFile:
            def __init__(self, f):
                self._f = f

            def write(self, b):
                n["bytes"] += len(b)
                return self._f.write(b)

            def __getattr__(self, name):
                return getattr(self._f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self._f.__exit__(*exc)

        def b_open(p, mode="r", *a, **k):
            if any(c in mode for c in "wax") and isinstance(p, (str, os.PathLike)) and not os.path.exists(p):
                n["create"] += 1
            f = real_open(p, mode, *a, **k)
            return CountingFile(f) if any(c in mode for c in "wa+") else f

        os.fsync, os.rename, os.replace, os.unlink, os.open = fsync, rename, replace, unlink, os_open
        builtins.open = b_open
        return self

    def __exit__(self, *exc):
        for name in ("fsync", "rename", "replace", "unlink", "open"):
            setattr(os, name, self._saved[name])
        builtins.open = self._saved["builtin_open"]


class FilePerReportSpool:
    """Baseline: one file per report, made atomic by temp + fsync + rename + fsync(dir)."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def _fsync_dir(self):
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, rid, payload):
        path = os.path.join(self.folder, rid + ".json")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._fsync_dir()

    def ack(self, rids):
        for rid in rids:
            os.unlink(os.path.join(self.folder, rid + ".json"))
        self._fsync_dir()


def run_spool(kind, folder, items, batch=32):
    sp = ReportSpool(folder, max_bytes=64 * 1024 * 1024, max_reports=10 ** 6) if kind == "log" \
        else FilePerReportSpool(folder)
    with IoCounter() as io:
        t0 = time.perf_counter()
        for rid, payload in items:
            sp.put(rid, payload)
        ids = [rid for rid, _ in items]
        for i in range(0, len(ids), batch):
            sp.ack(ids[i:i + batch])
        dt = time.perf_counter() - t0
    if kind == "log":
        sp.close()
    return dict(io.n, seconds=dt)


def bench_spool(n):
    items = [(r["id"], encode_report(r)) for r in reports(n)]
    size = sum(len(p) for _, p in items) / n
    base = os.environ.get("BENCH_DIR") or None
    with tempfile.TemporaryDirectory(dir=base) as d:
        log = run_spool("log", os.path.join(d, "log"), items)
        files = run_spool("files", os.path.join(d, "files"), items)
    print("## spool: %d reports of %.0f bytes, put one by one, acked in batches of 32" % (n, size))
    print("| | append log (ReportSpool) | file per report (baseline) | log / baseline |")
    print("|---|---:|---:|---:|")
    for key, label in (("fsync", "fsync calls"), ("create", "files created"), ("rename", "renames"),
                       ("unlink", "unlinks"), ("bytes", "bytes written"), ("seconds", "wall time (s)")):
        a, b = log[key], files[key]
        fmt = "%.3f" if key == "seconds" else "%d"
        ratio = ("%.2f" % (a / b)) if b else "-"
        print("| %s | %s | %s | %s |" % (label, fmt % a, fmt % b, ratio))
    per = (log["fsync"] + log["create"] + log["rename"] + log["unlink"]) / n
    per_b = (files["fsync"] + files["create"] + files["rename"] + files["unlink"]) / n
    print("\nfile-system operations per report: %.2f (log) vs %.2f (baseline), ratio %.2f\n"
          % (per, per_b, per / per_b))


def bench_delivery(n):
    sys.path.insert(0, str(REPO))
    from agent.mqtt import MqttClient, Topics, wait_all
    from agent.reports.reporter import Reporter
    from tests.brokers import start_mosquitto
    from tools.collector import Collector, ReportStore

    topics = Topics()
    with tempfile.TemporaryDirectory() as d:
        broker = start_mosquitto(d)
        try:
            results = {}
            for kind in ("plain", "broker", "hub"):
                store = ReportStore(os.path.join(d, "%s.db" % kind))
                col_client = MqttClient(broker.url, "bench-col-%s" % kind, clean_session=False)
                col = Collector(col_client, store, topics, group=kind).start()
                col_client.connect()
                assert col.subscribed.wait(5)
                rs = reports(n)
                dev = MqttClient(broker.url, "bench-dev-%s" % kind).connect()
                t0 = time.perf_counter()
                if kind == "plain":
                    acks = [dev.publish(topics.reports(r["source"]), encode_report(r), qos=1) for r in rs]
                    assert wait_all(acks, 120) == n
                else:
                    spool = ReportSpool(os.path.join(d, "spool-" + kind), max_bytes=64 * 1024 * 1024,
                                        max_reports=10 ** 6)
                    rep = Reporter(dev, spool, topics, ack_delay=0.05, ack=kind).start()
                    for r in rs:
                        rep.submit(r)
                    assert rep.drain(120)
                    rep.stop()
                    spool.close()
                device_done = time.perf_counter() - t0
                while store.count() < n and time.perf_counter() - t0 < 120:
                    time.sleep(0.01)
                results[kind] = (device_done, time.perf_counter() - t0)
                assert store.count() == n
                dev.stop()
                col_client.stop()
                store.close()
        finally:
            broker.kill()
    print("## delivery: %d reports device -> mosquitto -> collector (SQLite), loopback" % n)
    print("| | device done (s) | device reports/s | all stored at hub (s) | hub reports/s |")
    print("|---|---:|---:|---:|---:|")
    for kind, label in (("plain", "plain QoS 1 publish, no spool (baseline)"),
                        ("broker", "spool + Reporter, ack=broker (delete on PUBACK: lost if no collector)"),
                        ("hub", "spool + Reporter, ack=hub (delete on the collector's ack; default)")):
        dev_s, hub_s = results[kind]
        print("| %s | %.2f | %.0f | %.2f | %.0f |" % (label, dev_s, n / dev_s, hub_s, n / hub_s))
    print("\ndevice side, spooled (hub ack) / plain time ratio: %.1f (the spool's fsync per report)"
          % (results["hub"][0] / results["plain"][0]))
    print("hub side, spooled (hub ack) / plain time ratio: %.2f (the collector's SQLite commit per report bounds both)"
          % (results["hub"][1] / results["plain"][1]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000, help="reports per run (default 2000)")
    p.add_argument("--spool", action="store_true", help="only the spool part")
    p.add_argument("--faults", action="store_true",
                   help="only the fault run: -n reports through collector down/up, broker SIGKILL and "
                        "restart, collector SIGKILL mid-commit, agent SIGKILL (tests/reports/faultrun.py)")
    p.add_argument("--rate", type=float, default=250.0, help="hits per second in the fault run")
    p.add_argument("--ack", choices=("hub", "broker"), default="hub",
                   help="fault run with the hub's ack (default) or the old delete-on-PUBACK rule")
    a = p.parse_args()
    if a.faults:
        return bench_faults(a.n, a.rate, a.ack)
    bench_spool(a.n)
    if not a.spool:
        bench_delivery(a.n)


def bench_faults(n, rate, ack="hub"):
    sys.path.insert(0, str(REPO))
    from tests.reports.faultrun import run_faults

    with tempfile.TemporaryDirectory() as d:
        fig = run_faults(d, total=n, rate=rate, log=lambda m: print("  " + m, flush=True), ack=ack)
    print("## fault run: %d reports, end to end (agent spool -> mosquitto -> collector), ack=%s" % (n, ack))
    for k in ("total", "stored", "lost", "duplicated", "unexpected", "left_in_spool", "agent_rc",
              "collector_killed_rc", "seconds"):
        print("| %s | %s |" % (k, fig[k]))
    print("last collector: %s" % " ".join(fig["last_collector"]))
    return 0 if (fig["lost"], fig["duplicated"], fig["unexpected"], fig["left_in_spool"]) == (0, 0, 0, 0) else 1


if __name__ == "__main__":
    sys.exit(main())
