"""Collect anonymised reports from the broker into SQLite (exactly once per id) and export them per source.

Owns the hub's report store: ``gatewatch-hub reports collect`` subscribes to the reports of every
source (several collectors split them by report partition and lease, tools/partitions.py, or
through a shared subscription with ``--group``), validates each report
against the schema and stores it once by report id; ``gatewatch-hub reports export`` writes one
source's reports as CSV or JSON so that each hotline receives its own. Must not touch lists,
confirmations or anything the devices hold.

Never lost on the hub side: the collector keeps a persistent MQTT session (clean_session off, fixed
client id), so the broker queues reports while it is away, and paho sends the PUBACK only after the
message handler returned, i.e. after the SQLite commit. A report whose commit fails is not
acknowledged (the connection is dropped) and the broker delivers it again.

One collector by default subscribes plainly: mosquitto 2.0.11 (Debian 12) does not restore a
persistent session's shared subscription after a broker restart, so reports published before a
shared-group collector reconnects match no subscriber and are dropped (tests/reports/test_no_loss.py pins
it). Use a shared group only on brokers that keep shared subscriptions across restarts.

Scaling and retiring: collectors in one group (``--group``) split the reports; each needs its own
stable ``--client-id``. mosquitto keeps handing an offline member of the group its share, queued in
its persistent session until it returns, so a collector that is taken out of service for good must
first be drained: run it once more with the same client id until it is idle, then stop it (a queue
left behind expires with the broker's persistent_client_expiration, and its reports with it).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time

from agent.core.report import MAX_REPORT_BYTES, ReportError, decode_report
from agent.core.errors import ConfigError
from tools.broker_args import add_broker_arguments, client_from_args, topics_from_args
from tools.partitions import add_lease_arguments, lease_of, member_will, split_topics

log = logging.getLogger(__name__)

HELP = "collect devices' reports into SQLite (stored once, acknowledged to the device) and export them per source"
DESCRIPTION = """\
collect: subscribes to every report topic, refuses (and counts) retained, oversized, invalid reports
and reports for sources this hub does not serve (--source, --lists), stores each report once by id
and acknowledges it to the device that sent it (docs/reports.md). --duration bounds the whole run,
including the wait for the broker.
export: one source's reports as CSV or JSON; a source without reports exits 2 and lists the known ones.

  gatewatch-hub reports collect --broker mqtts://broker:8883 --db reports.db --lists lists/
  gatewatch-hub reports export --db reports.db --source hotline --format csv --out hotline.csv
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    list        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    signal      TEXT NOT NULL,
    distance    INTEGER NOT NULL,
    entry       TEXT NOT NULL,
    hosting     TEXT NOT NULL,
    time        TEXT NOT NULL,
    device      TEXT,
    region      TEXT,
    agent       TEXT NOT NULL,
    schema      INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_source_time ON reports (source, time);
"""
CSV_COLUMNS = ("id", "time", "source", "list", "version", "signal", "distance", "entry",
               "hosting_url", "hosting_host", "hosting_ip", "hosting_country", "device", "region",
               "agent", "schema", "received_at")


class ReportStore:
    """SQLite store of reports keyed by report id: storing an id twice keeps the first copy."""

    def __init__(self, path):
        self.path = str(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ConfigError("report database folder %s does not exist" % folder)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the PUBACK
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError("%s is not a usable report database: %s" % (self.path, exc)) from None
        self._lock = threading.Lock()

    def add(self, report, received_at=None):
        """Store a validated report dict; True if new, False if its id was already stored."""
        row = (report["id"], report["source"], report["list"], report["version"], report["signal"],
               report["distance"], report["entry"],
               json.dumps(report["hosting"], sort_keys=True, separators=(",", ":")), report["time"],
               report["device"], report["region"], report["agent"], report["schema"],
               received_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO reports VALUES (%s)" % ",".join("?" * 14), row)
            return cur.rowcount == 1

    def count(self, source=None):
        """Number of stored reports (of one source)."""
        with self._lock:
            if source is None:
                return self._db.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM reports WHERE source=?", (source,)).fetchone()[0]

    def sources(self):
        """The sources that have reports in the store."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT source FROM reports")}

    def ids(self):
        """All stored report ids."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM reports")}

    def reports(self, source):
        """The reports of one source as dicts in the schema's form, oldest hour first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, list, version, signal, distance, entry, hosting, time, device, "
                "region, agent, schema, received_at FROM reports WHERE source=? ORDER BY time, id",
                (source,)).fetchall()
        out = []
        for r in rows:
            out.append({"id": r[0], "source": r[1], "list": r[2], "version": r[3], "signal": r[4],
                        "distance": r[5], "entry": r[6], "hosting": json.loads(r[7]), "time": r[8],
                        "device": r[9], "region": r[10], "agent": r[11], "schema": r[12],
                        "received_at": r[13]})
        return out

    def close(self):
        """Close the database."""
        with self._lock:
            self._db.close()


def export(store, source, fmt):
    """One source's reports as CSV or JSON text."""
    reports = store.reports(source)
    if fmt == "json":
        return json.dumps(reports, indent=1, sort_keys=True) + "\n"
    if fmt != "csv":
        raise ConfigError("export format %r unknown; use csv or json" % (fmt,))
    from agent.csvsafe import csv_text

    def row(r):
        h = r["hosting"]
        flat = dict(r, hosting_url=h.get("url"), hosting_host=h.get("host"), hosting_ip=h.get("ip"),
                    hosting_country=h.get("country"))
        return [flat[c] for c in CSV_COLUMNS]
    return csv_text(CSV_COLUMNS, (row(r) for r in reports))


REFUSALS = ("retained", "size", "topic", "source", "schema")


def served_sources(sources=(), lists_dir=None):
    """The sources this hub serves: ``--source`` names plus the sources of the lists in ``lists_dir``.

    List files are named ``<source>+<list>.v<N>.gwl`` (tools/build.py); an empty result means the
    operator named none, which the command line refuses.
    """
    out = set()
    for s in sources or ():
        out.update(x.strip() for x in s.split(",") if x.strip())
    if lists_dir:
        if not os.path.isdir(lists_dir):
            raise ConfigError("lists folder %s does not exist" % lists_dir)
        for root, _dirs, files in os.walk(lists_dir):
            for name in files:
                if name.endswith(".gwl") and "+" in name:
                    out.add(name.split("+", 1)[0])
    return frozenset(out)


class Collector:
    """Subscribes to all report topics, stores each valid report once and acknowledges it.

    ``group``: the shared-subscription group that several collectors split the reports in; None
    (or "") subscribes plainly, for brokers without shared subscriptions (the demo's amqtt).
    ``sources``: the sources this hub serves; a report for any other is refused (None: any).

    Refused, counted per reason (``refusals``) and logged without any of their content: retained
    messages, payloads over MAX_REPORT_BYTES, topics that are not ``reports/<source>[/<token>]``,
    sources the hub does not serve, and anything that fails the schema's strict validation. A refused
    report is acknowledged to the broker (it never becomes valid) but never to the device.
    A stored report (new or duplicate) is acknowledged to the device on ``ack/<token>`` once committed.
    """

    def __init__(self, client, store, topics, group="hub", sources=None, log_every=1000, after_commit=None,
                 instance=None, lease=None):
        self.client = client
        self.store = store
        self.topics = topics
        self.group = group
        # with ``instance``: this collector takes its share of the report partitions (leases, or
        # $share over the partitions with ``group``; tools/partitions.py). ``lease``: its timings.
        self.instance = instance
        self.lease = dict(lease or {})
        self.split = None
        self.sources = frozenset(sources) if sources else None
        self.stored = 0
        self.duplicates = 0
        self.rejected = 0
        self.acked = 0
        self.refusals = dict.fromkeys(REFUSALS, 0)
        self.log_every = log_every
        self.after_commit = after_commit  # fault injection for tests: runs between commit and ack
        self.subscribed = None  # SubscribeAck: wait(timeout) until the broker confirmed

    def start(self):
        """Subscribe; messages are handled on the client's network thread."""
        if self.instance is not None:
            self.split = split_topics(self.client, self.topics, SERVICE, report_partitions(self.topics),
                                      lambda p: report_filters(self.topics, p), self._on_message,
                                      instance=self.instance, group=self.group or None, **self.lease).start()
            self.subscribed = self.split  # .wait(timeout), as a SubscribeAck
            return self
        topic = self.topics.reports_shared(self.group) if self.group else self.topics.reports_filter()
        self.subscribed = self.client.subscribe(topic, self._on_message, qos=1)
        return self

    def stop(self):
        """Hand this collector's partitions to the others at once (leases), before disconnecting."""
        if self.split is not None:
            self.split.stop()

    def _refuse(self, reason, message=None):
        self.rejected += 1
        self.refusals[reason] += 1
        n = self.refusals[reason]
        if n <= 10 or n % self.log_every == 0:
            # no payload, no topic (its token), no source name that the hub does not serve
            log.warning("refused a report: %s (%d refused for this reason so far)", reason, n)
        if message is not None and message.payload:
            # clear any retained copy from the broker: a device must not park junk there. A retained
            # publish reaches subscribers that are already there without its retain flag (MQTT
            # 3.1.1), so every refused message is cleared, not only those flagged retained.
            try:
                self.client.publish(message.topic, b"", qos=1, retain=True)
            except Exception:
                pass

    def _on_message(self, message):
        if message.retain:
            return self._refuse("retained", message)
        if not message.payload:
            return None  # the empty retained message that clears one: nothing to count
        parsed = self.topics.parse_report_topic(message.topic)
        if parsed is None:
            return self._refuse("topic", message)
        source, token = parsed
        if token is not None and (len(token) != 16 or any(c not in "0123456789abcdef" for c in token)):
            return self._refuse("topic", message)
        if self.sources is not None and source not in self.sources:
            return self._refuse("source", message)
        if len(message.payload) > MAX_REPORT_BYTES:
            return self._refuse("size", message)
        try:
            report = decode_report(message.payload)
        except ReportError:
            return self._refuse("schema", message)
        if report["source"] != source:
            return self._refuse("topic", message)
        # an exception from here on propagates: no PUBACK, the broker delivers the report again
        if self.store.add(report):
            self.stored += 1
        else:
            self.duplicates += 1
        if self.after_commit is not None:
            self.after_commit(self)
        if token is not None:
            # after the commit; lost (SIGKILL now) only means the device sends it again: stored
            # once, acknowledged again
            self.client.publish(self.topics.ack(token), _ack_payload([report["id"]]), qos=1)
            self.acked += 1
        return None

    def stats(self):
        """Counters (no report content)."""
        return {"stored": self.stored, "duplicates": self.duplicates, "rejected": self.rejected,
                "acked": self.acked, "refusals": dict(self.refusals)}


SERVICE = "collect"


def report_partitions(topics):
    """The collector's partitions: one per report partition, and ``"legacy"`` for the reports of
    agents from before partitions (``reports/<source>``, ``reports/<source>/<token>``)."""
    return list(range(topics.partitions)) + ["legacy"]


def report_filters(topics, partition):
    """The topic filters of one of the collector's partitions."""
    if partition == "legacy":
        return topics.reports_unpartitioned_filters()
    return [topics.reports_partition_filter(partition)]


def _ack_payload(ids):
    return json.dumps({"ids": list(ids)}, separators=(",", ":")).encode("ascii")


# command line ---------------------------------------------------------------------------------
def add_arguments(parser):
    """`reports collect ...` and `reports export ...`."""
    sub = parser.add_subparsers(dest="reports_cmd", metavar="{collect,export}")
    sub.required = True
    c = sub.add_parser("collect", help="store reports from the broker in SQLite (runs until stopped)")
    add_broker_arguments(c, "gatewatch-collector-%s" % socket.gethostname())
    c.add_argument("--db", required=True, help="SQLite file (created if missing)")
    c.add_argument("--group", default="", help="shared-subscription group to split reports between collectors; "
                        "default: none: collectors split the report partitions by leases (docs/cluster.md; "
                        "mosquitto 2.0.11 forgets shared subscriptions when it restarts, which would drop "
                        "reports, and aedes has none)")
    add_lease_arguments(c)
    c.add_argument("--source", action="append", default=[],
                   help="a source (hotline) this hub serves; repeat or comma-separate. Reports for "
                        "other sources are refused (counted)")
    c.add_argument("--lists", help="serve the sources of the list files (*.gwl) in this folder")
    c.add_argument("--any-source", action="store_true",
                   help="accept reports for every source (tests, single-hotline demos)")
    c.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    c.add_argument("--connect-timeout", type=float, default=30.0,
                   help="give up if the broker cannot be reached within this many seconds (default: "
                        "%(default)s; never more than --duration)")
    e = sub.add_parser("export", help="write one source's reports as CSV or JSON")
    e.add_argument("--db", required=True, help="SQLite file written by `reports collect`")
    e.add_argument("--source", required=True, help="the source (hotline) whose reports to export")
    e.add_argument("--format", choices=("csv", "json"), default="csv", help="default: %(default)s")
    e.add_argument("--out", default="-", help="output file (default: standard output)")


def main(args):
    """Run `reports collect` or `reports export`; returns the exit code."""
    try:
        if args.reports_cmd == "export":
            return _export(args)
        return _collect(args)
    except ConfigError as exc:
        print("gatewatch-hub reports: %s" % exc, file=sys.stderr)
        return 2


def _export(args):
    if not os.path.exists(args.db):
        raise ConfigError("report database %s does not exist" % args.db)
    store = ReportStore(args.db)
    try:
        known = store.sources()
        if args.source not in known:
            raise ConfigError("no reports for source %r in %s; sources with reports: %s"
                              % (args.source, args.db, ", ".join(sorted(known)) or "none"))
        text = export(store, args.source, args.format)
    finally:
        store.close()
    write_output(text, args.out)
    return 0


def write_output(text, out):
    """An export's text to standard output (``-``) or to the file ``out``."""
    if out == "-":
        sys.stdout.write(text)
    else:
        with open(out, "w", newline="", encoding="utf-8") as f:
            f.write(text)


def _fault_hook():
    """GATEWATCH_COLLECTOR_KILL_AFTER=N (fault runs only): SIGKILL this process right after the Nth
    commit, before the device's ack and the broker's PUBACK: the window where a crash must not lose
    or duplicate a report."""
    n = os.environ.get("GATEWATCH_COLLECTOR_KILL_AFTER")
    if not n:
        return None
    limit = int(n)

    def hook(col):
        if col.stored + col.duplicates >= limit:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def _collect(args):
    from agent.mqtt import MqttError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sources = served_sources(args.source, args.lists)
    if not sources and not args.any_source:
        raise ConfigError("name the sources this hub serves (--source NAME, --lists DIR) or pass "
                          "--any-source; reports for other sources are refused")
    started = time.monotonic()
    store = ReportStore(args.db)
    # keep --client-id stable: the broker keeps the session (and queues reports) under it; it also
    # names this instance's lease on its share of the report partitions
    topics = topics_from_args(args)
    client = client_from_args(args, clean_session=False, reconnect=(1, 5),
                              will=member_will(topics, SERVICE, args.client_id))
    collector = Collector(client, store, topics, group=args.group, sources=sources or None,
                          after_commit=_fault_hook(), instance=args.client_id, lease=lease_of(args)).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    timeout = args.connect_timeout
    if args.duration is not None:
        timeout = min(timeout, max(0.5, args.duration))
    try:
        client.connect(timeout=timeout)
    except MqttError as exc:
        print("gatewatch-hub reports collect: gave up: %s; nothing was collected" % exc, file=sys.stderr)
        client.stop()
        store.close()
        return 1
    # say "collecting" once the broker has the subscriptions (with leases: this instance's partitions,
    # which takes a lease round); reports sent before that are resent by the devices, never lost
    if not collector.subscribed.wait(timeout):
        log.warning("the broker has not confirmed the report subscriptions yet; collecting anyway")
    print("collecting reports from %s into %s (%s)" % (
        client.url, args.db, "sources: " + ", ".join(sorted(sources)) if sources else "any source"), flush=True)
    if args.duration is not None:
        done.wait(max(0.0, args.duration - (time.monotonic() - started)))
    else:
        done.wait()
    collector.stop()
    client.stop()
    store.close()
    st = collector.stats()
    print("stored %d new reports (%d duplicates, %d rejected: %s; %d acknowledged to devices)"
          % (st["stored"], st["duplicates"], st["rejected"],
             ", ".join("%s %d" % kv for kv in sorted(st["refusals"].items()) if kv[1]) or "none",
             st["acked"]), flush=True)
    return 0


if __name__ == "__main__":  # python -m tools.collector collect|export ...
    p = argparse.ArgumentParser(prog="gatewatch-hub reports", description=__doc__.splitlines()[0])
    add_arguments(p)
    sys.exit(main(p.parse_args()))
