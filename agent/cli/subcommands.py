"""Subcommand registry shared by `gatewatch` and `gatewatch-hub`.

Owns: finding subcommand modules and wiring them into argparse. A subcommand module has
``add_arguments(parser)`` and ``main(args) -> int``, and says what it does for users in ``HELP`` (one
line, the command list of ``--help``) and optionally ``DESCRIPTION`` (a paragraph for ``COMMAND
--help``). Module docstrings are for developers and never reach ``--help``: a module without ``HELP``
falls back to the first line of its ``main`` docstring (and then to no text at all). A module that
does not exist is simply not offered; one that exists but fails to import is a real error and raises.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
from typing import Dict, List, Optional, Tuple

from agent.core.errors import GatewatchError


def help_texts(mod) -> Tuple[Optional[str], Optional[str]]:
    """(one-line help, description) of a subcommand module, from HELP/DESCRIPTION or ``main``'s docstring."""
    short = getattr(mod, "HELP", None)
    if not isinstance(short, str) or not short.strip():
        doc = inspect.getdoc(getattr(mod, "main", None)) or ""
        short = doc.strip().splitlines()[0].strip() if doc.strip() else None
    else:
        short = short.strip()
    description = getattr(mod, "DESCRIPTION", None)
    if not isinstance(description, str) or not description.strip():
        description = short
    else:
        description = description.strip()
    return short, description


def build_parser(prog: str, description: str, registry: Dict[str, str], version: str) -> argparse.ArgumentParser:
    """An argparse parser with one subparser per available module of ``registry``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version="%s %s" % (prog, version))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in registry.items():
        if importlib.util.find_spec(modname) is None:
            continue
        mod = importlib.import_module(modname)
        short, long_text = help_texts(mod)
        p = sub.add_parser(name, help=short, description=long_text,
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
