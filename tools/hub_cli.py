"""`gatewatch-hub`: the hub-side command line (keys, lists, publishing, confirmation, reports)."""

from __future__ import annotations

import sys
from typing import List, Optional

from agent import __version__
from agent.cli.subcommands import run

COMMANDS = {
    "keys": "tools.cmd_keys",
    "lists": "tools.cmd_lists",
    "allow": "tools.cmd_allow",
    "publish": "tools.publish",
    "serve": "tools.confirm_service",
    "reports": "tools.collector",
    "hotline": "tools.hotline.cli",
    "demo": "tools.demo",
    "log": "tools.cmd_log",
}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `gatewatch-hub` console script."""
    return run("gatewatch-hub", "gatewatch hub: build, sign and publish lists; confirm hits; collect reports.",
               COMMANDS, __version__, argv)


if __name__ == "__main__":
    sys.exit(main())
