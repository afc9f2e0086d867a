"""Build, sign and inspect lists: `lists build ...` and `lists inspect FILE`."""

from __future__ import annotations

import json
import os
import sys

from agent.core import listfile
from agent.core.errors import ListFormatError
from agent.core.errors import ConfigError
from agent.core.signals import EXACT_SIGNALS, PERCEPTUAL_SIGNALS
from agent.lists.assemble import DEFAULT_FP_RATE
from tools.build import DEFAULT_EXPIRES_DAYS, build_list, filter_stats, hash_folder, load_private_key, read_hash_text


def add_arguments(p) -> None:
    """Arguments of `gatewatch-hub lists`."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build and sign a list from images or a hash file")
    b.add_argument("--source", required=True, help="the source (hotline) that owns the list")
    b.add_argument("--list", required=True, dest="list_name", help="the list name")
    b.add_argument("--signal", required=True, choices=EXACT_SIGNALS + PERCEPTUAL_SIGNALS)
    b.add_argument("--input", required=True, metavar="PATH",
                   help="folder of images, or a text file of hashes (hex lines, CSV with a type column, "
                        "or 'pdq,<hex>' lines)")
    b.add_argument("--key", required=True, metavar="KEY", help="the source's private key (.key)")
    b.add_argument("--out", required=True, metavar="DIR")
    b.add_argument("--fp-rate", type=float, default=DEFAULT_FP_RATE,
                   help="design false-positive rate per lookup (default %g)" % DEFAULT_FP_RATE)
    b.add_argument("--version", type=int, help="version number (default: newest in DIR + 1, or 1)")
    b.add_argument("--expires-days", type=float, default=DEFAULT_EXPIRES_DAYS,
                   help="days until the list expires on devices (default %g)" % DEFAULT_EXPIRES_DAYS)
    b.add_argument("--capacity", type=int,
                   help="entries the filter is sized for (headroom keeps later versions delta-able)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    i = sub.add_parser("inspect", help="print a list file's manifest and filter statistics")
    i.add_argument("file", metavar="FILE")


def main(args) -> int:
    """Run `gatewatch-hub lists`."""
    if args.action == "inspect":
        return inspect(args.file)
    key = load_private_key(args.key)
    if os.path.isdir(args.input):
        entries, skipped = hash_folder(args.input, args.signal,
                                       progress=not args.no_progress and sys.stderr.isatty())
        for s in skipped:
            print("skipped %s" % s, file=sys.stderr)
    elif os.path.isfile(args.input):
        entries = read_hash_text(args.input, args.signal)
    else:
        raise ConfigError("--input %s is neither a folder nor a file" % args.input)
    device, hub, manifest = build_list(
        source=args.source, name=args.list_name, signal=args.signal, entries=entries, key=key,
        out_dir=args.out, fp_rate=args.fp_rate, version=args.version, expires_days=args.expires_days,
        capacity=args.capacity)
    print(json.dumps({"device_list": device, "hub_entries": hub, "version": manifest["version"],
                      "entries": manifest["filter"]["entries"], "bytes": manifest["content_length"]}))
    return 0


def inspect(path: str) -> int:
    """Print manifest and statistics of one list file (no trust needed: it verifies nothing)."""
    try:
        with open(path, "rb") as f:
            lf = listfile.parse(f.read())
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e.strerror))
    except ListFormatError as e:
        raise ConfigError("%s: %s" % (path, e))
    print(json.dumps({"manifest": lf.manifest, "signature_bytes": len(lf.signature),
                      "stats": filter_stats(lf)}, indent=2, sort_keys=True))
    return 0
