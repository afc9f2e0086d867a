"""The contract between intakes (ICAP, proxy, local API, files) and the scanner.

An intake hands bytes plus context to an ``Inspector`` and acts on the ``Decision``. It owns no
hashing, matching or policy; the inspector owns no sockets.
"""

from typing import NamedTuple, Optional


class Decision(NamedTuple):
    """What an intake must do with one response body."""

    action: str  # "block" or "allow"
    reason: str  # short, subscriber-free text for logs ("match", "clean", "scan-error: ...")
    result: object = None  # the agent.scanner.ScanResult behind it, when a scan ran
    url: Optional[str] = None  # the hosting URL, for the report, as policy allows


class Inspector:
    """Decides about one body. Synchronous and CPU-bound: servers call it from an executor."""

    def inspect(self, body: bytes, content_type: Optional[str] = None, url: Optional[str] = None) -> Decision:
        """Return the decision for ``body`` fetched from ``url`` with ``content_type``."""
        raise NotImplementedError
