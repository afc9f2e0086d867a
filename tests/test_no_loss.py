"""Nothing lost: 1,200 hits, broker stopped mid-way, agent SIGKILLed and restarted, broker restarted.

The agent side is a real process (tests/report_driver.py: ReportSpool + Reporter + MqttClient),
the hub side is the real collector process (tools/collector.py), the broker a real mosquitto. Every
payload published during the run is captured on '#' and checked for the simulated subscriber data.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import report_driver
from tests.brokers import start_mosquitto
from tests.privacy import PayloadCapture

ROOT = Path(__file__).resolve().parent.parent
TOTAL = 1200


class Driver:
    """The agent process; collects the hit numbers it prints."""

    def __init__(self, broker_url, spool, start):
        self.hits = []
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.report_driver", "--broker", broker_url, "--spool", str(spool),
             "--total", str(TOTAL), "--start", str(start), "--rate", "400"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                [p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p])))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("hit "):
                self.hits.append(int(line.split()[1]))

    def wait_hits(self, n, timeout=60):
        deadline = time.monotonic() + timeout
        while len(self.hits) < n and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        assert len(self.hits) >= n, self.lines[-20:]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join(5)


def hub_ids(db):
    if not db.exists():
        return set()
    con = sqlite3.connect(str(db))
    try:
        return {r[0] for r in con.execute("SELECT id FROM reports")}
    except sqlite3.OperationalError:
        return set()
    finally:
        con.close()


@pytest.mark.slow
def test_no_report_lost_across_broker_outage_and_agent_sigkill(tmp_path):
    broker = start_mosquitto(tmp_path)
    db = tmp_path / "hub.db"
    spool = tmp_path / "spool"
    collector = subprocess.Popen(
        [sys.executable, "-m", "tools.collector", "collect", "--broker", broker.url, "--db", str(db),
         "--client-id", "hub-collector-1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        assert any("collecting reports" in collector.stdout.readline() for _ in range(5))
        with PayloadCapture(broker.url, topic="gatewatch/#") as cap:
            first = Driver(broker.url, spool, 0)
            first.wait_hits(300)
            broker.stop()                      # broker away in the middle of the run
            first.wait_hits(650)               # hits keep coming and go to the spool
            first.kill()                       # agent SIGKILLed with a full spool
            resume = max(first.hits) + 1
            assert len(list(spool.glob("seg-*.log"))) >= 1
            second = Driver(broker.url, spool, resume)
            second.wait_hits(200)
            broker.start()                     # broker back: spool drains
            cap._client.wait_connected(10)
            assert second.proc.wait(120) == 0, second.lines[-20:]
            assert "drained" in second.lines
            want = {report_driver.report_id("no-loss", i) for i in range(TOTAL)}
            deadline = time.monotonic() + 60
            while hub_ids(db) != want and time.monotonic() < deadline:
                time.sleep(0.2)
            got = hub_ids(db)
            assert len(got) == TOTAL and got == want, (len(got), len(want - got), len(got - want))
            forbidden = [report_driver.CLIENT_IP, report_driver.USER_AGENT, report_driver.COOKIE,
                         "c00k1e5ecret", "u:pw", "GET /img"]
            assert cap.assert_clean(forbidden, "/reports/") > 0
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            out = collector.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            collector.kill()
            out = ""
        broker.kill()
    assert "stored %d new reports" % TOTAL in out, out[-2000:]
