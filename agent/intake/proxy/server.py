"""The built-in HTTP/1.1 proxy for gateways without Squid: explicit or transparent (Host header).

Owns client and origin connections, body relaying, limits and fail-open. It never hashes: image
bodies (agent.intake.sniff decides) are buffered up to ``max_scan_bytes`` and handed to
``inspector.inspect`` in a thread pool; every other body streams through in pieces and is never
held whole. CONNECT (HTTPS) is tunnelled without inspection: the proxy cannot see inside TLS and
does not try. Logs never carry the client's address or request line; they name the hosting host.

Transparent mode expects an nftables redirect of port 80 to this port (firmware/nftables/
redirect.nft) and routes by the Host header; requests naming the proxy itself are refused so a
misconfigured redirect cannot loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Callable, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from agent.intake.blockpage import BlockPage
from agent.core.errors import ConfigError
from agent.intake.sniff import SNIFF_BYTES, should_scan
from agent.intake import Decision, host_of
from agent.intake.streamserver import StreamIntakeServer, linger
from agent.intake.http1 import (CRLF, HOP_BY_HOP, LAST_CHUNK, ChunkedDecoder, Head, HttpError, body_framing,
                               encode_chunk, parse_head, response_has_body)

log = logging.getLogger("gatewatch.proxy")

MODES = ("explicit", "transparent")
_COUNTERS = ("connections", "requests", "tunnels", "scanned", "blocked", "allowed", "passed_unscanned",
             "bypassed", "too_large", "errors", "rejected", "timeouts", "upstream_errors")
_PIECE = 64 * 1024


class ProxyLimits(NamedTuple):
    """Bounds for the proxy (bytes, counts, seconds)."""

    max_head_bytes: int = 32 * 1024
    max_scan_bytes: int = 16 * 1024 * 1024
    max_held_bytes: int = 64 * 1024 * 1024  # all connections' buffered images together; beyond: pass
    max_connections: int = 256
    idle_timeout: float = 60.0
    read_timeout: float = 30.0
    connect_timeout: float = 10.0
    scan_timeout: float = 10.0
    connect_ports: Optional[Tuple[int, ...]] = (443,)  # CONNECT targets allowed (None: any port)


class _Close(Exception):
    """Stop serving this client connection."""


class _Reply(Exception):
    """Answer the client with an error status, then close."""

    def __init__(self, status: int, reason: str, text: str):
        super().__init__(text)
        self.status, self.reason, self.text = status, reason, text



async def read_head(reader: asyncio.StreamReader, limit: int, timeout: float) -> Optional[bytes]:
    """Read one HTTP head (through the empty line) within ``timeout``; None at a clean EOF."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(CRLF + CRLF), timeout)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _Reply(400, "Bad Request", "incomplete request head")
    except asyncio.LimitOverrunError:
        raise _Reply(431, "Request Header Fields Too Large", "request head over %d bytes" % limit)
    if len(raw) > limit:
        raise _Reply(431, "Request Header Fields Too Large", "request head over %d bytes" % limit)
    return raw.lstrip(b"\r\n")


async def body_pieces(reader: asyncio.StreamReader, framing: Tuple[str, int], timeout: float):
    """Yield the decoded body after a head, per ``framing`` (from http1.body_framing)."""
    kind, length = framing
    if kind == "length":
        left = length
        while left:
            data = await asyncio.wait_for(reader.read(min(left, _PIECE)), timeout)
            if not data:
                raise ConnectionError("body ended %d bytes early" % left)
            left -= len(data)
            yield data
    elif kind == "chunked":
        decoder = ChunkedDecoder()
        while not decoder.done:
            data = await asyncio.wait_for(reader.read(_PIECE), timeout)
            if not data:
                raise ConnectionError("chunked body ended early")
            for piece in decoder.feed(data):
                yield piece
    else:
        while True:
            data = await asyncio.wait_for(reader.read(_PIECE), timeout)
            if not data:
                return
            yield data


class ProxyServer(StreamIntakeServer):
    """HTTP proxy intake. ``start(host, port)``, ``port``, ``close()``, ``stats``.

    ``on_block(decision, host)`` runs on the event loop after each block: keep it quick (queue slow
    work such as a firewall change elsewhere); its exceptions are logged and ignored.
    """

    def __init__(self, inspector, *, mode: str = "explicit", limits: ProxyLimits = ProxyLimits(),
                 on_block: Optional[Callable[[Decision, str], None]] = None,
                 block_page: Optional[BlockPage] = None,
                 executor: Optional[concurrent.futures.Executor] = None):
        if mode not in MODES:
            raise ConfigError("proxy mode must be one of %s, not %r" % (", ".join(MODES), mode))
        self._init_intake(inspector, limits, on_block, block_page, executor, _COUNTERS)
        self.mode = mode
        self._listen: Tuple[str, int] = ("", 0)

    @property
    def active_connections(self) -> int:
        """Client connections being served now."""
        return self._active

    async def start(self, host: str = "127.0.0.1", port: int = 3128) -> None:
        """Listen on ``host:port``."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="proxy-scan")
        self._server = await asyncio.start_server(self._accept, host, port, limit=self.limits.max_head_bytes,
                                                  backlog=1024)
        self._listen = (host, self.port)

    log = log  # the module logger, used by the shared fail-open scan

    def busy_response(self) -> bytes:
        """HTTP 503 beyond max_connections."""
        return _error_bytes(503, "Service Unavailable", "too many connections, try again")

    async def serve_connection(self, reader, writer) -> None:
        """One client connection: requests in order until it closes."""
        await self._serve(reader, writer)

    async def _serve(self, reader, writer) -> None:
        try:
            while True:
                raw = await read_head(reader, self.limits.max_head_bytes, self.limits.idle_timeout)
                if raw is None:
                    return
                try:
                    req = parse_head(raw, "request")
                except HttpError as exc:
                    raise _Reply(400, "Bad Request", str(exc))
                self.stats["requests"] += 1
                keep = await self._exchange(req, reader, writer)
                if not keep:
                    return
        except _Reply as exc:
            self.stats["errors"] += 1
            log.info("answered %d: %s", exc.status, exc.text)
            try:
                writer.write(_error_bytes(exc.status, exc.reason, exc.text))
                await asyncio.wait_for(writer.drain(), 5)
                await linger(reader, writer)
            except (Exception, asyncio.CancelledError):
                pass
        except asyncio.TimeoutError:
            self.stats["timeouts"] += 1
        except (ConnectionError, OSError, _Close, asyncio.IncompleteReadError):
            pass

    # -- one request/response --

    def _target(self, req: Head) -> Tuple[str, int, str, str]:
        """(host, port, origin-form path, URL) from the request, per mode."""
        method, target, _ = req.start
        if target.startswith("http://") or target.startswith("https://"):
            if self.mode == "transparent":
                raise _Reply(400, "Bad Request", "absolute-form request to a transparent proxy")
            parts = urlsplit(target)
            if parts.scheme != "http":
                raise _Reply(400, "Bad Request", "only http:// URLs are proxied; HTTPS goes through CONNECT")
            host, port = parts.hostname, parts.port or 80
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
        elif target.startswith("/"):
            hostport = req.get("host")
            if not hostport:
                raise _Reply(400, "Bad Request", "request without a Host header")
            parts = urlsplit("http://" + hostport)
            host, port, path = parts.hostname, parts.port or 80, target
        else:
            raise _Reply(400, "Bad Request", "unsupported request target")
        if not host:
            raise _Reply(400, "Bad Request", "request without a host")
        if port == self._listen[1] and host in ("127.0.0.1", "localhost", "::1", self._listen[0]):
            raise _Reply(508, "Loop Detected", "the request names this proxy itself")
        url = "http://%s%s%s" % (host if ":" not in host else "[%s]" % host, "" if port == 80 else ":%d" % port, path)
        return host, port, path, url

    async def _exchange(self, req: Head, reader, writer) -> bool:
        method, target, version = req.start
        if method == "CONNECT":
            await self._tunnel(req, reader, writer)
            return False
        host, port, path, url = self._target(req)
        client_keep = version == "HTTP/1.1" and not req.has_token("connection", "close")
        try:
            req_framing = body_framing(req)
        except HttpError as exc:
            raise _Reply(400, "Bad Request", str(exc))
        if req_framing[0] == "close":  # a request body is never delimited by close
            req_framing = ("length", 0)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                          self.limits.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.stats["upstream_errors"] += 1
            log.info("cannot reach %s: %s", host, type(exc).__name__)
            raise _Reply(502, "Bad Gateway", "the origin server could not be reached")
        try:
            if req.has_token("expect", "100-continue"):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            out = Head((method, path, "HTTP/1.1"), req.fields).replace(
                drop=HOP_BY_HOP | {"expect", "content-length"},
                add=_framing_fields(req_framing) + (("Connection", "close"),))
            up_writer.write(out.serialize())
            async for piece in body_pieces(reader, req_framing, self.limits.read_timeout):
                up_writer.write(encode_chunk(piece) if req_framing[0] == "chunked" else piece)
                await up_writer.drain()
            if req_framing[0] == "chunked":
                up_writer.write(LAST_CHUNK)
            await up_writer.drain()
            while True:
                raw = await read_head(up_reader, self.limits.max_head_bytes, self.limits.read_timeout)
                if raw is None:
                    raise ConnectionError("origin closed before answering")
                try:
                    res = parse_head(raw, "response")
                except HttpError:
                    raise _Reply(502, "Bad Gateway", "the origin sent a malformed response")
                if 100 <= res.status < 200 and res.status != 101:
                    continue  # interim answers: we already told the client to continue
                break
            return await self._respond(req, res, url, up_reader, writer, client_keep)
        except (ConnectionError, HttpError, asyncio.IncompleteReadError) as exc:
            self.stats["upstream_errors"] += 1
            log.info("origin %s failed: %s", host, exc)
            raise _Close()
        finally:
            up_writer.close()

    async def _respond(self, req: Head, res: Head, url: str, up_reader, writer, client_keep: bool) -> bool:
        method = req.start[0]
        if not response_has_body(method, res.status):
            writer.write(_client_head(res, ("none", 0), client_keep).serialize())
            await writer.drain()
            return client_keep
        try:
            framing = body_framing(res)
        except HttpError:
            raise _Reply(502, "Bad Gateway", "the origin sent conflicting body lengths")
        if framing[0] == "close":
            client_keep = False
        pieces = body_pieces(up_reader, framing, self.limits.read_timeout)
        first = bytearray()
        async for piece in pieces:
            first += piece
            if len(first) >= SNIFF_BYTES:
                break
        if not first or not should_scan(res.media_type(), bytes(first[:SNIFF_BYTES])):
            self.stats["passed_unscanned"] += 1
            await self._stream(res, framing, bytes(first), pieces, writer, client_keep)
            return client_keep
        body = first
        held = len(body)
        self.held += held
        try:
            over = len(body) > self.limits.max_scan_bytes or self.held > self.limits.max_held_bytes
            if not over:
                async for piece in pieces:
                    body += piece
                    held += len(piece)
                    self.held += len(piece)
                    if len(body) > self.limits.max_scan_bytes or self.held > self.limits.max_held_bytes:
                        over = True
                        break
            return await self._decide(req, res, url, framing, body, over, pieces, writer, client_keep)
        finally:
            self.held -= held

    async def _decide(self, req, res, url, framing, body, over, pieces, writer, client_keep) -> bool:
        if over:
            self.stats["too_large"] += 1
            self.stats["bypassed"] += 1
            log.info("image from %s over the scan limits (%d bytes, %d held in all); passed unscanned",
                     host_of(url), len(body), self.held)
            await self._stream(res, framing, bytes(body), pieces, writer, client_keep)
            return client_keep
        decision = await self.inspect(bytes(body), res.get("content-type"), url)
        if decision is not None and decision.action == "block":
            head, page = self.block_page.response(req, url, res.media_type(), version="HTTP/1.1")
            head = head.replace(add=(("Connection", "keep-alive" if client_keep else "close"),))
            writer.write(head.serialize() + page)
        else:
            writer.write(_client_head(res, ("length", len(body)), client_keep).serialize() + bytes(body))
        await writer.drain()
        return client_keep

    async def _stream(self, res: Head, framing, have: bytes, pieces, writer, client_keep: bool) -> None:
        """Send the head and the body piece by piece, never holding it whole."""
        chunked = framing[0] == "chunked"
        writer.write(_client_head(res, framing, client_keep).serialize())
        if have:
            writer.write(encode_chunk(have) if chunked else have)
        async for piece in pieces:
            writer.write(encode_chunk(piece) if chunked else piece)
            await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
        if chunked:
            writer.write(LAST_CHUNK)
        await writer.drain()

    async def _tunnel(self, req: Head, reader, writer) -> None:
        """CONNECT host:port: a blind byte pipe (TLS is not inspected)."""
        if self.mode != "explicit":
            raise _Reply(405, "Method Not Allowed", "CONNECT needs the explicit proxy mode")
        target = req.start[1]
        parts = urlsplit("//" + target)
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            host = port = None
        if not host or not port:
            raise _Reply(400, "Bad Request", "CONNECT needs host:port")
        if self.limits.connect_ports is not None and port not in self.limits.connect_ports:
            raise _Reply(403, "Forbidden", "CONNECT is allowed to ports %s only"
                         % ", ".join(str(p) for p in self.limits.connect_ports))
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                          self.limits.connect_timeout)
        except (OSError, asyncio.TimeoutError):
            self.stats["upstream_errors"] += 1
            raise _Reply(502, "Bad Gateway", "the origin server could not be reached")
        self.stats["tunnels"] += 1
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()

        async def pipe(src, dst):
            try:
                while True:
                    data = await asyncio.wait_for(src.read(_PIECE), self.limits.idle_timeout)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            except (Exception, asyncio.CancelledError):
                pass
            finally:
                try:
                    dst.write_eof()
                except (OSError, RuntimeError, AttributeError):
                    pass

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()


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
    if kind != "none":
        drop.add("content-length")
    return Head(("HTTP/1.1", res.start[1], res.start[2]), res.fields).replace(drop=drop, add=tuple(add))


def _error_bytes(status: int, reason: str, text: str) -> bytes:
    body = ("%d %s: %s\n" % (status, reason, text)).encode("utf-8")
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, reason.encode(), len(body))) + body


