"""One running hotline hub: the report collector, the endpoint for other hubs, the outbox sender and
the review pages, in one process that stops cleanly on SIGTERM.

Owns starting and stopping those parts in order and their listeners (werkzeug's threaded server,
TLS for the endpoint between hubs). Must not touch what any part does.
"""

from __future__ import annotations

import logging
import signal
import ssl
import sys
import threading
from typing import List, Optional, Tuple

from agent.core.errors import ConfigError

log = logging.getLogger(__name__)


def parse_listen(text: str, option: str) -> Tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise ConfigError("%s %r must be HOST:PORT (e.g. 127.0.0.1:8443)" % (option, text))
    return host.strip("[]"), int(port)


class Listener:
    """A WSGI app on a threaded werkzeug server in its own thread."""

    #: seconds a client may take per read: a slow or silent client frees its thread after this
    CLIENT_TIMEOUT = 30

    def __init__(self, app, host: str, port: int, ssl_context=None, name: str = "listener") -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Handler(WSGIRequestHandler):
            timeout = self.CLIENT_TIMEOUT

            def log_request(self, code="-", size="-"):  # paths carry case ids only; keep the log for errors
                if str(code).startswith(("4", "5")):
                    super().log_request(code, size)
        try:
            self.server = make_server(host, port, app, threaded=True, request_handler=Handler)
        except OSError as e:
            raise ConfigError("cannot listen on %s:%d for the %s: %s" % (host, port, name, e.strerror or e)) from None
        if ssl_context is not None:
            # werkzeug would wrap with the handshake in accept(), i.e. in the one thread that accepts:
            # a client that connects and says nothing would stop everyone. Here the handshake runs in
            # the connection's own thread, on its first read, under CLIENT_TIMEOUT.
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True,
                                                         do_handshake_on_connect=False)
            self.server.ssl_context = ssl_context
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    def start(self) -> "Listener":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or newer) from a certificate chain and its key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError("cannot load the TLS certificate %s and key %s: %s" % (cert, key, e)) from None
    return ctx


def _served(args) -> set:
    """The list sources this hub serves (--source, --lists)."""
    from tools.collector import served_sources
    return set(served_sources(args.source, args.lists))


def build_hub(args):
    """The HotlineHub and its store from the `hotline serve` arguments."""
    from agent.lists.trust import key_id
    from tools.build import load_private_key
    from tools.hotline.allowfeed import AllowFeed
    from tools.hotline.directory import load_directory
    from tools.hotline.geo import CountryDb, HostingLocator
    from tools.hotline.hub import HotlineHub
    from tools.hotline.store import open_store

    directory = load_directory(args.directory, args.directory_key)
    member = directory.get(args.hotline)
    if member is None:
        raise ConfigError("hotline %r is not in the directory %s (members: %s)"
                          % (args.hotline, args.directory, ", ".join(sorted(directory.hotlines))))
    key = load_private_key(args.key)
    if key_id(key.public_key()) != key_id(member.key):
        raise ConfigError("--key %s is not the key the directory names for %s: other hubs would refuse every "
                          "message it signs" % (args.key, args.hotline))
    sources = _served(args)  # --lists too: the hub collects their reports, so their false positives are its own
    feed = None
    if (args.allow_key or args.publish_dir) and not args.allow_dir:
        raise ConfigError("--allow-key and --publish-dir need --allow-dir (where rejected false positives are "
                          "written, one allow input file per source)")
    if args.allow_dir:
        keys = {}
        for spec in args.allow_key or ():
            src, sep, path = spec.partition("=")
            if not sep:
                raise ConfigError("--allow-key takes SOURCE=KEYFILE, got %r" % spec)
            load_private_key(path)  # a key that cannot sign is said now, not at the first rejection
            keys[src] = path
        for src in sorted(sources - set(keys)):
            log.warning("no --allow-key for source %s: its rejected false positives go to %s/%s.txt only; build "
                        "and publish its allow list by hand (gatewatch-hub allow build)", src, args.allow_dir, src)
        feed = AllowFeed(args.allow_dir, args.publish_dir or args.allow_dir, keys,
                         entries_dir=args.entries, radius=args.allow_radius)
    locator = HostingLocator(CountryDb(args.geo_db), args.dns_server, args.dns_timeout)
    store = open_store(args.db)
    return HotlineHub(args.hotline, directory, store, key, locator, sources, on_reject=feed), store


def run(args) -> int:
    """`gatewatch-hub hotline serve`: run until SIGTERM/SIGINT."""
    from tools.collector import Collector
    from tools.hotline.hub import CaseSink
    from tools.hotline.peer import Forwarder, peer_app
    from tools.hotline.review import create_app, load_secret

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    hub, store = build_hub(args)
    parts: List[object] = []
    client = None
    try:
        host, port = parse_listen(args.peer_listen, "--peer-listen")
        peer = Listener(peer_app(hub), host, port, server_tls(args.peer_cert, args.peer_key), "peer endpoint").start()
        parts.append(peer)
        review: Optional[Listener] = None
        if args.review_listen:
            rhost, rport = parse_listen(args.review_listen, "--review-listen")
            rtls = server_tls(args.review_cert, args.review_key) if args.review_cert else None
            if rtls is None and rhost not in ("127.0.0.1", "::1", "localhost"):
                raise ConfigError("--review-listen %s is not loopback: give --review-cert/--review-key (passwords "
                                  "and sessions must not cross a network in clear)" % args.review_listen)
            secret = args.secret_file or (args.db + ".session-secret" if "://" not in args.db else None)
            if secret is None:
                raise ConfigError("--secret-file is needed with a PostgreSQL database (the review sessions' key)")
            review = Listener(create_app(hub, load_secret(secret), secure_cookies=rtls is not None),
                              rhost, rport, rtls, "review pages").start()
            parts.append(review)
        forwarder = Forwarder(hub, cafile=args.peer_ca, retry_first=args.retry_first, retry_max=args.retry_max).start()
        parts.append(forwarder)
        if args.broker:
            from tools.broker_args import client_from_args, topics_from_args
            served = hub.sources
            if not served:
                raise ConfigError("name the list sources this hub collects reports for (--source NAME, --lists "
                                  "DIR); reports for other sources are refused")
            client = client_from_args(args, clean_session=False, reconnect=(1, 5))
            Collector(client, CaseSink(hub), topics_from_args(args), group=args.group, sources=served).start()
            client.connect(timeout=args.connect_timeout)
        feed = hub.on_reject
        print("hub %s: peers at https://%s:%d%s%s%s; %d cases held" % (
            hub.me, host, peer.port, ", review at http%s://%s:%d" % ("s" if args.review_cert else "", rhost, review.port)
            if review else "", ", reports from %s" % args.broker if args.broker else "",
            ", allow lists of %s signed into %s" % (", ".join(sorted(feed.keys)), feed.publish_dir)
            if feed is not None and feed.keys else "", store.count_cases()), flush=True)
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        done.wait(args.duration)
    finally:
        if client is not None:
            client.stop()
        for p in reversed(parts):
            p.stop()
        store.close()
    print("hub %s stopped: %s" % (hub.me, ", ".join("%s %d" % kv for kv in sorted(hub.stats.items()))), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from tools.hotline.cli import main as _main
    sys.exit(_main())
