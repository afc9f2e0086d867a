"""HTTP/1.1 message heads and body framing, with no I/O.

Owns: parsing a request or response head (start line + fields) into an immutable record, building one
back, deciding how a body is framed, and an incremental chunked decoder. Used by the built-in proxy and
by the ICAP service for the HTTP heads it carries. Must not touch sockets, clocks or the scanner.

Why not a library such as h11: the proxy relays bodies of any size and must never hold one in memory,
and the ICAP service only reads encapsulated heads; both need the raw head bytes and a chunk decoder
that takes arbitrary slices. That is ~200 lines here and no new dependency on the router image.
"""

from __future__ import annotations

import ipaddress
import re
from typing import List, NamedTuple, Optional, Tuple

from agent.core.errors import GatewatchError

CRLF = b"\r\n"
_TOKEN_BAD = set(b" \t\r\n()<>@,;:\\\"/[]?={}")
_DIGITS = re.compile(r"[0-9]{1,15}\Z")  # ASCII only: str.isdigit() also accepts '²' and other scripts
_VERSION = re.compile(rb"HTTP/1\.[0-9]\Z")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB: a bare CR or LF must not reach a peer
_TARGET_OK = re.compile(rb"[\x21-\x7e]+\Z")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_NUMERIC_LABEL = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)\Z")

# Fields that describe one hop only; a proxy must not forward them (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
     "trailer", "transfer-encoding", "upgrade"]
)


class HttpError(GatewatchError, ValueError):
    """An HTTP message is malformed; ``status`` is what a server should answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Head(NamedTuple):
    """An HTTP start line plus fields. ``fields`` keeps order and case as received."""

    start: Tuple[str, str, str]  # request: (method, target, version); response: (version, code, reason)
    fields: Tuple[Tuple[str, str], ...]

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of field ``name`` (case-insensitive), or ``default``."""
        lname = name.lower()
        for key, value in self.fields:
            if key.lower() == lname:
                return value
        return default

    def get_all(self, name: str) -> List[str]:
        """Every value of field ``name``, comma lists split."""
        lname = name.lower()
        out = []
        for key, value in self.fields:
            if key.lower() == lname:
                out.extend(v.strip() for v in value.split(",") if v.strip())
        return out

    def has_token(self, name: str, token: str) -> bool:
        """Whether comma-list field ``name`` contains ``token`` (case-insensitive)."""
        return token.lower() in (v.lower() for v in self.get_all(name))

    def replace(self, drop=(), add=()) -> "Head":
        """A copy without fields named in ``drop`` (lower-case) and with ``add`` pairs appended."""
        drop = set(drop)
        kept = tuple((k, v) for k, v in self.fields if k.lower() not in drop)
        return Head(self.start, kept + tuple(add))

    @property
    def status(self) -> int:
        """The status code of a response head."""
        return int(self.start[1])

    def media_type(self) -> str:
        """The Content-Type without parameters, lower-case ('' when absent)."""
        value = self.get("content-type") or ""
        return value.split(";", 1)[0].strip().lower()

    def serialize(self) -> bytes:
        """The head as bytes, ending with the empty line."""
        lines = [" ".join(self.start).encode("latin-1")]
        for key, value in self.fields:
            lines.append(("%s: %s" % (key, value)).encode("latin-1"))
        return CRLF.join(lines) + CRLF + CRLF


def _check_token(name: bytes) -> None:
    if not name or any(c in _TOKEN_BAD or c < 33 or c > 126 for c in name):
        raise HttpError("invalid header field name %r" % name[:40])


def parse_fields(lines: List[bytes]) -> Tuple[Tuple[str, str], ...]:
    """Parse header field lines (no obsolete line folding: RFC 9112 5.2 lets us reject it)."""
    fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HttpError("obsolete header line folding is not accepted")
        name, sep, value = line.partition(b":")
        if not sep:
            raise HttpError("header line without a colon: %r" % line[:40])
        _check_token(name)
        if _VALUE_BAD.search(value):
            raise HttpError("control character in the value of %r" % name[:40])
        fields.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return tuple(fields)


def parse_head(raw: bytes, kind: str) -> Head:
    """Parse ``raw`` (a head ending with CRLFCRLF) as a ``request`` or ``response`` head."""
    if not raw.endswith(CRLF + CRLF):
        raise HttpError("HTTP head does not end with an empty line")
    lines = raw[:-4].split(CRLF)
    parts = lines[0].split(b" ", 2)
    try:
        if kind == "request":
            if len(parts) != 3 or not _VERSION.match(parts[2]) or not _TARGET_OK.match(parts[1]):
                raise HttpError("bad request line %r" % lines[0][:80])
            _check_token(parts[0])
            start = (parts[0].decode("ascii"), parts[1].decode("ascii"), parts[2].decode("ascii"))
        else:
            if (len(parts) < 2 or not _VERSION.match(parts[0]) or not re.match(rb"[1-9][0-9][0-9]\Z", parts[1])
                    or _VALUE_BAD.search(parts[2] if len(parts) == 3 else b"")):
                raise HttpError("bad status line %r" % lines[0][:80])
            reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
            start = (parts[0].decode("ascii"), parts[1].decode("ascii"), reason)
    except UnicodeDecodeError:
        raise HttpError("non-ASCII start line")
    return Head(start, parse_fields(lines[1:]))


def response_has_body(request_method: str, status: int) -> bool:
    """Whether a response to ``request_method`` with ``status`` carries a body (RFC 9112 6.3)."""
    return not (request_method == "HEAD" or 100 <= status < 200 or status in (204, 304))


def parse_length(value: str) -> int:
    """A non-negative decimal of ASCII digits (at most 15 of them), else HttpError."""
    if not _DIGITS.match(value):
        raise HttpError("bad number %r" % value[:20])
    return int(value)


def body_framing(head: Head, request: bool = False) -> Tuple[str, int]:
    """How the body after ``head`` is delimited: ("chunked", 0), ("length", n) or ("close", 0).

    With ``request`` the rules of RFC 9112 6.3 for requests apply: Transfer-Encoding together with
    Content-Length, or a Transfer-Encoding whose final coding is not chunked, is a 400 (either could
    smuggle a second request past us); a coding other than chunked is a 501. A request without either
    field has no body ("length", 0).
    """
    codings = [c.lower() for c in head.get_all("transfer-encoding")]
    if head.get("transfer-encoding") is not None and not codings:
        raise HttpError("empty Transfer-Encoding")
    if codings:
        if request:
            if head.get("content-length") is not None:
                raise HttpError("request with both Transfer-Encoding and Content-Length")
            if codings[-1] != "chunked":
                raise HttpError("request Transfer-Encoding does not end with chunked")
            if codings != ["chunked"]:
                raise HttpError("request Transfer-Encoding %s is not supported" % ", ".join(codings)[:60], 501)
            return ("chunked", 0)
        if codings[-1] != "chunked":
            return ("close", 0)
        return ("chunked", 0)
    values = head.get_all("content-length")
    if head.get("content-length") is not None and not values:
        raise HttpError("empty Content-Length")
    lengths = set(values)
    if len(lengths) > 1:
        raise HttpError("conflicting Content-Length values")
    if lengths:
        return ("length", parse_length(lengths.pop()))
    return ("length", 0) if request else ("close", 0)


def parse_authority(text: str, default_port: int = 80) -> Tuple[str, int]:
    """``host[:port]`` (a Host field or a URL's authority) -> (host, port), strictly, else HttpError.

    The host comes back normalised: a DNS name lower-case without a trailing dot, an IPv4 address in
    dotted quad (the inet_aton short forms ``127.1``, ``2130706433``, ``0x7f.1`` included: they are
    what resolvers accept), an IPv6 address compressed and without brackets. No user info, no zone
    ids, labels of 1-63 LDH characters (and '_'), names of at most 253; port 1-65535 in ASCII digits.
    """
    if not text or len(text) > 300:
        raise HttpError("bad host %r" % text[:40])
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise HttpError("unterminated IPv6 literal in host %r" % text[:60])
        literal, rest = text[1:end], text[end + 1:]
        try:
            host = str(ipaddress.IPv6Address(literal)) if "%" not in literal else None
        except ValueError:
            host = None
        if host is None:
            raise HttpError("bad IPv6 literal in host %r" % text[:60])
        if rest and not rest.startswith(":"):
            raise HttpError("bad host %r" % text[:60])
        port_text = rest[1:] if rest else ""
    else:
        host, sep, port_text = text.partition(":")
        if ":" in port_text:
            raise HttpError("bad host %r (an IPv6 address needs brackets)" % text[:60])
        host = _normal_name(host)
    if port_text == "":
        port = default_port
    else:
        if not re.match(r"[0-9]{1,5}\Z", port_text) or not 0 < int(port_text) <= 65535:
            raise HttpError("bad port %r" % port_text[:20])
        port = int(port_text)
    return host, port


def _normal_name(host: str) -> str:
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > 253:
        raise HttpError("bad host name %r" % host[:40])
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):  # numbers: an IPv4 address in some form, or nothing
        if not all(_NUMERIC_LABEL.match(l) for l in labels) or len(labels) > 4:
            raise HttpError("bad IPv4 address %r" % host[:40])
        return _inet_aton_form(host, labels)
    for label in labels:
        if not _LABEL.match(label):
            raise HttpError("bad host name %r" % host[:70])
    return host.lower()


def _inet_aton_form(host: str, labels) -> str:
    # The forms inet_aton accepts (a, a.b, a.b.c, a.b.c.d; decimal, 0x hex, 0 octal), in dotted quad:
    # '127.1' and '2130706433' are 127.0.0.1 to the kernel, so they must be to the loop guard too.
    try:
        nums = [int(l, 16) if l.lower().startswith("0x") else int(l, 8) if len(l) > 1 and l[0] == "0"
                else int(l) for l in labels]
    except ValueError:
        raise HttpError("bad IPv4 address %r" % host[:40])
    widths = {1: (32,), 2: (8, 24), 3: (8, 8, 16), 4: (8, 8, 8, 8)}[len(nums)]
    value = 0
    for n, bits in zip(nums, widths):
        if not 0 <= n < (1 << bits):
            raise HttpError("bad IPv4 address %r" % host[:40])
        value = (value << bits) | n
    return "%d.%d.%d.%d" % (value >> 24, (value >> 16) & 255, (value >> 8) & 255, value & 255)


class ChunkedDecoder:
    """Incremental decoder of a chunked body: ``feed(bytes) -> [data pieces]``; ``done`` at the end.

    Bytes after the end (the next message) are kept in ``trailing``. Chunk extensions are returned by
    ``extensions`` for the last size line read (ICAP's ``ieof`` rides on them).
    """

    MAX_LINE = 4096

    def __init__(self, max_line: int = MAX_LINE):
        self._buf = bytearray()
        self._state = "size"
        self._left = 0
        self._max_line = max_line
        self.done = False
        self.trailing = b""
        self.last_extensions: Tuple[str, ...] = ()

    def feed(self, data: bytes) -> List[bytes]:
        """Decode what ``data`` completes; raise HttpError on a malformed stream."""
        if self.done:
            self.trailing += bytes(data)
            return []
        self._buf += data
        out = []
        while True:
            if self._state == "data":
                if not self._buf:
                    break
                take = min(self._left, len(self._buf))
                out.append(bytes(self._buf[:take]))
                del self._buf[:take]
                self._left -= take
                if self._left == 0:
                    self._state = "crlf"
                continue
            if self._state == "crlf":
                if len(self._buf) < 2:
                    break
                if self._buf[:2] != CRLF:
                    raise HttpError("chunk data not followed by CRLF")
                del self._buf[:2]
                self._state = "size"
                continue
            idx = self._buf.find(CRLF)
            if idx < 0:
                if len(self._buf) > self._max_line:
                    raise HttpError("chunk size line too long")
                break
            line = bytes(self._buf[:idx])
            del self._buf[: idx + 2]
            if self._state == "size":
                self._left = self._parse_size(line)
                self._state = "data" if self._left else "trailer"
            elif line == b"":  # end of trailer section
                self.done = True
                self.trailing = bytes(self._buf)
                self._buf = bytearray()
                break
        return out

    def _parse_size(self, line: bytes) -> int:
        size, _, ext = line.partition(b";")
        size = size.strip(b" \t")
        if not size or len(size) > 15 or any(c not in b"0123456789abcdefABCDEF" for c in size):
            raise HttpError("bad chunk size %r" % line[:40])
        self.last_extensions = tuple(e.strip().decode("latin-1").lower() for e in ext.split(b";") if e.strip())
        return int(size, 16)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty data gives nothing: use LAST_CHUNK to end)."""
    if not data:
        return b""
    return b"%x\r\n" % len(data) + bytes(data) + CRLF


LAST_CHUNK = b"0\r\n\r\n"
