"""What a ``url`` or ``domain`` list entry is, on the hub and on the device: expressions and digests.

Owns: the IDNA mapping given to the core's canonicalisation (``agent.core.urlcanon``), the entries of
a url/domain list read from text (one URL or name a line), and the (expression, digest) pairs a URL
or a host name is looked up under. Shared by the hub's `lists build` (``tools.build``) and the device's
lookups (``agent.matching.scanner.Scanner.lookup_url`` / ``lookup_domain``), so both sides compute
the same digest for the same URL however it is spelt. Must not touch: Bloom filters, the network.

Why the ``idna`` package (IDNA 2008 with the UTS #46 mapping, non-transitional): it is what browsers
use to turn ``bücher.example`` into the ``xn--bcher-kva.example`` they put into DNS questions, TLS
server names and Host headers, so a hotline may write a list entry either way. OpenWrt packages it
(python3-idna). Labels it refuses (disallowed code points) stay as their UTF-8 bytes, percent-escaped
by the core: the same on both sides, so such an entry still matches itself.
"""

from __future__ import annotations

from typing import List, Tuple

from agent.confirm.wire import Entry
from agent.core import urlcanon
from agent.core.errors import ConfigError, UrlError

MAX_ENTRY_ID = 200  # agent.confirm.wire.parse_entries keeps ids to 200 characters


def to_ascii(text: str) -> str:
    """A host's A-label form ('Bücher.Example' -> 'xn--bcher-kva.example'); labels IDNA refuses stay."""
    import idna

    mapped = idna.uts46_remap(text, std3_rules=False, transitional=False)  # case, width, '。' -> '.'
    out = []
    for label in mapped.split("."):
        if not label or label.isascii():
            out.append(label)
            continue
        try:
            out.append(idna.alabel(label).decode("ascii"))
        except idna.IDNAError:
            out.append(label)
    return ".".join(out)


def url_lookups(url) -> List[Tuple[str, bytes]]:
    """(expression, digest) for every host-suffix / path-prefix expression of ``url``, most specific first."""
    return [(e, urlcanon.digest(e)) for e in urlcanon.url_expressions(url, to_ascii)]


def name_lookups(name) -> List[Tuple[str, bytes]]:
    """(expression, digest) of a host name and its suffixes ('a.example.org/', 'example.org/')."""
    return [(e, urlcanon.digest(e)) for e in urlcanon.name_expressions(name, to_ascii)]


def canonical_host(name) -> str:
    """The canonical form of a host name (for logs and reports); UrlError when it has none."""
    return urlcanon.canonical_host(name, to_ascii)


def entry_expression(signal: str, line: str) -> str:
    """The expression a list line stands for: a URL's most specific one ('example.org/a/b.html'), or
    for a domain list the host and '/' (a bare name, '*.name', or the host of a URL)."""
    if signal == "url":
        return urlcanon.canonicalize(line, to_ascii).expression()
    if signal != "domain":
        raise ConfigError("signal %r holds no URLs or names" % (signal,))
    if "/" in line or "://" in line:
        return urlcanon.canonicalize(line, to_ascii).host + "/"
    return urlcanon.domain_expression(line, to_ascii)


def entry_id(expression: str) -> str:
    """The hub's identifier of an entry: the expression itself, shortened with its digest when long."""
    if len(expression) <= MAX_ENTRY_ID:
        return expression
    return "%s...#%s" % (expression[:MAX_ENTRY_ID - 24], urlcanon.digest(expression).hex()[:16])


def read_names(text: str, signal: str, where: str) -> List[Entry]:
    """Entries of a url or domain list from text: one URL or name a line, '#' comments, blank lines.

    Each line is canonicalised (agent.core.urlcanon) and becomes the digest of its expression; a line
    with no canonical form is refused with its number. Lines that canonicalise alike are one entry.
    """
    entries: List[Entry] = []
    seen = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            expr = entry_expression(signal, line)
        except UrlError as e:
            raise ConfigError("%s line %d: %r is not a %s (%s)"
                              % (where, n, line[:80], "URL" if signal == "url" else "domain name", e))
        if signal == "domain" and (expr == "/" or urlcanon.is_ip(expr[:-1].encode("ascii"))):
            raise ConfigError("%s line %d: %r is not a domain name (an address is blocked by a url list "
                              "entry, e.g. http://%s/)" % (where, n, line[:80], expr[:-1]))
        if expr in seen:
            continue
        seen.add(expr)
        entries.append(Entry(entry_id(expr), urlcanon.digest(expr)))
    return entries
