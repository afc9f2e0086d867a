"""Confirmation service: evaluates blinded probes, serves sealed buckets, issues anonymous tokens.

Owns the hub side of private confirmation (agent/confirm/client.py; docs/privacy.md): the OPRF
evaluation of blinded elements (one spent token each request), the sealed buckets of a list version
with their Merkle proofs (one ticket each evaluation), the per-epoch token batches of each device
login, the bounds on evaluations (per login through tokens, per hour, globally) and the flood alarm.
It learns no probe, no hash and no device behind a request; the database keeps only counts per hour
and kind. Must not touch: building or publishing lists, reports.

Inputs: a `lists build` output folder's hub/ files: ``*.sealed`` (the sealed tables, newest versions
per list) and ``<source>.<key id>.confirm`` (the sources' confirmation keys). The plain entries files
are not read. Several instances share the load: each takes a share of the request partitions by lease
(tools/partitions.py, docs/cluster.md), or, with ``--group``, every partition through shared
subscriptions. An evaluation and its fetch may reach different instances: tickets are checked by a
MAC under the source's key, not by memory.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import json
import logging
import os
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections import OrderedDict
from typing import Dict, Optional, Tuple

from agent.confirm import exchange, oprf, sealed, tokens, wire
from agent.core.errors import ConfigError, ConfirmError, GatewatchError
from tools.broker_args import add_broker_arguments, client_from_args, topics_from_args
from tools.partitions import add_lease_arguments, lease_of, member_will, split_topics
from tools.sealing import load_service_keys

HELP = "answer devices' private confirmation requests (blinded probes, sealed buckets, tokens)"
DESCRIPTION = ("Runs until SIGTERM/SIGINT. The database keeps only counts per hour and kind, never a "
               "device, a probe or a hash behind a request.")

log = logging.getLogger("gatewatch.serve")

DEFAULT_TTL_POSITIVE = 86400.0
DEFAULT_TTL_NEGATIVE = 3600.0
DEFAULT_MAX_EVALS_PER_HOUR = 10_000_000
DEFAULT_ALARM_EVALS_PER_MINUTE = 60_000
DEFAULT_ALARM_REFUSALS_PER_MINUTE = 600
TICKET_SECONDS = 60
MAX_TICKETS = 200_000  # tickets remembered as used (each is good for one fetch per instance)
VERSIONS_KEPT = 3  # sealed tables per list a device may still ask about after an update


class Refusal(tuple):
    """(topic, payload) of an error answer: sent at QoS 0 (while the flood alarm is up, refusals get none)."""


class ConfirmStats:
    """Counts per (hour, kind) in SQLite, flushed in batches (never a device, probe or hash)."""

    def __init__(self, path: Optional[str], clock=time.time):
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: Dict[Tuple[int, str], int] = {}
        if path:
            with self._connect() as db:
                db.execute("CREATE TABLE IF NOT EXISTS confirm_counts (hour INTEGER, kind TEXT, n INTEGER, "
                           "PRIMARY KEY (hour, kind))")

    def _connect(self):
        try:
            return sqlite3.connect(self.path, timeout=10)
        except sqlite3.Error as exc:
            raise ConfigError("cannot open database %s: %s" % (self.path, exc))

    def count(self, kind: str, n: int = 1) -> None:
        hour = int(self.clock() // 3600 * 3600)
        with self._lock:
            self._pending[(hour, kind)] = self._pending.get((hour, kind), 0) + n

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not self.path or not pending:
            return
        with self._connect() as db:
            for (hour, kind), n in pending.items():
                db.execute("INSERT INTO confirm_counts VALUES (?,?,?) ON CONFLICT(hour, kind) DO UPDATE "
                           "SET n=n+excluded.n", (hour, kind, n))

    def totals(self) -> Dict[str, int]:
        """{kind: count} over all hours (flushes first; in memory only without a database)."""
        if not self.path:
            with self._lock:
                out: Dict[str, int] = {}
                for (_h, kind), n in self._pending.items():
                    out[kind] = out.get(kind, 0) + n
                return out
        self.flush()
        with self._connect() as db:
            return dict(db.execute("SELECT kind, SUM(n) FROM confirm_counts GROUP BY kind").fetchall())


class FloodAlarm:
    """Raised when evaluations or refusals per minute pass their thresholds; counts only, no who."""

    def __init__(self, evals_per_minute: int, refusals_per_minute: int, on_change=None, clock=time.monotonic):
        self.evals_limit = evals_per_minute
        self.refusals_limit = refusals_per_minute
        self.on_change = on_change
        self.clock = clock
        self._lock = threading.Lock()
        self._minute = None
        self._evals = 0
        self._refusals = 0
        self.raised = False
        self.times_raised = 0
        self.last = {}

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if self._minute != minute:
            if self._minute is not None and self.raised and self._evals <= self.evals_limit \
                    and self._refusals <= self.refusals_limit:
                self._set(False, {"evals_per_minute": self._evals, "refusals_per_minute": self._refusals})
            self._minute, self._evals, self._refusals = minute, 0, 0

    def _set(self, raised: bool, figures: dict) -> None:
        self.raised = raised
        self.last = dict(figures, alarm=raised)
        if raised:
            self.times_raised += 1
            log.error("flood alarm: %d evaluations and %d refused requests this minute (limits %d and %d)",
                      figures["evals_per_minute"], figures["refusals_per_minute"], self.evals_limit,
                      self.refusals_limit)
        else:
            log.warning("flood alarm cleared")
        if self.on_change:
            try:
                self.on_change(self.last)
            except Exception as exc:  # the alarm must never stop the service
                log.error("could not publish the alarm: %s", exc)

    def note(self, evals: int = 0, refusals: int = 0) -> None:
        with self._lock:
            self._roll(self.clock())
            self._evals += evals
            self._refusals += refusals
            if not self.raised and (self._evals > self.evals_limit or self._refusals > self.refusals_limit):
                self._set(True, {"evals_per_minute": self._evals, "refusals_per_minute": self._refusals})


def _ticket_mac(key, head: bytes) -> bytes:
    return hmac.new(hashlib.sha256(b"gatewatch-ticket\x00" + key.oprf_sk).digest(), head, "sha256").digest()[:8]


def make_ticket(key, now: float) -> bytes:
    """A fetch ticket: expiry, a random nonce and a MAC under the source's key, so that every instance
    sharing the key accepts it (an evaluation and its fetch may reach different instances)."""
    head = struct.pack(">I", int(now + TICKET_SECONDS) & 0xFFFFFFFF) + os.urandom(4)
    return head + _ticket_mac(key, head)


def check_ticket(key, ticket: bytes, now: float) -> bool:
    """True for an unexpired ticket made with ``key``."""
    if len(ticket) != 16 or not hmac.compare_digest(_ticket_mac(key, ticket[:8]), ticket[8:]):
        return False
    return now <= struct.unpack(">I", ticket[:4])[0]


class ConfirmService:
    """Answers the three requests of private confirmation from a ``lists build`` folder's hub/ files."""

    def __init__(self, client, topics, lists_dir: str, *, ttl_positive: float = DEFAULT_TTL_POSITIVE,
                 ttl_negative: float = DEFAULT_TTL_NEGATIVE, db: Optional[str] = None, group: Optional[str] = "hub",
                 reload_interval: float = 5.0, instance: Optional[str] = None, lease: Optional[dict] = None,
                 token_budget: int = tokens.DEFAULT_BUDGET,
                 max_evals_per_hour: int = DEFAULT_MAX_EVALS_PER_HOUR,
                 alarm_evals_per_minute: int = DEFAULT_ALARM_EVALS_PER_MINUTE,
                 alarm_refusals_per_minute: int = DEFAULT_ALARM_REFUSALS_PER_MINUTE, clock=time.time):
        if ttl_positive < 0 or ttl_negative < 0:
            raise ConfigError("cache durations must not be negative")
        if not 1 <= token_budget <= wire.MAX_TOKENS_PER_ISSUE * 16:
            raise ConfigError("token budget must be 1..%d" % (wire.MAX_TOKENS_PER_ISSUE * 16))
        self.client = client
        self.topics = topics
        self.lists_dir = lists_dir
        self.ttl = [float(ttl_positive), float(ttl_negative)]
        self.group = group
        self.clock = clock
        self.instance = instance  # with it: a lease on a share of the request partitions (below)
        self.lease = lease
        self.stats = ConfirmStats(db, clock)
        self.reload_interval = reload_interval
        self.token_budget = token_budget
        self.max_evals_per_hour = max_evals_per_hour
        self.alarm = FloodAlarm(alarm_evals_per_minute, alarm_refusals_per_minute, self._publish_alarm)
        self.spent = tokens.SpentTokens(clock)
        self.keys = {}
        self.tables: Dict[str, Dict[int, sealed.SealedTable]] = {}
        self._tickets: "OrderedDict[bytes, float]" = OrderedDict()
        self._lock = threading.Lock()
        self._hour = None
        self._hour_evals = 0
        # tokens issued per (epoch, source, login): in memory only, so that no login is ever written down
        # (a restart forgets them: a device may then fetch one more batch, once)
        self._issued_mem: Dict[Tuple[int, str, str], int] = {}
        self._stamp = None
        self._checked = 0.0
        self.answered = 0
        self.rejected = 0
        self.reload(force=True)

    # ------------------------------------------------------------ inputs
    def _hub(self) -> str:
        return os.path.join(self.lists_dir, "hub")

    def _dir_stamp(self):
        try:
            return tuple(sorted((n, os.stat(os.path.join(self._hub(), n)).st_mtime_ns) for n in os.listdir(self._hub())))
        except OSError:
            return None

    def reload(self, force: bool = False) -> None:
        """Re-read keys and sealed tables when the folder changed (a new version was built)."""
        stamp = self._dir_stamp()
        if not force and stamp == self._stamp:
            return
        keys = load_service_keys(self._hub())
        paths = sorted(glob.glob(os.path.join(self._hub(), "*.sealed")))
        if not keys or not paths:
            raise ConfigError("%s has no sealed tables or confirmation keys; pass a `gatewatch-hub lists build` "
                              "output folder built with a confirmation key" % self.lists_dir)
        tables: Dict[str, Dict[int, sealed.SealedTable]] = {}
        for p in paths:
            with open(p, "rb") as f:
                t = sealed.SealedTable.from_bytes(f.read())
            if t.key_id not in keys:
                log.warning("%s is sealed with key %s, which hub/ does not hold: skipped", p, t.key_id)
                continue
            tables.setdefault(t.ident, {})[t.version] = t
        for ident, versions in tables.items():
            for v in sorted(versions)[:-VERSIONS_KEPT]:
                del versions[v]
        self.keys, self.tables, self._stamp = keys, tables, stamp
        log.info("serving %s", ", ".join("%s v%s" % (k, ",".join(map(str, sorted(v))))
                                          for k, v in sorted(tables.items())))

    def _maybe_reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._checked > self.reload_interval:
            self._checked = now
            try:
                self.reload()
            except (GatewatchError, OSError) as exc:
                log.warning("keeping the loaded tables: %s", exc)

    # ------------------------------------------------------------ MQTT
    def start(self) -> "ConfirmService":
        """Subscribe to the requests this instance takes (``subscribe_requests``, below)."""
        # something to .wait(timeout) on when started on a connected client (else: subscribed on connect)
        self.subscription = subscribe_requests(self.client, self.topics, self._dispatch, group=self.group,
                                               instance=self.instance, lease=self.lease)
        return self

    def _dispatch(self, msg) -> None:
        if msg.topic.startswith(self.topics.prefix + "/tokens/"):
            self._on_tokens(msg)
        else:
            self._on_request(msg)

    def _on_request(self, msg) -> None:
        parts = msg.topic[len(self.topics.prefix) + 1:].split("/")  # confirm/<kind>[/<partition>]
        kind = parts[1]
        partition = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() and parts[2].isascii() else None
        self._maybe_reload()
        answer = self.answer_eval(msg.payload, partition) if kind == "eval" else (
            self.answer_fetch(msg.payload) if kind == "fetch" else None)
        self._send(answer)

    def _on_tokens(self, msg) -> None:
        self._maybe_reload()
        login = msg.topic[len(self.topics.prefix) + 1:].split("/")[2]  # tokens/req/<login>[/<partition>]
        self._send(self.answer_tokens(login, msg.payload))

    def _send(self, answer) -> None:
        if answer is None:
            self.rejected += 1
            return
        topic, body = answer
        if isinstance(answer, Refusal):
            self.rejected += 1
            self.client.publish(topic, body, qos=0)  # an error is worth no retransmission
            return
        self.client.publish(topic, body, qos=1)
        self.answered += 1

    def _publish_alarm(self, figures: dict) -> None:
        if self.client is not None:
            self.client.publish(self.topics.hub_alarm(), json.dumps(figures).encode(), qos=1, retain=True)

    def _refuse(self, kind: str, rid: Optional[str], topic_of, word: str):
        """Count a refusal; an error answer when the request named a reply topic."""
        self.stats.count("refused-" + word)
        self.alarm.note(refusals=1)
        if rid is None or self.alarm.raised:  # under a flood a refusal gets no answer at all
            return None
        return Refusal((topic_of(rid), wire.error_answer(rid, word)))

    # ------------------------------------------------------------ evaluation
    def answer_eval(self, payload: bytes, partition: Optional[int] = None):
        """(topic, payload) answering one evaluation request, or None for one with no usable reply id.

        ``partition``: the topic's. With leases (``instance``) a token is accepted only on the partition
        its nonce names (``exchange.eval_partition``): the one instance owning it keeps its spent set, so
        a token sent to several instances is spent once."""
        rid = None
        try:
            doc = wire.loads(payload, "evaluation request")
            rid = wire.reply_id(doc)
            kid = wire.key_id(doc)
            nonce, output = wire.token(doc)
        except ConfirmError:
            return self._refuse("eval", rid, self.topics.confirm_resp, "malformed")
        key = self.keys.get(kid)
        if key is None:
            self._maybe_reload(force=True)
            key = self.keys.get(kid)
            if key is None:
                return self._refuse("eval", rid, self.topics.confirm_resp, "unknown-key")
        if self.instance is not None and partition != exchange.eval_partition(self.topics, (nonce, output)):
            return self._refuse("eval", rid, self.topics.confirm_resp, "wrong-partition")
        # the token first: a flood of made-up or replayed tokens is refused before any element is decoded
        word = self.spent.redeem(key.source, key.token_sk, nonce, output)
        if word is not None:
            return self._refuse("eval", rid, self.topics.confirm_resp, word)
        try:
            blinded = wire.elements(doc, wire.ELEMENTS)
        except ConfirmError:
            return self._refuse("eval", rid, self.topics.confirm_resp, "malformed")
        if not self._within_hourly_bound(len(blinded)):
            return self._refuse("eval", rid, self.topics.confirm_resp, "busy")
        try:
            evaluated = [oprf.blind_evaluate(key.oprf_sk, b) for b in blinded]
        except ConfirmError:
            return self._refuse("eval", rid, self.topics.confirm_resp, "bad-element")
        ticket = make_ticket(key, self.clock())
        self.stats.count("evaluations", len(evaluated))
        self.stats.count("eval-requests")
        self.alarm.note(evals=len(evaluated))
        body = {"v": wire.PROTOCOL, "reply": rid, "e": [wire.b64(e) for e in evaluated], "ticket": wire.b64(ticket),
                "ttl": self.ttl}
        return self.topics.confirm_resp(rid), wire.dumps(body)

    def _within_hourly_bound(self, n: int) -> bool:
        hour = int(self.clock() // 3600)
        with self._lock:
            if self._hour != hour:
                self._hour, self._hour_evals = hour, 0
            if self._hour_evals + n > self.max_evals_per_hour:
                return False
            self._hour_evals += n
            return True

    # ------------------------------------------------------------ buckets
    def answer_fetch(self, payload: bytes):
        """(topic, payload) answering one bucket fetch, or None for one with no usable reply id."""
        rid = None
        try:
            doc = wire.loads(payload, "fetch request")
            rid = wire.reply_id(doc)
            ident = wire.list_ident(doc)
            version = wire.whole(doc, "version", 1, 0xFFFFFFFFFFFF)
            ticket = wire.unb64(doc.get("ticket"), 16, "ticket")
            indices = wire.bucket_indices(doc)
        except ConfirmError:
            return self._refuse("fetch", rid, self.topics.confirm_resp, "malformed")
        table = self.tables.get(ident, {}).get(version)
        if table is None:
            self._maybe_reload(force=True)
            table = self.tables.get(ident, {}).get(version)
            if table is None:
                return self._refuse("fetch", rid, self.topics.confirm_resp, "unknown-version")
        if not self._take_ticket(self.keys.get(table.key_id), ticket):
            return self._refuse("fetch", rid, self.topics.confirm_resp, "ticket")
        n = len(table.buckets)
        out = []
        for i in sorted(set(indices)):
            if i >= n:
                return self._refuse("fetch", rid, self.topics.confirm_resp, "bucket-range")
            out.append({"i": i, "data": wire.b64(table.buckets[i]), "proof": [wire.b64(h) for h in table.tree.proof(i)]})
        self.stats.count("fetches")
        body = {"v": wire.PROTOCOL, "reply": rid, "version": version, "buckets": out}
        return self.topics.confirm_resp(rid), wire.dumps(body)

    def _take_ticket(self, key, ticket: bytes) -> bool:
        """A ticket of this source's key, unexpired, not used at this instance before."""
        if key is None or not check_ticket(key, ticket, self.clock()):
            return False
        with self._lock:
            if ticket in self._tickets:
                return False
            self._tickets[ticket] = time.monotonic()
            while len(self._tickets) > MAX_TICKETS:
                self._tickets.popitem(last=False)
        return True

    # ------------------------------------------------------------ tokens
    def answer_tokens(self, login: str, payload: bytes):
        """(topic, payload) answering a device's token request on ``tokens/req/<login>``."""
        rid = None
        topic_of = lambda r: self.topics.tokens_resp(login, r)  # noqa: E731
        try:
            doc = wire.loads(payload, "token request")
            rid = wire.reply_id(doc)
            source = doc.get("source")
            if not isinstance(source, str):
                raise ConfirmError("token request names no source")
            blinded = wire.elements(doc, None, wire.MAX_TOKENS_PER_ISSUE)
        except ConfirmError:
            return self._refuse("tokens", rid, topic_of, "malformed")
        key = next((k for k in self.keys.values() if k.source == source), None)
        if key is None:
            return self._refuse("tokens", rid, topic_of, "unknown-source")
        epoch = tokens.epoch_of(self.clock())
        with self._lock:
            slot = (epoch, source, login)
            had = self._issued_mem.get(slot, 0)
            if had + len(blinded) > self.token_budget:
                self._issued_mem[slot] = had
                over = True
            else:
                self._issued_mem[slot] = had + len(blinded)
                over = False
            for old in [s for s in self._issued_mem if s[0] < epoch - 1]:
                del self._issued_mem[old]
        if over:
            return self._refuse("tokens", rid, topic_of, "budget")
        try:
            evaluated, proof = tokens.issue(key.token_sk, key.token_pk, blinded)
        except ConfirmError:
            return self._refuse("tokens", rid, topic_of, "bad-element")
        self.stats.count("tokens-issued", len(blinded))
        body = {"v": wire.PROTOCOL, "reply": rid, "epoch": epoch, "e": [wire.b64(e) for e in evaluated],
                "proof": wire.b64(proof)}
        return topic_of(rid), wire.dumps(body)


# --- which request topics an instance takes: the partition layer's business (tools/partitions.py).
# How a request is answered is not touched here. Devices spread evaluations and fetches over
# confirm/eval/<partition> and confirm/fetch/<partition> (a random partition each), and token requests
# over tokens/req/<login>/<partition> (the login's own partition); "legacy" is the unpartitioned topics.
SERVICE = "confirm"


def request_partitions(topics) -> list:
    """The service's partitions: one per request partition, and ``"legacy"``."""
    return list(range(topics.partitions)) + ["legacy"]


def request_filters(topics, partition) -> list:
    """The topic filters of one partition."""
    if partition == "legacy":
        return [topics.confirm_eval(), topics.confirm_fetch(), topics.tokens_req_filter("legacy")]
    return [topics.confirm_eval(partition), topics.confirm_fetch(partition), topics.tokens_req_filter(partition)]


class _AllAcks:
    def __init__(self, acks):
        self.acks = acks

    def wait(self, timeout=None):
        return all(a.wait(timeout) for a in self.acks)


def subscribe_requests(client, topics, handler, *, group: Optional[str], instance: Optional[str],
                       lease: Optional[dict] = None):
    """Subscribe ``handler`` to the requests this instance takes; returns what to ``.wait(timeout)`` on.

    With ``instance``: its share of the partitions by leases (the client must carry
    ``member_will(topics, SERVICE, instance)``), or every partition through ``$share/<group>`` if
    ``group``. Without: every request, shared in ``group`` or plainly (the embedded demo broker)."""
    if instance is not None:
        return split_topics(client, topics, SERVICE, request_partitions(topics),
                            lambda p: request_filters(topics, p), handler, instance=instance,
                            group=group or None, **(lease or {})).start()
    filters = (topics.confirm_requests_shared(group) if group else
               topics.confirm_request_filters() + [topics.tokens_req_filter()])
    return _AllAcks([client.subscribe(f, handler, qos=1) for f in filters])


def add_arguments(parser) -> None:
    add_broker_arguments(parser, "gatewatch-hub-serve-%d" % os.getpid())
    parser.add_argument("--lists", required=True, help="a `lists build` output folder (its hub/ sealed tables and keys)")
    parser.add_argument("--db", required=True, help="SQLite file for counts per hour and kind")
    parser.add_argument("--group", default="", help="split requests between instances through this shared "
                        "subscription group; default: none: instances split the request partitions by leases "
                        "(docs/cluster.md)")
    add_lease_arguments(parser)
    parser.add_argument("--ttl-positive", type=float, default=DEFAULT_TTL_POSITIVE,
                        help="seconds a device may cache a positive answer (default 86400)")
    parser.add_argument("--ttl-negative", type=float, default=DEFAULT_TTL_NEGATIVE,
                        help="seconds a device may cache a negative answer (default 3600)")
    parser.add_argument("--tokens-per-device", type=int, default=tokens.DEFAULT_BUDGET,
                        help="anonymous request tokens per device login, source and 6-hour epoch (default %d)"
                        % tokens.DEFAULT_BUDGET)
    parser.add_argument("--max-evaluations-per-hour", type=int, default=DEFAULT_MAX_EVALS_PER_HOUR,
                        help="global bound on OPRF evaluations per hour (default %d)" % DEFAULT_MAX_EVALS_PER_HOUR)
    parser.add_argument("--alarm-evaluations-per-minute", type=int, default=DEFAULT_ALARM_EVALS_PER_MINUTE,
                        help="raise the flood alarm above this many evaluations a minute (default %d)"
                        % DEFAULT_ALARM_EVALS_PER_MINUTE)
    parser.add_argument("--alarm-refusals-per-minute", type=int, default=DEFAULT_ALARM_REFUSALS_PER_MINUTE,
                        help="raise the flood alarm above this many refused requests a minute (default %d)"
                        % DEFAULT_ALARM_REFUSALS_PER_MINUTE)


def main(args) -> int:
    """Answer private confirmation requests until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    try:
        topics = topics_from_args(args)
        client = client_from_args(args, will=member_will(topics, SERVICE, args.client_id))
        service = ConfirmService(client, topics, args.lists, ttl_positive=args.ttl_positive,
                                 ttl_negative=args.ttl_negative, db=args.db, group=args.group or None,
                                 instance=args.client_id, lease=lease_of(args),
                                 token_budget=args.tokens_per_device,
                                 max_evals_per_hour=args.max_evaluations_per_hour,
                                 alarm_evals_per_minute=args.alarm_evaluations_per_minute,
                                 alarm_refusals_per_minute=args.alarm_refusals_per_minute)
        service.start()
        client.connect(timeout=30)
    except GatewatchError as exc:
        print("gatewatch-hub serve: %s" % exc, file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(5.0):
            service.stats.flush()
    finally:
        service.stats.flush()
        if hasattr(service.subscription, "stop"):
            service.subscription.stop()  # hand the partitions over at once
        client.stop()
    return 0
