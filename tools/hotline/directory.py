"""The hotline directory: a signed file that maps countries to hotlines, and the routing rule.

Owns the directory's format (docs/hotlines.md), building and signing it, reading and checking it,
and ``responsible(country)``: the hotline that covers a hosting country. Must not touch cases,
the network or key files beyond reading them through ``tools.build``/``agent.lists.trust``.

A directory is signed by the network's directory key (one key every member hub trusts, installed
as a public key file), not by a member: a member cannot add itself or take over a country.
"""

from __future__ import annotations

import json
import re
import time
from typing import Dict, List, Optional
from urllib.parse import urlsplit

from agent.atomicfile import write_atomic
from agent.core.errors import ConfigError, TrustError
from agent.lists.trust import check_name, parse_public_key, public_key_line
from tools.hotline.signing import open_envelope, seal

FORMAT = "gatewatch-hotline-directory"
MAX_BYTES = 1 << 20
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_FIELDS = ("id", "name", "countries", "key", "hub")


class Hotline:
    """One member: ``id``, ``name``, ``countries``, ``key`` (its Ed25519 public key), ``hub`` (https URL)."""

    __slots__ = ("id", "name", "countries", "key", "key_line", "hub")

    def __init__(self, ident, name, countries, key, key_line, hub):
        self.id, self.name, self.countries, self.key, self.key_line, self.hub = (
            ident, name, countries, key, key_line, hub)

    def to_json(self) -> dict:
        """The directory's form of this member."""
        return {"id": self.id, "name": self.name, "countries": list(self.countries),
                "key": self.key_line, "hub": self.hub}


def _hotline(item, n) -> Hotline:
    where = "hotline %d" % n
    if not isinstance(item, dict) or set(item) != set(_FIELDS):
        raise ConfigError("%s: needs exactly the fields %s" % (where, ", ".join(_FIELDS)))
    ident = check_name("hotline", item["id"])
    where = "hotline %r" % ident
    name = item["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise ConfigError("%s: name must be 1-200 printable characters" % where)
    countries = item["countries"]
    if not isinstance(countries, list) or not countries or len(countries) > 300 or \
            not all(isinstance(c, str) and _COUNTRY.match(c) for c in countries):
        raise ConfigError("%s: countries must be a list of ISO 3166 alpha-2 codes in upper case (NL, FR)" % where)
    if not isinstance(item["key"], str):
        raise ConfigError("%s: key must be a public key line (gatewatch-ed25519 <base64> <id>)" % where)
    key, named = parse_public_key(item["key"], "%s key" % where)
    if named != ident:
        raise ConfigError("%s: its key names %r; a hotline's key must name the hotline" % (where, named))
    hub = item["hub"]
    parts = urlsplit(hub) if isinstance(hub, str) else None
    if parts is None or parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment \
            or len(hub) > 300:
        raise ConfigError("%s: hub must be an https:// URL (cases travel only encrypted)" % where)
    return Hotline(ident, name.strip(), sorted(set(countries)), key, item["key"].strip(), hub.rstrip("/"))


class Directory:
    """The checked directory: members by id and the routing rule."""

    def __init__(self, doc: dict) -> None:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ConfigError("not a hotline directory (format must be %r)" % FORMAT)
        version = doc.get("version")
        if type(version) is not int or not 1 <= version <= 2 ** 53:
            raise ConfigError("directory version must be a whole number >= 1")
        expires = doc.get("expires")
        if type(expires) is not int or expires < 0:
            raise ConfigError("directory expires must be Unix seconds")
        items = doc.get("hotlines")
        if not isinstance(items, list) or not items or len(items) > 1000:
            raise ConfigError("directory hotlines must be a list of 1-1000 members")
        if set(doc) != {"format", "version", "expires", "hotlines"}:
            raise ConfigError("directory has unknown fields: %s" % ", ".join(
                sorted(set(doc) - {"format", "version", "expires", "hotlines"})))
        self.version, self.expires = version, expires
        self.hotlines: Dict[str, Hotline] = {}
        self._by_country: Dict[str, str] = {}
        for n, item in enumerate(items, start=1):
            h = _hotline(item, n)
            if h.id in self.hotlines:
                raise ConfigError("hotline %r is listed twice" % h.id)
            for c in h.countries:
                if c in self._by_country:
                    raise ConfigError("country %s is covered by both %r and %r: one hotline per country"
                                      % (c, self._by_country[c], h.id))
                self._by_country[c] = h.id
            self.hotlines[h.id] = h

    def to_json(self) -> dict:
        """The signed document."""
        return {"format": FORMAT, "version": self.version, "expires": self.expires,
                "hotlines": [h.to_json() for h in self.hotlines.values()]}

    def get(self, ident: str) -> Optional[Hotline]:
        """The member ``ident``, or None."""
        return self.hotlines.get(ident)

    def responsible(self, country: Optional[str]) -> Optional[str]:
        """The routing rule: the hotline covering the hosting ``country``, or None (unknown country)."""
        return self._by_country.get(country) if country else None

    def countries(self) -> List[str]:
        """Every covered country."""
        return sorted(self._by_country)


def build_directory(input_path: str, key, out_path: str, version: Optional[int] = None,
                    expires_days: float = 365, now: Optional[float] = None) -> Directory:
    """Sign the members in ``input_path`` (JSON: {"hotlines": [...]}) into the directory file ``out_path``."""
    try:
        with open(input_path, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (input_path, e.strerror or e))
    except ValueError as e:
        raise ConfigError("%s is not JSON: %s" % (input_path, e))
    if not isinstance(doc, dict) or "hotlines" not in doc:
        raise ConfigError("%s must be a JSON object with a 'hotlines' list" % input_path)
    now = time.time() if now is None else now
    d = Directory({"format": FORMAT, "version": int(version or doc.get("version") or 1),
                   "expires": int(now + expires_days * 86400), "hotlines": doc["hotlines"]})
    write_atomic(out_path, (json.dumps(seal(d.to_json(), key), indent=1, sort_keys=True) + "\n").encode())
    return d


def load_directory(path: str, trusted_key_path: str, now: Optional[float] = None) -> Directory:
    """Read ``path``, check its signature against the directory key file and its expiry."""
    try:
        with open(trusted_key_path, "r", encoding="utf-8") as f:
            trusted, _name = parse_public_key(f.read(4096), trusted_key_path)
    except OSError as e:
        raise ConfigError("cannot read the directory key %s: %s" % (trusted_key_path, e.strerror or e))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError("cannot read the hotline directory %s: %s" % (path, e.strerror or e))
    if len(raw) > MAX_BYTES:
        raise ConfigError("hotline directory %s is over %d bytes" % (path, MAX_BYTES))
    try:
        env = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError("hotline directory %s is not JSON: %s" % (path, e))
    try:
        doc = open_envelope(env, [trusted], "hotline directory %s" % path)
    except TrustError as e:
        raise ConfigError(str(e))
    d = Directory(doc)
    if d.expires < (time.time() if now is None else now):
        raise ConfigError("hotline directory %s expired at %s: ask the network for a current one"
                          % (path, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(d.expires))))
    return d


__all__ = ["Directory", "Hotline", "build_directory", "load_directory", "public_key_line"]
