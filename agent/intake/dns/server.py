"""The DNS forwarder that dnsmasq forwards to: listed names get the block answer, the rest goes upstream.

Owns: UDP and TCP on one address (dnsmasq: ``server=127.0.0.1#5353`` with ``strict-order``), the
upstream resolvers (fixed addresses, or the nameservers of a resolv file, re-read when it changes),
forwarding each query's bytes unchanged over a fresh socket per query (a random source port, so a
spoofed reply must guess port and id; a reply counts only if it answers the question asked) and
relaying the reply's bytes unchanged, bounds (queries in flight, TCP connections, message sizes,
time-outs) and counters. The decision is the inspector's (``inspect_name``, in a thread pool);
parsing and answers are ``agent.intake.dns.message``. Logs name the looked-up host, never a client.

Fail-open, counted: a lookup that fails or times out forwards the query (``bypassed``); no upstream
answer gives SERVFAIL, on which dnsmasq asks its next server; an agent that is down does not answer
at all, and dnsmasq (strict-order) goes on to the next server in its list.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ipaddress
import logging
import os
import socket
import struct
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from agent.core.errors import ConfigError
from agent.intake import Decision, host_of, lookup_fail_open
from agent.intake.dns.message import BlockAnswer, read_query, reply_matches, servfail

log = logging.getLogger("gatewatch.dns")

_COUNTERS = ("queries", "blocked_answers", "forwarded", "error_answers", "dropped", "busy", "upstream_timeouts",
             "upstream_errors", "mismatched_replies", "servfail", "tcp_connections", "tcp_rejected", "lookups",
             "lookup_errors", "lookup_timeouts", "names_blocked", "bypassed")


class DnsLimits(NamedTuple):
    """Bounds of the forwarder (seconds, counts)."""

    upstream_timeout: float = 2.0  # per upstream, per query
    lookup_timeout: float = 3.0  # a lookup slower than this forwards the query (fail-open, counted)
    max_inflight: int = 1024  # queries being answered at once; beyond, datagrams are dropped (counted)
    max_tcp_connections: int = 64
    tcp_idle_timeout: float = 10.0


def parse_address(text: str, default_port: int = 53) -> Tuple[str, int]:
    """'IP', 'IP:PORT', '[IPv6]:PORT' or an IPv6 address -> (ip, port); ConfigError on a name or garbage."""
    text = str(text).strip()
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ConfigError("DNS upstream %r: use IP, IP:PORT or [IPv6]:PORT" % text)
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError("DNS upstream %r is not an IP address (a resolver is named by its address)" % text)
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("DNS upstream %r: port must be 1-65535" % text)
    return str(ip), int(port)


class Upstreams:
    """Where unlisted queries go: ``fixed`` addresses, else the nameservers of ``resolv_file``.

    The file is read again whenever its modification time changes (OpenWrt rewrites
    /tmp/resolv.conf.d/resolv.conf.auto when the WAN's DNS servers change). Addresses equal to our
    own listening address are skipped: they would loop.
    """

    def __init__(self, fixed: Sequence[str] = (), resolv_file: str = ""):
        self.fixed = [parse_address(a) for a in fixed]
        self.resolv_file = resolv_file
        self.own: List[Tuple[str, int]] = []
        self._stamp = None
        self._from_file: List[Tuple[str, int]] = []
        if not self.fixed and not resolv_file:
            raise ConfigError("the DNS forwarder needs an upstream: set dns.upstream (IP[:PORT], ...) or "
                              "dns.resolv_file (e.g. /tmp/resolv.conf.d/resolv.conf.auto on OpenWrt)")

    def current(self) -> List[Tuple[str, int]]:
        """The upstreams to try, in order."""
        found = self.fixed or self._read_file()
        return [a for a in found if a not in self.own]

    def _read_file(self) -> List[Tuple[str, int]]:
        try:
            stamp = os.stat(self.resolv_file).st_mtime_ns
        except OSError:
            return self._from_file
        if stamp != self._stamp:
            out = []
            try:
                with open(self.resolv_file, "r", encoding="utf-8", errors="replace") as f:
                    for line in f.read(65536).splitlines():
                        parts = line.split()
                        if len(parts) >= 2 and parts[0] == "nameserver":
                            try:
                                out.append(parse_address(parts[1].split("%")[0]))
                            except ConfigError:
                                continue
            except OSError:
                return self._from_file
            self._stamp, self._from_file = stamp, out
            log.info("DNS upstreams from %s: %s", self.resolv_file,
                     ", ".join("%s#%d" % a for a in out) or "none")
        return self._from_file


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: "DnsServer"):
        self.server = server
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.server._datagram(data, addr, self.transport)

    def error_received(self, exc) -> None:  # ICMP errors for answers we sent: nothing to do
        pass


class DnsServer:
    """DNS forwarder intake. ``start(host, port)``, ``port``, ``close()``, ``stats``."""

    def __init__(self, inspector, *, upstreams: Upstreams, block: Optional[BlockAnswer] = None,
                 limits: DnsLimits = DnsLimits(), executor: Optional[concurrent.futures.Executor] = None,
                 on_block: Optional[Callable[[Decision, str], None]] = None):
        self.inspector = inspector
        self.upstreams = upstreams
        self.block = block or BlockAnswer()
        self.limits = limits
        self.on_block = on_block
        self._executor = executor
        self._own_executor = executor is None
        self._udp = None
        self._tcp = None
        self._tasks: set = set()
        self._tcp_active = 0
        self.stats = collections.Counter({k: 0 for k in _COUNTERS})

    @property
    def port(self) -> int:
        """The port we listen on (UDP and TCP alike)."""
        return self._udp.get_extra_info("sockname")[1]

    async def start(self, host: str = "127.0.0.1", port: int = 5353) -> None:
        """Listen on ``host:port`` for UDP and TCP (port 0: a free port, the same for both)."""
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="dns-lookup")
        for attempt in range(20):
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, host, self.port, backlog=256)
                break
            except OSError:
                self._udp.close()
                if port or attempt == 19:
                    raise
        ip = ipaddress.ip_address(host) if _is_ip(host) else None
        self.upstreams.own = [(str(ip) if ip else host, self.port)]
        if ip is not None and ip.is_unspecified:  # reachable on loopback too: that is us as well
            self.upstreams.own += [("127.0.0.1", self.port), ("::1", self.port)]

    async def close(self) -> None:
        """Stop listening, cancel queries in flight, stop the lookup pool."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- one query

    def _datagram(self, data: bytes, addr, transport) -> None:
        self.stats["queries"] += 1
        if len(self._tasks) >= self.limits.max_inflight:
            self.stats["busy"] += 1  # dnsmasq retries, or asks its next server
            return
        task = asyncio.get_running_loop().create_task(self._udp_query(data, addr, transport))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _udp_query(self, data: bytes, addr, transport) -> None:
        try:
            answer = await self.answer(data, tcp=False)
            if answer is not None and not transport.is_closing():
                transport.sendto(answer, addr)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours costs one query, never the service
            log.error("internal error answering a DNS query: %s", type(exc).__name__)

    async def answer(self, data: bytes, tcp: bool) -> Optional[bytes]:
        """The bytes to send back for one query (None: send nothing)."""
        query, error = read_query(data)
        if query is None:
            self.stats["error_answers" if error is not None else "dropped"] += 1
            return error
        host = host_of("//" + query.name.decode("latin-1")) if query.name else "."
        decision = await lookup_fail_open(self.inspector, "inspect_name", self._executor, query.name, what="dns",
                                          host=host, timeout=self.limits.lookup_timeout, stats=self.stats,
                                          on_block=self.on_block, log=log)
        if decision is not None and decision.action == "block":
            self.stats["blocked_answers"] += 1
            return self.block.answer(query)
        reply = await (self._forward_tcp(data) if tcp else self._forward_udp(data))
        if reply is None:
            self.stats["servfail"] += 1
            return servfail(data)
        self.stats["forwarded"] += 1
        return reply

    async def _forward_udp(self, data: bytes) -> Optional[bytes]:
        loop = asyncio.get_running_loop()
        for ip, port in self.upstreams.current():
            sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect((ip, port))  # a connected socket takes datagrams from that address only
                await loop.sock_sendall(sock, data)
                deadline = loop.time() + self.limits.upstream_timeout
                while True:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise asyncio.TimeoutError()
                    reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
                    if reply_matches(data, reply):
                        return reply
                    self.stats["mismatched_replies"] += 1
            except asyncio.TimeoutError:
                self.stats["upstream_timeouts"] += 1
            except OSError:  # refused (nothing listens), unreachable
                self.stats["upstream_errors"] += 1
            finally:
                sock.close()
        return None

    async def _forward_tcp(self, data: bytes) -> Optional[bytes]:
        for ip, port in self.upstreams.current():
            writer = None
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port),
                                                        self.limits.upstream_timeout)
                writer.write(struct.pack("!H", len(data)) + data)
                n = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), self.limits.upstream_timeout))[0]
                reply = await asyncio.wait_for(reader.readexactly(n), self.limits.upstream_timeout)
                if reply_matches(data, reply):
                    return reply
                self.stats["mismatched_replies"] += 1
            except asyncio.TimeoutError:
                self.stats["upstream_timeouts"] += 1
            except (OSError, asyncio.IncompleteReadError):
                self.stats["upstream_errors"] += 1
            finally:
                if writer is not None:
                    writer.close()
        return None

    async def _tcp_client(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            if self._tcp_active >= self.limits.max_tcp_connections:
                self.stats["tcp_rejected"] += 1
                return
            self._tcp_active += 1
            self.stats["tcp_connections"] += 1
            try:
                while True:
                    head = await asyncio.wait_for(reader.readexactly(2), self.limits.tcp_idle_timeout)
                    n = struct.unpack("!H", head)[0]
                    data = await asyncio.wait_for(reader.readexactly(n), self.limits.tcp_idle_timeout)
                    self.stats["queries"] += 1
                    answer = await self.answer(data, tcp=True)
                    if answer is None:
                        return
                    writer.write(struct.pack("!H", len(answer)) + answer)
                    await asyncio.wait_for(writer.drain(), self.limits.tcp_idle_timeout)
            finally:
                self._tcp_active -= 1
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError, asyncio.CancelledError):
            pass
        except Exception as exc:
            log.error("internal error on a DNS TCP connection: %s", type(exc).__name__)
        finally:
            self._tasks.discard(task)
            writer.close()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
