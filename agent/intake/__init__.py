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


def host_of(url: Optional[str]) -> str:
    """The host of a hosting URL for logs ('-' when there is none): never anything about the client."""
    try:
        return (urlsplit(url).hostname or "-") if url else "-"
    except ValueError:
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
