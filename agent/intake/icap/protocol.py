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
from agent.intake.http1 import CRLF, LAST_CHUNK, Head, HttpError, encode_chunk, parse_fields, parse_head

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

_DIGITS = frozenset("0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
MAX_CHUNK_SIZE = (1 << 48) - 1  # one chunk announces at most this (it streams: no buffer follows it)
MAX_CONTENT_LENGTH = 10 ** 15  # Content-Length in an encapsulated HTTP head
MAX_STRAY_CRLF = 64  # stray empty lines tolerated before one request head
# Fields that must appear at most once in an ICAP head (a second copy makes framing ambiguous).
_SINGLE_FIELDS = ("encapsulated", "preview")

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


def ascii_int(text: str, what: str, max_value: int) -> int:
    """A decimal field: ASCII 0-9 only (``str.isdigit`` accepts '\u00b2', ``int`` accepts '+1', '1_0', ' 1'),
    no more than ``max_value``; anything else raises IcapError (400)."""
    value = (text or "").strip(" \t")
    if not value or len(value) > 18 or not _DIGITS.issuperset(value):
        raise IcapError("bad %s value" % what)
    number = int(value)
    if number > max_value:
        raise IcapError("%s value over %d" % (what, max_value))
    return number


def _safe_message(text: str, limit: int = 120) -> str:
    """Printable ASCII only, bounded: error texts end up in logs and in an ICAP header."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))[:limit]


class IcapChunks:
    """Strict incremental decoder of an ICAP chunked body (RFC 3507 4.5, RFC 9112 7.1).

    Chunk sizes are ASCII hex (at most ``MAX_CHUNK_SIZE``), size lines and the trailer are bounded,
    ``ieof`` counts only on the zero-size chunk. ``feed(bytes) -> [pieces]``; ``done`` once the body
    ended, bytes after it in ``trailing``; ``ieof`` says the last chunk carried it. Raises IcapError.
    """

    MAX_LINE = 4096  # size line with extensions
    MAX_TRAILER = 4096  # all trailer lines together

    def __init__(self):
        self._buf = bytearray()
        self._state = "size"  # size, data, crlf, trailer
        self._left = 0
        self._trailer = 0
        self.done = False
        self.ieof = False
        self.trailing = b""

    def feed(self, data: bytes) -> List[bytes]:
        if self.done:
            self.trailing += bytes(data)
            return []
        self._buf += data
        out: List[bytes] = []
        buf = self._buf
        while True:
            if self._state == "data":
                if not buf:
                    break
                take = min(self._left, len(buf))
                out.append(bytes(buf[:take]))
                del buf[:take]
                self._left -= take
                if not self._left:
                    self._state = "crlf"
                continue
            if self._state == "crlf":
                if len(buf) < 2:
                    break
                if buf[:2] != CRLF:
                    raise IcapError("chunk data not followed by CRLF")
                del buf[:2]
                self._state = "size"
                continue
            idx = buf.find(CRLF, 0, self.MAX_LINE + 2)
            if idx < 0:
                if len(buf) > self.MAX_LINE:
                    raise IcapError("chunk %s line too long" % ("trailer" if self._state == "trailer" else "size"))
                if b"\n" in buf:
                    raise IcapError("bare LF in a chunked body")
                break
            line = bytes(buf[:idx])
            if b"\n" in line or b"\r" in line:
                raise IcapError("bare CR or LF in a chunked body")
            del buf[: idx + 2]
            if self._state == "size":
                self._left = self._size(line)
                self._state = "data" if self._left else "trailer"
                continue
            if not line:  # the empty line that ends the trailer section
                self.done = True
                self.trailing = bytes(buf)
                self._buf = bytearray()
                break
            self._trailer += len(line) + 2
            if self._trailer > self.MAX_TRAILER or line[:1] in (b" ", b"\t") or b":" not in line:
                raise IcapError("bad chunked trailer")
        return out

    def _size(self, line: bytes) -> int:
        size, _, ext = line.partition(b";")
        size = size.strip(b" \t")
        if not size or len(size) > 12 or not _HEX.issuperset(size):
            raise IcapError("bad chunk size")
        value = int(size, 16)
        if value > MAX_CHUNK_SIZE:
            raise IcapError("chunk size over %d" % MAX_CHUNK_SIZE)
        names = [e.strip(b" \t").split(b"=", 1)[0].lower() for e in ext.split(b";")] if ext else []
        if not value:
            self.ieof = b"ieof" in names
        return value


class IcapLimits(NamedTuple):
    """Bounds on what one connection may send or hold (bytes, counts, seconds)."""

    max_head_bytes: int = 16 * 1024  # ICAP head
    max_http_head_bytes: int = 64 * 1024  # encapsulated HTTP heads together
    max_scan_bytes: int = 16 * 1024 * 1024  # image bodies above this pass unscanned
    max_held_bytes: int = 64 * 1024 * 1024  # all connections' buffered images together; beyond: pass
    preview: int = 4096  # Preview size we ask for in OPTIONS
    max_preview: int = 64 * 1024  # a client's Preview above this and above ``preview`` is refused (400)
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
        self._decoder: Optional[IcapChunks] = None
        self._stray = 0
        self._in_preview = False
        self._preview_left = 0
        self._preview: Optional[int] = None

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
            if self._state == "preview-wait" and len(self._buf) > self._held_bound():
                raise IcapError("client sent more than a preview before the answer")
            self._run(events)
        except (IcapError, HttpError) as exc:
            self._state = "closed"
            self._buf = bytearray()
            events.append(ProtocolError(getattr(exc, "status", 400), _safe_message(exc)))
        return events

    def _held_bound(self) -> int:
        """What a client may have sent while we decide about a preview (a pipelined next request)."""
        return self.limits.max_head_bytes + self.limits.max_http_head_bytes

    def continue_after_preview(self) -> None:
        """The server sent 100 Continue: the rest of the body follows."""
        if self._state != "preview-wait":
            raise IcapError("no preview is waiting for an answer", 500)
        self._in_preview = False
        self._decoder = IcapChunks()
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
            self._stray += 1
            if self._stray > MAX_STRAY_CRLF:
                raise IcapError("too many empty lines before a request")
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
        except HttpError:
            # The ICAP head may carry X-Client-IP / X-Authenticated-User: never quote its lines.
            raise IcapError("malformed ICAP header field")
        for name in _SINGLE_FIELDS:
            if sum(1 for k, _ in head.fields if k.lower() == name) > 1:
                raise IcapError("duplicate %s header" % name.capitalize())
        self._stray = 0
        self._head = head
        self._encap = self._parse_encapsulated(method, head)
        self._preview = self._parse_preview(head)
        self._state = "encap"
        return True

    def _parse_preview(self, head: Head) -> Optional[int]:
        value = head.get("preview")
        if value is None:
            return None
        return ascii_int(value, "Preview", max(self.limits.preview, self.limits.max_preview))

    def _parse_encapsulated(self, method: str, head: Head) -> List[Tuple[str, int]]:
        value = head.get("encapsulated")
        if value is None:
            if method == "OPTIONS":
                return [("null-body", 0)]
            raise IcapError("missing Encapsulated header")
        entries = []
        for item in value.split(","):
            name, sep, off = item.strip(" \t").partition("=")
            name = name.strip(" \t").lower()
            if not sep or name not in _HEADER_SECTIONS + _BODY_SECTIONS:
                raise IcapError("bad Encapsulated entry %s" % ascii(item.strip()[:40]))
            entries.append((name, ascii_int(off, "Encapsulated offset", 10 ** 9)))
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
        if offsets[-1] > self.limits.max_http_head_bytes:
            raise IcapError("encapsulated HTTP heads larger than %d bytes" % self.limits.max_http_head_bytes)
        return entries

    def _parse_encap(self, events: list) -> bool:
        total = self._encap[-1][1]
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
        http_req = _http_head(sections, "req-hdr", "request")
        http_res = _http_head(sections, "res-hdr", "response")
        head = self._head
        method = head.start[0]
        body_kind = self._encap[-1][0]
        body_kind = None if body_kind == "null-body" else body_kind
        preview = self._preview
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
        self._decoder = IcapChunks()
        self._in_preview = request.preview is not None
        self._preview_left = request.preview or 0
        self._state = "body"
        return True

    def _parse_body(self, events: list) -> bool:
        data = bytes(self._buf)
        self._buf = bytearray()
        decoder = self._decoder
        pieces = decoder.feed(data)
        for piece in pieces:
            if self._in_preview:
                self._preview_left -= len(piece)
                if self._preview_left < 0:
                    raise IcapError("preview longer than the announced Preview size")
            events.append(BodyData(piece, self._in_preview))
        if not decoder.done:
            return False
        self._buf = bytearray(decoder.trailing) + self._buf
        if self._in_preview and not decoder.ieof:
            self._state = "preview-wait"
            events.append(PreviewEnd())
            return False
        events.append(BodyEnd(ieof=self._in_preview))
        self._end_request()
        return True


def _http_head(sections: Dict[str, bytes], name: str, kind: str) -> Optional[Head]:
    """Parse one encapsulated HTTP head; its Content-Length must be sane ASCII digits, one value."""
    raw = sections.get(name)
    if raw is None:
        return None
    try:
        head = parse_head(raw, kind)
    except HttpError:
        # The encapsulated request line and fields are the client's: never quote them.
        raise IcapError("malformed encapsulated HTTP %s head (%s)" % (kind, name))
    lengths = head.get_all("content-length")
    if lengths or head.get("content-length") is not None:
        values = set(ascii_int(v, "Content-Length", MAX_CONTENT_LENGTH) for v in lengths or [""])
        if len(values) > 1:
            raise IcapError("conflicting Content-Length values in %s" % name)
    return head


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


def error_response(status: int, istag: Optional[str] = None, reason: Optional[str] = None) -> bytes:
    """An ICAP error; the connection closes after it. ``reason`` (ours, never client data) rides in
    ``X-Gatewatch-Error`` so that a client's log says what was wrong."""
    fields = []
    if istag is not None:
        fields.append(("ISTag", quote_istag(istag)))
    if reason:
        fields.append(("X-Gatewatch-Error", _safe_message(reason)))
    fields += [("Encapsulated", "null-body=0"), ("Connection", "close")]
    return _head_bytes(status, fields)


def body_only_response_head(istag: str, kind: str = "res-body", keep_alive: bool = True) -> bytes:
    """200 whose encapsulated message is a body alone (``res-body=0``): the answer that echoes a
    body a client sent without an HTTP head (e.g. c-icap-client -noreshdr); chunks follow."""
    fields = [("ISTag", quote_istag(istag)), ("Encapsulated", "%s=0" % kind)]
    if not keep_alive:
        fields.append(("Connection", "close"))
    return _head_bytes(200, fields)


__all__ = [
    "IcapConnection", "IcapLimits", "IcapError", "Request", "BodyData", "PreviewEnd", "BodyEnd",
    "ProtocolError", "CONTINUE", "options_response", "no_content_response", "modified_response_head",
    "modified_response", "error_response", "quote_istag", "encode_chunk", "LAST_CHUNK", "ascii_int",
    "IcapChunks", "body_only_response_head",
]
