"""Subcommand registry shared by `gatewatch` and `gatewatch-hub`.

Owns: finding subcommand modules and wiring them into argparse. A subcommand module has a docstring
(its first line is the help text), ``add_arguments(parser)`` and ``main(args) -> int``. A module that
does not exist is simply not offered; one that exists but fails to import is a real error and raises.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Dict, List, Optional

from agent.core.errors import GatewatchError


def build_parser(prog: str, description: str, registry: Dict[str, str], version: str) -> argparse.ArgumentParser:
    """An argparse parser with one subparser per available module of ``registry``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version="%s %s" % (prog, version))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in registry.items():
        if importlib.util.find_spec(modname) is None:
            continue
        mod = importlib.import_module(modname)
        doc = (mod.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, description=(mod.__doc__ or "").strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def run(prog: str, description: str, registry: Dict[str, str], version: str,
        argv: Optional[List[str]] = None) -> int:
    """Parse ``argv``, run the chosen subcommand, turn gatewatch errors into exit 2 with a message."""
    parser = build_parser(prog, description, registry, version)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._module.main(args) or 0)
    except GatewatchError as e:
        print("%s: error: %s" % (prog, e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
