"""RFC 3507 ICAP, server side, with no I/O: bytes in, immutable events out; responses built as bytes.

Owns the wire format only: request heads, the Encapsulated composition, previews (``ieof``), chunked
bodies, persistent connections, and the responses (OPTIONS, 100 Continue, 204, 200 with an
encapsulated HTTP message, errors). It must not touch sockets, clocks, threads or the scanner; the
server (agent.intake.icap.server) moves bytes and decides.

Use::

    conn = IcapConnection(limits)
    for event in conn.receive(data):    # Request, BodyData, PreviewEnd, BodyEnd, ProtocolError
        ...
    conn.continue_after_preview()       # then send CONTINUE: the client sends the rest of the body
    conn.finish_preview()               # or answer the preview without the rest (204 / 200)
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

from agent.core.errors import GatewatchError
from agent.intake.http1 import CRLF, LAST_CHUNK, ChunkedDecoder, Head, HttpError, encode_chunk, parse_fields, parse_head

ICAP_VERSION = "ICAP/1.0"
METHODS = ("OPTIONS", "RESPMOD", "REQMOD")

REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "ICAP Service Not Found",
    405: "Method Not Allowed For Service",
    408: "Request Timeout",
    500: "Server Error",
    501: "Method Not Implemented",
    503: "Service Overloaded",
    505: "ICAP Version Not Supported",
}

_HEADER_SECTIONS = ("req-hdr", "res-hdr")
_BODY_SECTIONS = ("req-body", "res-body", "opt-body", "null-body")
# Which Encapsulated entries each method may carry, in order (RFC 3507 4.4.1).
_ALLOWED = {
    "REQMOD": (("req-hdr",), ("req-body", "null-body")),
    "RESPMOD": (("req-hdr", "res-hdr"), ("res-body", "null-body")),
    "OPTIONS": ((), ("opt-body", "null-body")),
}


class IcapError(GatewatchError, ValueError):
    """Malformed ICAP input; ``status`` is the ICAP error to answer before closing."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class IcapLimits(NamedTuple):
    """Bounds on what one connection may send or hold (bytes, counts, seconds)."""

    max_head_bytes: int = 16 * 1024  # ICAP head
    max_http_head_bytes: int = 64 * 1024  # encapsulated HTTP heads together
    max_scan_bytes: int = 16 * 1024 * 1024  # image bodies above this pass unscanned
    max_held_bytes: int = 64 * 1024 * 1024  # all connections' buffered images together; beyond: pass
    preview: int = 4096  # Preview size we ask for in OPTIONS
    max_connections: int = 256
    idle_timeout: float = 60.0  # between requests on a persistent connection
    read_timeout: float = 30.0  # while a request is being received
    scan_timeout: float = 10.0  # inspector call; beyond it the response passes (fail-open)
    options_ttl: int = 300
    early_head: str = "stall"  # "stall", "always" or "never": see agent.intake.icap.server (Squid bug 5352)
    stall_timeout: float = 0.1  # seconds without body bytes before an early head in "stall" mode
    # Squid's virgin-body buffer holds 65535 bytes: a pause exactly there is its stall, not the origin's.
    squid_window: int = 65535
    squid_stall_timeout: float = 0.005


# ---- events (immutable) -------------------------------------------------------------------------

class Request(NamedTuple):
    """An ICAP request head plus its encapsulated HTTP heads; a body may follow."""

    method: str
    uri: str
    service: str  # path part of the ICAP URI, e.g. "/respmod"
    headers: Head  # ICAP fields; start = (method, uri, version)
    http_request: Optional[Head]
    http_response: Optional[Head]
    http_request_raw: bytes
    http_response_raw: bytes
    body_kind: Optional[str]  # "req-body" / "res-body" / "opt-body", or None for null-body
    preview: Optional[int]  # Preview size when the client sends a preview
    allow_204: bool
    keep_alive: bool

    @property
    def has_body(self) -> bool:
        """Whether an encapsulated body follows the heads."""
        return self.body_kind is not None


class BodyData(NamedTuple):
    """A slice of the (de-chunked) encapsulated body."""

    data: bytes
    in_preview: bool


class PreviewEnd(NamedTuple):
    """The preview ended and more body exists: answer now, or continue_after_preview() + CONTINUE."""


class BodyEnd(NamedTuple):
    """The whole body has been received (``ieof`` says it ended inside the preview)."""

    ieof: bool


class ProtocolError(NamedTuple):
    """Input was malformed: answer ``status`` (if the connection allows) and close."""

    status: int
    message: str


# ---- connection state machine -------------------------------------------------------------------

class IcapConnection:
    """Parses one ICAP connection's byte stream into events. Does no I/O and keeps no clock."""

    def __init__(self, limits: IcapLimits = IcapLimits()):
        self.limits = limits
        self._buf = bytearray()
        self._state = "head"  # head, encap, body, preview-wait, closed
        self._request: Optional[Request] = None
        self._head: Optional[Head] = None
        self._encap: List[Tuple[str, int]] = []
        self._decoder: Optional[ChunkedDecoder] = None
        self._in_preview = False
        self._preview_left = 0

    @property
    def state(self) -> str:
        """Where the parser is: head, encap, body, preview-wait or closed."""
        return self._state

    @property
    def idle(self) -> bool:
        """True between requests with nothing buffered (a timeout here is a normal close)."""
        return self._state == "head" and not self._buf

    def receive(self, data: bytes) -> list:
        """Feed bytes from the client; return the events they complete."""
        if self._state == "closed":
            return []
        self._buf += data
        events: list = []
        try:
            self._run(events)
        except (IcapError, HttpError) as exc:
            self._state = "closed"
            self._buf = bytearray()
            events.append(ProtocolError(getattr(exc, "status", 400), str(exc)))
        return events

    def continue_after_preview(self) -> None:
        """The server sent 100 Continue: the rest of the body follows."""
        if self._state != "preview-wait":
            raise IcapError("no preview is waiting for an answer", 500)
        self._in_preview = False
        self._decoder = ChunkedDecoder()
        self._state = "body"

    def finish_preview(self) -> list:
        """The server answered the preview: the request is over; returns events of pipelined bytes."""
        if self._state != "preview-wait":
            raise IcapError("no preview is waiting for an answer", 500)
        self._end_request()
        return self.receive(b"")

    def close(self) -> None:
        """No more input will be parsed."""
        self._state = "closed"
        self._buf = bytearray()

    # -- internals --

    def _end_request(self) -> None:
        keep = self._request.keep_alive if self._request else False
        self._request = None
        self._decoder = None
        self._in_preview = False
        self._state = "head" if keep else "closed"

    def _run(self, events: list) -> None:
        while True:
            if self._state == "head":
                if not self._parse_icap_head():
                    return
            elif self._state == "encap":
                if not self._parse_encap(events):
                    return
            elif self._state == "body":
                if not self._parse_body(events):
                    return
            else:  # preview-wait (bytes stay buffered until the server decides) or closed
                return

    def _parse_icap_head(self) -> bool:
        # Tolerate stray CRLFs between requests (RFC 7230 3.5 habit, Squid never sends them).
        while self._buf[:2] == CRLF:
            del self._buf[:2]
        idx = self._buf.find(CRLF + CRLF)
        if idx < 0:
            if len(self._buf) > self.limits.max_head_bytes:
                raise IcapError("ICAP head larger than %d bytes" % self.limits.max_head_bytes)
            return False
        if idx + 4 > self.limits.max_head_bytes:
            raise IcapError("ICAP head larger than %d bytes" % self.limits.max_head_bytes)
        raw = bytes(self._buf[: idx + 4])
        del self._buf[: idx + 4]
        lines = raw[:-4].split(CRLF)
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise IcapError("bad ICAP request line %r" % lines[0][:80])
        try:
            method, uri, version = (p.decode("ascii") for p in parts)
        except UnicodeDecodeError:
            raise IcapError("non-ASCII ICAP request line")
        if version != ICAP_VERSION:
            raise IcapError("ICAP version %r not supported, only ICAP/1.0" % version[:20], 505)
        if method not in METHODS:
            raise IcapError("method %r not implemented" % method[:20], 501)
        if not uri.lower().startswith("icap://"):
            raise IcapError("request URI must be an icap:// URI")
        try:
            head = Head((method, uri, version), parse_fields(lines[1:]))
        except HttpError as exc:
            raise IcapError(str(exc))
        self._head = head
        self._encap = self._parse_encapsulated(method, head)
        self._state = "encap"
        return True

    @staticmethod
    def _parse_encapsulated(method: str, head: Head) -> List[Tuple[str, int]]:
        value = head.get("encapsulated")
        if value is None:
            if method == "OPTIONS":
                return [("null-body", 0)]
            raise IcapError("missing Encapsulated header")
        entries = []
        for item in value.split(","):
            name, sep, off = item.strip().partition("=")
            name = name.strip().lower()
            off = off.strip()
            if not sep or not off.isdigit() or len(off) > 9:
                raise IcapError("bad Encapsulated entry %r" % item.strip()[:40])
            entries.append((name, int(off)))
        headers_allowed, bodies_allowed = _ALLOWED[method]
        names = [n for n, _ in entries]
        if not entries or names[-1] not in bodies_allowed:
            raise IcapError("Encapsulated must end with one of %s" % "/".join(bodies_allowed))
        for name in names[:-1]:
            if name not in headers_allowed:
                raise IcapError("Encapsulated entry %r not allowed in %s" % (name, method))
        if len(set(names)) != len(names) or [n for n in headers_allowed if n in names] != names[:-1]:
            raise IcapError("Encapsulated entries repeated or out of order")
        offsets = [o for _, o in entries]
        if offsets[0] != 0 or offsets != sorted(offsets):
            raise IcapError("Encapsulated offsets must start at 0 and not decrease")
        if names[-1] == "null-body" and len(entries) == 1 and offsets[0] != 0:
            raise IcapError("null-body alone must be at offset 0")
        return entries

    def _parse_encap(self, events: list) -> bool:
        total = self._encap[-1][1]
        if total > self.limits.max_http_head_bytes:
            raise IcapError("encapsulated HTTP heads larger than %d bytes" % self.limits.max_http_head_bytes)
        if len(self._buf) < total:
            return False
        sections: Dict[str, bytes] = {}
        for (name, start), (_, end) in zip(self._encap, self._encap[1:]):
            raw = bytes(self._buf[start:end])
            # A lying offset shows up as a section that is not exactly one HTTP head.
            if len(raw) < 4 or not raw.endswith(CRLF + CRLF) or raw.find(CRLF + CRLF) != len(raw) - 4:
                raise IcapError("Encapsulated offsets do not match the %s section" % name)
            sections[name] = raw
        del self._buf[:total]
        try:
            http_req = parse_head(sections["req-hdr"], "request") if "req-hdr" in sections else None
            http_res = parse_head(sections["res-hdr"], "response") if "res-hdr" in sections else None
        except HttpError as exc:
            raise IcapError("encapsulated HTTP head: %s" % exc)
        head = self._head
        method = head.start[0]
        body_kind = self._encap[-1][0]
        body_kind = None if body_kind == "null-body" else body_kind
        preview = head.get("preview")
        if preview is not None:
            if not preview.strip().isdigit() or len(preview.strip()) > 9:
                raise IcapError("bad Preview value %r" % preview[:20])
            preview = int(preview)
        uri = head.start[1]
        rest = uri[len("icap://"):]
        service = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        service = service.split("?", 1)[0]
        request = Request(
            method=method,
            uri=uri,
            service=service,
            headers=head,
            http_request=http_req,
            http_response=http_res,
            http_request_raw=sections.get("req-hdr", b""),
            http_response_raw=sections.get("res-hdr", b""),
            body_kind=body_kind,
            preview=preview if body_kind else None,
            allow_204="204" in head.get_all("allow"),
            keep_alive=not head.has_token("connection", "close"),
        )
        self._request = request
        events.append(request)
        if body_kind is None:
            self._end_request()
            return True
        self._decoder = ChunkedDecoder()
        self._in_preview = request.preview is not None
        self._preview_left = request.preview or 0
        self._state = "body"
        return True

    def _parse_body(self, events: list) -> bool:
        data = bytes(self._buf)
        self._buf = bytearray()
        decoder = self._decoder
        try:
            pieces = decoder.feed(data)
        except HttpError as exc:
            raise IcapError("encapsulated body: %s" % exc)
        for piece in pieces:
            if self._in_preview:
                self._preview_left -= len(piece)
                if self._preview_left < 0:
                    raise IcapError("preview longer than the announced Preview size")
            events.append(BodyData(piece, self._in_preview))
        if not decoder.done:
            return False
        self._buf = bytearray(decoder.trailing) + self._buf
        if self._in_preview and "ieof" not in decoder.last_extensions:
            self._state = "preview-wait"
            events.append(PreviewEnd())
            return False
        events.append(BodyEnd(ieof=self._in_preview))
        self._end_request()
        return True


# ---- responses ----------------------------------------------------------------------------------

CONTINUE = b"ICAP/1.0 100 Continue\r\n\r\n"


def _head_bytes(status: int, fields: List[Tuple[str, str]]) -> bytes:
    lines = ["%s %d %s" % (ICAP_VERSION, status, REASONS.get(status, "Unknown"))]
    lines.extend("%s: %s" % kv for kv in fields)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def quote_istag(tag: str) -> str:
    """An ISTag value: quoted, at most 32 characters inside the quotes (RFC 3507 4.7)."""
    tag = "".join(c for c in str(tag) if 33 <= ord(c) <= 126 and c not in '"\\')
    if len(tag) > 32:
        import hashlib

        tag = hashlib.sha256(tag.encode("ascii")).hexdigest()[:32]
    return '"%s"' % (tag or "0")


def options_response(istag: str, limits: IcapLimits, methods=("RESPMOD",), service: str = "gatewatch",
                     extra: Tuple[Tuple[str, str], ...] = ()) -> bytes:
    """The OPTIONS answer: what we do, when to ask again, and how much preview we want."""
    fields = [
        ("Methods", ", ".join(methods)),
        ("Service", service),
        ("ISTag", quote_istag(istag)),
        ("Max-Connections", str(limits.max_connections)),
        ("Options-TTL", str(limits.options_ttl)),
        ("Allow", "204"),
        ("Preview", str(limits.preview)),
        ("Transfer-Preview", "*"),
        ("Encapsulated", "null-body=0"),
    ]
    fields.extend(extra)
    return _head_bytes(200, fields)


def no_content_response(istag: str, keep_alive: bool = True) -> bytes:
    """204: the client keeps its own copy unmodified."""
    fields = [("ISTag", quote_istag(istag)), ("Encapsulated", "null-body=0")]
    if not keep_alive:
        fields.append(("Connection", "close"))
    return _head_bytes(204, fields)


def modified_response_head(istag: str, http_head: bytes, head_kind: str = "res-hdr", has_body: bool = True,
                           http_request_head: Optional[bytes] = None, keep_alive: bool = True) -> bytes:
    """200 head plus the encapsulated HTTP head(s); a chunked body follows when ``has_body``."""
    sections = []
    offset = 0
    if http_request_head is not None:
        sections.append("req-hdr=0")
        offset = len(http_request_head)
    sections.append("%s=%d" % (head_kind, offset))
    offset += len(http_head)
    body_name = ("res-body" if head_kind == "res-hdr" else "req-body") if has_body else "null-body"
    sections.append("%s=%d" % (body_name, offset))
    fields = [("ISTag", quote_istag(istag)), ("Encapsulated", ", ".join(sections))]
    if not keep_alive:
        fields.append(("Connection", "close"))
    return _head_bytes(200, fields) + (http_request_head or b"") + http_head


def modified_response(istag: str, http_head: bytes, body: bytes, head_kind: str = "res-hdr",
                      keep_alive: bool = True) -> bytes:
    """A complete 200 with an encapsulated HTTP head and (possibly empty) body."""
    return (modified_response_head(istag, http_head, head_kind, True, keep_alive=keep_alive)
            + encode_chunk(body) + LAST_CHUNK)


def error_response(status: int, istag: Optional[str] = None) -> bytes:
    """An ICAP error; the connection closes after it."""
    fields = []
    if istag is not None:
        fields.append(("ISTag", quote_istag(istag)))
    fields += [("Encapsulated", "null-body=0"), ("Connection", "close")]
    return _head_bytes(status, fields)


__all__ = [
    "IcapConnection", "IcapLimits", "IcapError", "Request", "BodyData", "PreviewEnd", "BodyEnd",
    "ProtocolError", "CONTINUE", "options_response", "no_content_response", "modified_response_head",
    "modified_response", "error_response", "quote_istag", "encode_chunk", "LAST_CHUNK",
]
