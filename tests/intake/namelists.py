"""Signed url/domain lists of benign example names and the real inspector over them, for the HTTP intakes'
URL lookup tests (tests/intake/proxy/test_url_lookups.py, tests/intake/icap/test_url_lookups.py)."""

import socket

import pytest

from agent.lists.names import read_names
from agent.lists.store import load_folder
from agent.matching.scanner import Scanner
from agent.policy import Policy, PolicyInspector, PolicySettings
from tests.intake.icap.realservers import Origin
from tests.listkit import Hub


class Counting(PolicyInspector):
    """The real inspector, counting body scans (a blocked URL must never get as far as its body)."""

    def __init__(self, *a):
        super().__init__(*a)
        self.bodies = 0

    def inspect(self, body, content_type=None, url=None):
        self.bodies += 1
        return super().inspect(body, content_type, url)


@pytest.fixture(scope="module")
def inspector_factory(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("url-lookups")
    hub = Hub(tmp / "hub", source="hotline")
    hub.build(read_names("http://127.0.0.1/listed/\nhttp://origin.test/pics/a.jpg\n", "url", "u"), name="urls",
              signal="url", capacity=10)
    hub.build(read_names("blocked.example.org\n", "domain", "d"), name="doms", signal="domain", capacity=10)
    lists = list(load_folder(hub.out, hub.trust()).lists.values())
    return lambda: Counting(lambda: Scanner(lists), Policy(PolicySettings()))


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    (www / "listed").mkdir()
    (www / "listed" / "page.html").write_bytes(b"<p>listed</p>")
    (www / "open.html").write_bytes(b"<p>open</p>" * 100)
    o = Origin(str(www))
    yield o
    o.stop()


def http(port, raw):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(raw)
    out = b""
    while True:
        data = s.recv(65536)
        if not data:
            break
        out += data
    s.close()
    return out


