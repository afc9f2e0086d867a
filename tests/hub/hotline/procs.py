"""Hub processes for end-to-end tests and the fault run: `gatewatch-hub hotline serve` as a child
process that can be SIGKILLed and started again on the same database and port, and a read-only look
at its SQLite database while it runs.
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

from tests.hub.hotline.kit import env_with_root
from tests.paths import ROOT
from tests.waiting import stop_process, wait_port


class HubProcess:
    """``start()``, ``kill()`` (SIGKILL), ``stop()`` (SIGTERM), ``lines`` (its output so far)."""

    def __init__(self, net, hid, db, dns_server, broker_url=None, sources=(), extra=(), log=None):
        self.net, self.hid, self.db = net, hid, str(db)
        self.port = net.ports[hid]
        self.args = [sys.executable, "-m", "tools.hub_cli", "hotline", "serve", "--hotline", hid,
                     "--key", net.keys[hid], "--directory", net.directory_file, "--directory-key", net.dir_pub,
                     "--db", self.db, "--peer-listen", "127.0.0.1:%d" % self.port, "--tls-cert", net.cert,
                     "--tls-key", net.tls_key, "--peer-ca", net.ca, "--dns-server", dns_server,
                     "--retry-first", "0.3", "--retry-max", "1.5"] + list(extra)
        if broker_url:
            self.args += ["--broker", broker_url, "--client-id", "hub-%s" % hid]
        for s in sources:
            self.args += ["--source", s]
        self.proc = None
        self.lines = []
        self.log = log

    def start(self, timeout=60):
        self.proc = subprocess.Popen(self.args, cwd=str(ROOT), env=env_with_root(ROOT), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        wait_port(self.port, timeout, proc=self.proc)
        deadline = time.monotonic() + timeout
        while not any(ln.startswith("hub %s:" % self.hid) for ln in self.lines):  # connected to its broker too
            assert self.proc.poll() is None and time.monotonic() < deadline, self.lines[-20:]
            time.sleep(0.05)
        return self

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.append(line.rstrip())
            if self.log is not None:
                self.log.write("[%s] %s" % (self.hid, line))

    def kill(self):
        """SIGKILL: a power cut of the hub."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)

    def running(self):
        return self.proc is not None and self.proc.poll() is None


def read_db(db):
    """(cases, counts rows, outbox rows) of a hub's SQLite database, read beside the running hub."""
    try:
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    except sqlite3.OperationalError:
        return [], [], []
    try:
        con.row_factory = sqlite3.Row
        cases = [dict(r) for r in con.execute("SELECT * FROM cases")]
        counts = [dict(r) for r in con.execute("SELECT * FROM case_counts")]
        outbox = [dict(r) for r in con.execute("SELECT * FROM outbox")]
        return cases, counts, outbox
    except sqlite3.OperationalError:
        return [], [], []
    finally:
        con.close()
