"""How several instances of one hub service split its topics: partitions with leases, or `$share`.

Owns: which of a service's partitioned topic filters this instance subscribes to, and when that
changes. Used by the report collector and the confirmation service alike; each says only what its
partitions are (names) and which topic filters belong to each, and gets its messages in its one
handler. Must not touch: what a service does with a message, or what devices send.

Why not `$share` alone: mosquitto 2.0.11 forgets shared subscriptions when it restarts, and the
clustered brokers that install here (aedes over Redis) have none; EMQX, VerneMQ and HiveMQ have
them. So by default instances split the work themselves, over nothing but the broker:

- Devices spread their messages over ``Topics.partitions`` partitions (a random value per message:
  fresh random bytes, the random report id), e.g. ``<p>/confirm/eval/7``, ``<p>/reports/s/t/7``;
  token batches go to the partition of the login (``<p>/tokens/req/<login>/<its partition>``).
- Every instance holds a **lease**: it publishes a retained record on
  ``<p>/hub/<service>/members/<instance>`` every ``heartbeat`` seconds, and its will (sent by the
  broker when its connection dies) clears that record. Every instance reads every record.
- Members are the instances heard from within ``lease`` seconds (an empty record: gone at once).
  Partition ``i`` belongs to ``sorted(members)[i % len(members)]``: every instance computes the
  same answer from the same records, without any election or lock.
- An instance subscribes at once to a partition it gains, and unsubscribes from one it loses only
  ``grace`` seconds later, so a handover overlaps rather than leaving a gap. Both services are
  idempotent (a report is stored once by id, a confirmation answered twice is harmless), so the
  overlap costs only duplicate work.
- An instance that dies: its will clears its record at once (the broker notices the closed
  socket), or, if the broker never sends the will (a lost node), its lease runs out after
  ``lease`` seconds; the others then take its partitions. A message published to a partition in
  that window reaches nobody new: a report is resent by its device (no hub ack), a confirmation
  request times out on the device into its documented fail-open path.

With ``group`` the instances instead subscribe to every partition through ``$share/<group>/...``
and the broker splits the load (no leases). Only for brokers that keep shared subscriptions
reliably (docs/cluster.md).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional

from agent.core.errors import ConfigError

log = logging.getLogger("gatewatch.partitions")

#: One retained lease record is small; anything bigger on a member topic is junk.
MAX_RECORD_BYTES = 1024
SCHEMA = 1


def member_will(topics, service: str, instance: str):
    """The will an instance's MqttClient must carry (``will=`` at construction): clears its lease
    record the moment the broker loses the connection."""
    return (topics.hub_member(service, instance), b"", 1, True)


def assign(partitions: List, members: Iterable[str]) -> Dict[str, list]:
    """{member: its partitions}: partition ``i`` goes to ``sorted(members)[i % n]`` (balanced)."""
    ordered = sorted(set(members))
    out: Dict[str, list] = {m: [] for m in ordered}
    if ordered:
        for i, p in enumerate(partitions):
            out[ordered[i % len(ordered)]].append(p)
    return out


class TopicSplit:
    """Common part of the two ways to split: a handler and the filters of each partition.

    ``filters_of(partition) -> [topic filter, ...]``; ``handler(Message)`` runs on the client's
    network thread (for QoS 1 its return sends the PUBACK, as with a plain subscription).
    """

    def __init__(self, client, partitions: List, filters_of: Callable, handler: Callable, qos: int = 1):
        self.client = client
        self.partitions = list(partitions)
        self.filters_of = filters_of
        self.handler = handler
        self.qos = qos
        self._subscribed: Dict[str, object] = {}  # topic filter -> SubscribeAck

    def _subscribe(self, partition) -> list:
        acks = []
        for f in self.filters_of(partition):
            acks.append(self.client.subscribe(f, self.handler, qos=self.qos))
            self._subscribed[f] = acks[-1]
        return acks

    def _unsubscribe(self, partition) -> None:
        for f in self.filters_of(partition):
            if self._subscribed.pop(f, None) is not None:
                self.client.unsubscribe(f)

    def subscriptions(self) -> List[str]:
        """The topic filters subscribed now."""
        return sorted(self._subscribed)

    def wait(self, timeout: float) -> bool:
        """True once the broker granted every subscription made so far (within ``timeout``)."""
        deadline = time.monotonic() + timeout
        return all(a.wait(max(0.0, deadline - time.monotonic())) for a in list(self._subscribed.values()))


class SharedSplit(TopicSplit):
    """Every partition through ``$share/<group>/<filter>``: the broker splits the load."""

    def __init__(self, client, partitions, filters_of, handler, group: str, qos: int = 1):
        super().__init__(client, partitions, lambda p: ["$share/%s/%s" % (group, f) for f in filters_of(p)],
                         handler, qos)
        self.group = group

    def start(self) -> "SharedSplit":
        """Subscribe to every partition (shared)."""
        for p in self.partitions:
            self._subscribe(p)
        return self

    def owned(self) -> list:
        return list(self.partitions)

    def stop(self) -> None:
        """Nothing to hand over: the broker gives the others the whole load."""


class PartitionLease(TopicSplit):
    """Partitions split between the live instances of ``service`` by leases on retained records.

    Build the instance's MqttClient with ``will=member_will(topics, service, instance)``; then
    ``start()`` (before or after the client connects). ``owned()`` says which partitions it takes
    now, ``members()`` which instances it sees. ``clock`` is injected so tests control time.
    """

    def __init__(self, client, topics, service: str, instance: str, partitions, filters_of, handler, *,
                 heartbeat: float = 1.0, lease: float = 5.0, grace: float = 2.0, qos: int = 1,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(client, partitions, filters_of, handler, qos)
        if not 0 < heartbeat < lease:
            raise ConfigError("the heartbeat (%r s) must be shorter than the lease (%r s)" % (heartbeat, lease))
        self.topics = topics
        self.service = service
        self.instance = instance
        self.heartbeat = heartbeat
        self.lease = lease
        self.grace = grace
        self.clock = clock
        self._topic = topics.hub_member(service, instance)
        self._lock = threading.RLock()
        self._heard: Dict[str, float] = {}      # instance -> when its record last arrived (our clock)
        self._owned: List = []                  # partitions subscribed (ours, and lost ones in their grace)
        self._mine: Optional[List] = None       # ours in the last assignment
        self._leaving: Dict[object, float] = {}  # partition -> when to unsubscribe (lost, in grace)
        self._seq = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.changes = 0                         # how often the assignment changed (status, tests)

    # records --------------------------------------------------------------------------------
    def _record(self) -> bytes:
        self._seq += 1
        return json.dumps({"schema": SCHEMA, "service": self.service, "instance": self.instance,
                           "seq": self._seq, "lease": self.lease, "partitions": len(self.partitions)},
                          separators=(",", ":"), sort_keys=True).encode()

    def _on_record(self, msg) -> None:
        name = msg.topic.rsplit("/", 1)[-1]
        if not msg.payload:
            with self._lock:
                gone = self._heard.pop(name, None) is not None
            if name == self.instance and not self._stop.is_set():
                # our own record cleared (a will the broker sent for an old connection of ours):
                # we are alive, say so at once
                self._publish_record()
            elif gone:
                log.info("%s instance %s left; taking over its partitions", self.service, name)
                self._rebalance()
            return
        if len(msg.payload) > MAX_RECORD_BYTES:
            return
        try:
            rec = json.loads(msg.payload)
            ok = isinstance(rec, dict) and rec.get("instance") == name and rec.get("schema") == SCHEMA
        except ValueError:
            ok = False
        if not ok:
            log.warning("ignoring a malformed %s lease record", self.service)
            return
        if rec.get("partitions") != len(self.partitions):
            log.error("%s instance %s splits %r partitions, this one %d: run every instance with the same "
                      "version", self.service, name, rec.get("partitions"), len(self.partitions))
        with self._lock:
            new = name not in self._heard
            self._heard[name] = self.clock()
        if new:
            log.info("%s instance %s joined", self.service, name)
            self._rebalance()

    def _publish_record(self) -> None:
        try:
            self.client.publish(self._topic, self._record(), qos=1, retain=True)
        except Exception:  # the next heartbeat tries again
            log.exception("could not renew the %s lease", self.service)

    # assignment -----------------------------------------------------------------------------
    def members(self) -> List[str]:
        """Instances seen within the lease, this one always included."""
        now = self.clock()
        with self._lock:
            alive = {m for m, t in self._heard.items() if now - t <= self.lease}
        alive.add(self.instance)
        return sorted(alive)

    def owned(self) -> list:
        """The partitions this instance takes now (in its current view)."""
        with self._lock:
            return list(self._owned)

    def _rebalance(self) -> None:
        now = self.clock()
        with self._lock:
            expired = [m for m, t in self._heard.items() if now - t > self.lease and m != self.instance]
            for m in expired:
                del self._heard[m]
                log.info("%s instance %s: lease ran out; taking over its partitions", self.service, m)
                # its record would otherwise greet every newcomer as a live member
                self.client.publish(self.topics.hub_member(self.service, m), b"", qos=1, retain=True)
            mine = assign(self.partitions, self.members()).get(self.instance, [])
            for p in mine:
                self._leaving.pop(p, None)  # lost a moment ago and back: it never left
            gained = [p for p in mine if p not in self._owned]
            lost = [p for p in self._owned if p not in mine and p not in self._leaving]
            for p in gained:
                self._subscribe(p)
            for p in lost:
                self._leaving[p] = now + self.grace
            self._owned = [p for p in self.partitions if p in mine or p in self._leaving]
            due = [p for p, t in self._leaving.items() if t <= now]
            for p in due:
                del self._leaving[p]
                self._owned.remove(p)
                self._unsubscribe(p)
            if mine != self._mine:  # (a partition back from its grace is no gain, but a change)
                self._mine = mine
                self.changes += 1
                log.info("%s %s takes partitions %s (members: %s)", self.service, self.instance,
                         ",".join(str(p) for p in mine) or "none", ", ".join(self.members()))

    # life cycle -----------------------------------------------------------------------------
    def start(self) -> "PartitionLease":
        """Take every partition until others are heard (a lone instance must not wait), follow the
        other instances' records, and renew this instance's lease every ``heartbeat`` seconds."""
        self._rebalance()
        self.client.subscribe(self.topics.hub_members_filter(self.service), self._on_record, qos=1)
        self._publish_record()
        self._thread = threading.Thread(target=self._run, name="gatewatch-lease-%s" % self.service, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat):
            if self.client.connected:
                self._publish_record()
            try:
                self._rebalance()
            except Exception:  # keep renewing; a failed subscribe is retried on reconnect
                log.exception("%s partition rebalance failed", self.service)

    def wait_partitions(self, count: int, timeout: float) -> bool:
        """True once this instance takes exactly ``count`` partitions (after a handover's grace)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._owned) == count and not self._leaving:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Hand the partitions over at once: clear this instance's record before disconnecting."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self.client.connected:
            self.client.publish(self._topic, b"", qos=1, retain=True).wait(2.0)


def add_lease_arguments(parser) -> None:
    """``--lease``/``--heartbeat`` for a service whose instances split partitions by leases."""
    parser.add_argument("--lease", type=float, default=5.0,
                        help="seconds after which a silent instance's partitions are taken over (default %(default)s)")
    parser.add_argument("--heartbeat", type=float, default=1.0,
                        help="seconds between renewals of this instance's lease (default %(default)s)")


def lease_of(args) -> dict:
    """The lease timings from ``add_lease_arguments``' flags (ConfigError if they do not fit)."""
    if not 0 < args.heartbeat < args.lease:
        raise ConfigError("--heartbeat (%s s) must be above 0 and shorter than --lease (%s s)" % (args.heartbeat, args.lease))
    return {"lease": args.lease, "heartbeat": args.heartbeat, "grace": min(2.0, args.lease)}


def split_topics(client, topics, service: str, partitions, filters_of, handler, *, instance: str,
                 group: Optional[str] = None, **lease) -> TopicSplit:
    """The way to split that the operator chose: ``$share/<group>`` if ``group``, else leases."""
    if group:
        return SharedSplit(client, partitions, filters_of, handler, group)
    return PartitionLease(client, topics, service, instance, partitions, filters_of, handler, **lease)
