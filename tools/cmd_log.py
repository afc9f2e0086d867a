"""`gatewatch-hub log`: the command-line face of tools.translog (the transparency log of list versions)."""

from __future__ import annotations

import json
import os
import sys

from agent.core.errors import ConfigError
from tools.translog import LogAuditError, LogStore, audit, generate_log_keys, leaf_of_file

HELP = "the public, append-only log of list versions: create, append, show, prove, audit"
DESCRIPTION = """\
Every list version the hub publishes is appended to a public, append-only log (a Merkle tree, as in
Certificate Transparency) whose heads a key of the log's own signs. Devices that trust the log key
accept a list only with a proof that it is in the log, so no one can give one device a list that
others do not see. Anyone holding a copy of the log folder can audit it with `log verify`.

log init     create a log folder and its key pair (the .pub names the sources whose lists it holds)
log append   append built list files, sign a new head, write proofs next to the lists
log show     the newest head and, with --leaves, every logged list version
log proof    the proof that a list file is in the log
log verify   recompute every leaf and head; exit 1 naming the first bad point"""


def add_arguments(p) -> None:
    """Arguments of `gatewatch-hub log`."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = sub.add_parser("init", help="create a log folder and its signing key pair",
                       description="Create the log folder (public: copy it anywhere for auditors) and the log's own "
                                   "key pair. Install the .pub on devices next to the sources' keys: it makes the "
                                   "lists of every --source need a log proof there.")
    i.add_argument("--log", required=True, metavar="DIR", help="the log folder to create")
    i.add_argument("--name", default="hub", help="the log's name (default: hub)")
    i.add_argument("--keys-out", required=True, metavar="DIR", help="folder for NAME-log.key (0600) and NAME-log.pub")
    i.add_argument("--source", required=True, action="append", help="a source whose lists this log holds (repeatable)")
    a = sub.add_parser("append", help="append list files and sign a new head",
                       description="Append built list files (.gwl) to the log, sign a new tree head with the log key, "
                                   "and write each list's .proof and the log's NAME.heads into the lists' folders. A "
                                   "version already in the log keeps its place.")
    a.add_argument("--log", required=True, metavar="DIR")
    a.add_argument("--key", required=True, metavar="KEY", help="the log's private key (NAME-log.key from log init)")
    a.add_argument("files", nargs="+", metavar="FILE", help="list files (*.gwl)")
    s = sub.add_parser("show", help="the newest head (and every leaf with --leaves)",
                       description="Print the log's newest signed tree head as JSON; --leaves adds every logged list version.")
    s.add_argument("--log", required=True, metavar="DIR")
    s.add_argument("--leaves", action="store_true", help="also list every leaf (source, list, signal, version, digest)")
    r = sub.add_parser("proof", help="the proof that a list file is in the log",
                       description="Print (or write with --out) the proof that a list file is in the log, under the "
                                   "newest head: what a device needs next to the list.")
    r.add_argument("--log", required=True, metavar="DIR")
    r.add_argument("file", metavar="FILE", help="a list file (*.gwl)")
    r.add_argument("--out", metavar="PATH", help="write the proof here (default: print it)")
    v = sub.add_parser("verify", help="audit a log: recompute every leaf and head",
                       description="Recompute every leaf and every head's root, check each head is signed by the log "
                                   "and consistent with the one before, and that no list version was logged twice with "
                                   "different files. Exit 0 with a summary, 1 naming the first bad point.")
    v.add_argument("log", metavar="DIR", help="a copy of the log folder")
    v.add_argument("--key", metavar="PUB", help="the log key you trust (default: the one log.json names)")
    v.add_argument("--lists", metavar="DIR", help="also check that every list in DIR (and its .proof) is in the log")
    v.add_argument("--known-head", action="append", default=[], metavar="FILE",
                   help="a head seen elsewhere (a head, step, .proof, or a device's log-heads.json) that must match; repeatable")


def main(args) -> int:
    """Create, append to, show, prove from or audit a transparency log."""
    if args.action == "init":
        from tools.build import check_out_dir

        check_out_dir(args.log, "--log")
        if os.path.exists(os.path.join(args.log, "log.json")):
            raise ConfigError("%s already holds a log; a log is never started again" % args.log)
        priv, pub = generate_log_keys(args.keys_out, "%s-log" % args.name, args.name, args.source)
        with open(pub, "r", encoding="utf-8") as f:
            LogStore.create(args.log, args.name, f.read())
        print("log folder:  %s (public: publish or copy it for auditors)" % args.log)
        print("private key: %s (signs tree heads only; keep it apart from list keys)" % priv)
        print("public key:  %s (install it on devices next to the sources' keys)" % pub)
        return 0
    if args.action == "verify":
        try:
            summary = audit(args.log, key_path=args.key, lists_dir=args.lists, known=args.known_head)
        except LogAuditError as e:
            print("gatewatch-hub log verify: %s: %s" % (args.log, e), file=sys.stderr)
            return 1
        print(json.dumps(summary, sort_keys=True))
        return 0
    store = LogStore(args.log)
    if args.action == "append":
        from tools.build import load_private_key

        indices, head = store.append(args.files, load_private_key(args.key))
        written = sum(store.write_folder(d) for d in sorted({os.path.dirname(os.path.abspath(f)) for f in args.files}))
        print(json.dumps({"indices": indices, "head": head.as_dict() if head else None,
                          "appended": head is not None, "proofs_written": written}, sort_keys=True))
        return 0
    if args.action == "show":
        head = store.newest_head()
        out = {"log": store.name, "key_id": store.key_id, "sources": store.sources, "leaves": len(store.leaves()),
               "head": head.as_dict() if head else None}
        if args.leaves:
            from agent.core import merkle

            out["entries"] = [dict(zip(("source", "list", "signal", "version"), merkle.parse_leaf(leaf)[:4]),
                                   index=i, signed_sha256=merkle.parse_leaf(leaf)[4].hex())
                              for i, leaf in enumerate(store.leaves())]
        print(json.dumps(out, sort_keys=True, indent=1))
        return 0
    # proof
    try:
        with open(args.file, "rb") as f:
            leaf, _m = leaf_of_file(f.read())
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (args.file, e.strerror or e))
    proof = store.proof_for(leaf)
    if args.out:
        from agent.atomicfile import write_atomic

        write_atomic(args.out, proof)
    else:
        print(proof.decode("ascii"))
    return 0
