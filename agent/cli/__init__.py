"""`gatewatch`: the device-side command line."""

from __future__ import annotations

from typing import List, Optional

from agent import __version__
from agent.cli.subcommands import run

COMMANDS = {
    "hash": "agent.cli.hash",
    "scan": "agent.cli.scan",
    "run": "agent.cli.run",
    "status": "agent.cli.status",
    "reports": "agent.cli.reports",
    "selftest": "agent.selftest",
}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `gatewatch` console script."""
    return run("gatewatch", "gatewatch device agent: hash and scan images against signed lists.",
               COMMANDS, __version__, argv)

