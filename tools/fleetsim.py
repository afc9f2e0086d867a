"""Fleet simulator at scale: thousands of real MQTT connections in a few processes, doing what agents do.

Owns only the simulation. Each simulated device is one real MQTT connection (gmqtt, asyncio) to one
node of the broker, failing over to the next node when its node goes away, and does what the agent
does on the wire, with the agent's own checking code:

- lists: follows the retained manifests (``<p>/lists/+/+/manifest``), checks each announcement with
  the updater's own ``check_announcement`` (signature, source, expiry, sizes), fetches the retained
  chunks of the delta (if it holds the delta's base) or the snapshot, checks every chunk's size and
  digest, applies the delta with ``agent.core.delta`` and verifies the result in full with
  ``agent.lists.verify.verify_bytes``. "Installing" swaps the device's list in memory: writing and
  fsyncing thousands of files would measure this machine's disk, not the fleet.
- confirmation: requests on ``confirm/req/<random partition>`` at a configured rate, each answered
  on ``confirm/resp/<client id>/<request id>`` or timed out (the device's fail-open path, counted).
- reports: spooled in memory, published with QoS 1 on ``reports/<source>/<token>/<partition of the
  report id>``, resent (doubling) until the hub acknowledges them on ``ack/<token>``.

Why gmqtt: a pure-asyncio MQTT 3.1.1/5 client in one small package without dependencies, so one
process holds a thousand and more connections on one event loop; aiomqtt runs a paho client (and its
Python packet handling) under each connection, and amqtt's client starts a plugin manager and
several tasks per connection. The agent itself keeps paho (what OpenWrt ships); the simulator is a
hub-side tool only.

    python -m tools.fleetsim --broker mqtt://127.0.0.1:1883 [--broker ...] --devices 1000 \\
        --processes 2 --trust hub.pub --lists OUT [--held FILE]

It raises its open-file limit (``ulimit -n``) to the hard limit and refuses to start when that
cannot hold the connections of one process. Only loopback brokers: it is a load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import multiprocessing
import os
import queue
import random
import resource
import sys
import tempfile
import time
from typing import Dict, List, Optional

from agent.core.errors import ConfigError, GatewatchError

log = logging.getLogger("gatewatch.fleetsim")

#: file descriptors a worker needs beyond one per connection (Python, the event loop, pipes)
FD_MARGIN = 200


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-file limit to the hard one; ConfigError if ``needed`` does not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if needed > soft:
        raise ConfigError("%d connections in one process need %d file descriptors, the limit is %d; raise "
                          "`ulimit -Hn` or use more --processes" % (needed - FD_MARGIN, needed, soft))
    return soft


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))] if xs else None


# ----------------------------------------------------------------------------- one device

class SimDevice:
    """One simulated agent: a connection, the lists it holds, its report spool, its open requests."""

    def __init__(self, worker: "Worker", index: int):
        self.w = worker
        self.client_id = "sim-%d-%05d" % (worker.index, index)
        self.index = index
        self.node = random.randrange(len(worker.nodes))
        self.token = os.urandom(8).hex()  # random, never derived from the client id (docs/reports.md)
        self.held: Dict[str, tuple] = dict(worker.held)  # ident -> (version, bytes)
        self.client = None
        self.connected = asyncio.Event()
        self.lost = asyncio.Event()
        self.fetches: Dict[str, dict] = {}   # chunk topic base -> {"got": {i: bytes}, "done": Event}
        self.pending: Dict[str, bytes] = {}  # manifest topic -> newest payload not handled yet
        self.updating = False
        self.spool: Dict[str, list] = {}     # report id -> [payload, topic, next try, attempts]
        self.requests: Dict[str, asyncio.Future] = {}
        self.connects = 0

    # connection ---------------------------------------------------------------------------
    async def run(self, connect_gate: asyncio.Semaphore) -> None:
        from gmqtt import Client
        from gmqtt.mqtt.constants import MQTTv311

        delay = 1.0
        while not self.w.stopping:
            host, port = self.w.nodes[self.node]
            c = Client(self.client_id, clean_session=True)
            c.set_config({"reconnect_retries": 0})  # fail-over is ours: the next node, not the same one
            c.on_message = self._on_message
            c.on_disconnect = lambda *_a: self.lost.set()
            self.lost.clear()
            try:
                async with connect_gate:
                    await asyncio.wait_for(c.connect(host, port, keepalive=120, version=MQTTv311), 30)
            except Exception:
                self.node = (self.node + 1) % len(self.w.nodes)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 8.0)
                continue
            delay = 1.0
            self.client = c
            self.connects += 1
            t = self.w.topics
            c.subscribe(t.lists_filter().rsplit("/", 1)[0] + "/+/+/manifest", qos=1)
            c.subscribe(t.ack(self.token), qos=1)
            c.subscribe(t.confirm_resp_filter(self.client_id), qos=1)
            for base in list(self.fetches):
                c.subscribe(base + "/+", qos=1)
            self.connected.set()
            for rid in self.spool:  # back: every waiting report now, not after its back-off
                self.spool[rid][2] = 0.0
            await self.lost.wait()
            self.connected.clear()
            self.client = None
            self.w.stats["disconnects"] += 1
            try:
                await asyncio.wait_for(c.disconnect(), 2)
            except Exception:
                pass
            self.node = (self.node + 1) % len(self.w.nodes)
            await asyncio.sleep(random.random())  # a dead node's devices do not all come back at once

    async def close(self) -> None:
        c = self.client
        if c is not None:
            try:
                await asyncio.wait_for(c.disconnect(), 2)
            except Exception:
                pass

    def _on_message(self, client, topic, payload, qos, properties):
        if topic.endswith("/manifest"):
            if payload:
                self.pending[topic] = bytes(payload)
                if not self.updating:
                    self.updating = True
                    asyncio.ensure_future(self._updates())
        elif topic.startswith(self.w.ack_head):
            self._on_ack(payload)
        elif topic.startswith(self.w.resp_head):
            fut = self.requests.pop(topic.rsplit("/", 1)[-1], None)
            if fut is not None and not fut.done():
                fut.set_result(bytes(payload))
        else:
            base, _, i = topic.rpartition("/")
            f = self.fetches.get(base)
            if f is not None and payload:
                try:
                    f["got"][int(i)] = bytes(payload)
                except ValueError:
                    return 0
                if len(f["got"]) >= f["n"]:
                    f["done"].set()
        return 0

    # lists --------------------------------------------------------------------------------
    async def _updates(self) -> None:
        try:
            while self.pending:
                topic = next(iter(self.pending))
                payload = self.pending.pop(topic)
                for attempt in range(5):
                    try:
                        await self._update(payload, topic)
                        break
                    except _Transient:
                        self.w.stats["update_retries"] += 1
                        await asyncio.sleep(1.0 + attempt)
                    except GatewatchError as exc:
                        self.w.stats["refused"] += 1
                        log.debug("%s refused an update: %s", self.client_id, exc)
                        break
                    if topic in self.pending:  # a newer announcement came meanwhile
                        break
        finally:
            self.updating = False

    async def _fetch(self, base: str, part: dict, chunk_size: int, what: str) -> bytes:
        n, size = part["chunks"], part["size"]
        f = {"n": n, "got": {}, "done": asyncio.Event()}
        self.fetches[base] = f
        if self.client is not None:
            self.client.subscribe(base + "/+", qos=1)
        try:
            await asyncio.wait_for(f["done"].wait(), self.w.fetch_timeout)
        except asyncio.TimeoutError:
            raise _Transient("%s chunks missing" % what)
        finally:
            self.fetches.pop(base, None)
            if self.client is not None:
                try:
                    self.client.unsubscribe(base + "/+")
                except Exception:
                    pass
        out = []
        for i in range(n):
            chunk = f["got"].get(i)
            expected = chunk_size if i < n - 1 else size - chunk_size * (n - 1)
            if chunk is None or len(chunk) != expected or \
                    hashlib.sha256(chunk).hexdigest() != part["chunk_sha256"][i]:
                raise ConfigError("%s chunk %d does not match its announcement" % (what, i))
            out.append(chunk)
        data = b"".join(out)
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise ConfigError("%s does not match its announced digest" % what)
        return data

    async def _update(self, payload: bytes, topic: str) -> None:
        from agent.core import delta as core_delta
        from agent.lists.verify import verify_bytes

        w = self.w
        ann = w.checker.check_announcement(payload, topic)  # the updater's own checks
        held = self.held.get(ann.ident)
        if held is not None and ann.version <= held[0]:
            return
        t, data, via = w.topics, None, "snapshot"
        if held is not None:
            for d in ann.doc.get("deltas", []):
                if d["from"] == held[0]:
                    base = t.delta_chunk(ann.source, ann.name, d["from"], ann.version, 0).rsplit("/", 1)[0]
                    delta = await self._fetch(base, d, ann.doc["chunk_size"], "delta")
                    data = core_delta.apply(held[1], delta, max_len=w.max_bytes)
                    via = "delta"
        if data is None:
            base = t.snapshot_chunk(ann.source, ann.name, ann.version, 0).rsplit("/", 1)[0]
            data = await self._fetch(base, ann.doc, ann.doc["chunk_size"], "snapshot")
        lst = verify_bytes(data, w.trust, now=time.time(), max_bytes=w.max_bytes,
                           held_version=held[0] if held is not None else None)
        if lst.file.manifest_bytes != ann.file.manifest_bytes:
            raise ConfigError("the list does not carry the announced manifest")
        self.held[ann.ident] = (lst.version, data)
        w.active.append((ann.ident, lst.version, self.index, time.monotonic(), via))

    # reports ------------------------------------------------------------------------------
    def add_reports(self, n: int, seed: str) -> None:
        from agent.core.report import encode_report, make_report

        t = self.w.topics
        for i in range(n):
            rid = hashlib.sha256(("%s:%s:%d" % (seed, self.client_id, i)).encode()).hexdigest()[:32]
            source = self.w.report_sources[i % len(self.w.report_sources)]
            r = make_report(source, "sha256", 1, "sha256", 0, "sha256:%016x" % i,
                            now=1_800_000_000 + i * 60, device_secret=b"sim", region="ZZ",
                            agent_version="sim", report_id=rid)
            self.spool[rid] = [encode_report(r), t.reports(source, self.token, t.pick_partition(rid)), 0.0, 0]

    def send_due(self, now: float, window: int = 32) -> None:
        c = self.client
        if c is None or not self.spool:
            return
        sent = 0
        for rid, item in self.spool.items():
            if item[2] <= now:
                item[3] += 1
                item[2] = now + min(self.w.resend_max, self.w.resend_after * 2 ** (item[3] - 1))
                c.publish(item[1], item[0], qos=1)
                self.w.stats["reports_sent"] += 1
                sent += 1
                if sent >= window:
                    break

    def _on_ack(self, payload) -> None:
        from agent.reports.reporter import parse_ack

        for rid in parse_ack(bytes(payload)):
            if self.spool.pop(rid, None) is not None:
                self.w.stats["reports_acked"] += 1

    # confirmation -------------------------------------------------------------------------
    async def confirm(self, lists: dict, timeout: float) -> Optional[float]:
        """One request (the agent's v1 wire format); the round trip in seconds, or None (timed out)."""
        c = self.client
        if c is None:
            return None
        rid = os.urandom(8).hex()
        fut = asyncio.get_running_loop().create_future()
        self.requests[rid] = fut
        body = json.dumps({"v": 1, "id": rid, "client": self.client_id, "lists": lists}).encode()
        t0 = time.monotonic()
        c.publish(self.w.topics.confirm_req(self.w.topics.pick_partition()), body, qos=1)
        try:
            answer = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.requests.pop(rid, None)
            return None
        try:
            ok = json.loads(answer).get("id") == rid
        except (ValueError, AttributeError):
            ok = False
        return time.monotonic() - t0 if ok else None


class _Transient(GatewatchError):
    """Chunks missing (a node went away mid-fetch): try the announcement again shortly."""


# ----------------------------------------------------------------------------- one process

class Worker:
    """One process: its devices on one event loop, commands from the coordinator, events back."""

    def __init__(self, index: int, spec: dict, conn, events):
        from agent.lists.store import ListStore
        from agent.lists.trust import TrustStore
        from agent.lists.verify import verify_bytes
        from agent.mqtt import Topics, broker_urls
        from agent.updates.updater import Updater

        self.index = index
        self.conn = conn
        self.events = events
        _urls, confs = broker_urls(spec["urls"])
        self.nodes = [(c["host"], c["port"]) for c in confs]
        self.topics = Topics(spec["prefix"])
        self.trust = TrustStore.from_specs(spec["trust"])
        self.max_bytes = 64 * 1024 * 1024
        self._tmp = tempfile.mkdtemp(prefix="gatewatch-fleetsim-")
        # the updater's announcement checks, without its MQTT client (one per process: stateless)
        self.checker = Updater(None, self.topics, ListStore(os.path.join(self._tmp, "lists"), self.trust),
                               versions_path=os.path.join(self._tmp, "versions.json"))
        self.held = {}
        for path in spec.get("held") or ():
            with open(path, "rb") as f:
                data = f.read()
            lst = verify_bytes(data, self.trust, max_bytes=self.max_bytes)
            self.held[lst.ident] = (lst.version, data)
        self.fetch_timeout = spec.get("fetch_timeout", 30.0)
        self.resend_after = spec.get("resend_after", 5.0)
        self.resend_max = spec.get("resend_max", 60.0)
        self.report_sources = spec.get("report_sources") or ["hl1"]
        self.ack_head = self.topics.ack("x")[:-1]
        self.resp_head = self.topics.confirm_resp("x", "y").rsplit("/", 2)[0] + "/"
        self.stopping = False
        self.active: list = []
        self.stats = {"disconnects": 0, "refused": 0, "update_retries": 0, "reports_sent": 0, "reports_acked": 0,
                      "confirm_sent": 0, "confirm_answered": 0, "confirm_timeouts": 0}
        self.rtts: list = []
        self.devices = [SimDevice(self, i) for i in range(spec["devices"])]

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(100)  # connects in flight at once: a node is not a SYN flood target
        tasks = [asyncio.ensure_future(d.run(gate)) for d in self.devices]
        commands: "asyncio.Queue" = asyncio.Queue()
        loop.add_reader(self.conn.fileno(), lambda: commands.put_nowait(self.conn.recv()))
        pump = asyncio.ensure_future(self._pump())
        await asyncio.gather(*(d.connected.wait() for d in self.devices))
        self.events.put(("ready", self.index, len(self.devices)))
        while True:
            cmd = await commands.get()
            if cmd[0] == "stop":
                break
            if cmd[0] == "reports":
                for d in self.devices:
                    d.add_reports(cmd[1], cmd[2])
            elif cmd[0] == "confirm":
                asyncio.ensure_future(self._confirm_load(*cmd[1:]))
            elif cmd[0] == "stats":
                self.events.put(("stats", self.index, self._snapshot()))
        self.stopping = True
        pump.cancel()
        await asyncio.gather(*(d.close() for d in self.devices), return_exceptions=True)
        for t in tasks:
            t.cancel()
        self.events.put(("stats", self.index, self._snapshot()))
        self.events.put(("stopped", self.index, None))

    def _snapshot(self) -> dict:
        s = dict(self.stats)
        s["spooled"] = sum(len(d.spool) for d in self.devices)
        s["connected"] = sum(1 for d in self.devices if d.client is not None)
        s["rtts"] = list(self.rtts)
        return s

    async def _pump(self) -> None:
        """Every 50 ms: send due reports, pass on what became active."""
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for d in self.devices:
                d.send_due(now)
            if self.active:
                batch, self.active = self.active, []
                self.events.put(("active", self.index, batch))

    async def _confirm_load(self, rate: float, duration: float, lists: dict, timeout: float) -> None:
        """``rate`` requests per second from this process for ``duration`` seconds, device by device;
        ``rate`` 0: closed loop, every device asks again as soon as it has its answer (or timed out),
        so the load is what the broker and the hub can take (an open-loop load far above that only
        measures queues collapsing)."""
        pending = []
        t0 = time.monotonic()
        n = 0

        async def one_device(d):
            while time.monotonic() - t0 < duration and not self.stopping:
                self.stats["confirm_sent"] += 1
                rtt = await d.confirm(lists, timeout)
                if rtt is None:
                    self.stats["confirm_timeouts"] += 1
                    await asyncio.sleep(0.1)
                else:
                    self.stats["confirm_answered"] += 1
                    self.rtts.append(rtt)

        if rate <= 0:
            await asyncio.gather(*(one_device(d) for d in self.devices))
        while rate > 0 and time.monotonic() - t0 < duration and not self.stopping:
            due = int((time.monotonic() - t0) * rate) - n
            for _ in range(max(0, due)):
                d = self.devices[n % len(self.devices)]
                n += 1
                self.stats["confirm_sent"] += 1
                pending.append(asyncio.ensure_future(d.confirm(lists, timeout)))
            await asyncio.sleep(0.005)
        for rtt in await asyncio.gather(*pending):
            if rtt is None:
                self.stats["confirm_timeouts"] += 1
            else:
                self.stats["confirm_answered"] += 1
                self.rtts.append(rtt)
        self.events.put(("confirm_done", self.index, None))


def _worker_main(index: int, spec: dict, conn, events) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)  # a dead node is expected here, not news
    raise_fd_limit(spec["devices"] + FD_MARGIN)
    try:
        asyncio.run(Worker(index, spec, conn, events).main())
    except Exception as exc:  # say so to the coordinator instead of leaving it waiting
        events.put(("error", index, "%s: %s" % (type(exc).__name__, exc)))
        raise


# ----------------------------------------------------------------------------- the coordinator

class SimFleet:
    """``devices`` simulated agents in ``processes`` worker processes.

    ``start()`` waits until every device is connected and subscribed; ``wait_active(ident, version)``
    returns the monotonic time (system-wide clock) at which each device had that version;
    ``reports(n)`` gives every device n reports to deliver; ``confirm_load(...)`` runs a request
    load; ``stats()`` sums every process's counters; ``stop()`` ends the processes.
    """

    def __init__(self, urls, devices: int, trust: List[str], *, processes: int = 2, prefix: str = "gatewatch/v1",
                 held: Optional[List[str]] = None, fetch_timeout: float = 30.0, resend_after: float = 30.0,
                 resend_max: float = 3600.0, report_sources: Optional[List[str]] = None):
        from agent.mqtt import broker_urls
        urls = broker_urls(urls)[0]
        processes = max(1, min(processes, devices))
        per = [devices // processes + (1 if i < devices % processes else 0) for i in range(processes)]
        raise_fd_limit(max(per) + FD_MARGIN)  # inherited by the workers; they check again
        ctx = multiprocessing.get_context("spawn")
        self.events = ctx.Queue()
        self.procs, self.conns = [], []
        self.devices = devices
        self.active: Dict[tuple, Dict[tuple, float]] = {}  # (ident, version) -> {(worker, device): t}
        self.via: Dict[str, int] = {}
        self._stats: Dict[int, dict] = {}
        self._confirm_done = 0
        for i, n in enumerate(per):
            parent, child = ctx.Pipe()
            spec = {"urls": urls, "devices": n, "trust": list(trust), "prefix": prefix, "held": list(held or ()),
                    "fetch_timeout": fetch_timeout, "resend_after": resend_after, "resend_max": resend_max,
                    "report_sources": report_sources}
            p = ctx.Process(target=_worker_main, args=(i, spec, child, self.events), daemon=True)
            self.procs.append(p)
            self.conns.append(parent)

    def _handle(self, ev) -> None:
        kind, worker, body = ev
        if kind == "error":
            raise RuntimeError("fleet simulator process %d failed: %s" % (worker, body))
        if kind == "active":
            for ident, version, dev, t, via in body:
                self.active.setdefault((ident, version), {})[(worker, dev)] = t
                self.via[via] = self.via.get(via, 0) + 1
        elif kind == "stats":
            self._stats[worker] = body
        elif kind == "confirm_done":
            self._confirm_done += 1

    def _poll(self, timeout: float) -> bool:
        try:
            self._handle(self.events.get(timeout=timeout))
            return True
        except queue.Empty:
            return False

    def _until(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise RuntimeError("fleet simulator: %s not reached within %.0fs" % (what, timeout))
            dead = [i for i, p in enumerate(self.procs) if not p.is_alive()]
            if dead and not self._poll(0.05):
                raise RuntimeError("fleet simulator processes %s exited" % dead)
            self._poll(0.05)

    def start(self, timeout: float = 120.0) -> "SimFleet":
        """Start the processes; wait until every device is connected and subscribed."""
        ready = set()
        for p in self.procs:
            p.start()

        def all_ready():
            return len(ready) == len(self.procs)

        deadline = time.monotonic() + timeout
        while not all_ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fleet simulator: %d of %d processes ready after %.0fs"
                                   % (len(ready), len(self.procs), timeout))
            try:
                ev = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if ev[0] == "ready":
                ready.add(ev[1])
            else:
                self._handle(ev)
        time.sleep(0.2)  # SUBACKs of the last connections
        return self

    def wait_active(self, ident: str, version: int, timeout: float = 120.0) -> List[float]:
        """Sorted monotonic times at which every device had ``version`` of ``ident``."""
        self._until(lambda: len(self.active.get((ident, version), {})) >= self.devices, timeout,
                    "%s v%d on all %d devices (have %d)" % (ident, version, self.devices,
                                                            len(self.active.get((ident, version), {}))))
        return sorted(self.active[(ident, version)].values())

    def reports(self, per_device: int, seed: str = "sim") -> int:
        """Give every device ``per_device`` reports to deliver; returns the total."""
        for c in self.conns:
            c.send(("reports", per_device, seed))
        return per_device * self.devices

    def stats(self, timeout: float = 30.0) -> dict:
        """Every process's counters, summed (``rtts``: every confirmation round trip, seconds)."""
        self._stats = {}
        for c in self.conns:
            c.send(("stats",))
        self._until(lambda: len(self._stats) == len(self.procs), timeout, "statistics")
        out: dict = {}
        for s in self._stats.values():
            for k, v in s.items():
                out[k] = out.get(k, 0 if not isinstance(v, list) else []) + v
        return out

    def wait_reports_acked(self, total: int, timeout: float = 120.0) -> dict:
        """Poll until the hub acknowledged ``total`` reports in all; returns the statistics."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if s["reports_acked"] >= total and s["spooled"] == 0:
                return s
            if time.monotonic() > deadline:
                raise RuntimeError("fleet simulator: %d of %d reports acknowledged after %.0fs (%d spooled)"
                                   % (s["reports_acked"], total, timeout, s["spooled"]))
            time.sleep(0.5)

    def confirm_load(self, rate: float, duration: float, lists: dict, timeout: float = 2.0) -> dict:
        """``rate`` requests per second over the whole fleet for ``duration`` s (0: closed loop, one
        request in flight per device); the statistics after."""
        self._confirm_done = 0
        before = self.stats()
        for c in self.conns:
            c.send(("confirm", rate / len(self.conns), duration, lists, timeout))
        self._until(lambda: self._confirm_done == len(self.conns), duration + timeout + 60, "the request load")
        s = self.stats()
        out = {k: s[k] - before[k] for k in ("confirm_sent", "confirm_answered", "confirm_timeouts")}
        rtts = s["rtts"][len(before["rtts"]):] if len(s["rtts"]) >= len(before["rtts"]) else s["rtts"]
        out["p50_ms"] = round(1000 * _pct(rtts, 50), 2) if rtts else None
        out["p99_ms"] = round(1000 * _pct(rtts, 99), 2) if rtts else None
        return out

    def stop(self) -> None:
        """Disconnect every device and end the processes."""
        for c in self.conns:
            try:
                c.send(("stop",))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 20
        for p in self.procs:
            if p.pid is not None:
                p.join(max(0.1, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join(5)


def publish_to_active(urls, lists_dir: str, devices: int, trust: List[str], ident: str, version: int, *,
                      processes: int = 2, held: Optional[List[str]] = None, prefix: str = "gatewatch/v1") -> dict:
    """Start the fleet, publish ``lists_dir``, time until every device has ``version``: p50/p99/max."""
    from agent.mqtt import MqttClient, Topics
    from tools.publish import publish_lists

    fleet = SimFleet(urls, devices, trust, processes=processes, held=held, prefix=prefix).start()
    try:
        with MqttClient(urls, "fleetsim-publisher-%d" % os.getpid()) as pub:
            t0 = time.monotonic()
            publish_lists(pub, Topics(prefix), lists_dir, clear_stale=False)
            t_pub = time.monotonic() - t0
            times = [t - t0 for t in fleet.wait_active(ident, version, timeout=300)]
        s = fleet.stats()
        return {"devices": devices, "processes": processes, "publish_s": round(t_pub, 3),
                "p50_s": round(_pct(times, 50), 3), "p99_s": round(_pct(times, 99), 3), "max_s": round(times[-1], 3),
                "via": sorted(fleet.via), "disconnects": s["disconnects"], "retries": s["update_retries"]}
    finally:
        fleet.stop()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fleetsim", description=__doc__.splitlines()[0])
    p.add_argument("--broker", action="append", required=True, help="a loopback broker node (repeatable)")
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--trust", required=True, help="the hub's public key file")
    p.add_argument("--lists", required=True, help="folder of built lists to publish")
    p.add_argument("--held", action="append", help="list file every device already holds (repeatable)")
    args = p.parse_args(argv)
    from tools.publish import find_lists

    (source, name), items = sorted(find_lists(args.lists).items())[0]
    out = publish_to_active(args.broker, args.lists, args.devices, [args.trust], "%s/%s" % (source, name),
                            items[-1].version, processes=args.processes, held=args.held)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
