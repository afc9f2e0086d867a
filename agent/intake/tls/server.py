"""The transparent TLS splice: read the ClientHello's server name, then pass the connection or cut it.

Owns: connections that an nftables redirect of LAN tcp/443 brings here (firmware/nftables/names.nft),
their original destination (SO_ORIGINAL_DST), reading the first flight within bounds and a time-out,
asking the inspector about the server name (``inspect_name``, in a thread pool), and then either
closing the connection with a TLS access_denied alert (a listed name) or connecting to the original
destination, sending the bytes read so far unchanged and relaying both directions until either side
closes. It never decrypts, never holds a key or a certificate: the client talks TLS with the real
server, whose certificate it checks as always. Logs name the server name or, without one, the
destination address; never the client.

What passes without a name check, counted and logged (fail-open, never silently): a connection that
does not start with TLS (``not_tls``), a malformed or oversized ClientHello (``malformed``), one without
a server name (``no_sni``), a lookup that fails or times out (``lookup_errors``/``lookup_timeouts``).
A ClientHello offering Encrypted Client Hello is checked by its outer (public) name only (``ech``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import socket
import struct
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

from agent.intake import Decision, lookup_fail_open
from agent.intake.proxy.netpolicy import DEFAULT_CLIENTS, ClientNetworks, normal_ip, upstream_refusal
from agent.intake.streamserver import StreamIntakeServer, relay
from agent.intake.tls.clienthello import ALERT_ACCESS_DENIED, Malformed, NotTls, parse_hello

log = logging.getLogger("gatewatch.tls")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number
_COUNTERS = ("connections", "spliced", "blocked", "not_tls", "malformed", "no_sni", "ech", "hello_timeouts",
             "no_destination", "refused_upstreams", "upstream_errors", "rejected", "rejected_per_client",
             "refused_clients", "lookups", "lookup_errors", "lookup_timeouts", "names_blocked", "bypassed",
             "internal_errors")
_PIECE = 64 * 1024


class TlsLimits(NamedTuple):
    """Bounds of the splice (seconds, counts)."""

    hello_timeout: float = 10.0  # the whole first flight, from accept
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0  # a spliced connection with no byte either way for this long is closed
    lookup_timeout: float = 3.0
    scan_timeout: float = 3.0  # (StreamIntakeServer's name for the inspector's bound)
    max_connections: int = 1024
    max_connections_per_client: int = 256
    pressure_fraction: float = 0.75


def original_destination(sock) -> Optional[Tuple[str, int]]:
    """Where a redirected connection was going (netfilter's record), or None when it was not redirected."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
            port = struct.unpack_from("!H", raw, 2)[0]
            return str(ipaddress.IPv6Address(raw[8:24])), port
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port = struct.unpack_from("!H", raw, 2)[0]
        return str(ipaddress.IPv4Address(raw[4:8])), port
    except (OSError, ValueError):
        return None


class TlsSpliceServer(StreamIntakeServer):
    """Transparent TLS intake. ``start(host, port)``, ``port``, ``close()``, ``stats``.

    ``destination(sock)`` says where a connection was going (default: SO_ORIGINAL_DST; tests may
    replace it). ``allow_loopback_upstream`` lets the splice reach loopback and the gateway's own
    addresses (tests); a connection whose destination is this listener itself is always refused.
    """

    def __init__(self, inspector, *, limits: TlsLimits = TlsLimits(),
                 on_block: Optional[Callable[[Decision, str], None]] = None,
                 executor: Optional[concurrent.futures.Executor] = None,
                 clients: Optional[Sequence[str]] = DEFAULT_CLIENTS, allow_loopback_upstream: bool = False,
                 destination: Callable = original_destination):
        self._init_intake(inspector, limits, on_block, None, executor, _COUNTERS)
        self.clients = ClientNetworks(clients)
        self.allow_loopback_upstream = bool(allow_loopback_upstream)
        self.destination = destination
        self._listen_addrs: list = []

    async def start(self, host: str = "0.0.0.0", port: int = 3130) -> None:
        """Listen on ``host:port`` (the target of the nftables redirect)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="tls-lookup")
        self._server = await asyncio.start_server(self._accept, host, port, backlog=1024)
        self._listen_addrs = [(normal_ip(s.getsockname()[0]), s.getsockname()[1]) for s in self._server.sockets]

    log = log

    def busy_response(self) -> bytes:
        """Nothing is said to a connection beyond the bounds: it is closed."""
        return b""

    def refuse_client(self, ip: Optional[str]) -> Optional[bytes]:
        return None if self.clients.allows(ip) else b""

    async def serve_connection(self, reader, writer) -> None:
        """One redirected connection: the first flight, the decision, then the splice or the cut."""
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except Exception as exc:  # a bug of ours costs this connection, never the service
            self.stats["internal_errors"] += 1
            log.error("internal error on a TLS connection: %s", type(exc).__name__)

    async def _serve(self, reader, writer) -> None:
        dest = self.destination(writer.get_extra_info("socket"))
        if dest is None:
            self.stats["no_destination"] += 1
            log.info("a connection without an original destination (not redirected here); closed")
            return
        ip, port = normal_ip(dest[0]), dest[1]
        why = upstream_refusal(ip, port, self._listen_addrs, self.allow_loopback_upstream)
        if why is not None:
            self.stats["refused_upstreams"] += 1
            log.info("refused a TLS connection to %s:%d: %s", ip, port, why[1])
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.hello_timeout
        first = bytearray()
        hello, shown = None, str(ip)
        while True:
            try:
                hello = parse_hello(bytes(first))
            except NotTls:
                self.stats["not_tls"] += 1
                self.stats["bypassed"] += 1
                log.info("connection to %s:%d is not TLS; passed unchecked", ip, port)
                break
            except Malformed as exc:
                self.stats["malformed"] += 1
                self.stats["bypassed"] += 1
                log.info("malformed ClientHello to %s:%d (%s); passed unchecked", ip, port, exc)
                break
            if hello is not None:
                break
            left = deadline - loop.time()
            if left <= 0:
                self.stats["hello_timeouts"] += 1
                return
            try:
                data = await asyncio.wait_for(reader.read(_PIECE), left)
            except asyncio.TimeoutError:
                self.stats["hello_timeouts"] += 1
                return
            if not data:
                return
            first += data
        if hello is not None:
            if hello.ech:
                self.stats["ech"] += 1
            if hello.server_name is None:
                self.stats["no_sni"] += 1
                self.stats["bypassed"] += 1
                log.info("ClientHello to %s:%d without a server name; passed unchecked", ip, port)
            else:
                shown = hello.server_name.decode("ascii", "replace")[:255]
                decision = await lookup_fail_open(self.inspector, "inspect_name", self._executor, hello.server_name,
                                                  what="tls", host=shown, timeout=self.limits.lookup_timeout,
                                                  stats=self.stats, on_block=self.on_block, log=log)
                if decision is not None and decision.action == "block":
                    self.stats["blocked"] += 1
                    writer.write(ALERT_ACCESS_DENIED)
                    await asyncio.wait_for(writer.drain(), 5)
                    return
        await self._splice(reader, writer, str(ip), port, bytes(first), shown)

    async def _splice(self, reader, writer, ip: str, port: int, first: bytes, shown: str) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(ip, port),
                                                          self.limits.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.stats["upstream_errors"] += 1
            log.info("cannot reach %s (%s:%d): %s", shown, ip, port, type(exc).__name__)
            return
        self.stats["spliced"] += 1
        up_writer.write(first)

        idle = self.limits.idle_timeout
        try:
            await asyncio.gather(relay(lambda: asyncio.wait_for(reader.read(_PIECE), idle), up_writer, idle),
                                 relay(lambda: asyncio.wait_for(up_reader.read(_PIECE), idle), writer, idle))
        finally:
            up_writer.close()
