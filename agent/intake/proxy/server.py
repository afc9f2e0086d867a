"""The built-in HTTP/1.1 proxy for gateways without Squid: explicit or transparent (Host header).

Owns client and origin connections, body relaying, limits and fail-open. It never hashes: image
bodies (agent.intake.sniff decides) are buffered up to ``max_scan_bytes`` and handed to
``inspector.inspect`` in a thread pool; every other body streams through in pieces and is never
held whole. CONNECT (HTTPS) is tunnelled without inspection: the proxy cannot see inside TLS and
does not try. Logs never carry the client's address or request line; they name the hosting host.

Transparent mode expects an nftables redirect of port 80 to this port (firmware/nftables/
redirect.nft) and routes by the Host header.

What closes the ways around the scan:
- Content-Encoding: origins are offered only gzip and deflate (agent.intake.proxy.coding); an
  encoded image is decoded, within max_scan_bytes of output, and the decoded bytes are hashed while
  the client gets the origin's bytes unchanged. Decoded output over max_scan_bytes (a gzip bomb, or
  a huge image) is a counted bypass like any image over the limit; an encoding we cannot decode on an
  image is counted (``undecodable``), logged with the host, and passed or 502'd (undecodable_images).
- Ranges: Range and If-Range are never forwarded, so the origin sends the whole body and the client
  gets a 200 (a legal answer to a Range request); an unsolicited 206 that is not the whole
  representation is refused with a 502 (``partial_refused``).
- Loops and upstreams: hosts are parsed strictly (http1.parse_authority) and resolved once; the
  addresses are checked (agent.intake.proxy.netpolicy) and connected to directly. This proxy's own
  address and port is a 508, and so is a request carrying our Via token; loopback, link-local and
  the gateway's own addresses are refused (403) unless allow_loopback_upstream.
- Clients: only the configured networks are served; per-address connection bounds, head and idle
  time-outs that shorten under pressure, and eviction of idle keep-alives keep slow clients from
  locking others out. Every buffered image byte (raw and decoded) is reserved against
  max_held_bytes before it is read; what does not fit passes unscanned (``over_budget``, logged).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import re
import secrets
import socket
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from agent.intake.blockpage import BlockPage
from agent.core.errors import ConfigError
from agent.intake.sniff import SNIFF_BYTES, should_scan, type_says_image
from agent.intake import Decision, host_of, lookup_fail_open
from agent.intake.streamserver import StreamIntakeServer, linger, relay
from agent.intake.http1 import (CRLF, HOP_BY_HOP, LAST_CHUNK, ChunkedDecoder, Head, HttpError, body_framing,
                               encode_chunk, parse_authority, parse_head, response_has_body)
from agent.intake.coding import BoundedDecoder, DecodeError, content_codings, decodable, offered_encodings
from agent.intake.proxy.netpolicy import DEFAULT_CLIENTS, ClientNetworks, normal_ip, upstream_refusal

log = logging.getLogger("gatewatch.proxy")

MODES = ("explicit", "transparent")
UNDECODABLE = ("pass", "block")
_COUNTERS = ("connections", "requests", "tunnels", "scanned", "blocked", "allowed", "passed_unscanned",
             "bypassed", "too_large", "over_budget", "errors", "rejected", "rejected_per_client",
             "refused_clients", "refused_upstreams", "loops", "timeouts", "head_timeouts", "idle_closed",
             "evicted_idle", "upstream_errors", "internal_errors", "decoded", "undecodable", "partial_refused", "ranges_stripped",
             "lookups", "lookup_errors", "lookup_timeouts", "names_blocked")
_PIECE = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes\s+([0-9]{1,15})-([0-9]{1,15})/([0-9]{1,15})\Z", re.I)


def host_addresses(fib_trie: str = "/proc/net/fib_trie", if_inet6: str = "/proc/net/if_inet6") -> list:
    """This box's own addresses (Linux): a gateway's admin pages listen there, so they are no upstream."""
    out = []
    try:
        with open(fib_trie, "r", encoding="ascii", errors="replace") as f:
            last = None
            for line in f:
                text = line.strip()
                if text.startswith(("|--", "+--")):
                    last = text[3:].split()[0] if text.startswith("|--") else None
                elif text.endswith("host LOCAL") and last:
                    ip = normal_ip(last)
                    if ip is not None and ip not in out:
                        out.append(ip)
    except OSError:
        pass
    try:
        with open(if_inet6, "r", encoding="ascii", errors="replace") as f:
            for line in f:
                field = line.split()[:1]
                if field and len(field[0]) == 32:
                    ip = normal_ip(":".join(field[0][i:i + 4] for i in range(0, 32, 4)))
                    if ip is not None and ip not in out:
                        out.append(ip)
    except OSError:
        pass
    return out


class ProxyLimits(NamedTuple):
    """Bounds for the proxy (bytes, counts, seconds)."""

    max_head_bytes: int = 32 * 1024
    max_scan_bytes: int = 16 * 1024 * 1024
    max_held_bytes: int = 64 * 1024 * 1024  # every buffered image byte (raw and decoded) of all connections
    max_connections: int = 256
    idle_timeout: float = 60.0  # waiting for the next request on a kept-alive connection
    read_timeout: float = 30.0
    connect_timeout: float = 10.0
    scan_timeout: float = 10.0
    connect_ports: Optional[Tuple[int, ...]] = (443,)  # CONNECT targets allowed (None: any port)
    max_connections_per_client: int = 32  # per client address (0: unbounded)
    head_timeout: float = 10.0  # a request head, from its first byte to its empty line
    pressure_fraction: float = 0.75  # beyond this share of max_connections, waits shorten:
    pressure_idle_timeout: float = 2.0
    pressure_head_timeout: float = 3.0


class _Close(Exception):
    """Stop serving this client connection."""


class _Reply(Exception):
    """Answer the client with an error status, then close. ``text`` goes to the client, not to logs."""

    def __init__(self, status: int, reason: str, text: str):
        super().__init__(reason)
        self.status, self.reason, self.text = status, reason, text


_REASONS = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 501: "Not Implemented", 502: "Bad Gateway",
            504: "Gateway Timeout", 508: "Loop Detected"}


def _bad(exc: HttpError) -> _Reply:
    status = exc.status if exc.status in _REASONS else 400
    return _Reply(status, _REASONS[status], str(exc))


class _Counted:
    """A StreamWriter that counts the bytes written to it (did an answer start going out?)."""

    def __init__(self, writer):
        self._writer = writer
        self.sent = 0

    def write(self, data) -> None:
        self.sent += len(data)
        self._writer.write(data)

    def __getattr__(self, name):
        return getattr(self._writer, name)

    def __hash__(self):
        return id(self._writer)

    def __eq__(self, other):
        return self is other


class Input:
    """A StreamReader with a push-back buffer: bytes read past one message stay for the next.

    (A chunked request body used to swallow the request pipelined after it.)
    """

    def __init__(self, stream: asyncio.StreamReader):
        self.stream = stream
        self.buf = bytearray()

    def unread(self, data: bytes) -> None:
        if data:
            self.buf[:0] = data

    async def read(self, n: int, timeout: float) -> bytes:
        if self.buf:
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        return await asyncio.wait_for(self.stream.read(n), timeout)


async def read_head(inp: Input, limit: int, idle_timeout, head_timeout, on_idle=None) -> Optional[bytes]:
    """Read one HTTP head (through the empty line); None at a clean EOF or when idle too long.

    ``idle_timeout`` and ``head_timeout`` are callables returning seconds (so that they can shrink
    while we wait, under pressure): the first bounds the wait for a head's first byte, the second the
    head from its first byte. ``on_idle(bool)`` is told when the wait for a first byte starts and ends.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    head_started = None
    try:
        while True:
            if inp.buf[:1] in (b"\r", b"\n"):
                stripped = inp.buf.lstrip(b"\r\n")  # empty lines before a request line are ignored
                del inp.buf[:len(inp.buf) - len(stripped)]
            idx = inp.buf.find(CRLF + CRLF)
            if idx >= 0:
                if idx + 4 > limit:
                    raise _Reply(431, _REASONS[431], "request head over %d bytes" % limit)
                raw = bytes(inp.buf[:idx + 4])
                del inp.buf[:idx + 4]
                return raw
            if len(inp.buf) > limit:
                raise _Reply(431, _REASONS[431], "request head over %d bytes" % limit)
            now = loop.time()
            if inp.buf:
                if head_started is None:
                    head_started = now
                    if on_idle:
                        on_idle(False)
                left = head_started + head_timeout() - now
                if left <= 0:
                    raise _Reply(408, _REASONS[408], "the request head took too long")
            else:
                if head_started is None and on_idle:
                    on_idle(True)
                left = started + idle_timeout() - now
                if left <= 0:
                    return None
            try:
                data = await asyncio.wait_for(inp.stream.read(65536), min(left, 0.5))
            except asyncio.TimeoutError:
                continue
            if not data:
                if inp.buf.strip():
                    raise _Reply(400, _REASONS[400], "incomplete request head")
                return None
            inp.buf += data
    finally:
        if on_idle and head_started is None:
            on_idle(False)


async def body_pieces(inp: Input, framing: Tuple[str, int], timeout: float):
    """Yield the decoded body after a head, per ``framing`` (from http1.body_framing), pieces <= 64 KB.

    Bytes after the body (a pipelined request) are pushed back into ``inp``.
    """
    kind, length = framing
    if kind == "length":
        left = length
        while left:
            data = await inp.read(min(left, _PIECE), timeout)
            if not data:
                raise ConnectionError("body ended %d bytes early" % left)
            left -= len(data)
            yield data
    elif kind == "chunked":
        decoder = ChunkedDecoder()
        while not decoder.done:
            data = await inp.read(_PIECE, timeout)
            if not data:
                raise ConnectionError("chunked body ended early")
            for piece in decoder.feed(data):
                yield piece
        inp.unread(decoder.trailing)
    elif kind == "close":
        while True:
            data = await inp.read(_PIECE, timeout)
            if not data:
                return
            yield data


class ProxyServer(StreamIntakeServer):
    """HTTP proxy intake. ``start(host, port)``, ``port``, ``close()``, ``stats``.

    ``on_block(decision, host)`` runs on the event loop after each block: keep it quick (queue slow
    work such as a firewall change elsewhere); its exceptions are logged and ignored.

    ``clients``: CIDRs whose hosts may use the proxy (default loopback, RFC 1918, ULA, link-local;
    None: anyone); others get a 403 and a close. ``allow_loopback_upstream``: let requests reach
    origins on loopback, link-local or the gateway's own listening address (tests, demos); off, they
    get a 403. A request naming this proxy's own address and port is always a 508.
    ``undecodable_images``: an image response whose Content-Encoding cannot be decoded (an origin
    ignoring our Accept-Encoding, a corrupt stream) is "pass"ed (default, fail-open, counted as
    undecodable + bypassed and logged with the host) or answered with a 502 ("block").
    """

    def __init__(self, inspector, *, mode: str = "explicit", limits: ProxyLimits = ProxyLimits(),
                 on_block: Optional[Callable[[Decision, str], None]] = None,
                 block_page: Optional[BlockPage] = None,
                 executor: Optional[concurrent.futures.Executor] = None,
                 clients: Optional[Sequence[str]] = DEFAULT_CLIENTS,
                 allow_loopback_upstream: bool = False,
                 undecodable_images: str = "pass"):
        if mode not in MODES:
            raise ConfigError("proxy mode must be one of %s, not %r" % (", ".join(MODES), mode))
        if undecodable_images not in UNDECODABLE:
            raise ConfigError("undecodable_images must be pass or block, not %r" % (undecodable_images,))
        self._init_intake(inspector, limits, on_block, block_page, executor, _COUNTERS)
        self.mode = mode
        self.clients = ClientNetworks(clients)
        self.allow_loopback_upstream = bool(allow_loopback_upstream)
        self.undecodable_images = undecodable_images
        self._listen: Tuple[str, int] = ("", 0)
        self._listen_addrs: List[tuple] = []
        self._via = "gatewatch-" + secrets.token_hex(6)  # loop token in the Via we add
        self._idle: dict = {}  # writer -> (idle since, done event) for connections waiting for a request

    @property
    def active_connections(self) -> int:
        """Client connections being served now."""
        return self._active

    @property
    def idle_connections(self) -> int:
        """Client connections waiting for their next request."""
        return len(self._idle)

    def gauges(self) -> dict:
        """What is held right now: connections (all, idle, distinct clients) and buffered bytes."""
        return {"connections": self._active, "idle": len(self._idle), "clients": len(self._per_client),
                "held_bytes": self.held, "held_peak": self.held_peak, "max_held_bytes": self.limits.max_held_bytes}

    async def start(self, host: str = "127.0.0.1", port: int = 3128) -> None:
        """Listen on ``host:port``."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="proxy-scan")
        self._server = await asyncio.start_server(self._accept, host, port, limit=self.limits.max_head_bytes,
                                                  backlog=1024)
        self._listen = (host, self.port)
        addrs = []
        for sock in self._server.sockets:
            name = sock.getsockname()
            ip = normal_ip(name[0])
            if ip is not None:
                addrs.append((ip, name[1]))
                if ip.is_unspecified:  # listening everywhere: every address of this box is ours
                    addrs.extend((a, name[1]) for a in host_addresses() if a.version == ip.version)
        self._listen_addrs = addrs

    log = log  # the module logger, used by the shared fail-open scan

    def busy_response(self) -> bytes:
        """HTTP 503 beyond max_connections."""
        return _error_bytes(503, "Service Unavailable", "too many connections, try again")

    def refuse_client(self, ip: Optional[str]) -> Optional[bytes]:
        if self.clients.allows(ip):
            return None
        log.info("refused a connection from outside the configured client networks")
        return _error_bytes(403, "Forbidden", "this proxy serves the local network only")

    async def make_room(self) -> bool:
        """All slots taken: close the longest-idle keep-alive connection, if there is one."""
        if not self._idle:
            return False
        writer, (since, done) = min(self._idle.items(), key=lambda kv: kv[1][0])
        self._idle.pop(writer, None)
        self.stats["evicted_idle"] += 1
        try:
            writer.close()
        except Exception:
            pass
        try:
            await asyncio.wait_for(done.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        return True

    def _idle_timeout(self) -> float:
        return self.limits.pressure_idle_timeout if self.under_pressure else self.limits.idle_timeout

    def _head_timeout(self) -> float:
        return self.limits.pressure_head_timeout if self.under_pressure else self.limits.head_timeout

    async def serve_connection(self, reader, writer) -> None:
        """One client connection: requests in order until it closes."""
        done = asyncio.Event()
        try:
            await self._serve(Input(reader), _Counted(writer), done)
        finally:
            self._idle.pop(writer, None)
            done.set()

    async def _serve(self, inp: Input, writer, done) -> None:
        loop = asyncio.get_running_loop()

        def on_idle(idle: bool) -> None:
            if idle:
                self._idle.setdefault(writer, (loop.time(), done))
            else:
                self._idle.pop(writer, None)

        try:
            while True:
                raw = await read_head(inp, self.limits.max_head_bytes, self._idle_timeout, self._head_timeout,
                                      on_idle)
                if raw is None:
                    if not inp.buf:
                        self.stats["idle_closed"] += 1
                    return
                try:
                    req = parse_head(raw, "request")
                except HttpError as exc:
                    raise _bad(exc)
                self.stats["requests"] += 1
                keep = await self._exchange(req, inp, writer)
                if not keep:
                    return
        except _Reply as exc:
            if exc.status == 408:
                self.stats["head_timeouts"] += 1
            else:
                self.stats["errors"] += 1
            log.info("answered %d %s", exc.status, exc.reason)  # never the text: it quotes the client
            try:
                writer.write(_error_bytes(exc.status, exc.reason, exc.text))
                await asyncio.wait_for(writer.drain(), 5)
                await linger(inp.stream, writer)
            except (Exception, asyncio.CancelledError):
                pass
        except asyncio.TimeoutError:
            self.stats["timeouts"] += 1
        except (ConnectionError, OSError, _Close, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a bug of ours: counted and logged without the message (it may quote the client)
            self.stats["internal_errors"] += 1
            log.error("internal error serving a connection: %s", type(exc).__name__)

    # -- one request/response --

    def _target(self, req: Head) -> Tuple[str, int, str, str, bool]:
        """(host, port, origin-form path, URL, absolute-form) from the request, per mode."""
        method, target, _ = req.start
        hosts = [v for k, v in req.fields if k.lower() == "host"]
        if len(hosts) > 1:
            raise _Reply(400, "Bad Request", "more than one Host header")
        host_field = None
        if hosts:
            try:
                host_field = parse_authority(hosts[0])
            except HttpError as exc:
                raise _Reply(400, "Bad Request", "bad Host header: %s" % exc)
        low = target[:8].lower()
        if low.startswith("http://") or low.startswith("https://"):
            if self.mode == "transparent":
                raise _Reply(400, "Bad Request", "absolute-form request to a transparent proxy")
            if not low.startswith("http://"):
                raise _Reply(400, "Bad Request", "only http:// URLs are proxied; HTTPS goes through CONNECT")
            rest = target[7:]
            cut = len(rest)
            for sep in "/?#":
                i = rest.find(sep)
                if 0 <= i < cut:
                    cut = i
            authority, path = rest[:cut], rest[cut:]
            if "@" in authority:
                raise _Reply(400, "Bad Request", "user information in the URL is not accepted")
            try:
                host, port = parse_authority(authority)
            except HttpError as exc:
                raise _Reply(400, "Bad Request", "bad URL host: %s" % exc)
            path = path.split("#", 1)[0]
            if not path.startswith("/"):
                path = "/" + path
            absolute = True
        elif target.startswith("/"):
            if host_field is None:
                raise _Reply(400, "Bad Request", "request without a Host header")
            host, port = host_field
            path = target.split("#", 1)[0]
            absolute = False
        else:
            raise _Reply(400, "Bad Request", "unsupported request target")
        shown = "[%s]" % host if ":" in host else host
        url = "http://%s%s%s" % (shown, "" if port == 80 else ":%d" % port, path)
        return host, port, path, url, absolute

    async def _resolve(self, host: str, port: int) -> List[tuple]:
        """The (family, address) pairs for ``host`` (one lookup; connections go to these addresses)."""
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                       self.limits.connect_timeout)
        seen, out = set(), []
        for family, _, _, _, sockaddr in infos:
            if sockaddr[0] not in seen:
                seen.add(sockaddr[0])
                out.append((family, sockaddr[0]))
        return out

    async def _open_upstream(self, host: str, port: int):
        """Resolve, refuse what policy refuses (_Reply), connect to the first address that answers."""
        try:
            addrs = await self._resolve(host, port)
        except (OSError, UnicodeError, ValueError, asyncio.TimeoutError) as exc:
            self.stats["upstream_errors"] += 1
            log.info("cannot resolve %s: %s", host, type(exc).__name__)
            raise _Reply(502, "Bad Gateway", "the origin server's name could not be resolved")
        allowed, refusal = [], None
        for family, addr in addrs:
            why = upstream_refusal(normal_ip(addr), port, self._listen_addrs, self.allow_loopback_upstream)
            if why is None:
                allowed.append(addr)
            elif refusal is None or why[0] == 508:
                refusal = why
        if not allowed:
            status, text = refusal or (502, "the origin server's name has no address")
            self.stats["loops" if status == 508 else "refused_upstreams"] += 1
            log.info("refused an upstream connection to %s: %s", host, text)
            raise _Reply(status, _REASONS.get(status, "Forbidden"), text)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.connect_timeout
        last = None
        for addr in allowed:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                return await asyncio.wait_for(self._connect(addr, port), left)
            except (OSError, asyncio.TimeoutError) as exc:
                last = exc
        self.stats["upstream_errors"] += 1
        log.info("cannot reach %s: %s", host, type(last).__name__ if last else "TimeoutError")
        raise _Reply(502, "Bad Gateway", "the origin server could not be reached")

    async def _connect(self, addr: str, port: int):
        """One TCP connection to a checked address: (reader, writer). The fuzz harness replaces it."""
        return await asyncio.open_connection(addr, port, limit=self.limits.max_head_bytes)

    async def _exchange(self, req: Head, inp: Input, writer) -> bool:
        method, target, version = req.start
        if any(self._via in v for k, v in req.fields if k.lower() == "via"):
            self.stats["loops"] += 1
            raise _Reply(508, "Loop Detected", "the request came back through this proxy")
        if method == "CONNECT":
            await self._tunnel(req, inp, writer)
            return False
        host, port, path, url, absolute = self._target(req)
        client_keep = version == "HTTP/1.1" and not req.has_token("connection", "close")
        try:
            req_framing = body_framing(req, request=True)
        except HttpError as exc:
            raise _bad(exc)
        if await self._listed("http", "inspect_url", url, host):
            # blocked before anything is fetched; a request body we did not read ends the connection
            keep = client_keep and req_framing == ("length", 0)
            head, page = self.block_page.response(req, url, "", version="HTTP/1.1")
            head = head.replace(add=(("Connection", "keep-alive" if keep else "close"),))
            writer.write(head.serialize() + page)
            await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
            return keep
        up_reader, up_writer = await self._open_upstream(host, port)
        up = Input(up_reader)
        sent_before = writer.sent
        try:
            if req.has_token("expect", "100-continue"):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            sent_before = writer.sent
            drop = set(HOP_BY_HOP) | {"expect", "content-length", "range", "if-range", "accept-encoding"}
            drop |= {t.lower() for t in req.get_all("connection")}
            drop.add("host")  # the origin gets the authority we connect to (RFC 9112 3.2.2), normalised
            add = list(_framing_fields(req_framing))
            add.append(("Host", _authority(host, port)))
            if req.get("range") is not None:
                self.stats["ranges_stripped"] += 1  # the whole body comes back: a 200 answers a Range too
            offered = offered_encodings(req.get("accept-encoding"))
            if offered is not None:
                add.append(("Accept-Encoding", offered))
            add.append(("Via", "1.1 " + self._via))
            add.append(("Connection", "close"))
            out = Head((method, path, "HTTP/1.1"), req.fields).replace(drop=drop, add=tuple(add))
            up_writer.write(out.serialize())
            try:
                async for piece in body_pieces(inp, req_framing, self.limits.read_timeout):
                    up_writer.write(encode_chunk(piece) if req_framing[0] == "chunked" else piece)
                    await asyncio.wait_for(up_writer.drain(), self.limits.read_timeout)
            except HttpError as exc:
                raise _bad(exc)
            if req_framing[0] == "chunked":
                up_writer.write(LAST_CHUNK)
            await asyncio.wait_for(up_writer.drain(), self.limits.read_timeout)
            while True:
                try:
                    raw = await read_head(up, self.limits.max_head_bytes, lambda: self.limits.read_timeout,
                                          lambda: self.limits.read_timeout)
                except _Reply as exc:  # the origin's head: too big, too slow or cut short
                    self.stats["upstream_errors"] += 1
                    if exc.status == 408:
                        raise _Reply(504, "Gateway Timeout", "the origin did not answer in time")
                    raise _Reply(502, "Bad Gateway", "the origin sent a bad response head")
                if raw is None:
                    raise ConnectionError("origin closed before answering")
                try:
                    res = parse_head(raw, "response")
                except HttpError:
                    raise _Reply(502, "Bad Gateway", "the origin sent a malformed response")
                if 100 <= res.status < 200 and res.status != 101:
                    continue  # interim answers: we already told the client to continue
                break
            if res.status == 101:
                raise _Reply(502, "Bad Gateway", "the origin switched protocols, which this proxy does not relay")
            return await self._respond(req, res, url, up, writer, client_keep)
        except (ConnectionError, HttpError, asyncio.IncompleteReadError, DecodeError) as exc:
            self.stats["upstream_errors"] += 1
            log.info("origin %s failed: %s", host, type(exc).__name__)
            if writer.sent == sent_before:  # nothing of an answer went out yet: say what happened
                raise _Reply(502, "Bad Gateway", "the origin server failed before answering")
            raise _Close()
        finally:
            up_writer.close()

    async def _respond(self, req: Head, res: Head, url: str, up: Input, writer, client_keep: bool) -> bool:
        method = req.start[0]
        host = host_of(url)
        if not response_has_body(method, res.status):
            writer.write(_client_head(res, ("none", 0), client_keep).serialize())
            await writer.drain()
            return client_keep
        try:
            framing = body_framing(res)
        except HttpError:
            raise _Reply(502, "Bad Gateway", "the origin sent a bad or conflicting body length")
        if res.status == 206 and not _whole_range(res, framing):
            # We never forward Range, so a partial answer is the origin's own idea: a part of an image
            # cannot be hashed as the image, so it does not pass.
            self.stats["partial_refused"] += 1
            log.warning("refused a partial (206) response from %s", host)
            raise _Reply(502, "Bad Gateway", "the origin sent a partial response to a whole-body request")
        if framing[0] == "close":
            client_keep = False
        pieces = body_pieces(up, framing, self.limits.read_timeout)
        codings = content_codings(res.get("content-encoding"))
        image_type = type_says_image(res.media_type())
        if not decodable(codings):
            self.stats["undecodable"] += 1
            if image_type:
                return await self._undecodable(res, framing, b"", pieces, writer, client_keep, host,
                                               "Content-Encoding %s" % ",".join(codings)[:40])
            log.info("response from %s in Content-Encoding %s passed unscanned", host, ",".join(codings)[:40])
            self.stats["passed_unscanned"] += 1
            await self._stream(res, framing, b"", pieces, writer, client_keep)
            return client_keep
        decoder = BoundedDecoder(codings[0], self.limits.max_scan_bytes) if codings else None
        return await self._image_or_not(req, res, url, framing, pieces, decoder, writer, client_keep)

    async def _undecodable(self, res, framing, have, pieces, writer, client_keep, host, what, sent=None) -> bool:
        self.stats["bypassed"] += 1
        if self.undecodable_images == "block":
            log.warning("image from %s in %s cannot be scanned; refused (502)", host, what)
            raise _Reply(502, "Bad Gateway", "an image the gateway cannot decode to scan")
        log.warning("image from %s in %s cannot be scanned; passed unscanned (fail-open)", host, what)
        await self._stream(res, framing, have, pieces, writer, client_keep, sent)
        return client_keep

    async def _image_or_not(self, req, res, url, framing, pieces, decoder, writer, client_keep) -> bool:
        """Sniff, then buffer and scan an image within the budget, or stream anything else."""
        host = host_of(url)
        raw = io.BytesIO()  # what the origin sent (relayed as is); getvalue() hands it over without a copy
        plain = io.BytesIO() if decoder is not None else raw  # what we hash
        reserved = 0
        over = None  # why the image is not scanned
        ended = False
        try:
            async def next_piece():
                """Reserve before reading; None at the end of the body or when the budget says no."""
                nonlocal reserved, over, ended
                want = _PIECE
                if framing[0] == "length":
                    want = max(0, min(_PIECE, framing[1] - raw.tell()))
                if not self.reserve(want):
                    over = over or "budget"
                    return None
                try:
                    piece = await pieces.__anext__()
                except StopAsyncIteration:
                    ended = True
                    piece = None
                except BaseException:
                    self.release(want)
                    raise
                self.release(want - (len(piece) if piece else 0))
                if piece:
                    reserved += len(piece)
                    raw.write(piece)
                return piece

            def decode() -> None:
                """Pull decoded bytes into ``plain``, reserving before each pull."""
                nonlocal reserved, over
                while True:
                    if not self.reserve(_PIECE):
                        over = over or "budget"
                        return
                    try:
                        out = decoder.pull(_PIECE)
                    except BaseException:
                        self.release(_PIECE)
                        raise
                    self.release(_PIECE - len(out))
                    reserved += len(out)
                    plain.write(out)
                    if decoder.over:
                        over = over or "decoded"
                        return
                    if not out:
                        return

            def hand_over() -> list:
                """The buffered raw bytes in a box that _stream empties; the reservation ends once sent."""
                nonlocal raw, plain
                box = [raw.getvalue()]
                raw = plain = None
                return box

            def sent() -> None:
                nonlocal reserved
                self.release(reserved)
                reserved = 0

            # 1. enough decoded bytes to sniff
            while plain.tell() < SNIFF_BYTES and not ended and over is None:
                piece = await next_piece()
                if piece and decoder is not None:
                    decoder.push(piece)
                    try:
                        decode()
                    except DecodeError:
                        over = "corrupt"
            with plain.getbuffer() as view:
                head_bytes = bytes(view[:SNIFF_BYTES])
            if over == "budget":  # not even the first bytes fit: nothing is sniffed or scanned (counted)
                return await self._pass_over(res, framing, hand_over(), sent, over, pieces, writer, client_keep,
                                             host)
            if over == "corrupt" or not should_scan(res.media_type(), head_bytes):
                if over == "corrupt" and type_says_image(res.media_type()):
                    self.stats["undecodable"] += 1
                    return await self._undecodable(res, framing, hand_over(), pieces, writer, client_keep,
                                                   host, "a corrupt %s stream" % decoder.coding, sent)
                if over == "corrupt":
                    self.stats["undecodable"] += 1
                self.stats["passed_unscanned"] += 1
                await self._stream(res, framing, hand_over(), pieces, writer, client_keep, sent)
                return client_keep
            # 2. an image: the whole body, within max_scan_bytes and the server-wide budget
            if framing[0] == "length" and framing[1] > self.limits.max_scan_bytes:
                over = over or "size"
            while over is None and not ended:
                piece = await next_piece()
                if piece is None:
                    break
                if raw.tell() > self.limits.max_scan_bytes:
                    over = "size"
                    break
                if decoder is not None:
                    decoder.push(piece)
                    try:
                        decode()
                    except DecodeError:
                        over = "corrupt"
            if over is None and decoder is not None and not decoder.complete:
                over = "corrupt"
            if over is not None:
                return await self._pass_over(res, framing, hand_over(), sent, over, pieces, writer, client_keep,
                                             host)
            if decoder is not None:
                self.stats["decoded"] += 1
            body = plain.getvalue()
            decision = await self.inspect(body, res.get("content-type"), url)
            del body
            if decision is not None and decision.action == "block":
                head, page = self.block_page.response(req, url, res.media_type(), version="HTTP/1.1")
                head = head.replace(add=(("Connection", "keep-alive" if client_keep else "close"),))
                writer.write(head.serialize() + page)
                await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
            else:
                data = raw.getvalue()
                writer.write(_client_head(res, ("length", len(data)), client_keep).serialize())
                await self._send(writer, data)
            return client_keep
        finally:
            raw = plain = None
            self.release(reserved)

    async def _pass_over(self, res, framing, box, sent, over, pieces, writer, client_keep, host) -> bool:
        """An image we do not scan: counted and logged (host only), then relayed unscanned."""
        self.stats["bypassed"] += 1
        if over == "corrupt":
            self.stats["undecodable"] += 1
            if self.undecodable_images == "block":
                log.warning("image from %s in a corrupt Content-Encoding; refused (502)", host)
                raise _Reply(502, "Bad Gateway", "an image the gateway cannot decode to scan")
            log.warning("image from %s in a corrupt or truncated Content-Encoding; passed unscanned", host)
        elif over == "budget":
            self.stats["over_budget"] += 1
            log.warning("image from %s passed unscanned: the buffer budget (%d bytes) is in use",
                        host, self.limits.max_held_bytes)
        else:
            self.stats["too_large"] += 1
            log.info("image from %s over the scan limit (%d bytes%s); passed unscanned", host,
                     self.limits.max_scan_bytes, ", decoded" if over == "decoded" else "")
        await self._stream(res, framing, box, pieces, writer, client_keep, sent)
        return client_keep

    async def _send(self, writer, data: bytes) -> None:
        """Write ``data`` in pieces, draining each: the transport never holds a second copy of it."""
        view = memoryview(data)
        for i in range(0, len(view), _PIECE):
            writer.write(view[i:i + _PIECE])
            await asyncio.wait_for(writer.drain(), self.limits.read_timeout)

    async def _stream(self, res: Head, framing, have, pieces, writer, client_keep: bool, sent=None) -> None:
        """Send the head and the body piece by piece, never holding it whole.

        ``have`` (bytes already read, or a one-item list that is emptied so they can be freed) goes
        first; ``sent()`` is called once they are out (it ends their budget reservation).
        """
        chunked = framing[0] == "chunked"
        writer.write(_client_head(res, framing, client_keep).serialize())
        if isinstance(have, list):
            have = have.pop() if have else b""
        if have:
            if chunked:
                writer.write(encode_chunk(have))
                await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
            else:
                await self._send(writer, have)
        have = None
        if sent is not None:
            sent()
        async for piece in pieces:
            writer.write(encode_chunk(piece) if chunked else piece)
            await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
        if chunked:
            writer.write(LAST_CHUNK)
        await asyncio.wait_for(writer.drain(), self.limits.read_timeout)

    async def _listed(self, what: str, check, arg, host: str) -> bool:
        """Whether the url/domain lists block ``arg`` (a URL, or a CONNECT host); faults pass, counted."""
        decision = await lookup_fail_open(self.inspector, check, self._executor, arg, what=what, host=host_of("//" + host),
                                          timeout=self.limits.scan_timeout, stats=self.stats,
                                          on_block=self.on_block, log=log)
        return decision is not None and decision.action == "block"

    async def _tunnel(self, req: Head, inp: Input, writer) -> None:
        """CONNECT host:port: a blind byte pipe (TLS is not inspected)."""
        if self.mode != "explicit":
            raise _Reply(405, "Method Not Allowed", "CONNECT needs the explicit proxy mode")
        target = req.start[1]
        if target.startswith("[") and "]:" not in target or not target.startswith("[") and ":" not in target:
            raise _Reply(400, "Bad Request", "CONNECT needs host:port")
        try:
            host, port = parse_authority(target, default_port=0)
        except HttpError as exc:
            raise _Reply(400, "Bad Request", "CONNECT needs host:port: %s" % exc)
        if self.limits.connect_ports is not None and port not in self.limits.connect_ports:
            raise _Reply(403, "Forbidden", "CONNECT is allowed to ports %s only"
                         % ", ".join(str(p) for p in self.limits.connect_ports))
        if await self._listed("connect", "inspect_name", host, host):
            raise _Reply(403, "Forbidden", "this site is blocked: it is on a list of known child sexual abuse material")
        up_reader, up_writer = await self._open_upstream(host, port)
        self.stats["tunnels"] += 1
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()

        try:
            await asyncio.gather(relay(lambda: inp.read(_PIECE, self.limits.idle_timeout), up_writer,
                                       self.limits.idle_timeout),
                                 relay(lambda: asyncio.wait_for(up_reader.read(_PIECE), self.limits.idle_timeout),
                                       writer, self.limits.idle_timeout))
        finally:
            up_writer.close()


def _authority(host: str, port: int) -> str:
    shown = "[%s]" % host if ":" in host else host
    return shown if port == 80 else "%s:%d" % (shown, port)


def _whole_range(res: Head, framing) -> bool:
    """Whether a 206 carries the whole representation (Content-Range bytes 0-(N-1)/N)."""
    m = _CONTENT_RANGE.match((res.get("content-range") or "").strip())
    if not m:
        return False
    first, last, total = (int(g) for g in m.groups())
    return first == 0 and last + 1 == total and (framing[0] != "length" or framing[1] == total)


def _framing_fields(framing) -> tuple:
    kind, length = framing
    if kind == "chunked":
        return (("Transfer-Encoding", "chunked"),)
    if kind == "length" and length:
        return (("Content-Length", str(length)),)
    return ()


def _client_head(res: Head, framing, keep: bool) -> Head:
    """The origin's response head for the client: hop-by-hop fields replaced, framing as we send it."""
    kind, length = framing
    add = []
    if kind == "chunked":
        add.append(("Transfer-Encoding", "chunked"))
    elif kind == "length":
        add.append(("Content-Length", str(length)))
    add.append(("Connection", "keep-alive" if keep else "close"))
    drop = set(HOP_BY_HOP)
    drop |= {t.lower() for t in res.get_all("connection")}
    if kind != "none":
        drop.add("content-length")
    return Head(("HTTP/1.1", res.start[1], res.start[2]), res.fields).replace(drop=drop, add=tuple(add))


def _error_bytes(status: int, reason: str, text: str) -> bytes:
    body = ("%d %s: %s\n" % (status, reason, text)).encode("utf-8", "replace")
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, reason.encode(), len(body))) + body
