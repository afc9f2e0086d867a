"""What follows a decision: the anonymised report, the firewall block, the status LED.

Owns: turning a confirmed hit into a report (``agent.core.report``; only the hosting side, as the
operator's ``reports.hosting`` allows) and handing it to the spool or the reporter, blocking the
hosting address in the HAL firewall when configured, and what the LED shows (ok, updating,
blocked, fault, no lists). Must not touch: the decision itself (``agent.policy``), MQTT, scanning.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from agent import __version__
from agent.core.errors import GatewatchError
from agent.core.report import encode_report, hosting_from_url, make_report

log = logging.getLogger("gatewatch.action")

BLOCK_SHOWN_SECONDS = 30  # how long the LED shows a block before it goes back to ok
BROKER_GRACE_SECONDS = 60  # the LED shows a fault once the broker has been away this long after start


class Action:
    """Reports, firewall and LED for one agent; ``report`` is the policy's report callback."""

    def __init__(self, *, spool, reporter=None, hosting: str = "url-noquery", region: Optional[str] = None,
                 device_secret: Optional[str] = None, firewall=None, firewall_seconds: float = 0,
                 led=None, clock: Callable[[], float] = time.monotonic):
        self.spool = spool
        self.reporter = reporter
        self.hosting = hosting
        self.region = region or None
        self.device_secret = device_secret
        self.firewall = firewall
        self.firewall_seconds = firewall_seconds
        self.led = led
        self.clock = clock
        self._blocked_at = None

    # -- reports and the firewall
    def report(self, result, url: Optional[str]) -> None:
        """Queue the report of a confirmed hit, and block its host in the firewall if configured."""
        hit = result.best
        try:
            hosting = hosting_from_url(url, self.hosting) if url else {}
        except GatewatchError:
            hosting = {}
        report = make_report(hit.list.source, hit.list.name, hit.list.version, hit.list.signal,
                             hit.distance if hit.distance is not None else 0, hit.entry_id or "",
                             hosting=hosting, device_secret=self.device_secret, region=self.region,
                             agent_version=__version__)
        if self.reporter is not None:
            self.reporter.submit(report)
        else:
            self.spool.put(report["id"], encode_report(report))
        if self.firewall_seconds and self.firewall is not None and hosting.get("host"):
            try:
                self.firewall.block(hosting["host"], self.firewall_seconds)
            except GatewatchError as exc:
                log.info("firewall block skipped: %s", exc)

    # -- the LED
    def show(self, state: str) -> None:
        """Show ``state`` on the status LED (ok, updating, blocked, fault); never fails."""
        if self.led is not None and self.led.state != state:
            try:
                self.led.set_state(state)
            except Exception:
                pass
        if state == "blocked":
            self._blocked_at = self.clock()

    def idle(self, *, lists_in_force: int, broker_away_for: Optional[float],
             lists_stale: Optional[bool] = None) -> None:
        """Back to ok once a block has been shown; fault with no list in force, the broker long away,
        or lists stale (no fresh signed word from a source, or a list expired: agent.updates).
        ``lists_stale`` None keeps the last value given, so callers that do not know it leave it be."""
        if lists_stale is not None:
            self._lists_stale = bool(lists_stale)
        stale = getattr(self, "_lists_stale", False)
        if not lists_in_force or stale or (broker_away_for is not None and broker_away_for > BROKER_GRACE_SECONDS):
            self.show("fault")
        elif (self._blocked_at is None or self.clock() - self._blocked_at > BLOCK_SHOWN_SECONDS
              or self.led is None or self.led.state != "blocked"):
            self.show("ok")

    def wrap(self, inspector) -> "ShowingInspector":
        """An inspector that passes decisions through and shows blocks on the LED."""
        return ShowingInspector(inspector, self)


class ShowingInspector:
    """Passes decisions through and shows blocks on the status LED."""

    def __init__(self, inner, action: Action):
        self.inner = inner
        self.action = action

    def inspect(self, body, content_type=None, url=None):
        """The inner inspector's decision; a block also lights the LED."""
        decision = self.inner.inspect(body, content_type, url)
        if decision.action == "block":
            self.action.show("blocked")
        return decision

    def inspect_url(self, url):
        """The inner inspector's decision for a URL; a block also lights the LED."""
        return self._shown(self.inner.inspect_url(url))

    def inspect_name(self, name):
        """The inner inspector's decision for a host name; a block also lights the LED."""
        return self._shown(self.inner.inspect_name(name))

    def inspect_url_fast(self, url):
        """The inner inspector's quick answer for a URL (None: ask ``inspect_url``)."""
        fast = getattr(self.inner, "inspect_url_fast", None)
        return self._shown(fast(url)) if fast is not None else None

    def inspect_name_fast(self, name):
        """The inner inspector's quick answer for a host name (None: ask ``inspect_name``)."""
        fast = getattr(self.inner, "inspect_name_fast", None)
        return self._shown(fast(name)) if fast is not None else None

    def _shown(self, decision):
        if decision is not None and decision.action == "block":
            self.action.show("blocked")
        return decision
