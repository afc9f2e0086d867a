"""`gatewatch-hub lists`: the command-line face of tools.build (arguments, checks, output)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from agent.core import listfile
from agent.core.errors import ConfigError, ListFormatError
from agent.core.signals import EXACT_SIGNALS, NAME_SIGNALS, PERCEPTUAL_SIGNALS
from agent.lists.assemble import DEFAULT_FP_RATE, lsh_params
from agent.lists.trust import check_name
from agent.lists.verify import DEFAULT_MAX_BYTES
from tools.allow import allow_stats
from tools.build import (DEFAULT_EXPIRES_DAYS, MAX_CAPACITY, MAX_VERSION, check_build_options, check_key_source,
                         check_list_name, check_out_dir, build_list, filter_stats, hash_folder, load_private_key,
                         read_hash_text)

HELP = "build and sign lists, inspect list files"
BUILD_DESCRIPTION = """\
A signed list from a folder of images or a text file of hashes, written to --out as the device's list
file (SOURCE+LIST.vN.gwl) and the hub's private entries (hub/, mode 0600).

--input takes a folder of images (hashed with --signal), or a text file: one hex digest a line,
'pdq <hex>' or 'pdq,<hex>' lines, ThreatExchange .te rows ('<hex>,<count>,...'), or CSV with a type
column (id,type,hash). --signal neural hashes images with the neural network (models/neural-v3; needs
a TFLite runtime, the tflite extra) or reads 'neural,<hex>' lines and bare 32-hex codes; its LSH section
(4 bands, multi-probe, the model's threshold) is signed into the manifest. --signal url and --signal domain take a
text file of URLs or domain names, one a line ('#' comments): each is canonicalised the Safe Browsing
way and the list holds the SHA-256 of its expression ('example.org/dir/' covers every URL below it;
a domain entry 'example.org' covers its subdomains). --key is the source's private key (NAME.key from `gatewatch-hub keys
generate`); the NAME.pub beside it must name the same --source."""

DESCRIPTION = """\
lists build: a signed list from a folder of images or a text file of hashes (lists build --help).
lists inspect FILE: a list file's manifest and filter statistics (it verifies nothing)."""

_INT_RE = re.compile(r"[0-9]+")
_FLOAT_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _whole(lo: int, hi: int):
    def parse(text: str) -> int:
        # int() takes '١٢', ' 12 ' and '1_2'; a number on this command line is plain ASCII digits
        if not _INT_RE.fullmatch(text) or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError("%r is not a whole number from %d to %d (ASCII digits)" % (text, lo, hi))
        return int(text)
    return parse


def _number(text: str) -> float:
    # float() takes 'nan', 'inf', '١' and '1_0'
    if not _FLOAT_RE.fullmatch(text):
        raise argparse.ArgumentTypeError("%r is not a plain decimal number (e.g. 0.5 or 1e-6)" % text)
    return float(text)


def add_arguments(p) -> None:
    """Arguments of `gatewatch-hub lists`."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build and sign a list from images or a hash file",
                       description=BUILD_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--source", required=True, help="the source (hotline) that owns the list")
    b.add_argument("--list", required=True, dest="list_name", help="the list name")
    b.add_argument("--signal", required=True, choices=EXACT_SIGNALS + PERCEPTUAL_SIGNALS)
    b.add_argument("--input", required=True, metavar="PATH",
                   help="folder of images, or a text file of hashes (hex lines, 'pdq <hex>' or 'pdq,<hex>' "
                        "lines, ThreatExchange .te rows, or CSV with a type column), or for url/domain a text "
                        "file of URLs or names, one a line")
    b.add_argument("--key", required=True, metavar="KEY",
                   help="the source's private key file (NAME.key from keys generate); the NAME.pub beside it "
                        "must name --source (without a .pub beside it the source is not checked: a warning)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    b.add_argument("--fp-rate", type=_number, default=DEFAULT_FP_RATE, metavar="RATE",
                   help="design false-positive rate per lookup (default %g)" % DEFAULT_FP_RATE)
    b.add_argument("--version", type=_whole(1, MAX_VERSION), metavar="N",
                   help="version number (default: newest in DIR + 1, or 1)")
    b.add_argument("--expires-days", type=_number, default=DEFAULT_EXPIRES_DAYS, metavar="DAYS",
                   help="days until the list expires on devices (default %g)" % DEFAULT_EXPIRES_DAYS)
    b.add_argument("--capacity", type=_whole(1, MAX_CAPACITY), metavar="N",
                   help="entries the filter is sized for (headroom keeps later versions delta-able)")
    b.add_argument("--filter", choices=sorted(listfile.FILTER_TYPES), default="bloom", dest="filter_type",
                   help="the device's filter: bloom (default; later versions ship as small deltas) or fuse16, a "
                        "binary fuse filter with 16-bit fingerprints (about the bytes of the default Bloom filter "
                        "of a PDQ list, far fewer false positives per probe, but every version ships whole; "
                        "--fp-rate and --capacity do not apply)")
    b.add_argument("--min-bands", type=_whole(1, 64), metavar="T",
                   help="perceptual lists: an image is a candidate only when probes of at least T distinct bands "
                        "of the image (or of one of its variants) hit (default 1; docs/benchmarks.md, "
                        "\"Candidate rules and filters\", prices T=2)")
    b.add_argument("--confirm-key", metavar="FILE",
                   help="the source's confirmation key (default: NAME.confirm beside --key): entries are sealed "
                        "with it for private confirmation, and the manifest signs their commitment")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--log", metavar="DIR", help="append the new version to this transparency log (log init) and write "
                   "the proofs of --out's lists and the log's heads into --out; needs --log-key")
    b.add_argument("--log-key", metavar="KEY", help="the log's private key (NAME-log.key from log init)")
    i = sub.add_parser("inspect", help="print a list file's manifest and filter statistics",
                       description="Print a list file's manifest and filter statistics (it verifies nothing).")
    i.add_argument("file", metavar="FILE", help="a list file (*.gwl)")


def main(args) -> int:
    """Build and sign lists, or inspect a list file."""
    if args.action == "inspect":
        return inspect(args.file)
    # Every check that needs no work runs first: nothing is hashed, and nothing written, for a typo.
    check_name("source", args.source)
    check_list_name(args.list_name)
    check_build_options(fp_rate=args.fp_rate, expires_days=args.expires_days, capacity=args.capacity,
                        version=args.version)
    key = load_private_key(args.key)
    warning = check_key_source(args.key, key, args.source)
    log_store, log_key = _open_log(args)
    from tools.sealing import ConfirmKey, default_confirm_path

    confirm_key = ConfirmKey.load(args.confirm_key or default_confirm_path(args.key))
    if confirm_key.source != args.source:
        raise ConfigError("confirmation key %s is for source %r, not %r"
                          % (args.confirm_key or default_confirm_path(args.key), confirm_key.source, args.source))
    if args.min_bands is not None and args.signal not in PERCEPTUAL_SIGNALS:
        raise ConfigError("--min-bands is for perceptual lists (%s), not --signal %s"
                          % (", ".join(PERCEPTUAL_SIGNALS), args.signal))
    lsh = {"min_bands": args.min_bands} if args.min_bands is not None else None
    if lsh is not None:
        lsh_params(args.signal, lsh)  # more bands asked than the list has: said before any hashing
    if not os.path.exists(args.input):
        raise ConfigError("--input %s does not exist" % args.input)
    check_out_dir(args.out)
    if os.path.isdir(args.input) and args.signal in NAME_SIGNALS:
        raise ConfigError("--signal %s lists are built from a text file (one %s a line), not a folder: --input %s "
                          "is a folder" % (args.signal, "URL" if args.signal == "url" else "domain name", args.input))
    if os.path.isdir(args.input):
        inp, out = os.path.realpath(args.input), os.path.realpath(args.out)
        if out == inp or out.startswith(inp.rstrip(os.sep) + os.sep):
            raise ConfigError("--out %s is inside --input %s: the next build would hash its own list files; "
                              "write the lists to a folder outside the images" % (args.out, args.input))
    if warning:
        print(warning, file=sys.stderr)
    if os.path.isdir(args.input):
        entries, skipped = hash_folder(args.input, args.signal,
                                       progress=not args.no_progress and sys.stderr.isatty())
        for s in skipped:
            print("skipped %s" % s, file=sys.stderr)
    elif os.path.isfile(args.input):
        entries = read_hash_text(args.input, args.signal)
    else:
        raise ConfigError("--input %s is neither a folder nor a regular file" % args.input)
    device, hub, manifest = build_list(
        source=args.source, name=args.list_name, signal=args.signal, entries=entries, key=key,
        out_dir=args.out, fp_rate=args.fp_rate, version=args.version, expires_days=args.expires_days,
        capacity=args.capacity, confirm_key=confirm_key, filter_type=args.filter_type, lsh=lsh)
    logged = None
    if log_store is not None:
        indices, _head = log_store.append([device], log_key)
        log_store.write_folder(args.out)
        logged = {"log": log_store.name, "index": indices[0]}
    size = os.path.getsize(device)
    if size > DEFAULT_MAX_BYTES:
        print("warning: %s is %d bytes, over the %d-byte cap devices use by default: raise their cap, "
              "or build with a higher --fp-rate or fewer entries" % (device, size, DEFAULT_MAX_BYTES), file=sys.stderr)
    print(json.dumps({"device_list": device, "hub_entries": hub, "version": manifest["version"],
                      "entries": manifest["filter"]["entries"], "bytes": manifest["content_length"],
                      **({"log": logged} if logged else {})}))
    return 0


def _open_log(args):
    """(log store, log key) for --log/--log-key, checked before any work; (None, None) without --log."""
    if not args.log and not args.log_key:
        return None, None
    if not (args.log and args.log_key):
        raise ConfigError("--log and --log-key go together: the log folder and the key that signs its heads")
    from tools.translog import LogStore

    store = LogStore(args.log)
    key = load_private_key(args.log_key)
    if args.source not in store.sources:
        raise ConfigError("log %s holds the lists of %s, not of %r (its key names the sources devices require "
                          "in it)" % (store.name, ", ".join(store.sources), args.source))
    from agent.lists.trust import key_id
    if key_id(key.public_key()) != store.key_id:
        raise ConfigError("--log-key %s is not the key of log %s" % (args.log_key, store.name))
    return store, key


def inspect(path: str) -> int:
    """Print manifest and statistics of one list file (no trust needed: it verifies nothing)."""
    if os.path.isdir(path):
        raise ConfigError("%s is a folder; lists inspect takes one list file (*.gwl)" % path)
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 30)
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e.strerror or e))
    try:
        lf = listfile.parse(data)
    except ListFormatError as e:
        hint = ""
        if path.endswith(".entries.json"):
            hint = " (this is the hub's private entries file; inspect the .gwl list file)"
        elif path.endswith((".pub", ".key")):
            hint = " (this is a key file; inspect a .gwl list file)"
        raise ConfigError("%s: %s%s" % (path, e, hint))
    print(json.dumps({"manifest": lf.manifest, "signature_bytes": len(lf.signature),
                      "stats": filter_stats(lf) if lf.allow is None else allow_stats(lf)}, indent=2, sort_keys=True))
    return 0
