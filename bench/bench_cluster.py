"""Fleet scale on the 3-node aedes cluster over Redis (docs/benchmarks.md, "Fleet scale on a clustered broker").

    nice -n 10 python bench/bench_cluster.py                  # 100, 1,000, 5,000 devices; 1/2/4 hub instances
    python bench/bench_cluster.py --devices 100,1000 --quick  # smaller

Each figure comes with a baseline measured in the same run:
- publish -> active (delta path and snapshot path) for N simulated devices (tools/fleetsim.py: real
  MQTT connections in several processes, the agent's own checks), p50/p99/max, against 100 devices;
- confirmation requests per second answered by 1, 2 and 4 `gatewatch-hub serve` instances that split
  the request partitions by leases, against a bare echo responder (the same partitions and leases,
  no lookup) with the same number of instances: the broker's and the clients' own ceiling.
Entries are random benign digests; nothing here is real list material.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def echo_instance(argv):
    """A bare responder: its share of confirm/req/<partition>, each request echoed to its answer topic."""
    import json as _json
    import signal
    import threading

    from agent.mqtt import MqttClient, Topics
    from tools.partitions import PartitionLease, member_will

    urls, name = argv[0], argv[1]
    t = Topics()
    c = MqttClient(urls, name, will=member_will(t, "echo", name))

    def answer(m):
        try:
            req = _json.loads(m.payload)
            c.publish(t.confirm_resp(req["client"], req["id"]), _json.dumps({"v": 1, "id": req["id"]}), qos=1)
        except (ValueError, KeyError, TypeError):
            pass
    parts = list(range(t.partitions))
    lease = PartitionLease(c, t, "echo", name, parts, lambda p: [t.confirm_req(p)], answer, heartbeat=0.5, lease=3)
    lease.start()
    c.connect(30)
    print("serving echo", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    lease.stop()
    c.stop()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def bench_publish(tmp, cluster, counts, entries, processes):
    from tests.listkit import Hub, only, random_entries
    from tools.fleetsim import publish_to_active

    hub = Hub(os.path.join(tmp, "hub"))
    base = random_entries(entries, 1)
    rows = []
    version = 1
    prev = hub.build(base, capacity=entries * 2, version=1)
    for n in counts:
        for mode in ("delta", "snapshot"):
            version += 1
            path = hub.build(base + random_entries(20 + version, 100 + version), capacity=entries * 2, version=version)
            held = [prev] if mode == "delta" else None
            pubdir = only([prev, path] if mode == "delta" else [path], os.path.join(tmp, "pub-%d" % version))
            r = publish_to_active(cluster.urls, pubdir, n, [hub.pub_path], "hl1/sha", version,
                                  processes=min(processes, max(1, n // 250)), held=held)
            r["mode"], r["size"] = mode, os.path.getsize(path)
            rows.append(r)
            prev = path
            print("  %-8s %5d devices (%d processes): p50 %.2fs p99 %.2fs max %.2fs (via %s, %d disconnects)"
                  % (mode, n, r["processes"], r["p50_s"], r["p99_s"], r["max_s"], r["via"], r["disconnects"]), flush=True)
    for mode in ("delta", "snapshot"):
        base_row = next(r for r in rows if r["mode"] == mode and r["devices"] == counts[0])
        for r in rows:
            if r["mode"] == mode:
                r["max_vs_%d" % counts[0]] = round(r["max_s"] / base_row["max_s"], 2)
    return rows


def bench_confirm(tmp, cluster, instances, devices, rate, duration):
    from agent.core.lsh import exact_short_key
    from tests.listkit import Hub, random_entries
    from tools.fleetsim import SimFleet

    hub = Hub(os.path.join(tmp, "chub"))
    known = random_entries(10000, 7)
    hub.build(known)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), os.environ.get("PYTHONPATH")) if p))
    lists = {"hl1/sha": {"version": 1, "keys": [exact_short_key("sha256", known[5].hash)]}}
    fleet = SimFleet(cluster.urls, devices, [hub.pub_path], processes=2).start()
    rows = []
    try:
        for kind in ("echo", "hub"):
            for k in instances:
                procs = []
                for i in range(k):
                    name = "%s-%d-%d" % (kind, k, i)
                    if kind == "echo":
                        argv = [sys.executable, os.path.abspath(__file__), "--echo-instance", ",".join(cluster.urls), name]
                    else:
                        argv = [sys.executable, "-m", "tools.hub_cli", "serve", "--lists", hub.out, "--db",
                                os.path.join(tmp, name + ".db"), "--client-id", name, "--ttl-positive", "0",
                                "--ttl-negative", "0", "--heartbeat", "0.5", "--lease", "3"]
                        for u in cluster.urls:
                            argv += ["--broker", u]
                    procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                time.sleep(3 + k)  # connected, leases settled (grace over)
                try:
                    fleet.confirm_load(rate, 1.0, lists, timeout=5.0)  # warm-up
                    r = fleet.confirm_load(rate, duration, lists, timeout=5.0)
                finally:
                    for p in procs:
                        p.terminate()
                    for p in procs:
                        p.wait(20)
                r.update({"kind": kind, "instances": k, "offered_per_s": rate,
                          "answered_per_s": round(r["confirm_answered"] / duration, 1)})
                rows.append(r)
                print("  %-4s %d instance(s): %7.1f answered/s (p50 %s ms, p99 %s ms, %d timed out)"
                      % (kind, k, r["answered_per_s"], r["p50_ms"], r["p99_ms"], r["confirm_timeouts"]), flush=True)
                time.sleep(4)  # the last instances' leases run out
    finally:
        fleet.stop()
    for r in rows:
        echo = next(e for e in rows if e["kind"] == "echo" and e["instances"] == r["instances"])
        r["vs_echo_same_instances"] = round(r["answered_per_s"] / max(echo["answered_per_s"], 0.1), 2)
        one = next(e for e in rows if e["kind"] == r["kind"] and e["instances"] == instances[0])
        r["vs_%d_instance" % instances[0]] = round(r["answered_per_s"] / max(one["answered_per_s"], 0.1), 2)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="100,1000,5000", help="publish -> active fleet sizes (the first is the baseline)")
    p.add_argument("--entries", type=int, default=10000, help="list entries (default %(default)s)")
    p.add_argument("--processes", type=int, default=4, help="simulator processes for the largest fleet")
    p.add_argument("--instances", default="1,2,4", help="hub instances for the confirmation rate")
    p.add_argument("--rate", type=int, default=0, help="offered confirmation requests per second (default 0: "
                   "closed loop, one request in flight per device: what the cluster and the hub can take)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of confirmation load per setting")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: publish, confirm")
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--echo-instance", nargs=2, metavar=("URLS", "NAME"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo_instance:
        return echo_instance(args.echo_instance)
    from tests.brokercluster import start_cluster

    counts = [int(x) for x in args.devices.split(",")]
    instances = [int(x) for x in args.instances.split(",")]
    if args.quick:
        counts, args.entries, args.duration = [50, 200], 2000, 3.0
    out = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = start_cluster(os.path.join(tmp, "cluster"))
        try:
            if "publish" not in args.skip:
                print("publish -> active on 3 aedes nodes over Redis (%d-entry list):" % args.entries, flush=True)
                out["publish"] = bench_publish(tmp, cluster, counts, args.entries, args.processes)
            if "confirm" not in args.skip:
                print("confirmation requests through the cluster (200 devices, %s for %.0fs):"
                      % ("%d/s offered" % args.rate if args.rate else "closed loop", args.duration), flush=True)
                out["confirm"] = bench_confirm(tmp, cluster, instances, 200, args.rate, args.duration)
        finally:
            cluster.stop()
    if args.json:
        print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
