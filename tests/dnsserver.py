"""A real DNS server for tests: Debian's dnsmasq on a free loopback port, answering only the benign
test names it is given (``{name: address}``) and NXDOMAIN for the rest of their zones. It never asks
another server (no upstream, no /etc/hosts, no config file).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.waiting import free_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


class TestDns:
    """``start()``, ``stop()``, ``server`` ('127.0.0.1:PORT' for --dns-server)."""

    __test__ = False  # not a test class

    def __init__(self, records: dict, zones=("test",)) -> None:
        if not os.path.exists(DNSMASQ):
            pytest.fail("dnsmasq is not installed: run tests/setup/install.sh (apt-get install dnsmasq-base)")
        self.records = dict(records)
        self.port = free_port()
        self.server = "127.0.0.1:%d" % self.port
        args = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--no-poll", "--pid-file=", "--port=%d" % self.port, "--listen-address=127.0.0.1",
                "--bind-interfaces", "--log-facility=-", "--local-ttl=600"]
        if os.geteuid() == 0:
            args.append("--user=root")
        args += ["--local=/%s/" % z for z in zones]
        args += ["--host-record=%s,%s" % (n, ip) for n, ip in sorted(self.records.items())]
        self.args = args
        self.proc = None

    def start(self) -> "TestDns":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("dnsmasq exited: %s" % self.proc.stderr.read().decode(errors="replace"))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("dnsmasq did not listen on %d" % self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
