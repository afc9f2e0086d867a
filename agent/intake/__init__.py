"""The contract between intakes (ICAP, proxy, local API, files) and the scanner.

An intake hands bytes plus context to an ``Inspector`` and acts on the ``Decision``. It owns no
hashing, matching or policy; the inspector owns no sockets.
"""

import asyncio
import logging
from typing import Callable, NamedTuple, Optional
from urllib.parse import urlsplit


class Decision(NamedTuple):
    """What an intake must do with one response body."""

    action: str  # "block" or "allow"
    reason: str  # short, subscriber-free text for logs ("match", "clean", "scan-error: ...")
    result: object = None  # the agent.matching.scanner.ScanResult behind it, when a scan ran
    url: Optional[str] = None  # the hosting URL, for the report, as policy allows


class Inspector:
    """Decides about one body. Synchronous and CPU-bound: servers call it from an executor."""

    def inspect(self, body: bytes, content_type: Optional[str] = None, url: Optional[str] = None) -> Decision:
        """Return the decision for ``body`` fetched from ``url`` with ``content_type``."""
        raise NotImplementedError

    def inspect_url(self, url: str) -> Decision:
        """Return the decision for a request to ``url`` before it is fetched (url and domain lists)."""
        return Decision("allow", "clean", None, url)

    def inspect_name(self, name) -> Decision:
        """Return the decision for a host name seen without a URL (DNS question, TLS server name)."""
        return Decision("allow", "clean", None, None)


_HOST_MAX = 255
_HOST_PUNCT = frozenset(".-_:[]")


def _clean_host(host: str) -> str:
    """Lower-case, bounded, printable: a host as it may appear in a log line or a page."""
    host = host.strip().lower()[:_HOST_MAX]
    return "".join(c if (c.isalnum() or c in _HOST_PUNCT) else "?" for c in host) or "-"


def host_of(url: Optional[str]) -> str:
    """The host of a hosting URL for logs ('-' when there is none): never anything about the client.

    Never raises, whatever ``url`` is (``urlsplit`` refuses 'http://[::1/', some NFKC netlocs, ...):
    such a URL still names its host as best it can, cleaned of anything but host characters.
    """
    if not url:
        return "-"
    try:
        if isinstance(url, (bytes, bytearray)):
            url = bytes(url).decode("latin-1")
        if not isinstance(url, str):
            return "-"
        try:
            host = urlsplit(url).hostname
        except ValueError:  # an unbalanced '[' and friends: take the authority by hand
            rest = url.split("://", 1)[1] if "://" in url else url.lstrip("/")
            for stop in "/?#\\":
                rest = rest.split(stop, 1)[0]
            host = rest.rpartition("@")[2]
        return _clean_host(host) if host else "-"
    except Exception:  # a log line's host is never worth a failed request
        return "-"


async def inspect_fail_open(inspector: Inspector, executor, body: bytes, content_type: Optional[str],
                            url: Optional[str], *, timeout: float, stats: dict,
                            on_block: Optional[Callable] = None,
                            log: logging.Logger = logging.getLogger("gatewatch.intake")) -> Optional[Decision]:
    """Run ``inspector`` in ``executor``; None means fail-open (error or time-out, counted and logged).

    Shared by the network intakes so that every one of them counts and logs the same way and an
    agent fault never blocks a response.
    """
    loop = asyncio.get_running_loop()
    host = host_of(url)
    try:
        fut = loop.run_in_executor(executor, inspector.inspect, body, content_type, url)
        decision = await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        stats["timeouts"] += 1
        stats["bypassed"] += 1
        log.warning("scan timed out after %.1fs for an image from %s; passed (fail-open)", timeout, host)
        return None
    except Exception as exc:
        stats["errors"] += 1
        stats["bypassed"] += 1
        log.warning("scan failed for an image from %s: %s; passed (fail-open)", host, type(exc).__name__)
        return None
    stats["scanned"] += 1
    if decision.action == "block":
        stats["blocked"] += 1
        log.info("blocked an image from %s (%s)", host, decision.reason)
        if on_block is not None:
            try:
                on_block(decision, host)
            except Exception:
                log.exception("on_block hook failed")
    else:
        stats["allowed"] += 1
    return decision


async def lookup_fail_open(inspector, method: str, executor, arg, *, what: str, host: str, timeout: float,
                           stats: dict, on_block: Optional[Callable] = None,
                           log: logging.Logger = logging.getLogger("gatewatch.intake")) -> Optional[Decision]:
    """Run a name lookup (``inspector.inspect_url`` or ``inspect_name``, by ``method``) in ``executor``;
    None means fail-open (error or time-out), counted as ``lookup_errors``/``lookup_timeouts`` and
    ``bypassed``, logged with the host, or an inspector without that method (it has no name lists).
    ``what`` says which path asked ('dns', 'tls', 'http', 'reqmod', ...)."""
    inspector_call = getattr(inspector, method, None)
    if inspector_call is None or getattr(type(inspector), method, None) is getattr(Inspector, method):
        return None  # no name lists behind this inspector: nothing to ask, no thread hop
    fast = getattr(inspector, method + "_fast", None)
    if fast is not None:
        # a clean name is decided here, on the loop (Bloom lookups, ~0.1 ms): no thread hop for it; a
        # hit may wait for the hub, so it goes to the pool below
        try:
            decision = fast(arg)
        except Exception:
            decision = None
        if decision is not None:
            stats["lookups"] += 1
            return decision
    loop = asyncio.get_running_loop()
    try:
        decision = await asyncio.wait_for(loop.run_in_executor(executor, inspector_call, arg), timeout)
    except asyncio.TimeoutError:
        stats["lookup_timeouts"] += 1
        stats["bypassed"] += 1
        log.warning("%s lookup of %s timed out after %.1fs; passed (fail-open)", what, host, timeout)
        return None
    except Exception as exc:
        stats["lookup_errors"] += 1
        stats["bypassed"] += 1
        log.warning("%s lookup of %s failed: %s; passed (fail-open)", what, host, type(exc).__name__)
        return None
    stats["lookups"] += 1
    if decision.action == "block":
        stats["names_blocked"] += 1
        log.info("blocked %s %s (%s)", what, host, decision.reason)
        if on_block is not None:
            try:
                on_block(decision, host)
            except Exception:
                log.exception("on_block hook failed")
    return decision
