"""`gatewatch`: the device-side command line."""

from __future__ import annotations

from typing import List, Optional

from agent import __version__
from agent.cli import subcommands

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
    # subcommands.run, not a bare `run`: importing the submodule agent.cli.run rebinds that name
    return subcommands.run("gatewatch", "gatewatch device agent: hash and scan images against signed lists.",
                           COMMANDS, __version__, argv)

