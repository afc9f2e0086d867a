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
- tokens: when told (``SimFleet.fetch_tokens``; the agent asks on a schedule at each epoch), each
  device asks ``tokens/req/<login>/<the login's partition>`` for its batch of anonymous tokens and
  checks the hub's batched proof against the token key its signed list names.
- confirmation: private confirmation as the agent does it (docs/privacy.md), with the agent's own
  message code (``agent.confirm.exchange``): per request one token spent on an evaluation of the
  probes, blinded and padded to four elements, on ``confirm/eval/<random partition>``, then a fetch of
  four buckets (padded) on ``confirm/fetch/<random partition>``; every bucket is checked against the
  signed root and the records are opened on the device. Answers come on ``confirm/resp/<random reply
  id>`` (a pre-subscribed pool, each id used once); no request names the device. A request counts as
  answered only when the fetch answer verified and the expected entry opened (or nothing opened for
  a probe that is not listed); else it timed out (the device's fail-open path), was refused, did not
  verify, or opened the wrong thing, each counted. ``mode="echo"`` sends messages of the same shape
  and size with no cryptography on either side, for a bare responder (the broker's own ceiling).
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
from typing import Dict, List, Optional, Sequence, Tuple

from agent.core.errors import ConfigError, ConfirmError, GatewatchError

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
        from agent.confirm.tokens import TokenWallet

        self.w = worker
        self.client_id = "sim-%d-%05d" % (worker.index, index)
        self.login = self.client_id  # the broker login: only token requests name it (the ACL ties them)
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
        self.requests: Dict[str, asyncio.Future] = {}  # reply id -> its answer
        self.replies: List[str] = []  # pre-subscribed reply ids, each used once (the agent's pool)
        self.wallet = TokenWallet()
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
            c.subscribe(t.tokens_resp_filter(self.login), qos=1)
            self.replies = []  # a clean session: the old pool's subscriptions are gone
            for _ in range(self.w.reply_pool):
                self._add_reply()
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
        elif topic.startswith(self.w.resp_head) or topic.startswith(self.w.tokens_head):
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
        w.lists.setdefault((ann.ident, lst.version), lst)
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
    def _add_reply(self) -> None:
        c = self.client
        if c is None:  # refilled on the next connect
            return
        rid = os.urandom(16).hex()
        c.subscribe(self.w.topics.confirm_resp(rid), qos=1)
        self.replies.append(rid)

    def _take_reply(self) -> str:
        """A subscribed reply id; its replacement is subscribed before the next request needs it."""
        if self.replies:
            rid = self.replies.pop(0)
        else:  # more requests at once than the pool holds: this one is subscribed just before its request
            rid = os.urandom(16).hex()
            if self.client is not None:
                self.client.subscribe(self.w.topics.confirm_resp(rid), qos=1)
        self._add_reply()
        return rid

    def _drop_reply(self, rid: str) -> None:
        c = self.client
        if c is not None:
            try:
                c.unsubscribe(self.w.topics.confirm_resp(rid))
            except Exception:  # not connected: the subscription dies with the session
                pass

    async def _exchange(self, topic: str, body: dict, rid: str, deadline: float) -> Optional[bytes]:
        """Publish one request and wait for its answer until ``deadline`` (None: none came)."""
        from agent.confirm import wire

        c = self.client
        if c is None:
            return None
        fut = asyncio.get_running_loop().create_future()
        self.requests[rid] = fut
        try:
            c.publish(topic, wire.dumps(body), qos=1)
            return await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return None
        finally:
            self.requests.pop(rid, None)

    async def _ask(self, topic: str, body: dict, rid: str, deadline: float):
        """(outcome, answer): outcome None with the answer, or "timeout", "refused", "bad"."""
        from agent.confirm import exchange

        try:
            payload = await self._exchange(topic, body, rid, deadline)
        finally:
            if topic.startswith(self.w.confirm_head):
                self._drop_reply(rid)
        if payload is None:
            return "timeout", None
        try:
            doc, err = exchange.read_answer(payload, rid)
        except ConfirmError:
            return "bad", None
        return ("refused", doc) if err is not None else (None, doc)

    def _token_keys(self) -> Dict[str, bytes]:
        """{source: token key} of the sealed lists this device holds (from their signed manifests)."""
        from agent.confirm.client import sealed_section

        out = {}
        for ident, (version, _data) in self.held.items():
            lst = self.w.lists.get((ident, version))
            s = sealed_section(lst) if lst is not None else None
            if s and isinstance(s.get("tokens"), str):
                out[lst.source] = bytes.fromhex(s["tokens"])
        return out

    async def fetch_tokens(self, count: int, timeout: float) -> str:
        """This epoch's batch of ``count`` tokens for every source it holds a sealed list of (in
        requests of at most 64, as the wire allows); the outcome: "ok", "timeout", "refused", "bad"."""
        from agent.confirm import exchange, tokens, wire

        t = self.w.topics
        for source, pk in sorted(self._token_keys().items()):
            left = count
            while left > 0:
                batch = tokens.Issuance(source, min(left, wire.MAX_TOKENS_PER_ISSUE), tokens.epoch_of(time.time()))
                rid = os.urandom(16).hex()
                topic = t.tokens_req(self.login, exchange.token_partition(t, self.login))
                outcome, doc = await self._ask(topic, exchange.token_request(batch, rid), rid,
                                               time.monotonic() + timeout)
                if outcome is not None:
                    return outcome
                try:
                    got = exchange.token_answer(batch, doc, pk)
                except ConfirmError:
                    return "bad"
                self.wallet.add(source, got)
                self.w.stats["tokens_issued"] += len(got)
                left -= len(got)
        return "ok"

    async def confirm(self, job: tuple, timeout: float) -> Tuple[str, Optional[float]]:
        """One confirmation request (evaluation + fetch) for ``job`` = (ident, probes, expected entry
        ids): (outcome, round trip in seconds). Outcomes: "answered" (verified, and exactly the
        expected entries opened), "wrong" (verified, something else opened), "timeout" (the agent's
        fail-open path), "refused" (an error word), "bad" (did not verify), "no_tokens", "no_list"."""
        from agent.confirm import exchange
        from agent.confirm.client import sealed_section

        ident, probes, expect = job
        held = self.held.get(ident)
        lst = self.w.lists.get((ident, held[0])) if held is not None else None
        s = sealed_section(lst) if lst is not None else None
        if s is None:
            return "no_list", None
        tok = self.wallet.take(lst.source)
        if tok is None:
            return "no_tokens", None
        t0 = time.monotonic()
        deadline = t0 + timeout
        t = self.w.topics
        rnd = exchange.Round(lst, s, probes)
        rid = self._take_reply()
        outcome, doc = await self._ask(t.confirm_eval(exchange.eval_partition(t, tok)), rnd.eval_request(tok, rid), rid, deadline)
        if outcome is not None:
            return outcome, None
        try:
            rnd.eval_answer(doc)
        except ConfirmError:
            return "bad", None
        rid = self._take_reply()
        outcome, doc = await self._ask(t.confirm_fetch(t.pick_partition()), rnd.fetch_request(rid), rid, deadline)
        if outcome is not None:
            return outcome, None
        try:
            opened = rnd.fetch_answer(doc)
        except ConfirmError:
            return "bad", None
        got = sorted({e.id for entries in opened.values() for e in entries})
        return ("answered" if got == sorted(expect) else "wrong"), time.monotonic() - t0

    async def echo(self, job: tuple, timeout: float) -> Tuple[str, Optional[float]]:
        """The same two exchanges with messages of the same shape and size, no cryptography and no
        token (for the bare echo responder): the broker's and the clients' own ceiling."""
        ident, _probes, _expect = job
        t0 = time.monotonic()
        deadline = t0 + timeout
        t = self.w.topics
        for topic, body in ((t.confirm_eval(t.pick_partition()), dict(ECHO_EVAL)),
                            (t.confirm_fetch(t.pick_partition()), dict(ECHO_FETCH, list=ident))):
            rid = self._take_reply()
            body["reply"] = rid
            outcome, _doc = await self._ask(topic, body, rid, deadline)
            if outcome is not None:
                return outcome, None
        return "answered", time.monotonic() - t0


def _echo_bodies():
    import base64

    def b(n):
        return base64.b64encode(bytes(n)).decode()
    return ({"v": 2, "key": "0" * 16, "reply": "", "token": {"n": b(32), "y": b(64)}, "e": [b(32)] * 4},
            {"v": 2, "list": "", "version": 1, "ticket": b(16), "reply": "", "b": [0, 1, 2, 3]})


#: request bodies of the sizes of an evaluation and a fetch (mode "echo": nothing in them is checked)
ECHO_EVAL, ECHO_FETCH = _echo_bodies()

#: what a confirmation request can end in (``SimDevice.confirm``), each counted as ``confirm_<outcome>``
OUTCOMES = ("answered", "wrong", "timeout", "refused", "bad", "no_tokens", "no_list")


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
        self.lists: Dict[tuple, object] = {}  # (ident, version) -> the verified list (shared by the devices)
        for path in spec.get("held") or ():
            with open(path, "rb") as f:
                data = f.read()
            lst = verify_bytes(data, self.trust, max_bytes=self.max_bytes)
            self.held[lst.ident] = (lst.version, data)
            self.lists[(lst.ident, lst.version)] = lst
        self.fetch_timeout = spec.get("fetch_timeout", 30.0)
        self.resend_after = spec.get("resend_after", 5.0)
        self.resend_max = spec.get("resend_max", 60.0)
        self.report_sources = spec.get("report_sources") or ["hl1"]
        self.ack_head = self.topics.ack("x")[:-1]
        self.resp_head = self.topics.confirm_resp("x")[:-1]
        self.tokens_head = self.topics.tokens_resp("x", "y").rsplit("/", 2)[0] + "/"
        self.confirm_head = self.topics.confirm_eval().rsplit("/", 1)[0] + "/"
        from agent.confirm.client import REPLY_POOL
        self.reply_pool = REPLY_POOL
        self.stopping = False
        self.active: list = []
        self.stats = {"disconnects": 0, "refused": 0, "update_retries": 0, "reports_sent": 0, "reports_acked": 0,
                      "confirm_sent": 0, "tokens_issued": 0}
        self.stats.update(("confirm_" + o, 0) for o in OUTCOMES)
        self.stats.update(("tokens_" + o, 0) for o in ("ok", "timeout", "refused", "bad"))
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
            elif cmd[0] == "tokens":
                asyncio.ensure_future(self._fetch_tokens(*cmd[1:]))
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
        s["tokens_held"] = sum(d.wallet.count(src) for d in self.devices for src in d._token_keys())
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

    async def _fetch_tokens(self, count: int, timeout: float) -> None:
        """Every device asks for its token batch (a few at a time: blinding and checking cost CPU)."""
        gate = asyncio.Semaphore(32)

        async def one(d):
            async with gate:
                self.stats["tokens_" + await d.fetch_tokens(count, timeout)] += 1

        await asyncio.gather(*(one(d) for d in self.devices))
        self.events.put(("tokens_done", self.index, None))

    async def _confirm_load(self, rate: float, duration: float, jobs: Sequence[tuple], timeout: float,
                            mode: str = "private") -> None:
        """``rate`` requests per second from this process for ``duration`` seconds, device by device,
        each for the next of ``jobs`` ((ident, probes, expected entry ids)); ``rate`` 0: closed loop,
        every device asks again as soon as it has its answer (or timed out), so the load is what the
        broker and the hub can take (an open-loop load far above that only measures queues collapsing)."""
        pending = []
        self.rtts = []  # this load's round trips only
        t0 = time.monotonic()
        n = 0

        def job():
            nonlocal n
            n += 1
            return jobs[(n - 1) % len(jobs)]

        def ask(d):
            return d.echo(job(), timeout) if mode == "echo" else d.confirm(job(), timeout)

        def note(outcome, rtt):
            self.stats["confirm_" + outcome] += 1
            if outcome == "answered":
                self.rtts.append(rtt)

        async def one_device(d):
            while time.monotonic() - t0 < duration and not self.stopping:
                self.stats["confirm_sent"] += 1
                outcome, rtt = await ask(d)
                note(outcome, rtt)
                if outcome == "no_tokens":
                    break  # spent: this device is done for the epoch
                if outcome != "answered":
                    await asyncio.sleep(0.1)

        if rate <= 0:
            await asyncio.gather(*(one_device(d) for d in self.devices))
        while rate > 0 and time.monotonic() - t0 < duration and not self.stopping:
            due = int((time.monotonic() - t0) * rate) - len(pending)
            for _ in range(max(0, due)):
                d = self.devices[len(pending) % len(self.devices)]
                self.stats["confirm_sent"] += 1
                pending.append(asyncio.ensure_future(ask(d)))
            await asyncio.sleep(0.005)
        for outcome, rtt in await asyncio.gather(*pending):
            note(outcome, rtt)
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
        self._tokens_done = 0
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
        elif kind == "tokens_done":
            self._tokens_done += 1

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
        """Every process's counters, summed (``rtts``: the last confirmation load's answered round trips, seconds)."""
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

    def fetch_tokens(self, count: int = 64, timeout: float = 30.0) -> dict:
        """Every device asks for its batch of ``count`` anonymous tokens of each source it holds a
        sealed list of, checking the proof; {"ok", "timeout", "refused", "bad": devices, "issued"}."""
        self._tokens_done = 0
        before = self.stats()
        for c in self.conns:
            c.send(("tokens", count, timeout))
        self._until(lambda: self._tokens_done == len(self.conns), timeout * 3 + 60, "the token batches")
        s = self.stats()
        out = {k: s["tokens_" + k] - before["tokens_" + k] for k in ("ok", "timeout", "refused", "bad")}
        out["issued"] = s["tokens_issued"] - before["tokens_issued"]
        return out

    def confirm_load(self, rate: float, duration: float, jobs: Sequence[tuple], timeout: float = 2.0,
                     mode: str = "private") -> dict:
        """``rate`` requests per second over the whole fleet for ``duration`` s (0: closed loop, one
        request in flight per device), each for the next of ``jobs``: (ident, [(band, value bytes),
        ...] (1..4 probes), [entry ids that must open]). ``mode="echo"``: same-size messages, no
        cryptography (for a bare responder). The counts after (``answered``, ``timeout``, ...)."""
        self._confirm_done = 0
        before = self.stats()
        jobs = [(ident, [(int(b), bytes(v)) for b, v in probes], list(expect)) for ident, probes, expect in jobs]
        for c in self.conns:
            c.send(("confirm", rate / len(self.conns), duration, jobs, timeout, mode))
        self._until(lambda: self._confirm_done == len(self.conns), duration + timeout + 60, "the request load")
        s = self.stats()
        out = {k: s["confirm_" + k] - before["confirm_" + k] for k in ("sent",) + OUTCOMES}
        rtts = s["rtts"]  # every process keeps the last load's only
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
