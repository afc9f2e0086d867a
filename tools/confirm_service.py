"""Confirmation service: answers devices' short keys with the hub's full entries, over MQTT.

Owns the hub side of the exchange in agent/confirm/client.py. Several instances share the load: each
takes a share of the request partitions by lease (tools/partitions.py), or with ``--group`` through
the shared subscription ``$share/<group>/<p>/confirm/req/#``. The database keeps only counts per list
and hour (requests, keys, keys with entries): never a client id, never a key, so the hub's records
cannot say which device saw what. Must not touch: building or publishing lists, reports.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from typing import Dict, Optional

from agent.confirm.client import MAX_KEYS_PER_LIST, MAX_LISTS, PROTOCOL
from agent.core.errors import ConfigError, GatewatchError
from agent.confirm.wire import EntryIndex
from tools.broker_args import add_broker_arguments, client_from_args, topics_from_args
from tools.partitions import add_lease_arguments, lease_of, member_will, split_topics

HELP = "answer devices' confirmation requests with the hub's full entries"
DESCRIPTION = 'Runs until SIGTERM/SIGINT. The database keeps only counts per list and hour, never a device id or a key.'

log = logging.getLogger("gatewatch.serve")

DEFAULT_TTL_POSITIVE = 86400.0
DEFAULT_TTL_NEGATIVE = 3600.0


class ConfirmStats:
    """Counts per (hour, list) in SQLite, flushed in batches so a busy hub does not fsync per request."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self._lock = threading.Lock()
        self._pending: Dict[tuple, list] = {}
        if path:
            with self._connect() as db:
                db.execute("CREATE TABLE IF NOT EXISTS confirm_stats (hour INTEGER, list TEXT, requests "
                           "INTEGER, keys INTEGER, positive_keys INTEGER, PRIMARY KEY (hour, list))")

    def _connect(self):
        try:
            return sqlite3.connect(self.path, timeout=10)
        except sqlite3.Error as exc:
            raise ConfigError("cannot open database %s: %s" % (self.path, exc))

    def count(self, ident: str, keys: int, positive: int) -> None:
        hour = int(time.time() // 3600 * 3600)
        with self._lock:
            c = self._pending.setdefault((hour, ident), [0, 0, 0])
            c[0] += 1
            c[1] += keys
            c[2] += positive

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not self.path or not pending:
            return
        with self._connect() as db:
            for (hour, ident), (req, keys, pos) in pending.items():
                db.execute("INSERT INTO confirm_stats VALUES (?,?,?,?,?) ON CONFLICT(hour, list) DO UPDATE "
                           "SET requests=requests+excluded.requests, keys=keys+excluded.keys, "
                           "positive_keys=positive_keys+excluded.positive_keys", (hour, ident, req, keys, pos))

    def totals(self) -> Dict[str, list]:
        """{list: [requests, keys, positive_keys]} over all hours (flushes first)."""
        self.flush()
        if not self.path:
            return {}
        with self._connect() as db:
            rows = db.execute("SELECT list, SUM(requests), SUM(keys), SUM(positive_keys) FROM confirm_stats "
                              "GROUP BY list").fetchall()
        return {r[0]: [r[1], r[2], r[3]] for r in rows}


class ConfirmService:
    """Answers confirmation requests from the newest hub artifacts in a ``lists build`` folder."""

    def __init__(self, client, topics, lists_dir: str, *, ttl_positive: float = DEFAULT_TTL_POSITIVE,
                 ttl_negative: float = DEFAULT_TTL_NEGATIVE, db: Optional[str] = None, group: str = "hub",
                 reload_interval: float = 5.0, instance: Optional[str] = None, lease: Optional[dict] = None):
        if ttl_positive < 0 or ttl_negative < 0:
            raise ConfigError("cache durations must not be negative")
        self.client = client
        self.topics = topics
        self.lists_dir = lists_dir
        self.ttl_positive = ttl_positive
        self.ttl_negative = ttl_negative
        self.group = group
        self.instance = instance  # with it: a lease on a share of the request partitions (below)
        self.lease = lease
        self.stats = ConfirmStats(db)
        self.reload_interval = reload_interval
        self.entries: Dict[str, EntryIndex] = {}
        self._stamp = None
        self._checked = 0.0
        self.answered = 0
        self.rejected = 0
        self.reload(force=True)

    def _dir_stamp(self):
        hub = os.path.join(self.lists_dir, "hub")
        try:
            return tuple(sorted((n, os.stat(os.path.join(hub, n)).st_mtime_ns) for n in os.listdir(hub)))
        except OSError:
            return None

    def reload(self, force: bool = False) -> None:
        """Re-read the hub artifacts when the folder changed (a new version was built)."""
        stamp = self._dir_stamp()
        if not force and stamp == self._stamp:
            return
        self.entries = EntryIndex.load_dir(self.lists_dir)
        self._stamp = stamp
        log.info("serving %s", ", ".join("%s v%d" % (k, v.version) for k, v in sorted(self.entries.items())))

    def start(self) -> "ConfirmService":
        """Subscribe to the requests this instance takes (``subscribe_requests``, below)."""
        # something to .wait(timeout) on when started on a connected client (else: subscribed on connect)
        self.subscription = subscribe_requests(self.client, self.topics, self._on_request, group=self.group,
                                               instance=self.instance, lease=self.lease)
        return self

    def _newer_asked(self, payload: bytes) -> bool:
        try:
            lists = json.loads(payload).get("lists", {})
            return any(isinstance(a, dict) and isinstance(a.get("version"), int)
                       and (k not in self.entries or a["version"] > self.entries[k].version)
                       for k, a in lists.items())
        except (ValueError, AttributeError):
            return False

    def _on_request(self, msg) -> None:
        now = time.monotonic()
        if now - self._checked > self.reload_interval or self._newer_asked(msg.payload):
            self._checked = now
            try:
                self.reload()
            except GatewatchError as exc:
                log.warning("keeping the loaded entries: %s", exc)
        answer = self.answer(msg.payload)
        if answer is None:
            self.rejected += 1
            return
        topic, body = answer
        self.client.publish(topic, body, qos=1)
        self.answered += 1

    def answer(self, payload: bytes):
        """(topic, payload) answering one request, or None for a malformed one (dropped, counted)."""
        try:
            req = json.loads(payload)
            if not isinstance(req, dict) or req.get("v") != PROTOCOL:
                return None
            topic = self.topics.confirm_resp(req["client"], req["id"])
            lists = req["lists"]
            if not isinstance(lists, dict) or len(lists) > MAX_LISTS:
                return None
        except (ValueError, KeyError, TypeError, GatewatchError):
            return None
        out = {}
        for ident, asked in lists.items():
            hub = self.entries.get(ident)
            if hub is None or not isinstance(asked, dict) or not isinstance(asked.get("keys"), list):
                continue
            keys = [k for k in asked["keys"][:MAX_KEYS_PER_LIST] if isinstance(k, str)]
            found = {k: [e.to_json() for e in hub.lookup(k)] for k in keys}
            self.stats.count(ident, len(keys), sum(1 for v in found.values() if v))
            out[ident] = {"version": hub.version, "entries": found}
        body = {"v": PROTOCOL, "id": req["id"], "ttl_positive": self.ttl_positive,
                "ttl_negative": self.ttl_negative, "lists": out}
        return topic, json.dumps(body, separators=(",", ":")).encode()


# --- which request topics an instance takes: the partition layer's business (tools/partitions.py).
# How a request is answered is not touched here. Devices spread requests over confirm/req/<partition>
# (agents from before partitions: confirm/req, the "legacy" partition).
SERVICE = "confirm"


def request_partitions(topics) -> list:
    """The service's partitions: one per request partition, and ``"legacy"``."""
    return list(range(topics.partitions)) + ["legacy"]


def request_filters(topics, partition) -> list:
    """The topic filters of one partition."""
    return [topics.confirm_req(None if partition == "legacy" else partition)]


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
    topic = topics.confirm_req_shared(group) if group else topics.confirm_req_filter()
    return client.subscribe(topic, handler, qos=1)


def add_arguments(parser) -> None:
    add_broker_arguments(parser, "gatewatch-hub-serve-%d" % os.getpid())
    parser.add_argument("--lists", required=True, help="a `lists build` output folder (its hub/ entries)")
    parser.add_argument("--db", required=True, help="SQLite file for per-list, per-hour counts")
    parser.add_argument("--group", default="", help="split requests between instances through this shared "
                        "subscription group; default: none: instances split the request partitions by leases "
                        "(docs/cluster.md)")
    add_lease_arguments(parser)
    parser.add_argument("--ttl-positive", type=float, default=DEFAULT_TTL_POSITIVE,
                        help="seconds a device may cache a positive answer (default 86400)")
    parser.add_argument("--ttl-negative", type=float, default=DEFAULT_TTL_NEGATIVE,
                        help="seconds a device may cache a negative answer (default 3600)")


def main(args) -> int:
    """Answer confirmation requests (the full entries behind a short key) until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    try:
        topics = topics_from_args(args)
        client = client_from_args(args, will=member_will(topics, SERVICE, args.client_id))
        service = ConfirmService(client, topics, args.lists, ttl_positive=args.ttl_positive,
                                 ttl_negative=args.ttl_negative, db=args.db, group=args.group,
                                 instance=args.client_id, lease=lease_of(args))
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
