"""Where a hosting server is: DNS at the hub (time-out, cache) and a country database.

Owns turning a report's hosting URL or host into the hosting server's address and country. The
device never does this (it would need the database, and its resolver may be the subscriber's);
the hub does, with dnspython (a resolver with a per-query time-out and an LRU cache) and a country
database: by default the one the geoip2fast package ships in its wheel (GeoLite2-derived, IPv4
and IPv6), or a MaxMind-format file (``.mmdb``, read with maxminddb) that an operator replaces with
a current one. Must not touch reports, cases or anything about a subscriber: only the server's
name is looked up, and no traffic is ever sent to the address.

A name that resolves only to local, private or reserved addresses, a name that does not resolve
within the time-out, and an address the database does not place give no country: the case stays
with the hub that received it (routing rule, docs/hotlines.md).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Optional, Tuple
from urllib.parse import urlsplit

from agent.core.errors import ConfigError
from agent.core.report import is_local_ip

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
DEFAULT_CACHE = 10000


class CountryDb:
    """ISO country code of an IP address, from geoip2fast's shipped data or an .mmdb file."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path and path.endswith(".mmdb"):
            try:
                import maxminddb
            except ImportError:
                raise ConfigError("reading %s needs the maxminddb package (pip install maxminddb)" % path) from None
            try:
                self._mmdb = maxminddb.open_database(path)
            except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
                raise ConfigError("cannot read the country database %s: %s" % (path, e)) from None
            self._g2f = None
            self.source = "%s (%s)" % (path, self._mmdb.metadata().database_type)
        else:
            try:
                from geoip2fast import GeoIP2Fast
            except ImportError:
                raise ConfigError("the hub's country lookup needs the geoip2fast package (the hub extra)") from None
            self._mmdb = None
            try:
                # the IPv6 file holds both families; the default file only IPv4
                self._g2f = GeoIP2Fast(geoip2fast_data_file=path or "geoip2fast-ipv6.dat.gz", verbose=False)
            except Exception as e:  # geoip2fast raises its own error types, and plain ones for a bad file
                raise ConfigError("cannot load the country database %s: %s" % (path or "geoip2fast-ipv6.dat.gz", e)) from None
            self.source = "geoip2fast %s" % (path or "geoip2fast-ipv6.dat.gz (shipped)")

    def country(self, ip: str) -> Optional[str]:
        """The country code of ``ip``, or None where the database has none (private, reserved, unknown)."""
        if self._mmdb is not None:
            try:
                with self._lock:
                    rec = self._mmdb.get(ip)
            except ValueError:  # an IPv6 address in an IPv4-only file, or not an address
                return None
            if not isinstance(rec, dict):
                return None
            c = (rec.get("country") or rec.get("registered_country") or {}).get("iso_code")
        else:
            with self._lock:
                rec = self._g2f.lookup(ip)
            if getattr(rec, "is_private", False):
                return None
            c = getattr(rec, "country_code", None)
        if isinstance(c, str) and len(c) == 2 and c.isascii() and c.isalpha():
            return c.upper()
        return None


def host_of(hosting: dict) -> Optional[str]:
    """The host name or address of a report's ``hosting`` object (url or host), lower case, or None."""
    if hosting.get("url"):
        try:
            host = urlsplit(hosting["url"]).hostname
        except ValueError:
            return None
    else:
        host = hosting.get("host")
        if host and host.startswith("["):
            host = host.strip("[]")
    return host.lower().rstrip(".") if host else None


class HostingLocator:
    """Resolves hosting names at the hub and places the addresses in a country."""

    def __init__(self, db: CountryDb, nameserver: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                 cache_size: int = DEFAULT_CACHE) -> None:
        import dns.resolver
        self.db = db
        if nameserver:
            host, _, port = nameserver.rpartition(":") if nameserver.count(":") == 1 or "]" in nameserver \
                else (nameserver, "", "")
            host = host.strip("[]") or nameserver
            try:
                ipaddress.ip_address(host)
                port_n = int(port) if port else 53
                if not 0 < port_n < 65536:
                    raise ValueError
            except ValueError:
                raise ConfigError("--dns-server %r must be an address with an optional port (127.0.0.1:5353)"
                                  % nameserver) from None
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [host]
            self._resolver.port = port_n
        else:
            self._resolver = dns.resolver.Resolver()  # the hub's /etc/resolv.conf
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._resolver.cache = dns.resolver.LRUCache(cache_size)
        self.lookups = 0
        self.failures = 0

    def resolve(self, host: str) -> Optional[str]:
        """The first public address of ``host`` (A, then AAAA), or None."""
        import dns.exception
        import dns.resolver
        try:
            ipaddress.ip_address(host)
            return None if is_local_ip(host) else host
        except ValueError:
            pass
        self.lookups += 1
        for rdtype in ("A", "AAAA"):
            try:
                answer = self._resolver.resolve(host, rdtype, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers,
                    dns.exception.Timeout, dns.name.LabelTooLong, dns.name.EmptyLabel,
                    dns.exception.SyntaxError) as e:
                log.debug("no %s for a hosting name: %s", rdtype, type(e).__name__)
                continue
            for rr in answer:
                ip = rr.to_text()
                if not is_local_ip(ip) and not ipaddress.ip_address(ip).is_reserved:
                    return ip
        self.failures += 1
        return None

    def locate(self, hosting: dict) -> Tuple[Optional[str], Optional[str]]:
        """(address, country) of the server named in a report's ``hosting``; (None, None) when unknown."""
        host = host_of(hosting)
        if not host:
            return None, None
        ip = self.resolve(host)
        if ip is None:
            return None, None
        return ip, self.db.country(ip)
