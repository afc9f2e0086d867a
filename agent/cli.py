"""`gatewatch`: the device-side command line."""

from __future__ import annotations

import sys
from typing import List, Optional

from agent import __version__
from agent.subcommands import run

COMMANDS = {
    "hash": "agent.cmd_hash",
    "scan": "agent.cmd_scan",
    "run": "agent.daemon",
    "status": "agent.status",
    "demo": "agent.demo",
    "selftest": "agent.selftest",
}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `gatewatch` console script."""
    return run("gatewatch", "gatewatch device agent: hash and scan images against signed lists.",
               COMMANDS, __version__, argv)


if __name__ == "__main__":
    sys.exit(main())
