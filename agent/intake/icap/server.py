"""The asyncio ICAP server: moves bytes between sockets and agent.intake.icap.protocol, asks the inspector.

Owns connections, limits (connections, head sizes, bytes scanned, timeouts), fail-open and counters.
It never hashes: image bodies go to ``inspector.inspect`` in a thread pool executor. It never logs a
client address or anything from the client's request line; logs name only the hosting host.

Decisions per RESPMOD (see agent.intake.sniff for why "type OR magic"):
- not an image -> 204 right after the preview (the client never sends the rest), or, without a
  preview, the body is streamed back (200) or drained (then 204) without being held in memory;
- an image -> 100 Continue, buffer up to ``max_scan_bytes``, scan, then 200 with a block page or
  204 / 200 echo; over the limit, on scan error or timeout -> pass unchanged (fail-open, counted).

Early heads (IcapLimits.early_head): Squid before 6.10 stops reading the origin once its 64 KB
virgin-body buffer is full and only resumes when its store sees activity, i.e. when the ICAP service
starts answering (Squid bug 5352, fixed by squid-cache/squid PR #1777 and #2065). A service that must
see the whole image before deciding then waits forever. In "stall" mode (default), when the client
stops sending mid-body for ``stall_timeout`` seconds (``squid_stall_timeout``, 5 ms, when it stopped
exactly at Squid's 65535-byte buffer size) we send the 200 and the original HTTP head
(without Content-Length) at once, which wakes Squid up; the scan still decides the body: the image
unchanged, or a neutral placeholder picture when it is blocked (the status then stays 200: the
explanation page needs the head we already sent). Measured on Squid 5.7: sending the head *before*
the stall ("always") does not help under load (the wake-up comes too early and a later stall
hangs until read_timeout), so "always" exists for clients that want an immediate head, not for
Squid; "never" suits Squid >= 6.10 and e2guardian.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from typing import Callable, Optional

from agent.intake.blockpage import PLACEHOLDER_PNG, BlockPage
from agent.core.errors import ConfigError
from agent.intake.icap import protocol as P
from agent.intake.coding import DecodeError, TooLarge, content_codings, decodable
from agent.intake.coding import decode as decode_body, encode as encode_body
from agent.intake.sniff import SNIFF_BYTES, says_nothing, should_scan, type_says_image
from agent.intake import Decision, host_of, lookup_fail_open
from agent.intake.http1 import LAST_CHUNK, encode_chunk
from agent.intake.streamserver import StreamIntakeServer, linger

log = logging.getLogger("gatewatch.icap")

# Service paths we answer; Squid and e2guardian configs name one of these.
SERVICES = {"/": ("RESPMOD", "REQMOD"), "/gatewatch": ("RESPMOD", "REQMOD"), "/respmod": ("RESPMOD",),
            "/reqmod": ("REQMOD",)}

EARLY_MODES = ("stall", "always", "never")
# Declared types that say nothing about the bytes: an image may hide behind them.
UNTYPED = frozenset(["", "application/octet-stream", "binary/octet-stream", "application/unknown",
                     "application/x-binary"])

# Encoded bytes read before sniffing an encoded body (its first SNIFF_BYTES decoded need more than that).
ENCODED_SNIFF_BYTES = 512


def sniff_head(raw: bytes, codings) -> bytes:
    """The first SNIFF_BYTES of the body as the client will see it: decoded when it is encoded."""
    if not codings:
        return raw[:SNIFF_BYTES]
    try:
        return decode_body(raw, codings, SNIFF_BYTES, partial=True)
    except (DecodeError, TooLarge):
        return b""


def _codings_text(codings) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "?" for c in ",".join(codings))[:40]


_COUNTERS = ("connections", "requests", "options", "scanned", "blocked", "allowed", "passed_unscanned",
             "bypassed", "too_large", "errors", "rejected", "timeouts", "early_heads", "protocol_errors",
             "unscanned_images", "internal_errors", "encoded_unscanned", "lookups", "lookup_errors", "lookup_timeouts",
             "names_blocked")


def request_url(req: P.Request) -> Optional[str]:
    """The hosting URL of the encapsulated HTTP request (absolute-form or Host + path)."""
    http = req.http_request
    if http is None:
        return None
    target = http.start[1]
    if "://" in target:
        return target
    host = http.get("host")
    return "http://%s%s" % (host, target) if host else None



class _Closed(Exception):
    """The client went away or must be disconnected."""


class IcapServer(StreamIntakeServer):
    """ICAP RESPMOD/REQMOD service. ``start(host, port)``, ``port``, ``close()``, ``stats``.

    ``on_block(decision, host)`` runs on the event loop after each block: keep it quick (queue slow
    work such as a firewall change elsewhere); its exceptions are logged and ignored.
    """

    def __init__(self, inspector, *, limits: P.IcapLimits = P.IcapLimits(),
                 istag: Optional[Callable[[], str]] = None,
                 on_block: Optional[Callable[[Decision, str], None]] = None,
                 block_page: Optional[BlockPage] = None,
                 executor: Optional[concurrent.futures.Executor] = None):
        if limits.early_head not in EARLY_MODES:
            raise ConfigError("early_head must be one of %s, not %r" % (", ".join(EARLY_MODES), limits.early_head))
        self._init_intake(inspector, limits, on_block, block_page, executor, _COUNTERS)
        self._istag = istag or (lambda: "gatewatch-0")

    @property
    def active_connections(self) -> int:
        """Connections being served now."""
        return self._active

    def istag(self) -> str:
        """The current ISTag: changes whenever the loaded lists change, so clients drop cached answers."""
        try:
            return str(self._istag())
        except Exception:  # a broken callable must not take the service down
            log.exception("istag callable failed")
            return "gatewatch-error"

    async def start(self, host: str = "127.0.0.1", port: int = 1344) -> None:
        """Listen on ``host:port``."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="icap-scan")
        self._server = await asyncio.start_server(self._accept, host, port, limit=64 * 1024, backlog=1024)

    # -- connection --

    log = log  # the module logger, used by the shared fail-open scan

    def busy_response(self) -> bytes:
        """ICAP 503 beyond Max-Connections."""
        return P.error_response(503, self.istag())

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: answer its requests in order."""
        await _Session(self, reader, writer).run()


class _Session:
    """One client connection: reads events, answers requests in order."""

    def __init__(self, server: IcapServer, reader, writer):
        self.server = server
        self.limits = server.limits
        self.reader = reader
        self.writer = writer
        self.conn = P.IcapConnection(server.limits)
        self.pending: collections.deque = collections.deque()
        self.head_deadline: Optional[float] = None
        self.held = 0  # image bytes this connection holds for a scan
        self.current: Optional[P.Request] = None  # the request being answered
        self.answered = False  # whether anything went out for it yet

    async def next_event(self, wait: Optional[float] = None):
        """The next protocol event; None if ``wait`` seconds pass with no bytes (only when given)."""
        while not self.pending:
            if self.conn.state == "closed":
                raise _Closed()
            loop = asyncio.get_running_loop()
            if self.conn.idle:
                timeout = self.limits.idle_timeout
                self.head_deadline = None
            elif self.conn.state in ("head", "encap"):
                # A head must arrive whole within read_timeout, however slowly it trickles in.
                if self.head_deadline is None:
                    self.head_deadline = loop.time() + self.limits.read_timeout
                timeout = max(0.0, self.head_deadline - loop.time())
            else:
                self.head_deadline = None
                timeout = self.limits.read_timeout if wait is None else min(wait, self.limits.read_timeout)
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except asyncio.TimeoutError:
                if wait is not None and not self.conn.idle:
                    return None
                if not self.conn.idle:
                    self.server.stats["timeouts"] += 1
                    await self.send(P.error_response(408, self.server.istag()))
                raise _Closed()
            except (ConnectionError, OSError):
                raise _Closed()
            if not data:
                raise _Closed()
            if self.conn.idle:
                self.head_deadline = loop.time() + self.limits.read_timeout
            events = self.conn.receive(data)
            if any(isinstance(e, P.Request) for e in events):
                self.head_deadline = None
            self.pending.extend(events)
        event = self.pending.popleft()
        if isinstance(event, P.ProtocolError):
            self.server.stats["errors"] += 1
            self.server.stats["protocol_errors"] += 1
            req = self.current
            if req is not None and req.method == "RESPMOD" and req.has_body:
                # Mid-body: the client (Squid bypass=on) may deliver this response unscanned.
                self.server.stats["bypassed"] += 1
                log.info("ICAP protocol error in a response from %s: %s; closed (the client may pass it "
                         "unscanned)", host_of(request_url(req)), event.message)
            else:
                log.info("ICAP protocol error: %s", event.message)
            if not self.answered:
                await self.send(P.error_response(event.status, self.server.istag(), event.message))
            await linger(self.reader, self.writer)
            raise _Closed()
        return event

    async def send(self, data: bytes) -> None:
        if data is not P.CONTINUE:  # 100 is interim: an error answer may still follow it
            self.answered = True
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.limits.read_timeout)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            raise _Closed()

    async def run(self) -> None:
        try:
            while True:
                self.current, self.answered = None, False
                event = await self.next_event()
                if not isinstance(event, P.Request):  # body bytes of a request we already answered
                    continue
                self.server.stats["requests"] += 1
                self.current, self.answered = event, False
                await self.handle(event)
        except _Closed:
            pass
        except Exception as exc:  # a bug here must cost one connection, never the service or a silent pass
            self.server.stats["errors"] += 1
            self.server.stats["internal_errors"] += 1
            req = self.current
            if req is not None and req.method == "RESPMOD" and req.has_body:
                self.server.stats["bypassed"] += 1
            log.error("ICAP session failed (%s) on a request for %s; connection closed", type(exc).__name__,
                      host_of(request_url(req)) if req is not None else "-")
            if not self.answered:
                try:
                    await self.send(P.error_response(500, self.server.istag(), "internal error"))
                except _Closed:
                    pass

    async def handle(self, req: P.Request) -> None:
        allowed = SERVICES.get(req.service)
        istag = self.server.istag()
        if allowed is None and req.method != "OPTIONS":
            self.refused(req, "unknown ICAP service")
            await self.send(P.error_response(404, istag, "unknown ICAP service"))
            await linger(self.reader, self.writer)
            raise _Closed()
        if req.method == "OPTIONS":
            self.server.stats["options"] += 1
            await self.drain_body(req)
            await self.send(P.options_response(istag, self.limits, methods=allowed or ("RESPMOD",)))
            return
        if req.method not in allowed:
            self.refused(req, "method not allowed for this service")
            await self.send(P.error_response(405, istag, "method not allowed for this service"))
            await linger(self.reader, self.writer)
            raise _Closed()
        if req.method == "REQMOD":
            await self.reqmod(req)
            return
        try:
            await self.respmod(req)
        finally:
            self.release()

    def refused(self, req: P.Request, why: str) -> None:
        """A request we answer with an error: a RESPMOD body then passes unscanned if the client bypasses."""
        self.server.stats["errors"] += 1
        if req.method == "RESPMOD" and req.has_body:
            self.server.stats["bypassed"] += 1
            log.warning("RESPMOD for %s refused (%s); the client may pass it unscanned", host_of(request_url(req)), why)

    async def url_listed(self, req: P.Request, what: str) -> bool:
        """Whether the url/domain lists block the encapsulated request's URL; if so, the block answer is sent
        (after the body the client sends is drained). A lookup fault passes, counted."""
        url = request_url(req)
        if not url:
            return False
        decision = await lookup_fail_open(self.server.inspector, "inspect_url", self.server._executor, url, what=what,
                                          host=host_of(url), timeout=self.limits.scan_timeout,
                                          stats=self.server.stats, on_block=self.server.on_block, log=log)
        if decision is None or decision.action != "block":
            return False
        await self.drain_body(req)
        media = req.http_response.media_type() if req.http_response is not None else ""
        await self.send(self.block_answer(req, url, media))
        self.finish(req)
        return True

    async def reqmod(self, req: P.Request) -> None:
        """A listed URL is answered with the block page before it is fetched. Request bodies (uploads) are
        not scanned; one that may be an image is counted and logged."""
        if await self.url_listed(req, "reqmod"):
            return
        if not req.has_body:
            await self.pass_unchanged(req, b"")
            return
        first, state = await self.read_preview(req)
        media = req.http_request.media_type() if req.http_request is not None else ""
        if should_scan(media, first) or says_nothing(first, complete=state != "preview"):
            self.server.stats["unscanned_images"] += 1
            log.info("REQMOD body to %s may be an image; passed unscanned (request bodies are not scanned)",
                     host_of(request_url(req)))
        await self.pass_unchanged(req, first, state)

    def hold(self, n: int) -> None:
        """Count ``n`` more image bytes held by this request against the server-wide budget."""
        self.held += n
        self.server.held += n

    def release(self) -> None:
        self.server.held -= self.held
        self.held = 0

    async def pass_through(self, req: P.Request) -> None:
        """Answer without looking at the body (beyond what is needed to keep the stream in sync)."""
        first, state = (await self.read_preview(req)) if req.has_body else (b"", "end")
        await self.pass_unchanged(req, first, state)

    async def drain_body(self, req: P.Request) -> None:
        if not req.has_body:
            return
        while True:
            event = await self.next_event()
            if isinstance(event, P.BodyEnd):
                return
            if isinstance(event, P.PreviewEnd):
                self.pending.extend(self.conn.finish_preview())
                return

    async def read_preview(self, req: P.Request, need: int = SNIFF_BYTES):
        """Collect the preview (or ``need`` bytes without one): (bytes, state), state body/preview/ieof/end."""
        got = bytearray()
        while True:
            event = await self.next_event()
            if isinstance(event, P.BodyData):
                got += event.data
                if not event.in_preview and len(got) >= need:
                    return bytes(got), "body"
            elif isinstance(event, P.PreviewEnd):
                return bytes(got), "preview"
            elif isinstance(event, P.BodyEnd):
                return bytes(got), ("ieof" if event.ieof else "end")

    async def respmod(self, req: P.Request) -> None:
        # a listed URL (e2guardian sends only RESPMOD): the block answer, whatever the body is
        if await self.url_listed(req, "respmod"):
            return
        http_res = req.http_response  # None when the client sent no res-hdr (c-icap-client -noreshdr)
        if not req.has_body:
            await self.pass_through(req)
            return
        media_type = http_res.media_type() if http_res is not None else ""
        codings = content_codings(http_res.get("content-encoding")) if http_res is not None else []
        # An encoded body is sniffed decoded (agent.intake.icap.coding): a few hundred bytes of gzip
        # give the first bytes of the image.
        need = ENCODED_SNIFF_BYTES if codings else SNIFF_BYTES
        first, state = await self.read_preview(req, need)
        head = sniff_head(first, codings)
        if (says_nothing(head, complete=state != "preview") and not type_says_image(media_type)
                and decodable(codings)):
            # A tiny (or zero) preview says nothing about the bytes, whatever the type claims (servers
            # lie both ways, see agent.intake.sniff): get the first bytes to decide.
            self.conn.continue_after_preview()
            await self.send(P.CONTINUE)
            more, state = await self.read_preview(req, need)
            first += more
            state = "body" if state == "body" else "end"
            head = sniff_head(first, codings)
        if not decodable(codings):
            self.server.stats["encoded_unscanned"] += 1
            if type_says_image(media_type) or media_type in UNTYPED:
                self.server.stats["bypassed"] += 1
                log.info("response from %s with Content-Encoding %s (not decoded) may be an image; passed "
                         "unscanned", host_of(request_url(req)), _codings_text(codings))
            await self.pass_unchanged(req, first, state=state)
            return
        if not should_scan(media_type, head):
            self.server.stats["passed_unscanned"] += 1
            await self.pass_unchanged(req, first, state=state)
            return
        body = bytearray(first)
        self.hold(len(first))
        if state == "preview":
            self.conn.continue_after_preview()
            await self.send(P.CONTINUE)
            state = "body"
        committed = False  # the 200 head went out early (see EARLY_MODES)
        # Without an HTTP response head there is no head to send early: wait for the whole body.
        mode = self.limits.early_head if http_res is not None else "never"
        if state == "body" and mode == "always" and not req.allow_204:
            committed = await self.commit_early(req)
        while state == "body":
            wait = None
            if mode == "stall" and not committed:
                wait = (self.limits.squid_stall_timeout if len(body) == self.limits.squid_window
                        else self.limits.stall_timeout)
            event = await self.next_event(wait)
            if event is None:  # the client stopped sending mid-body: Squid < 6.9 waits for us (bug 5352)
                committed = await self.commit_early(req)
                continue
            if isinstance(event, P.BodyData):
                body += event.data
                self.hold(len(event.data))
                if len(body) > self.limits.max_scan_bytes or self.server.held > self.limits.max_held_bytes:
                    self.server.stats["too_large"] += 1
                    self.server.stats["bypassed"] += 1
                    log.info("image from %s over the scan limits (%d bytes, %d held in all); passed "
                             "unscanned", host_of(request_url(req)), len(body), self.server.held)
                    if committed:
                        await self.stream_rest(bytes(body))
                        return self.finish(req)
                    await self.pass_unchanged(req, bytes(body), state="body")
                    return
            elif isinstance(event, P.BodyEnd):
                state = "end" if state == "body" else state
        url = request_url(req)
        scanned = bytes(body)
        if codings:
            try:
                scanned = decode_body(scanned, codings, self.limits.max_scan_bytes)
                self.hold(len(scanned))  # the decoded copy counts against the server-wide budget too
                if self.server.held > self.limits.max_held_bytes:
                    raise TooLarge("held bytes over the budget")
            except (DecodeError, TooLarge) as exc:
                too_large = isinstance(exc, TooLarge)
                self.server.stats["too_large" if too_large else "errors"] += 1
                self.server.stats["bypassed"] += 1
                log.info("%s image from %s (Content-Encoding %s); passed unscanned",
                         "decoded size over the scan limit for an" if too_large else "undecodable body of an",
                         host_of(url), _codings_text(codings))
                await self.pass_after_scan(req, bytes(body), state, committed)
                return
        decision = await self.server.inspect(scanned, http_res.get("content-type") if http_res else None, url)
        blocked = decision is not None and decision.action == "block"
        if committed:
            # The head is gone; only the body can still change: the placeholder picture or the image.
            await self.send(encode_chunk(encode_body(PLACEHOLDER_PNG, codings) if blocked else bytes(body))
                            + LAST_CHUNK)
            return self.finish(req)
        if blocked:
            await self.send(self.block_answer(req, url, media_type))
            self.finish(req)
            return
        await self.pass_unchanged(req, bytes(body), state=state)

    async def pass_after_scan(self, req: P.Request, body: bytes, state: str, committed: bool) -> None:
        """The whole body is here and goes out unchanged (after an early head: as the rest of it)."""
        if committed:
            await self.send(encode_chunk(body) + LAST_CHUNK)
            return self.finish(req)
        await self.pass_unchanged(req, body, state=state)

    def block_answer(self, req: P.Request, url: Optional[str], media_type: str) -> bytes:
        """The 200 that replaces a blocked response; built so that it cannot fail (a block stays a block)."""
        version = req.http_response.start[0] if req.http_response is not None else "HTTP/1.1"
        try:
            head, page = self.server.block_page.response(req.http_request, url, media_type, version=version)
            http_head = head.serialize()
        except Exception as exc:  # a custom BlockPage that raises: the static page still blocks
            log.error("block page failed (%s) for %s; sent the fallback page", type(exc).__name__, host_of(url))
            head, page = BlockPage.fallback()
            http_head = head.serialize()
        return P.modified_response(self.server.istag(), http_head, page, keep_alive=req.keep_alive)

    async def commit_early(self, req: P.Request) -> bool:
        """Send the 200 + original HTTP head now (minus Content-Length); the body follows after the scan."""
        self.server.stats["early_heads"] += 1
        head = req.http_response.replace(drop=("content-length",)).serialize()
        await self.send(P.modified_response_head(self.server.istag(), head, "res-hdr", has_body=True,
                                                 keep_alive=req.keep_alive))
        return True

    async def stream_rest(self, have: bytes) -> None:
        """After an early head: forward what we hold and the rest of the body as it comes."""
        await self.send(encode_chunk(have))
        while True:
            event = await self.next_event()
            if isinstance(event, P.BodyData):
                await self.send(encode_chunk(event.data))
            elif isinstance(event, P.BodyEnd):
                break
        await self.send(LAST_CHUNK)

    def finish(self, req: P.Request) -> None:
        if not req.keep_alive:
            raise _Closed()

    async def pass_unchanged(self, req: P.Request, have: bytes, state: str = "end") -> None:
        """Let the message through untouched: 204 where allowed, else echo it (streaming the rest)."""
        istag = self.server.istag()
        if state == "preview":
            # 204 is always allowed as the answer to a preview (RFC 3507 4.5); the rest is never sent.
            self.pending.extend(self.conn.finish_preview())
            await self.send(P.no_content_response(istag, req.keep_alive))
            return self.finish(req)
        if req.allow_204 or state == "ieof":
            if state == "body":
                await self.drain_rest()
            await self.send(P.no_content_response(istag, req.keep_alive))
            return self.finish(req)
        # No 204 allowed: echo. Heads as received, the body streamed chunk by chunk.
        if req.method == "REQMOD":
            http_head, kind = req.http_request_raw, "req-hdr"
        else:
            http_head, kind = req.http_response_raw, "res-hdr"
        if not http_head and not req.has_body:
            await self.send(P.no_content_response(istag, req.keep_alive))
            return self.finish(req)
        if http_head:
            await self.send(P.modified_response_head(istag, http_head, kind, has_body=req.has_body,
                                                     keep_alive=req.keep_alive))
        else:  # a body without its HTTP head (-noreshdr): echo the body alone
            await self.send(P.body_only_response_head(istag, req.body_kind, keep_alive=req.keep_alive))
        if req.has_body:
            if state == "body":
                await self.stream_rest(have)
            else:
                await self.send(encode_chunk(have) + LAST_CHUNK)
        self.finish(req)

    async def drain_rest(self) -> None:
        while True:
            event = await self.next_event()
            if isinstance(event, P.BodyEnd):
                return
