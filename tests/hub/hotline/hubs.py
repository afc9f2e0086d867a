"""In-process hubs for tests: a HotlineHub with its store, its HTTPS endpoint and its forwarder."""
from __future__ import annotations

from tools.hotline.geo import CountryDb, HostingLocator
from tools.hotline.hub import HotlineHub
from tools.hotline.peer import Forwarder, peer_app
from tools.hotline.serve import Listener, server_tls
from tools.hotline.store import open_store

_DB = {}


def country_db():
    """The shipped country database, loaded once per test process."""
    if "db" not in _DB:
        _DB["db"] = CountryDb()
    return _DB["db"]


class TestHub:
    """``hub``, ``store``, ``url``; ``start()`` serves on the port the network's directory names; ``stop()``."""

    __test__ = False

    def __init__(self, net, hid, db, dns=None, sources=(), on_reject=None):
        self.net, self.hid, self.db = net, hid, db
        self.dns, self.sources, self.on_reject = dns, sources, on_reject
        self.listener = self.forwarder = None
        self.open()

    def open(self):
        self.store = open_store(self.db)
        locator = HostingLocator(country_db(), self.dns.server, 1.0) if self.dns else None
        self.hub = HotlineHub(self.hid, self.net.directory, self.store, self.net.key(self.hid), locator,
                              self.sources, on_reject=self.on_reject)
        return self

    def start(self, forward=True):
        self.listener = Listener(peer_app(self.hub), "127.0.0.1", self.net.ports[self.hid],
                                 server_tls(self.net.cert, self.net.tls_key), "peer").start()
        if forward:
            self.forwarder = Forwarder(self.hub, cafile=self.net.ca, timeout=5, retry_first=0.2, retry_max=1.0,
                                       poll=0.2).start()
        return self

    def stop(self):
        if self.forwarder:
            self.forwarder.stop()
            self.forwarder = None
        if self.listener:
            self.listener.stop()
            self.listener = None

    def close(self):
        self.stop()
        self.store.close()


def review_hub(tmp_path, net, dns, password):
    """Hub A with a built list of one benign stand-in entry, an allow feed whose builder calls are
    recorded, and an analyst account ``alice``; returns (hub, feed, calls, the entry's hash)."""
    import hashlib

    from agent.confirm.wire import Entry
    from tools.build import build_list, load_private_key
    from tools.hotline.allowfeed import AllowFeed
    from tools.hotline.review import add_account
    known = hashlib.sha256(b"benign stand-in image").digest()
    build_list(source="hotline-a", name="known", signal="sha256", entries=[Entry("known-0", known)],
               key=load_private_key(net.keys["hotline-a"]), out_dir=str(tmp_path / "lists"))
    calls = []
    feed = AllowFeed(str(tmp_path / "allow"), str(tmp_path / "publish"), {"hotline-a": net.keys["hotline-a"]},
                     entries_dir=str(tmp_path / "lists" / "hub"), builder=lambda *a: calls.append(a))
    h = TestHub(net, "hotline-a", str(tmp_path / "a.sqlite"), dns=dns, sources=["hotline-a"], on_reject=feed)
    add_account(h.store, "alice", password)
    return h, feed, calls, known
