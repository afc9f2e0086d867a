"""Scan files against signed lists and print one JSON verdict a line.

Each line has path and verdict (match, candidate, clean, allowed or error); hits add source, list, version,
signal and distance where known; errors add a reason. Exit 0 when nothing matched, 1 when anything
matched or was a candidate, 2 on usage or trust errors (a path that does not exist among them). A list that fails verification stops the scan
before any file is read: the scan never runs silently without it. Allow lists in the folder apply to
their own source's hits, as on a device with the default ``policy.allow_others``.
"""

from __future__ import annotations

import json
import os
import sys

from agent.allow import AllowIndex
from agent.core.errors import ConfigError, TrustError
from agent.intake.files import iter_files
from agent.confirm.wire import EntryIndex
from agent.lists.store import load_folder
from agent.lists.trust import TrustStore
from agent.lists.verify import DEFAULT_MAX_BYTES
from agent.matching.scanner import ScanResult, Scanner

HELP = "scan files against signed lists and print one JSON verdict a line"
DESCRIPTION = """\
Each line has path and verdict (match, candidate, clean, allowed or error); hits add source, list,
version, signal and distance where known; errors add a reason; an image every hit of which its
source's allow list covers is 'allowed' (with allowed_by). Exit 0 when nothing matched, 1 when anything
matched or was a candidate, 2 on usage or trust errors (a path that does not exist among them). A
list that fails verification stops the scan before any file is read: the scan never runs silently
without it."""


def add_arguments(p) -> None:
    """Arguments of `gatewatch scan`."""
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    p.add_argument("--lists", required=True, metavar="DIR", help="folder of signed list files (*.gwl)")
    p.add_argument("--trust", required=True, action="append", metavar="[SOURCE=]PUBKEY",
                   help="trusted public key file; repeat for several sources")
    p.add_argument("--confirm-with", metavar="DIR",
                   help="a 'gatewatch-hub lists build' output folder: confirm hits against its hub entries")
    p.add_argument("--full", action="store_true", help="decode at full resolution (no JPEG draft decoding)")
    p.add_argument("--max-list-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N",
                   help="refuse list files larger than this (default %d)" % DEFAULT_MAX_BYTES)


def main(args) -> int:
    """Run `gatewatch scan`."""
    missing = [p for p in args.paths if not os.path.exists(p)]
    trust = TrustStore.from_specs(args.trust)
    folder = load_folder(args.lists, trust, max_bytes=args.max_list_bytes)
    if folder.refused:
        # the scan is an explicit question: answer it against every list or not at all
        raise TrustError("; ".join("%s: %s" % r for r in folder.refused))
    lists = list(folder.lists.values())
    if not lists:
        raise ConfigError("no list files (*.gwl) in %s" % args.lists)
    hub = EntryIndex.load_dir(args.confirm_with) if args.confirm_with else None
    scanner = Scanner(lists, fast=not args.full, validate=True)
    allow = AllowIndex(lists)
    hit = False
    for path, data, err in iter_files(args.paths):
        if err is not None:
            result = ScanResult("error", reason=err)
        else:
            result = scanner.scan_bytes(data)
            if hub is not None:
                result = scanner.confirm(result, hub)
        allowed = allow.allowed(result, result.hits, lambda mine, theirs: mine == theirs) if allow else {}
        if allowed:
            left = tuple(h for n, h in enumerate(result.hits) if n not in allowed)
            result = result._replace(hits=left) if left else result._replace(verdict="allowed")
        hit = hit or result.verdict in ("match", "candidate")
        row = result.to_json(path)
        if result.verdict == "allowed":
            row["allowed_by"] = sorted({m.list for m in allowed.values()})
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    if missing:
        # like grep: the other files were scanned, but a path that is not there is a usage error
        print("gatewatch scan: error: no such file or folder: %s" % ", ".join(missing), file=sys.stderr)
        return 2
    return 1 if hit else 0
