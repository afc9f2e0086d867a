"""`gatewatch-hub allow`: the command-line face of tools.allow (arguments, output)."""

from __future__ import annotations

import argparse
import json
import sys

from tools.allow import FORMS, _build
from tools.build import DEFAULT_EXPIRES_DAYS, MAX_VERSION
from tools.cmd_lists import _number, _whole

HELP = "build and sign a source's allow list (false positives devices let through)"
DESCRIPTION = """\
allow build: the next version of a source's signed allow list (SOURCE+allow.vN.gwl in --out), which
`gatewatch-hub publish` sends like every list. A device that loads it neither blocks nor reports a hit
that one of its entries covers (allow build --help)."""
BUILD_DESCRIPTION = """\
The next version of SOURCE's allow list from --input, one entry a line:

  sha256,<hex>                       the image with that digest (also sha1, md5)
  pdq,<hex>[,<radius>]               images whose PDQ hash is within radius bits (default 8, at most 15)
  neural,<hex>[,<radius>]            images whose neural code is within radius bits (default 4, at most 14)
  entry,<source>/<list>,<entry id>   hits on that entry of that list

'#' comments and blank lines are skipped. A bad line is refused with its number and nothing is
written. Devices apply a source's allow list to that source's own hits, and to other sources' hits
only where their operator allows it (policy.allow_others)."""


def add_arguments(p) -> None:
    """Arguments of `gatewatch-hub allow`."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build and sign the next version of a source's allow list",
                       description=BUILD_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--source", required=True, help="the source (hotline) whose allow list this is")
    b.add_argument("--key", required=True, metavar="KEY",
                   help="the source's private key file (NAME.key from keys generate)")
    b.add_argument("--input", required=True, metavar="FILE", help="allow entries, one a line: " + FORMS)
    b.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    b.add_argument("--version", type=_whole(1, MAX_VERSION), metavar="N",
                   help="version number (default: newest in DIR + 1, or 1)")
    b.add_argument("--expires-days", type=_number, default=DEFAULT_EXPIRES_DAYS, metavar="DAYS",
                   help="days until the list expires on devices (default %g)" % DEFAULT_EXPIRES_DAYS)


def main(args) -> int:
    """Build and sign an allow list."""
    path, version, n = _build(args.input, args.out, args.source, args.key, expires_days=args.expires_days,
                              version=args.version, warn=lambda w: print(w, file=sys.stderr))
    print(json.dumps({"device_list": path, "version": version, "entries": n}))
    return 0
