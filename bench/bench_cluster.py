"""Fleet scale on the 3-node aedes cluster over Redis (docs/benchmarks.md, "Fleet scale on a clustered broker").

    nice -n 10 python bench/bench_cluster.py                  # 100, 1,000, 5,000 devices; 1/2/4 hub instances
    python bench/bench_cluster.py --devices 100,1000 --quick  # smaller

Each figure comes with a baseline measured in the same run:
- publish -> active (delta path and snapshot path) for N simulated devices (tools/fleetsim.py: real
  MQTT connections in several processes, the agent's own checks), p50/p99/max, against 100 devices;
- private confirmation requests per second (a request = an evaluation of 4 blinded elements with one
  anonymous token, then a fetch of 4 sealed buckets, checked and opened on the device: the agent's
  own message code, agent.confirm.exchange) answered by 1, 2 and 4 `gatewatch-hub serve` instances
  that split the partitions by leases, against a bare echo responder with the same number of
  instances (the same partitions and leases, answers of the same sizes, no cryptography on either
  side): the broker's and the clients' own ceiling. CPU seconds per second of load of the hub
  instances, the broker (3 nodes and Redis) and the simulated devices say where the cores go.
  Before a hub setting each device holds enough anonymous tokens for the whole run at the echo rate of
  the same setting (the hub instances issue up to 1,024 per device here), so no device runs dry.

    python bench/bench_cluster.py --skip publish --instances 1,2,4,8 --hub-cpu 0.1 --confirm-devices 100

`--hub-cpu F` (root) puts each hub and echo instance in a cgroup of its own held to F of one core, as if
each ran on a small machine: the instances, not this machine's 2 cores, then limit the rate, so adding
instances shows how the partitioned service scales, until the cores of the whole run are used up.
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
    """A bare responder: its share of confirm/eval/<partition> and confirm/fetch/<partition> by leases,
    each request answered on its reply topic with a message of the size the hub's answer has (given),
    without any lookup or cryptography."""
    import json as _json
    import signal
    import threading

    from agent.mqtt import MqttClient, Topics
    from tools.partitions import PartitionLease, member_will

    urls, name, eval_bytes, fetch_bytes = argv[0], argv[1], int(argv[2]), int(argv[3])
    t = Topics()
    c = MqttClient(urls, name, will=member_will(t, "echo", name))
    fetch_head = t.confirm_fetch()

    def answer(m):
        try:
            rid = _json.loads(m.payload)["reply"]
            size = fetch_bytes if m.topic.startswith(fetch_head + "/") else eval_bytes
            body = _json.dumps({"v": 2, "reply": rid, "pad": ""}, separators=(",", ":"))
            c.publish(t.confirm_resp(rid), body[:-2] + "x" * max(0, size - len(body)) + body[-2:], qos=1)
        except (ValueError, KeyError, TypeError):
            pass
    parts = list(range(t.partitions))
    lease = PartitionLease(c, t, "echo", name, parts, lambda p: [t.confirm_eval(p), t.confirm_fetch(p)], answer,
                           heartbeat=0.5, lease=3)
    lease.start()
    c.connect(30)
    print("serving echo", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    lease.stop()
    c.stop()


def cpu_seconds(pids):
    """User + system CPU seconds used so far by each process (Linux /proc; 0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)
        except (OSError, ValueError, IndexError):
            out.append(0.0)
    return out


def answer_sizes(hub_out, lst, known):
    """Bytes of the hub's evaluation and fetch answers for one request (in-process, no broker)."""
    from agent.confirm import exchange
    from agent.confirm.client import sealed_section
    from agent.confirm.sealed import EXACT_BAND
    from agent.confirm.wire import dumps
    from agent.mqtt import Topics
    from tests.listkit import issue_tokens
    from tools.confirm_service import ConfirmService

    svc = ConfirmService(None, Topics(), hub_out)
    rnd = exchange.Round(lst, sealed_section(lst), [(EXACT_BAND, known.hash)])
    _t, ev = svc.answer_eval(dumps(rnd.eval_request(issue_tokens(svc, lst.source, 1)[0], "0" * 32)))
    rnd.eval_answer(exchange.read_answer(ev, "0" * 32)[0])
    _t, fe = svc.answer_fetch(dumps(rnd.fetch_request("0" * 32)))
    assert [e.id for es in rnd.fetch_answer(exchange.read_answer(fe, "0" * 32)[0]).values() for e in es] == [known.id]
    return len(ev), len(fe)


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


TOKEN_CAP = 1024  # the bench hub's token budget per device (the service's upper bound; its default is 64)


CGROUP_ROOTS = ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup")  # cgroup v1 cpu controller, or the v2 unified tree


def cpu_group(name):
    """A cgroup of its own for one instance, without a limit until `hold_to` sets one; or an error saying
    why there is none.

    A quota per instance stands in for a smaller hub machine per instance: with each instance held to a
    tenth of a core, the hub instances, not the 2 cores of this machine, are what limits the rate, so
    adding instances shows how the partitioned service scales until the cores run out.
    """
    for root in CGROUP_ROOTS:
        if os.path.exists(os.path.join(root, "cpu.cfs_quota_us")) or os.path.exists(
                os.path.join(root, "cgroup.controllers")):
            path = os.path.join(root, "gatewatch-bench", name)
            os.makedirs(path, exist_ok=True)
            return path
    raise SystemExit("--hub-cpu needs a writable cpu cgroup (v1 %s or v2 %s) and root" % CGROUP_ROOTS)


def hold_to(path, fraction, period=100000):
    """Give the processes in cgroup `path` `fraction` of one core from now on (CFS quota)."""
    if os.path.exists(os.path.join(path, "cpu.cfs_quota_us")):  # cgroup v1
        with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
            f.write(str(period))
        with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
            f.write(str(int(period * fraction)))
    else:
        with open(os.path.join(path, "cpu.max"), "w") as f:
            f.write("%d %d" % (int(period * fraction), period))


def _join_group(path):
    def join():
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    return join


def _drop_groups(paths):
    for path in paths:
        try:
            os.rmdir(path)
        except OSError:
            pass


def _instances(kind, k, tmp, cluster, hub_out, sizes, env, groups=False):
    procs = []
    for i in range(k):
        name = "%s-%d-%d-%d" % (kind, k, i, time.monotonic_ns() % 100000)
        if kind == "echo":
            argv = [sys.executable, os.path.abspath(__file__), "--echo-instance", ",".join(cluster.urls), name,
                    str(sizes[0]), str(sizes[1])]
        else:
            argv = [sys.executable, "-m", "tools.hub_cli", "serve", "--lists", hub_out, "--db",
                    os.path.join(tmp, name + ".db"), "--client-id", name, "--ttl-positive", "0",
                    "--ttl-negative", "0", "--heartbeat", "0.5", "--lease", "3",
                    "--tokens-per-device", str(TOKEN_CAP)]
            for u in cluster.urls:
                argv += ["--broker", u]
        group = cpu_group(name) if groups else None
        p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             preexec_fn=_join_group(group) if group else None)
        p.cgroup = group
        procs.append(p)
    return procs


def tokens_needed(rate, duration, devices):
    """Tokens each device needs for a warm-up second and a run of `duration` at `rate` answered/s spread
    over `devices`, with a quarter to spare: whole batches of 64, 64 to TOKEN_CAP."""
    per = (rate or 0) * (duration + 2) * 1.25 / max(devices, 1)
    return int(min(TOKEN_CAP, max(64, -(-per // 64) * 64)))


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def bench_confirm(tmp, cluster, instances, devices, rate, duration, repeats, hub_cpu=None):
    from agent.confirm.sealed import EXACT_BAND
    from agent.lists.store import load_folder
    from tests.listkit import Hub, random_entries
    from tools.fleetsim import SimFleet

    hub = Hub(os.path.join(tmp, "chub"))
    known = random_entries(10000, 7)
    path = hub.build(known, capacity=20000)
    lst = next(iter(load_folder(hub.out, hub.trust()).lists.values()))
    sizes = answer_sizes(hub.out, lst, known[0])
    print("  answers: evaluation %d bytes, fetch (4 buckets with proofs) %d bytes; %d buckets"
          % (sizes[0], sizes[1], lst.manifest["sealed"]["buckets"]), flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), os.environ.get("PYTHONPATH")) if p))
    # four in five requests for a listed entry (it must open), one for an unlisted digest (nothing may)
    jobs = [(lst.ident, [(EXACT_BAND, known[i].hash)], [known[i].id]) if i % 5 else
            (lst.ident, [(EXACT_BAND, os.urandom(32))], []) for i in range(100)]
    fleet = SimFleet(cluster.urls, devices, [hub.pub_path], processes=2, held=[path]).start()
    broker_pids = [p.pid for p in cluster.procs] + [cluster.redis.pid]
    sim_pids = [p.pid for p in fleet.procs]
    runs = []
    try:
        # echo and hub alternate, setting after setting, round after round: the other engineers' load
        # on this machine changes by the minute, and each figure is a median over the rounds
        echo_rate = None
        for rnd in range(repeats):
            for k in instances:
                for kind in ("echo", "hub"):
                    procs = _instances(kind, k, tmp, cluster, hub.out, sizes, env, bool(hub_cpu))
                    time.sleep(3 + k)  # connected, leases settled (grace over)
                    toks = None
                    try:
                        # enough tokens for the whole run at the echo rate of the same setting (the hub's
                        # ceiling), so that no device runs dry and stops asking mid-run
                        need = tokens_needed(echo_rate, duration, devices)
                        if kind == "hub" and fleet.stats()["tokens_held"] < need * devices:
                            # fresh instances count afresh: every device may take a new batch
                            t0 = time.monotonic()
                            toks = fleet.fetch_tokens(need, timeout=60.0)
                            toks["batches_per_s"] = round(toks["ok"] / (time.monotonic() - t0), 1)
                        for p in procs:  # tokens come before the limit: issuing them is not what is measured
                            if p.cgroup:
                                hold_to(p.cgroup, hub_cpu)
                        mode = "echo" if kind == "echo" else "private"
                        fleet.confirm_load(rate, 1.0, jobs, timeout=5.0, mode=mode)  # warm-up
                        pids = [p.pid for p in procs]
                        cpu0 = cpu_seconds(pids + broker_pids + sim_pids)
                        t0 = time.monotonic()
                        r = fleet.confirm_load(rate, duration, jobs, timeout=5.0, mode=mode)
                        wall = time.monotonic() - t0
                        cpu = [b - a for a, b in zip(cpu0, cpu_seconds(pids + broker_pids + sim_pids))]
                    finally:
                        for p in procs:
                            p.terminate()
                        for p in procs:
                            p.wait(20)
                        _drop_groups([p.cgroup for p in procs if p.cgroup])
                    n_hub, n_broker = len(pids), len(broker_pids)
                    r.update({"kind": kind, "instances": k, "round": rnd, "tokens": toks,
                              "answered_per_s": round(r["answered"] / duration, 1),
                              # CPU seconds per second of load: 2.0 = both cores of this machine
                              "cpu_hub": round(sum(cpu[:n_hub]) / wall, 2),
                              "cpu_broker": round(sum(cpu[n_hub:n_hub + n_broker]) / wall, 2),
                              "cpu_devices": round(sum(cpu[n_hub + n_broker:]) / wall, 2)})
                    r["cpu_total"] = round(r["cpu_hub"] + r["cpu_broker"] + r["cpu_devices"], 2)
                    r["per_core_s"] = round(r["answered_per_s"] / max(r["cpu_total"], 0.01), 1)
                    for part in ("hub", "broker", "devices", "total"):  # CPU per answered request, ms
                        r["ms_cpu_" + part] = round(1000 * r["cpu_" + part] / max(r["answered_per_s"], 0.1), 2)
                    runs.append(r)
                    if kind == "echo":
                        echo_rate = r["answered_per_s"]
                    print("  %-4s %d instance(s), round %d: %6.1f answered/s (p50 %s ms, p99 %s ms; %d timed out, "
                          "%d wrong, %d bad, %d refused, %d without tokens); cores busy: hub %.2f, broker %.2f, "
                          "devices %.2f: %.0f requests per core-second%s"
                          % (kind, k, rnd + 1, r["answered_per_s"], r["p50_ms"], r["p99_ms"], r["timeout"], r["wrong"],
                             r["bad"], r["refused"], r["no_tokens"], r["cpu_hub"], r["cpu_broker"], r["cpu_devices"],
                             r["per_core_s"], "" if toks is None else
                             "; tokens: %d devices at %.1f batches/s" % (toks["ok"], toks["batches_per_s"])), flush=True)
                    time.sleep(4)  # the last instances' leases run out
    finally:
        fleet.stop()
    rows = []
    for kind in ("echo", "hub"):
        for k in instances:
            mine = [r for r in runs if r["kind"] == kind and r["instances"] == k]
            row = {"kind": kind, "instances": k, "runs": mine}
            for f in ("answered_per_s", "p50_ms", "p99_ms", "cpu_hub", "cpu_broker", "cpu_devices", "cpu_total",
                      "per_core_s", "ms_cpu_hub", "ms_cpu_broker", "ms_cpu_devices", "ms_cpu_total"):
                row[f] = _median([r[f] for r in mine])
            for f in ("sent", "answered", "timeout", "wrong", "bad", "refused", "no_tokens"):
                row[f] = sum(r[f] for r in mine)
            rows.append(row)
    for r in rows:
        echo = next(e for e in rows if e["kind"] == "echo" and e["instances"] == r["instances"])
        r["vs_echo_same_instances"] = round(r["answered_per_s"] / max(echo["answered_per_s"], 0.1), 2)
        one = next(e for e in rows if e["kind"] == r["kind"] and e["instances"] == instances[0])
        r["vs_%d_instance" % instances[0]] = round(r["answered_per_s"] / max(one["answered_per_s"], 0.1), 2)
        print("  median %-4s %d: %6.1f answered/s (x%.2f of echo, x%.2f of %d instance), p50 %s ms, CPU per request: "
              "hub %.2f ms, broker %.2f ms, devices %.2f ms (medians)" % (r["kind"], r["instances"], r["answered_per_s"],
                                                                 r["vs_echo_same_instances"],
                                                                 r["vs_%d_instance" % instances[0]], instances[0],
                                                                 r["p50_ms"], r["ms_cpu_hub"], r["ms_cpu_broker"],
                                                                 r["ms_cpu_devices"]), flush=True)
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
    p.add_argument("--confirm-devices", type=int, default=200, help="simulated devices asking (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="rounds over every confirmation setting; figures are "
                   "medians (default %(default)s)")
    p.add_argument("--hub-cpu", type=float, default=0.0, help="hold each hub (and echo) instance to this fraction "
                   "of one core with a cgroup CPU quota, as if each ran on a small machine of its own (root; "
                   "default 0: no limit, every process shares this machine's cores)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: publish, confirm")
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--echo-instance", nargs=4, metavar=("URLS", "NAME", "EVAL_BYTES", "FETCH_BYTES"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo_instance:
        return echo_instance(args.echo_instance)
    from tests.brokercluster import start_cluster

    counts = [int(x) for x in args.devices.split(",")]
    instances = [int(x) for x in args.instances.split(",")]
    if args.quick:
        counts, args.entries, args.duration, args.repeats = [50, 200], 2000, 3.0, 1
    out = {"cpus": os.cpu_count(), "hub_cpu": args.hub_cpu or None}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = start_cluster(os.path.join(tmp, "cluster"))
        try:
            if "publish" not in args.skip:
                print("publish -> active on 3 aedes nodes over Redis (%d-entry list):" % args.entries, flush=True)
                out["publish"] = bench_publish(tmp, cluster, counts, args.entries, args.processes)
            if "confirm" not in args.skip:
                print("confirmation requests through the cluster (%d devices, %s for %.0fs%s):"
                      % (args.confirm_devices, "%d/s offered" % args.rate if args.rate else "closed loop",
                         args.duration, ", each instance held to %.2f of a core" % args.hub_cpu if args.hub_cpu else ""),
                      flush=True)
                out["confirm"] = bench_confirm(tmp, cluster, instances, args.confirm_devices, args.rate, args.duration,
                                               args.repeats, args.hub_cpu or None)
        finally:
            cluster.stop()
    if args.json:
        print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
