"""The report fault run: real agent processes, real collector processes, a real mosquitto, faults.

    run_faults(folder, total) -> dict of figures

Sequence (reports keep coming throughout, at ``rate`` per second, from tests/report_driver.py):
collector 1 up; collector SIGTERMed (down) while hits continue; broker SIGKILLed (no persistence
save: whatever it held for the collector is gone) and started again; collector 2 up, SIGKILLed by
its fault hook right after a commit and before its ack/PUBACK (mid-commit window); agent SIGKILLed
with a spool full of unacknowledged reports and restarted where it left off; collector 3 up, broker
stopped and started again (graceful); everything drains. Then the hub must hold every report id
exactly once (the SQLite primary key makes a duplicate row impossible; the figure counts rows
against distinct ids anyway) and the agent's spool must be empty.
"""
from __future__ import annotations

import functools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests import report_driver
from tests.brokers import start_mosquitto

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p]))


def Driver(broker_url, spool, start, total, rate, seed, ack="hub"):
    """The agent process, resending fast (tests.report_driver.DriverProcess)."""
    d = report_driver.DriverProcess(
        broker_url, spool, start, total, rate,
        ["--seed", seed, "--resend-after", "1", "--resend-max", "3",
         "--drain-timeout", "150" if ack == "hub" else "20", "--ack", ack])
    d.wait_hits = functools.partial(d.wait_hits, timeout=90)
    return d


class CollectorProc:
    def __init__(self, broker_url, db, kill_after=None):
        env = dict(ENV)
        if kill_after:
            env["GATEWATCH_COLLECTOR_KILL_AFTER"] = str(kill_after)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.collector", "collect", "--broker", broker_url, "--db", str(db),
             "--client-id", "fault-collector", "--group", "", "--source", ",".join(report_driver.SOURCES)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        line = ""
        for _ in range(10):
            line = self.proc.stdout.readline()
            if "collecting reports" in line or not line:
                break
        if kill_after and not line and self.proc.wait(30) == -9:
            # A persistent session's queued reports arrive before the broker confirms the
            # subscriptions: the hook may fire on them before the collector says it is collecting.
            return
        assert "collecting reports" in line, line

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[0]


def hub_rows(db):
    if not Path(db).exists():
        return 0, set()
    con = sqlite3.connect(str(db))
    try:
        ids = [r[0] for r in con.execute("SELECT id FROM reports")]
        return len(ids), set(ids)
    except sqlite3.OperationalError:
        return 0, set()
    finally:
        con.close()


def run_faults(folder, total=1000, rate=250.0, seed="faults", log=print, ack="hub"):
    """``ack="broker"`` runs the same faults with the old delete-on-PUBACK rule, for comparison."""
    folder = Path(folder)
    t0 = time.monotonic()
    broker = start_mosquitto(folder)
    db, spool = folder / "hub.db", folder / "spool"
    fig = {"total": total}
    col = CollectorProc(broker.url, db)
    agents = []
    try:
        a = Driver(broker.url, spool, 0, total, rate, seed, ack)
        agents.append(a)
        a.wait_hits(total // 8)
        col.stop()                                   # collector down
        log("collector down at hit %d" % len(a.hits))
        a.wait_hits(total // 4)
        broker.kill()                                # broker SIGKILL: what it queued is gone
        log("broker killed at hit %d" % len(a.hits))
        broker.start()
        a.wait_hits(3 * total // 8)
        stored_before = hub_rows(db)[0]
        col = CollectorProc(broker.url, db, kill_after=max(5, total // 20))
        rc = col.proc.wait(60)                       # SIGKILLed by its hook, mid-commit
        fig["collector_killed_rc"] = rc
        log("collector SIGKILLed after a commit (rc %s), hub held %d -> %d" % (rc, stored_before, hub_rows(db)[0]))
        a.wait_hits(total // 2)
        a.kill()                                     # agent SIGKILL with unacknowledged reports
        resume = max(a.hits) + 1
        log("agent killed at hit %d" % resume)
        col = CollectorProc(broker.url, db)
        b = Driver(broker.url, spool, resume, total, rate, seed, ack)
        agents.append(b)
        b.wait_hits(min(total - resume, total // 4))
        broker.stop()                                # graceful broker restart
        broker.start()
        log("broker restarted at hit %d" % (resume + len(b.hits)))
        rc = b.proc.wait(180)
        fig["agent_rc"] = rc
        want = {report_driver.report_id(seed, i) for i in range(total)}
        deadline = time.monotonic() + 30
        while hub_rows(db)[1] != want and time.monotonic() < deadline:
            time.sleep(0.2)
        rows, ids = hub_rows(db)
        out = col.stop()
        fig.update(stored=len(ids), rows=rows, lost=len(want - ids), duplicated=rows - len(ids),
                   unexpected=len(ids - want), drained="drained" in b.lines,
                   seconds=round(time.monotonic() - t0, 1), last_collector=out.strip().splitlines()[-1:])
        from agent.reports.spool import ReportSpool
        with ReportSpool(spool) as sp:
            fig["left_in_spool"] = len(sp)
        return fig
    finally:
        for d in agents:
            if d.proc.poll() is None:
                d.kill()
        if col.proc.poll() is None:
            col.stop()
        broker.kill()
