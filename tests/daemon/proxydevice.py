"""`gatewatch run` as a process behind its built-in HTTP proxy, for end-to-end tests: it trusts one
source's key, takes lists from a broker, and the test fetches through its proxy and reads its status."""
from __future__ import annotations

import urllib.error
import urllib.request

from tests.daemon.test_daemon import DEVICE_TOML, _log, _start_agent, _status
from tests.waiting import free_port, stop_process, wait_port

PROXY_TOML = """
[localapi]
enabled = false
[proxy]
listen = "127.0.0.1:%d"
allow_loopback_upstream = true  # the test's origin is on loopback
"""


class ProxyDevice:
    """``fetch(url)`` (the body, or the HTTP error status), ``status()``, ``held(ident)`` (the version of a
    list in force), ``stop()``, ``log()``. ``extra``: more TOML sections."""

    def __init__(self, tmp_path, broker_url, client_id, source, pub_path, extra=""):
        self.tmp_path = tmp_path
        self.state = tmp_path / "state"
        (self.state / "trust").mkdir(parents=True)
        (self.state / "trust" / ("%s.pub" % source)).write_text(open(pub_path).read())
        self.proxy_port = free_port()
        self.proc = _start_agent(tmp_path, DEVICE_TOML % {"state": self.state, "client_id": client_id,
                                                          "broker": broker_url} + PROXY_TOML % self.proxy_port + extra)
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": "http://127.0.0.1:%d" % self.proxy_port}))

    def wait_listening(self, timeout=30):
        wait_port(self.proxy_port, timeout, self.proc)

    def fetch(self, url):
        try:
            return self.opener.open(url, timeout=30).read()
        except urllib.error.HTTPError as e:
            return e.code

    def status(self):
        return _status(self.state)[1] or {}

    def held(self, ident):
        return (self.status().get("lists", {}).get(ident) or {}).get("version")

    def stop(self):
        """SIGTERM and wait; the exit code."""
        stop_process(self.proc)
        return self.proc.returncode

    def log(self):
        return _log(self.tmp_path)
