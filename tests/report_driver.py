"""A stand-in agent process for the no-loss test: produces hits, spools reports, drains them.

    python -m tests.report_driver --broker URL --spool DIR --total N [--start I] [--rate R]

Hit ``i`` always yields the same report id (derived from ``--seed`` and i), modelling "the same
hit": a driver restarted after SIGKILL resumes at ``--start`` and may redo a hit whose line it had
not printed; its report is then the same report (spooled once, stored once by the hub). It prints
``hit <i>`` once report i is durably spooled, and ``drained`` when the spool is empty, i.e. when the hub acknowledged every report (``--ack hub``,
the default); it exits 0 then. The simulated client context of each hit (address, user agent, cookie) never enters a report:
the privacy check looks for it in every payload.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

from agent.core.report import hosting_from_url, make_report
from agent.mqtt import MqttClient, Topics
from agent.reports.reporter import Reporter
from agent.reports.spool import ReportSpool

SOURCES = ("hotline-a", "hotline-b")
CLIENT_IP = "192.168.77.23"
USER_AGENT = "Mozilla/5.0 (GatewatchTestBrowser/1.0)"
COOKIE = "sessionid=c00k1e5ecret"



class DriverProcess:
    """This module run as a child process (the agent side of the no-loss runs); collects the hit
    numbers it prints. ``extra`` adds command-line arguments of :func:`main`."""

    def __init__(self, broker_url, spool, start, total, rate, extra=()):
        import subprocess
        import threading
        from tests.paths import ROOT
        self.hits, self.lines = [], []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.report_driver", "--broker", broker_url, "--spool", str(spool),
             "--total", str(total), "--start", str(start), "--rate", str(rate)] + list(extra),
            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("hit "):
                self.hits.append(int(line.split()[1]))

    def wait_hits(self, n, timeout=60):
        """Wait until the child has printed ``n`` hits (or exited); assert that it did."""
        deadline = time.monotonic() + timeout
        while len(self.hits) < n and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.01)
        assert len(self.hits) >= n, self.lines[-20:]

    def kill(self):
        """SIGKILL: a power cut for the agent."""
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5)

def report_id(seed, i):
    """The deterministic id of hit ``i``."""
    return hashlib.sha256(("%s:%d" % (seed, i)).encode()).hexdigest()[:32]


def hit_report(seed, i):
    """The report of hit ``i`` (what the daemon would make after a confirmed match)."""
    context = {"client": CLIENT_IP, "user_agent": USER_AGENT, "cookie": COOKIE,
               "url": "https://u:pw@cdn%d.example/img/%d.jpg?sid=%s" % (i % 5, i, COOKIE)}
    return make_report(SOURCES[i % 2], "sha256", 3, "sha256", 0, "sha256:%016x" % i,
                       hosting=hosting_from_url(context["url"], "url-noquery", ip="203.0.113.%d" % (i % 250 + 1)),
                       now=1_800_000_000 + i * 60, device_secret=b"driver-secret", region="ZZ",
                       agent_version="0.1.0", report_id=report_id(seed, i))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--broker", required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--rate", type=float, default=500.0, help="hits per second")
    p.add_argument("--seed", default="no-loss")
    p.add_argument("--client-id", default="driver-device")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--ack", choices=("hub", "broker"), default="hub",
                   help="keep each report until the hub acknowledges it (default) or the broker does")
    p.add_argument("--resend-after", type=float, default=2.0, help="first resend of an unacknowledged report")
    p.add_argument("--resend-max", type=float, default=4.0, help="resend interval cap")
    a = p.parse_args(argv)
    spool = ReportSpool(a.spool, max_reports=100000, max_bytes=64 * 1024 * 1024)
    client = MqttClient(a.broker, a.client_id, reconnect=(1, 2)).start()
    reporter = Reporter(client, spool, Topics(), ack_delay=0.1, ack=a.ack, resend_after=a.resend_after,
                        resend_max=a.resend_max).start()
    t0 = time.monotonic()
    for i in range(a.start, a.total):
        reporter.submit(hit_report(a.seed, i))
        print("hit %d" % i, flush=True)
        delay = t0 + (i - a.start + 1) / a.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    ok = reporter.drain(a.drain_timeout)
    reporter.stop()
    client.stop()
    spool.close()
    print("drained" if ok else "not drained: %r" % (reporter.stats(),), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
