"""Canonical URLs and host names, and the expressions they are looked up under (MicroPython-safe).

Owns: the Safe Browsing canonicalisation (developers.google.com/safe-browsing, "URLs and Hashing"):
tab/CR/LF removed, fragment cut, percent-escapes undone until none is left, the host lower-cased,
its dots collapsed and trimmed, IPv4 in any legal spelling (octal, hex, fewer parts) and IPv6 written
one way (IPv4-mapped and NAT64 addresses as IPv4), non-ASCII hosts through IDNA (the ``to_ascii`` hook:
the core has no IDNA table; ``agent.lists.names`` passes the ``idna`` package's UTS #46 mapping),
the path's ``.``, ``..`` and repeated slashes resolved, and bytes <= 0x20, >= 0x7F, ``#`` and ``%``
escaped again once, in upper-case hex. Then the host-suffix / path-prefix expressions a URL is looked
up under (at most 5 hosts x 6 paths), the host expressions of a name (DNS, TLS server names), and
the SHA-256 of an expression: a list entry of signal ``url`` or ``domain`` is that digest.
Must not touch: lists, Bloom filters, the network.

Why the Safe Browsing rules: hotlines' URL lists and resolvers' block lists are written for them,
and the same function on the hub (building) and on the device (looking up) is what makes a listed
URL match however a client spells it (``%77ww.EXAMPLE.org./a/./b`` is ``www.example.org/a/b``).

Work is in bytes and linear in the input (the repeated unescape is one pass with a stack), bounded
by ``MAX_INPUT``; hostile input gets a canonical form or ``UrlError``, never a crash.
"""

try:
    import hashlib
except ImportError:  # pragma: no cover - MicroPython ports without the CPython name
    import uhashlib as hashlib

try:
    from agent.core.errors import UrlError
except ImportError:  # MicroPython
    from core.errors import UrlError

MAX_INPUT = 65536  # bytes of a URL or name; an HTTP head is 32 KiB at most on the proxy
MAX_HOST_SUFFIXES = 4  # besides the exact host: from its last 5 components down to 2
MAX_PATH_PREFIXES = 4  # "/" and up to 3 more components, each with a trailing slash
_HEX = b"0123456789ABCDEF"
_SPACE = b" \t\n\r\x0b\x0c"


def _ishex(c):
    return 48 <= c <= 57 or 65 <= c <= 70 or 97 <= c <= 102


def _hexval(c):
    if c <= 57:
        return c - 48
    return (c & 0xDF) - 55


def unescape(data):
    """Undo percent-escapes until none is left, in one pass (the same as unescaping repeatedly)."""
    out = []
    for c in data:
        out.append(c)
        # a decoded byte may complete an escape with what precedes it: '%%32%35' -> '%25' -> '%'
        while len(out) >= 3 and out[-3] == 37 and _ishex(out[-2]) and _ishex(out[-1]):
            v = _hexval(out[-2]) * 16 + _hexval(out[-1])
            out.pop()
            out.pop()
            out[-1] = v
    return bytes(out)


def escape(data):
    """Escape bytes <= 0x20, >= 0x7F, '#' and '%' as %XX (upper-case hex); the rest stays."""
    out = []
    for c in data:
        if c <= 32 or c >= 127 or c == 35 or c == 37:
            out.append(37)
            out.append(_HEX[c >> 4])
            out.append(_HEX[c & 15])
        else:
            out.append(c)
    return bytes(out)


def _lower(data):
    return bytes(c + 32 if 65 <= c <= 90 else c for c in data)


def _as_bytes(text, what):
    if isinstance(text, str):
        text = text.encode("utf-8")
    elif not isinstance(text, (bytes, bytearray)):
        raise UrlError("%s must be text or bytes, not %s" % (what, type(text).__name__))
    if len(text) > MAX_INPUT:
        raise UrlError("%s of %d bytes is over the %d-byte limit" % (what, len(text), MAX_INPUT))
    return bytes(text)


def _strip(data, chars):
    i, j = 0, len(data)
    while i < j and data[i] in chars:
        i += 1
    while j > i and data[j - 1] in chars:
        j -= 1
    return data[i:j]


# ---------------------------------------------------------------- addresses

def _number(part):
    """A number as inet_aton reads it (0x hex, leading 0 octal, else decimal), or None."""
    if not part:
        return None
    low = _lower(part)
    if low.startswith(b"0x"):
        digits, base = low[2:], 16
        if not digits or any(not _ishex(c) for c in digits):
            return None
    elif len(low) > 1 and low[0] == 48:
        digits, base = low[1:], 8
        if any(not 48 <= c <= 55 for c in digits):
            return None
    else:
        digits, base = low, 10
        if any(not 48 <= c <= 57 for c in digits):
            return None
    if len(digits) > 32:
        return None
    return int(digits, base)


def _windows_quad(host):
    # "10.192.95.89 xy": Windows resolves a dotted quad followed by a space and anything, when the
    # whole is at most 15 characters; Safe Browsing (and so we) read the quad.
    if len(host) > 15 or b" " not in host:
        return host
    head = host.split(b" ")[0]
    parts = head.split(b".")
    if len(parts) == 4 and all(1 <= len(p) <= 3 and all(48 <= c <= 57 for c in p) for p in parts):
        return head
    return host


def ipv4(host):
    """The dotted-decimal form of an IPv4 address in any legal spelling, or None."""
    host = _windows_quad(host)
    if not host or any(not (_ishex(c) or c in b".xX") for c in host):
        return None
    parts = host.split(b".")
    if len(parts) > 4:
        return None
    nums = [_number(p) for p in parts]
    if any(n is None for n in nums):
        return None
    for n in nums[:-1]:
        if n > 255:
            return None
    if nums[-1] >= 1 << (8 * (5 - len(parts))):
        return None
    value = 0
    for n in nums[:-1]:
        value = value * 256 + n
    value = (value << (8 * (5 - len(parts)))) | nums[-1]
    return ("%d.%d.%d.%d" % (value >> 24, (value >> 16) & 255, (value >> 8) & 255, value & 255)).encode()


def _ipv6_groups(text):
    """Eight 16-bit groups of an IPv6 address (with an optional dotted IPv4 tail), or None."""
    if not text or text.count(b"::") > 1:
        return None
    tail = []
    if b"." in text:
        i = text.rfind(b":")
        if i < 0:
            return None
        parts = text[i + 1:].split(b".")
        if len(parts) != 4 or any(not p or len(p) > 3 or any(not 48 <= c <= 57 for c in p) for p in parts):
            return None
        nums = [int(p) for p in parts]
        if any(n > 255 for n in nums):
            return None
        tail = [nums[0] * 256 + nums[1], nums[2] * 256 + nums[3]]
        text = text[:i + 1]
        if not text.endswith(b"::"):
            text = text[:-1]  # the ':' before the quad separates; '::' before it compresses
        if not text:
            return None
    if b"::" in text:
        left, right = text.split(b"::")
        head = left.split(b":") if left else []
        rest = right.split(b":") if right else []
    else:
        head, rest = text.split(b":"), []
    for g in head + rest:
        if not g or len(g) > 4 or any(not _ishex(c) for c in g):
            return None
    need = 8 - len(tail)
    if b"::" in text:
        missing = need - len(head) - len(rest)
        if missing < 1:
            return None
        groups = [int(g, 16) for g in head] + [0] * missing + [int(g, 16) for g in rest]
    else:
        if len(head) != need:
            return None
        groups = [int(g, 16) for g in head]
    return groups + tail


def ipv6(host):
    """The normal form of a bracketed IPv6 host ('[2001:db8::1]'), IPv4-mapped and NAT64 (64:ff9b::/96)
    addresses as dotted IPv4; None if ``host`` is not one."""
    if len(host) < 3 or host[0] != 91 or host[-1] != 93:
        return None
    text = host[1:-1]
    zone = text.find(b"%")
    if zone >= 0:  # a link-local zone ('fe80::1%eth0') names the client's interface, not the server
        text = text[:zone]
    groups = _ipv6_groups(text)
    if groups is None:
        return None
    if groups[:6] == [0, 0, 0, 0, 0, 0xFFFF] or groups[:6] == [0x64, 0xFF9B, 0, 0, 0, 0]:
        return ("%d.%d.%d.%d" % (groups[6] >> 8, groups[6] & 255, groups[7] >> 8, groups[7] & 255)).encode()
    # RFC 5952: the longest run of two or more zero groups (the first of equals) becomes '::'
    best, best_len, i = -1, 1, 0
    while i < 8:
        if groups[i] == 0:
            j = i
            while j < 8 and groups[j] == 0:
                j += 1
            if j - i > best_len:
                best, best_len = i, j - i
            i = j
        else:
            i += 1
    if best < 0:
        text = ":".join("%x" % g for g in groups)
    else:
        text = (":".join("%x" % g for g in groups[:best]) + "::"
                + ":".join("%x" % g for g in groups[best + best_len:]))
    return ("[" + text + "]").encode()


def is_ip(host):
    """Whether a canonical host is an address (no host suffixes are looked up for one)."""
    if host[:1] == b"[":
        return True
    parts = host.split(b".")
    return len(parts) == 4 and all(p and all(48 <= c <= 57 for c in p) for p in parts)


# ---------------------------------------------------------------- hosts and URLs

def _host(raw, to_ascii):
    """The canonical (escaped) host of unescaped host bytes."""
    if any(c >= 128 for c in raw) and to_ascii is not None:
        try:
            # the hook may leave a label it cannot map as it is: its UTF-8 bytes are escaped below
            raw = to_ascii(raw.decode("utf-8")).encode("utf-8")
        except Exception:  # not UTF-8, or no valid IDNA: the bytes stay and get escaped below
            pass
    # dots: collapse runs, trim both ends (before the address check: '1.2.3.4.' is an address)
    parts = [p for p in raw.split(b".") if p]
    raw = b".".join(parts)
    addr = ipv6(raw) or ipv4(raw)
    if addr is not None:
        return addr
    return escape(_lower(raw))


def canonical_host(name, to_ascii=None):
    """The canonical form of a host name or address as text ('WWW.Example.ORG.' -> 'www.example.org').

    For names seen without a URL: DNS questions and TLS server names. Raises UrlError when nothing
    of a host is left.
    """
    data = _strip(unescape(_as_bytes(name, "host name")), _SPACE)
    host = _host(data, to_ascii)
    if not host:
        raise UrlError("empty host name")
    return host.decode("ascii")


def _scheme(data):
    """(scheme, rest) as Safe Browsing reads it: 'www.example.org:80/' has no scheme."""
    for i in range(len(data)):
        c = data[i]
        if 65 <= c <= 90 or 97 <= c <= 122:
            continue
        if 48 <= c <= 57 or c in b"+-.":
            if i == 0:
                return b"", data
            continue
        if c == 58 and i > 0:  # ':' not followed by a port ('host:8080/' or 'host:8080')
            j = i + 1
            while j < len(data) and 48 <= data[j] <= 57:
                j += 1
            if j == i + 1 or (j < len(data) and data[j] != 47):
                return _lower(data[:i]), data[i + 1:]
        return b"", data
    return b"", data


def _clean_path(path):
    """Go's path.Clean for a rooted path, keeping a trailing slash: '/a//b/./c/..' -> '/a/b/'."""
    out = []
    for seg in path.split(b"/"):
        if seg == b"" or seg == b".":
            continue
        if seg == b"..":
            if out:
                out.pop()
            continue
        out.append(seg)
    clean = b"/" + b"/".join(out)
    if out and path.endswith(b"/"):
        clean += b"/"
    return clean


class CanonicalUrl:
    """A canonical URL: scheme, host, path (from '/') and query (None when there was no '?'), as text."""

    __slots__ = ("scheme", "host", "path", "query")

    def __init__(self, scheme, host, path, query):
        self.scheme = scheme
        self.host = host
        self.path = path
        self.query = query

    def url(self):
        """'scheme://host/path?query'."""
        return "%s://%s%s%s" % (self.scheme, self.host, self.path, "" if self.query is None else "?" + self.query)

    def expression(self):
        """The most specific expression: 'host/path?query' (what a list entry of this URL is)."""
        return "%s%s%s" % (self.host, self.path, "" if self.query is None else "?" + self.query)


def canonicalize(url, to_ascii=None):
    """The canonical URL of ``url`` (text or bytes; http:// is assumed without a scheme).

    Raises UrlError for input over MAX_INPUT, a scheme without '//' ('mailto:x'), or no host.
    """
    data = _as_bytes(url, "URL")
    cut = data.find(b"#")
    if cut >= 0:
        data = data[:cut]
    data = _strip(data, _SPACE)
    if b"\t" in data or b"\r" in data or b"\n" in data:
        data = bytes(c for c in data if c not in (9, 10, 13))
    data = unescape(data)
    scheme, rest = _scheme(data)
    q = rest.find(b"?")
    query = None
    if q >= 0:
        rest, query = rest[:q], rest[q + 1:]
    if scheme:
        if not rest.startswith(b"//"):
            raise UrlError("URL with scheme %r has no '//' and host" % scheme.decode("ascii", "replace")[:16])
        rest = rest[2:]
    else:
        scheme = b"http"
    slash = rest.find(b"/")
    hostish, path = (rest, b"") if slash < 0 else (rest[:slash], rest[slash:])
    at = hostish.rfind(b"@")
    if at >= 0:
        hostish = hostish[at + 1:]
    # the port: ':digits' at the end (after an IPv6 literal's ']')
    colon = hostish.rfind(b":")
    if colon >= 0 and hostish.rfind(b"]") < colon:
        port = hostish[colon + 1:]
        if all(48 <= c <= 57 for c in port) and (hostish[:1] != b"[" or hostish[colon - 1:colon] == b"]"):
            hostish = hostish[:colon]
    host = _host(hostish, to_ascii)
    if not host:
        raise UrlError("URL has no host")
    path = _clean_path(path) if path else b"/"
    return CanonicalUrl(scheme.decode("ascii"), host.decode("ascii"), escape(path).decode("ascii"),
                        None if query is None else escape(query).decode("ascii"))


def host_suffixes(host):
    """The exact host, then up to 4 suffixes from its last 5 components down to 2 (none for an address)."""
    data = host.encode("ascii") if isinstance(host, str) else host
    out = [host]
    if is_ip(data):
        return out
    parts = host.split(".")
    start = max(1, len(parts) - 5)
    for i in range(start, len(parts) - 1):
        out.append(".".join(parts[i:]))
    return out


def path_prefixes(path, query):
    """The exact path with its query, without it, then '/' plus up to 3 components, each ending in '/'."""
    out = []
    if query is not None:
        out.append(path + "?" + query)
    out.append(path)
    comps = [c for c in path.split("/") if c]
    prefixes = ["/"]
    for i in range(1, min(len(comps), MAX_PATH_PREFIXES)):
        prefixes.append("/" + "/".join(comps[:i]) + "/")
    for p in reversed(prefixes):
        out.append(p)
    seen = []
    for p in out:  # most specific first, each once
        if p not in seen:
            seen.append(p)
    return seen


def url_expressions(url, to_ascii=None):
    """Every host-suffix / path-prefix expression of ``url``, most specific first (at most 30)."""
    c = canonicalize(url, to_ascii)
    paths = path_prefixes(c.path, c.query)
    return [h + p for h in host_suffixes(c.host) for p in paths]


def name_expressions(name, to_ascii=None):
    """The expressions of a host name alone (DNS, TLS): 'a.b.example.org/', 'b.example.org/', 'example.org/'."""
    return [h + "/" for h in host_suffixes(canonical_host(name, to_ascii))]


def domain_expression(name, to_ascii=None):
    """What a ``domain`` list entry of ``name`` is: its canonical host and '/' (a leading '*.' dropped)."""
    data = _as_bytes(name, "host name").strip()
    if data.startswith(b"*."):
        data = data[2:]
    return canonical_host(data, to_ascii) + "/"


def digest(expression):
    """SHA-256 of an expression: the hash a ``url`` or ``domain`` list holds for it."""
    if isinstance(expression, str):
        expression = expression.encode("ascii")
    return hashlib.sha256(expression).digest()
