"""URL lists end to end with real proxies (Debian packages) and the standalone ICAP service on loopback.

Squid with REQMOD (firmware/squid/gatewatch.conf): a listed URL gets the block page and the origin never
sees the request; an unlisted one passes byte-identical. e2guardian, whose icapscan sends only RESPMOD:
a listed URL is replaced by e2guardian's own block answer (after the fetch: it has no REQMOD client).
The list holds benign example URLs; the origin is a loopback server that records every path asked.
"""

import functools
import http.server
import os
import threading

import pytest

from agent.lists.names import read_names
from tests.intake.icap.realservers import AgentProcess, E2Guardian, Squid, curl, find_binary
from tests.listkit import Hub

pytestmark = [pytest.mark.slow, pytest.mark.skipif(find_binary("curl") is None, reason="curl missing")]

SQUID_REQMOD = """
icap_service gw_req reqmod_precache icap://127.0.0.1:{port}/reqmod bypass=on
adaptation_access gw_req allow all
"""


class RecordingOrigin:
    """A loopback HTTP origin serving ``directory`` that records the path of every request."""

    def __init__(self, directory):
        self.paths = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.paths.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=directory))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return "http://127.0.0.1:%d/%s" % (self.port, path)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    (www / "listed").mkdir(parents=True)
    (www / "listed" / "page.html").write_bytes(b"<p>listed page</p>")
    (www / "listed.txt").write_bytes(b"a listed text file\n" * 50)
    blob = os.urandom(300 * 1024)
    (www / "open.bin").write_bytes(blob)
    (www / "open.txt").write_bytes(b"open text\n" * 300)
    hub = Hub(tmp_path / "hub", source="hotline")
    hub.build(read_names("http://127.0.0.1/listed/\nhttp://127.0.0.1/listed.txt\n", "url", "urls"), name="urls",
              signal="url", capacity=10)
    origin = RecordingOrigin(str(www))
    agent = AgentProcess("agent.intake.icap", hub.out, hub.pub_path, "--reload", "0")
    yield origin, agent, blob
    agent.stop()
    origin.stop()


@pytest.mark.skipif(find_binary("squid", "/usr/sbin/squid") is None, reason="squid missing (apt-icap.txt)")
def test_squid_reqmod_blocks_listed_urls_before_fetching(site, tmp_path):
    origin, agent, blob = site
    squid = Squid(str(tmp_path), icap_port=agent.port, extra_conf=SQUID_REQMOD.format(port=agent.port))
    try:
        out = str(tmp_path / "out")
        status, _ = curl(squid.proxy, origin.url("listed/page.html"), out, "-H", "Accept: text/html")
        page = open(out, "rb").read()
        assert status == 403 and b"listed page" not in page and b"<html" in page.lower()
        status, _ = curl(squid.proxy, origin.url("%6Cisted/./x/../page.html?x=1"), out)
        assert status == 403
        assert not any(p.lower().startswith("/listed") for p in origin.paths), origin.paths  # never fetched
        status, _ = curl(squid.proxy, origin.url("open.bin"), out)
        assert status == 200 and open(out, "rb").read() == blob  # byte-identical
        assert origin.paths == ["/open.bin"]
    finally:
        squid.stop()


@pytest.mark.skipif(find_binary("e2guardian", "/usr/sbin/e2guardian") is None, reason="e2guardian missing")
def test_e2guardian_respmod_replaces_listed_urls(site, tmp_path):
    origin, agent, blob = site
    e2g = E2Guardian(agent.port)
    try:
        out = str(tmp_path / "out")
        status, _ = curl(e2g.proxy, origin.url("listed.txt"), out)
        assert b"a listed text file" not in open(out, "rb").read()
        # (e2guardian's stock lists ban *.bin downloads itself: an unlisted text file here)
        status, _ = curl(e2g.proxy, origin.url("open.txt"), out)
        assert status == 200 and open(out, "rb").read() == (b"open text\n" * 300)
    finally:
        e2g.stop()
