"""Anonymised hit reports: building, encoding and strict validation (MicroPython-safe).

Owns the report schema (docs/reports.md): a JSON object with exactly these keys and nothing
else, so that a field that could identify a subscriber cannot slip in unnoticed:

    schema   int, SCHEMA_VERSION
    id       32 hex chars, random: the idempotency key (the hub stores each id once)
    source, list, version, signal, distance   what matched
    entry    the matched entry's identifier as the hub knows it, printable text (never the image's own hash)
    hosting  {"url"|"host", "ip", "country"}: where the material was hosted, as configured
    time     "YYYY-MM-DDTHH:00:00Z": rounded down to the hour
    device   16 hex chars: HMAC-SHA256(device secret, UTC day) truncated, rotates daily; or null
    region   the operator's region code, or null
    agent    agent version

Must not touch: transport (agent.reports.reporter), storage (agent.reports.spool). Stdlib subset only: no typing at
run time, no dataclasses, % formatting; runs as ``agent.core.report`` and as MicroPython ``core.report``.
"""

try:
    import ujson as json
except ImportError:
    import json

try:
    import hashlib
except ImportError:  # pragma: no cover
    import uhashlib as hashlib

try:
    import os
    _urandom = os.urandom
except (ImportError, AttributeError):  # pragma: no cover - ports without os.urandom
    import random

    def _urandom(n):
        return bytes(random.getrandbits(8) for _ in range(n))

try:
    import time
except ImportError:  # pragma: no cover
    import utime as time

try:
    from agent.core.errors import GatewatchError, ReportError  # noqa: F401
except ImportError:  # pragma: no cover - MicroPython
    from core.errors import GatewatchError, ReportError  # noqa: F401


SCHEMA_VERSION = 1
MAX_REPORT_BYTES = 4096
SIGNALS = ("sha256", "sha1", "md5", "url", "domain", "pdq", "neural")
HOSTING_MODES = ("url", "url-noquery", "host", "none")
#: The query string of a URL may carry a subscriber's session token, so it stays home by default.
DEFAULT_HOSTING = "url-noquery"
PSEUDONYM_HEX = 16
KEYS = ("schema", "id", "source", "list", "version", "signal", "distance", "entry", "hosting",
        "time", "device", "region", "agent")
HOSTING_KEYS = ("url", "host", "ip", "country")
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
_HEX = "0123456789abcdef"
_HOST_CHARS = _NAME_CHARS + ":[]"
_URL_BAD = " \t\r\n\"<>\\^`{|}\0"



# time -----------------------------------------------------------------------------------------
def _unix_now():
    t = time.time()
    try:
        if time.gmtime(0)[0] == 2000:  # MicroPython ports with the 2000 epoch
            t += 946684800
    except (AttributeError, OverflowError, OSError):
        pass
    return int(t)


def _civil(days):
    """(year, month, day) of a count of days since 1970-01-01 (H. Hinnant's algorithm)."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y, m, d)


def hour_floor(unix_seconds):
    """Unix time rounded down to the hour."""
    return int(unix_seconds) // 3600 * 3600


def iso_hour(unix_seconds):
    """``YYYY-MM-DDTHH:00:00Z`` of the hour that contains ``unix_seconds``."""
    t = hour_floor(unix_seconds)
    y, m, d = _civil(t // 86400)
    return "%04d-%02d-%02dT%02d:00:00Z" % (y, m, d, (t % 86400) // 3600)


def utc_day(unix_seconds):
    """``YYYY-MM-DD`` (UTC) of ``unix_seconds``."""
    y, m, d = _civil(int(unix_seconds) // 86400)
    return "%04d-%02d-%02d" % (y, m, d)


# identity -------------------------------------------------------------------------------------
def _hex(data):
    return "".join("%02x" % b for b in data)


def new_report_id():
    """A random 128-bit report id as 32 hex chars."""
    return _hex(_urandom(16))


def hmac_sha256(key, msg):
    """HMAC-SHA256 by hand (RFC 2104): MicroPython has hashlib.sha256 but no hmac module."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + b"\0" * (64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + msg).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).digest()


def device_pseudonym(secret, unix_seconds):
    """HMAC(device secret, UTC day) truncated to 16 hex chars, or None without a secret.

    It rotates every UTC day, so the hub can count hits per device within a day (to spot a
    misbehaving agent) but cannot link days, let alone a subscriber.
    """
    if not secret:
        return None
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return _hex(hmac_sha256(secret, utc_day(unix_seconds).encode("ascii")))[:PSEUDONYM_HEX]


# hosting --------------------------------------------------------------------------------------
def _split_url(url):
    """(scheme, authority, path_and_query_without_fragment) of an absolute http(s) URL."""
    i = url.find("://")
    if i <= 0:
        raise ReportError("hosting URL %r is not absolute (scheme://host/...)" % (url[:80],))
    scheme = url[:i].lower()
    if scheme not in ("http", "https"):
        raise ReportError("hosting URL scheme %r is not http or https" % (scheme,))
    rest = url[i + 3:]
    cut = len(rest)
    for c in "/?#":
        j = rest.find(c)
        if 0 <= j < cut:
            cut = j
    authority, tail = rest[:cut], rest[cut:]
    j = tail.find("#")
    if j >= 0:
        tail = tail[:j]
    return scheme, authority, tail


def _host_of(authority):
    """Host (lower case, no port, no user info) of an authority."""
    if "@" in authority:
        authority = authority[authority.rfind("@") + 1:]
    if authority.startswith("["):
        j = authority.find("]")
        return authority[:j + 1].lower()
    j = authority.find(":")
    return (authority[:j] if j >= 0 else authority).lower()


def hosting_from_url(url, mode=DEFAULT_HOSTING, ip=None, country=None):
    """The ``hosting`` object for the URL of matched material under the operator's ``mode``.

    ``url``: scheme, host, port, path and query, never user info or fragment. ``url-noquery``: the
    same without the query (which may hold a subscriber's session token). ``host``: the host only.
    ``none``: nothing. ``'//host'`` (DNS, TLS: no URL is known) gives the host under every mode but
    ``none``. ``ip`` is the *hosting server's* address; a private, loopback or link-local
    address is left out because it is more likely a subscriber's LAN address than a server's.
    """
    if mode not in HOSTING_MODES:
        raise ReportError("hosting mode %r unknown; use one of %s" % (mode, ", ".join(HOSTING_MODES)))
    out = {}
    if mode != "none" and url and url.startswith("//"):
        # '//host': a host seen without any URL (a DNS question, a TLS server name): the host alone
        out["host"] = _host_of(url[2:].split("/")[0])
    elif mode != "none" and url:
        scheme, authority, tail = _split_url(url)
        if "@" in authority:
            authority = authority[authority.rfind("@") + 1:]
        host = _host_of(authority)
        if mode == "host":
            out["host"] = host
        else:
            if mode == "url-noquery":
                j = tail.find("?")
                if j >= 0:
                    tail = tail[:j]
            out["url"] = "%s://%s%s" % (scheme, authority.lower(), tail or "/")
    if ip and not is_local_ip(ip):
        out["ip"] = ip
    if country:
        out["country"] = country.upper()
    return out


def _ipv4(s):
    parts = s.split(".")
    if len(parts) != 4:
        return None
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        return None
    if any(p == "" or not p.isdigit() or n > 255 for p, n in zip(parts, nums)):
        return None
    return nums


def _ipv6(s):
    if ":" not in s or any(c not in "0123456789abcdefABCDEF:." for c in s) or s.count("::") > 1:
        return False
    return True


def is_local_ip(ip):
    """True for loopback, private, link-local, CGNAT, unspecified and ULA addresses."""
    v4 = _ipv4(ip)
    if v4 is not None:
        a, b = v4[0], v4[1]
        return (a in (0, 10, 127) or (a == 172 and 16 <= b <= 31) or (a == 192 and b == 168)
                or (a == 169 and b == 254) or (a == 100 and 64 <= b <= 127))
    low = ip.lower()
    if low.startswith("::ffff:"):
        return is_local_ip(low[7:])
    return (low in ("::", "::1") or low.startswith("fe8") or low.startswith("fe9")
            or low.startswith("fea") or low.startswith("feb") or low.startswith("fc")
            or low.startswith("fd"))


# building, encoding, validation -----------------------------------------------------------------
def make_report(source, list_name, version, signal, distance, entry, hosting=None, now=None,
                device_secret=None, region=None, agent_version="unknown", report_id=None):
    """A validated report dict; ``now`` is Unix seconds (default: the clock), rounded to the hour."""
    if now is None:
        now = _unix_now()
    report = {
        "schema": SCHEMA_VERSION,
        "id": report_id or new_report_id(),
        "source": source,
        "list": list_name,
        "version": version,
        "signal": signal,
        "distance": distance,
        "entry": entry,
        "hosting": hosting or {},
        "time": iso_hour(now),
        "device": device_pseudonym(device_secret, now),
        "region": region,
        "agent": agent_version,
    }
    validate_report(report)
    return report


def _name(field, value, maxlen=64, extra=""):
    if not isinstance(value, str) or not value or len(value) > maxlen or \
            any(c not in _NAME_CHARS and c not in extra for c in value):
        raise ReportError("report field %r must be 1-%d characters of A-Z a-z 0-9 . _ - %s, got %r"
                          % (field, maxlen, extra, value))


def _entry(value):
    # the hub's own identifier (a case number, a file name in its folder): any printable text
    if not isinstance(value, str) or not value or len(value) > 256 or \
            any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ReportError("report field 'entry' must be 1-256 printable characters, got %r" % (value,))


def _int(field, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or value > hi:
        raise ReportError("report field %r must be an integer in %d..%d, got %r" % (field, lo, hi, value))


def _hexstr(field, value, n):
    if not isinstance(value, str) or len(value) != n or any(c not in _HEX for c in value):
        raise ReportError("report field %r must be %d lower-case hex chars, got %r" % (field, n, value))


def _time(value):
    ok = isinstance(value, str) and len(value) == 20 and value[4] == "-" and value[7] == "-" and \
        value[10] == "T" and value[13:] == ":00:00Z"
    if ok:
        try:
            y, mo, d, h = int(value[0:4]), int(value[5:7]), int(value[8:10]), int(value[11:13])
            ok = 1 <= mo <= 12 and 1 <= d <= 31 and 0 <= h <= 23 and y >= 1970
        except ValueError:
            ok = False
    if not ok:
        raise ReportError("report field 'time' must be an hour 'YYYY-MM-DDTHH:00:00Z', got %r" % (value,))


def _hosting(h):
    if not isinstance(h, dict):
        raise ReportError("report field 'hosting' must be an object")
    for k in h:
        if k not in HOSTING_KEYS:
            raise ReportError("hosting field %r is not allowed; allowed: %s" % (k, ", ".join(HOSTING_KEYS)))
    if "url" in h and "host" in h:
        raise ReportError("hosting carries either 'url' or 'host', not both")
    if "url" in h:
        url = h["url"]
        if not isinstance(url, str) or not url or len(url) > 2048 or any(c in url for c in _URL_BAD):
            raise ReportError("hosting url must be a URL of at most 2048 characters")
        scheme, authority, tail = _split_url(url)
        if "@" in authority:
            raise ReportError("hosting url must not carry user info (user:password@)")
        if "#" in url:
            raise ReportError("hosting url must not carry a fragment")
    if "host" in h:
        host = h["host"]
        if not isinstance(host, str) or not host or len(host) > 255 or \
                any(c not in _HOST_CHARS for c in host):
            raise ReportError("hosting host must be a host name or address, got %r" % (host,))
    if "ip" in h:
        ip = h["ip"]
        if not isinstance(ip, str) or (_ipv4(ip) is None and not _ipv6(ip)):
            raise ReportError("hosting ip must be an IPv4 or IPv6 address, got %r" % (ip,))
        if is_local_ip(ip):
            raise ReportError("hosting ip %r is a local/private address: that is no hosting server "
                              "and may be a subscriber's" % (ip,))
    if "country" in h:
        c = h["country"]
        if not isinstance(c, str) or len(c) != 2 or not ("A" <= c[0] <= "Z" and "A" <= c[1] <= "Z"):
            raise ReportError("hosting country must be an ISO 3166 alpha-2 code, got %r" % (c,))


def validate_report(report):
    """Raise ReportError unless ``report`` has exactly the schema's keys with valid values."""
    if not isinstance(report, dict):
        raise ReportError("a report must be a JSON object")
    for k in report:
        if k not in KEYS:
            raise ReportError("report field %r is not allowed; allowed: %s" % (k, ", ".join(KEYS)))
    for k in KEYS:
        if k not in report:
            raise ReportError("report field %r is missing" % (k,))
    if report["schema"] != SCHEMA_VERSION or isinstance(report["schema"], bool):
        raise ReportError("report schema %r is not supported (this agent speaks %d)"
                          % (report["schema"], SCHEMA_VERSION))
    _hexstr("id", report["id"], 32)
    _name("source", report["source"])
    _name("list", report["list"])
    _int("version", report["version"], 0, 2 ** 53)
    if report["signal"] not in SIGNALS:
        raise ReportError("report field 'signal' must be one of %s, got %r"
                          % (", ".join(SIGNALS), report["signal"]))
    _int("distance", report["distance"], 0, 1024)
    _entry(report["entry"])
    _hosting(report["hosting"])
    _time(report["time"])
    if report["device"] is not None:
        _hexstr("device", report["device"], PSEUDONYM_HEX)
    if report["region"] is not None:
        _name("region", report["region"], 16)
    _name("agent", report["agent"], 32)
    return report


def encode_report(report):
    """Validated report -> compact UTF-8 JSON bytes."""
    validate_report(report)
    try:
        text = json.dumps(report, separators=(",", ":"), sort_keys=True)
    except TypeError:  # MicroPython's json has no sort_keys
        text = json.dumps(report)
    data = text.encode("utf-8")
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError("report is %d bytes, over the %d-byte limit" % (len(data), MAX_REPORT_BYTES))
    return data


def decode_report(data):
    """JSON bytes -> validated report dict; ReportError if it is not one."""
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError("report is %d bytes, over the %d-byte limit" % (len(data), MAX_REPORT_BYTES))
    try:
        obj = json.loads(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data)
    except (ValueError, UnicodeError) as exc:
        raise ReportError("report is not UTF-8 JSON (%s)" % (exc,))
    return validate_report(obj)
