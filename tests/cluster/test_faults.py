"""Faults on both deployments: a broker node dies, a hub instance dies, the broker's store restarts.

Real processes throughout: the report collectors and confirmation services are `gatewatch-hub`
processes given every node (`--broker` repeated) that split the partitions by leases and share one
report database; the report burst comes from tests/report_driver.py (the agent's ReportSpool and
Reporter); the devices that update are tools.fleet's simulated agents (the agent's Updater and
MqttClient with every node's URL). Each test runs on the 3-node aedes cluster over Redis and on one
mosquitto (the small deployment, where "a node dies" means the broker is killed and started again).

What must hold: every device ends on the new list version, every report is stored exactly once,
every private confirmation request (evaluation + fetch, each on a random partition) is answered
correctly or times out into the documented fail-open path, never answered wrongly (docs/cluster.md),
after a takeover every request is answered again, and a device whose token partition moved gets its
epoch's batch from the new owner (counted afresh there, once).
"""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import hashlib

from agent.confirm.client import Confirmer
from agent.confirm.exchange import token_partition
from agent.confirm.sealed import EXACT_BAND
from agent.lists.store import load_folder
from agent.matching.scanner import Hit, ScanResult, Scanner
from agent.mqtt import MqttClient, Topics
from tests import report_driver
from tests.listkit import Hub, device_confirmer, only, random_entries
from tests.paths import ROOT
from tests.waiting import stop_process, wait_for
from tools.confirm_service import request_partitions
from tools.fleet import Fleet
from tools.partitions import assign
from tools.publish import publish_lists

LEASE = ["--lease", "3", "--heartbeat", "0.5"]


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


class HubProcess:
    """A `gatewatch-hub` service process; its output lines are collected on a thread."""

    def __init__(self, argv, ready):
        self.lines = []
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.hub_cli"] + argv, cwd=str(ROOT), env=_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        wait_for(lambda: any(ready in line for line in self.lines) or self.proc.poll() is not None, 30)
        assert self.proc.poll() is None, self.lines[-20:]

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def holds(self, n):
        """True once the log says this instance takes exactly ``n`` partitions."""
        took = [line for line in self.lines if " takes partitions " in line]
        return bool(took) and len(took[-1].split(" takes partitions ")[1].split(" (")[0].split(",")) == n

    def stop(self):
        stop_process(self.proc, 20)
        self._t.join(5)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)


def collector(deployment, db, name):
    argv = ["reports", "collect", "--db", str(db), "--client-id", name,
            "--source", ",".join(report_driver.SOURCES)] + LEASE
    for u in deployment.urls:
        argv += ["--broker", u]
    return HubProcess(argv, "collecting reports")


def confirm_service(deployment, hub, tmp_path, name):
    """A `gatewatch-hub serve` instance on every node (answers not cached: each request goes to the hub)."""
    argv = ["serve", "--lists", hub.out, "--db", str(tmp_path / (name + ".db")), "--client-id", name,
            "--ttl-positive", "0", "--ttl-negative", "0"] + LEASE
    for u in deployment.urls:
        argv += ["--broker", u]
    return HubProcess(argv, "serving ")


def stored_ids(db):
    con = sqlite3.connect(str(db), timeout=30)
    try:
        rows = [r[0] for r in con.execute("SELECT id FROM reports")]
    except sqlite3.OperationalError:
        rows = []
    finally:
        con.close()
    assert len(rows) == len(set(rows))
    return set(rows)


def new_reports(proc):
    """The number of new reports a collector stored, from its final line (None if it had none)."""
    for line in proc.lines:
        m = re.match(r"stored (\d+) new reports", line)
        if m:
            return int(m.group(1))
    return None


def burst(deployment, tmp_path, total, rate, seed):
    return report_driver.DriverProcess(",".join(deployment.urls), tmp_path / ("spool-" + seed), 0, total, rate,
                                       extra=["--seed", seed, "--resend-after", "1", "--resend-max", "2"])


def assert_all_stored(db, seed, total, driver):
    assert driver.proc.wait(120) == 0, driver.lines[-20:]
    want = {report_driver.report_id(seed, i) for i in range(total)}
    wait_for(lambda: stored_ids(db) >= want, 60)
    assert stored_ids(db) == want  # every report once (the database keys rows by report id)


def two_versions(tmp_path, entries, added):
    """A hub with versions 1 and 2 of list hl1/sha (v2 = v1 + ``added`` entries: a delta apart)."""
    hub = Hub(tmp_path / "hub")
    return hub, hub.build(random_entries(entries, 1)), hub.build(random_entries(entries, 1) + random_entries(added, 2))


@pytest.mark.slow
def test_node_killed_during_an_update_and_a_report_burst(deployment, tmp_path):
    hub, v1, v2 = two_versions(tmp_path, 2000, 50)
    db = tmp_path / "reports.db"
    cols = [collector(deployment, db, "col-a"), collector(deployment, db, "col-b")]
    fleet = Fleet(deployment.urls, 12, hub.trust(), str(tmp_path / "fleet"), held=[v1], fetch_timeout=10).start()
    driver = None
    try:
        wait_for(lambda: cols[0].holds(9) or cols[0].holds(8), 20)
        driver = burst(deployment, tmp_path, 1000, 800, "node-kill")
        driver.wait_hits(300)
        with MqttClient(deployment.urls, "publisher", first=len(deployment.urls) - 1) as pub:
            t = threading.Thread(target=publish_lists, args=(pub, Topics(), only([v1, v2], tmp_path / "pub")),
                                 kwargs={"clear_stale": False}, daemon=True)
            t.start()
            if deployment.kind == "mosquitto":
                # one broker killed right after a publish loses what it had not saved yet (autosave
                # every second here, docs/cluster.md); let it save, then kill it mid-burst
                t.join(30)
                time.sleep(1.5)
            deployment.kill_node(0)
            t.join(60)
            assert not t.is_alive()
        times = fleet.wait_active("hl1/sha", 2, timeout=90)
        assert len(times) == 12
        assert_all_stored(db, "node-kill", 1000, driver)
    finally:
        fleet.stop()
        if driver is not None and driver.proc.poll() is None:
            driver.kill()
        for c in cols:
            c.stop()
    stored = [new_reports(c) for c in cols]
    assert None not in stored and sum(stored) == 1000, stored  # stored once across both instances


def _confirm_world(tmp_path):
    """A sealed 300-entry list and 200 scan results on it: every fifth a digest that is not listed
    (a Bloom filter false positive: the right answer opens nothing), the others listed entries."""
    hub = Hub(tmp_path / "hub")
    known = random_entries(300, 7)
    hub.build(known)
    lists = list(load_folder(hub.out, hub.trust()).lists.values())
    cases = []
    for i in range(200):
        digest, want = (hashlib.sha256(b"unlisted %d" % i).digest(), None) if i % 5 == 4 else (known[i].hash, known[i].id)
        cases.append((ScanResult("match", (Hit(lists[0], ((EXACT_BAND, digest),)),), digests={"sha256": digest}), want))
    return hub, lists, Scanner(lists), cases


class _Devices:
    """Device logins, each with its own connection and Confirmer (64 tokens an epoch each), asked in
    turn. The first login's token partition belongs to ``owner`` while both instances are up."""

    def __init__(self, deployment, lists, n, owner, timeout=2.0):
        t = Topics()
        theirs = assign(request_partitions(t), ["conf-a", "conf-b"])[owner]
        first = next(i for i in range(1000) if token_partition(t, "dev-%d" % i) in theirs)
        self.logins = ["dev-%d" % (first + i) for i in range(n)]
        self.clients = [MqttClient(deployment.urls, login).connect(15) for login in self.logins]
        self.confirmers = [device_confirmer(c, lists, login, timeout=timeout)
                           for c, login in zip(self.clients, self.logins)]
        self.turn = 0

    def ask(self, result):
        c = self.confirmers[self.turn % len(self.confirmers)]
        self.turn += 1
        return c.ask(result)

    def total(self, counter):
        return sum(getattr(c, counter) for c in self.confirmers)

    def stop(self):
        for c in self.confirmers:
            c.stop()
        for c in self.clients:
            c.stop()


def _check(scanner, cases, ask):
    """(answered, unanswered) over ``cases``; an answered request must be right: its entry confirmed,
    or nothing opened for an unlisted digest ("clean"). Unanswered is the fail-open path: the hit
    stays an unconfirmed candidate (policy blocks exact hits anyway, lets candidates pass), no report."""
    answered = unanswered = 0
    for r, want in cases:
        got = ask(r)
        c = scanner.confirm(r, got)
        if got == {}:
            assert c.verdict == "candidate"
            unanswered += 1
        elif want is None:
            assert c.verdict == "clean", c
            answered += 1
        else:
            assert c.verdict == "match" and c.best.confirmed and c.best.entry_id == want, c
            answered += 1
    return answered, unanswered


@pytest.mark.slow
def test_hub_instance_holding_partitions_killed(deployment, tmp_path):
    hub, lists, scanner, cases = _confirm_world(tmp_path)
    db = tmp_path / "reports.db"
    cols = [collector(deployment, db, "col-a"), collector(deployment, db, "col-b")]
    svcs = [confirm_service(deployment, hub, tmp_path, "conf-a"), confirm_service(deployment, hub, tmp_path, "conf-b")]
    driver = None
    devs = late = None
    try:
        wait_for(lambda: cols[0].holds(9) or cols[0].holds(8), 20)
        wait_for(lambda: svcs[0].holds(9) and svcs[1].holds(8), 20)
        # the grace of the first split: until it ends both instances take the partitions they handed
        # over, and a token request answered (and counted) by both would leave conf-b nothing to count
        time.sleep(2.5)
        devs = _Devices(deployment, lists, 4, owner="conf-a")  # 4 x 64 tokens for 200 requests
        # both instances up: every request answered, and answered right
        assert _check(scanner, cases[:40], devs.ask) == (40, 0)
        driver = burst(deployment, tmp_path, 1000, 800, "hub-kill")
        driver.wait_hits(300)
        cols[0].kill()  # SIGKILL: no clean hand-over, the will (or the lease) tells the other one
        svcs[0].kill()
        answered, unanswered = _check(scanner, cases[40:140], devs.ask)
        assert answered + unanswered == 100
        # every unanswered request timed out (no refusal, no answer that failed to verify)
        assert devs.total("timeouts") == unanswered
        assert devs.total("refused") == devs.total("bad_answers") == devs.total("no_tokens") == 0
        wait_for(lambda: svcs[1].holds(17), 20)
        time.sleep(2.5)  # the grace of the hand-over
        assert _check(scanner, cases[140:200], devs.ask) == (60, 0)  # after the takeover: all answered again
        # tokens after the takeover: the first login's token partition was conf-a's. A device that
        # lost its wallet asks again and gets this epoch's batch from conf-b, which counts it afresh
        # (the counts are per instance and in memory, docs/cluster.md); a third ask is over budget there
        late = [Confirmer(MqttClient(deployment.urls, devs.logins[0] + "-again-%d" % i).connect(15), Topics(),
                          devs.logins[0], timeout=2.0, lists=lambda: lists) for i in range(2)]
        src = lists[0].source
        late[0].start()  # its refill loop asks for the epoch's batch at once
        wait_for(lambda: late[0].wallet.count(src) == 64, 15)
        assert late[0].bad_answers == 0  # the proof verified against the signed token key
        late[1].start()
        wait_for(lambda: late[1].refused >= 1, 15)
        assert late[1].wallet.count(src) == 0
        assert_all_stored(db, "hub-kill", 1000, driver)
        assert cols[1].holds(17)
    finally:
        for c in late or ():
            c.stop()
            c.client.stop()
        if devs is not None:
            devs.stop()
        if driver is not None and driver.proc.poll() is None:
            driver.kill()
        for p in cols + svcs:
            p.stop()


@pytest.mark.slow
def test_store_restart_keeps_lists_and_loses_no_report(deployment, tmp_path):
    hub, v1, v2 = two_versions(tmp_path, 1000, 30)
    db = tmp_path / "reports.db"
    col = collector(deployment, db, "col-a")
    fleet = Fleet(deployment.urls, 6, hub.trust(), str(tmp_path / "fleet"), fetch_timeout=10).start()
    late = None
    driver = None
    try:
        with MqttClient(deployment.urls, "publisher") as pub:
            publish_lists(pub, Topics(), only([v1], tmp_path / "p1"), clear_stale=False)
        fleet.wait_active("hl1/sha", 1, timeout=60)
        driver = burst(deployment, tmp_path, 400, 400, "store-restart")
        driver.wait_hits(150)
        deployment.restart_store()
        # retained manifests and chunks survived: a device that joins now gets v1
        late = Fleet(deployment.urls, 1, hub.trust(), str(tmp_path / "late"), fetch_timeout=10).start(60)
        late.wait_active("hl1/sha", 1, timeout=60)
        with MqttClient(deployment.urls, "publisher-2") as pub:
            publish_lists(pub, Topics(), only([v1, v2], tmp_path / "p2"), clear_stale=False)
        fleet.wait_active("hl1/sha", 2, timeout=60)
        late.wait_active("hl1/sha", 2, timeout=60)
        assert {a.updater.status["hl1/sha"].via for a in fleet.agents} == {"delta"}
        assert_all_stored(db, "store-restart", 400, driver)
    finally:
        fleet.stop()
        if late is not None:
            late.stop()
        if driver is not None and driver.proc.poll() is None:
            driver.kill()
        col.stop()
    assert new_reports(col) == 400


def test_collector_refuses_bad_lease_flags(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.hub_cli", "reports", "collect", "--broker", "mqtt://127.0.0.1:1",
                        "--db", str(tmp_path / "x.db"), "--any-source", "--lease", "1", "--heartbeat", "2"],
                       cwd=str(ROOT), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 2 and "--heartbeat" in r.stdout and "shorter than --lease" in r.stdout



@pytest.mark.slow
def test_the_daemon_fails_over_to_another_node(aedes_cluster, tmp_path):
    """`gatewatch run` with every node in its config (broker.url + broker.urls): its node is killed,
    it reconnects to another one and still takes the next version there."""
    from tests.daemon.test_daemon import _start_agent, _status

    hub, v1, v2 = two_versions(tmp_path, 200, 10)
    state = tmp_path / "state"
    (state / "trust").mkdir(parents=True)
    (state / "trust" / "hl1.pub").write_text(open(hub.pub_path).read())
    urls = aedes_cluster.urls
    with MqttClient(urls, "publisher", first=2) as pub:
        publish_lists(pub, Topics(), only([v1], tmp_path / "p1"), clear_stale=False)
    proc = _start_agent(tmp_path, """
[agent]
state_dir = "%s"
client_id = "dev-c1"
status_interval = 0.5
hal = "emulated"
[broker]
url = "%s"
urls = ["%s", "%s"]
""" % (state, urls[0], urls[1], urls[2]))
    try:
        def on(version):
            st = _status(state)[1] or {}
            return st.get("broker", {}).get("connected") and st.get("lists", {}).get("hl1/sha", {}).get("version") == version and st
        st = wait_for(lambda: on(1), 60)
        node = urls.index(st["broker"]["url"])
        aedes_cluster.kill_node(node)
        with MqttClient([u for i, u in enumerate(urls) if i != node], "publisher-2") as pub:
            publish_lists(pub, Topics(), only([v1, v2], tmp_path / "p2"), clear_stale=False)
        st = wait_for(lambda: on(2), 60)
        assert st["broker"]["url"] != urls[node] and st["broker"]["connects"] >= 2
        assert st["lists"]["hl1/sha"]["via"] == "delta"
    finally:
        stop_process(proc, 20)
