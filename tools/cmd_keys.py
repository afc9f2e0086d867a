"""`gatewatch-hub keys`: the command-line face of tools.build's key files."""

from __future__ import annotations

from tools.build import generate_keys
from tools.sealing import generate_confirm_key

HELP = "generate a source's signing key pair and confirmation key"
DESCRIPTION = """\
keys generate --out DIR --source SOURCE writes DIR/NAME.key (the private key, mode 0600: keep it on
the hub), DIR/NAME.pub (the public key, naming SOURCE: install it in each device's trust store) and
DIR/NAME.confirm (mode 0600: the key `lists build` seals entries with for private confirmation).
keys confirm --out DIR --source SOURCE writes only NAME.confirm (for keys made before it existed).
NAME is the source unless --name says otherwise. Existing key files are never overwritten."""


def add_arguments(p) -> None:
    """Arguments of `gatewatch-hub keys`."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="generate an Ed25519 signing key pair", description=DESCRIPTION)
    g.add_argument("--out", required=True, metavar="DIR", help="folder for the key files (created if missing)")
    g.add_argument("--source", default="demo", help="the source (hotline) this key signs for (default: demo)")
    g.add_argument("--name", help="file name stem (default: the source)")
    c = sub.add_parser("confirm", help="generate only a source's confirmation key", description=DESCRIPTION)
    c.add_argument("--out", required=True, metavar="DIR", help="folder for the key file (created if missing)")
    c.add_argument("--source", default="demo", help="the source (hotline) the key seals for (default: demo)")
    c.add_argument("--name", help="file name stem (default: the source)")


def main(args) -> int:
    """Generate a source's signing key pair (and confirmation key), or only the confirmation key."""
    if args.action == "confirm":
        path = generate_confirm_key(args.out, args.name or args.source, args.source)
        print("confirmation key: %s (keep it on the hub; mode 0600)" % path)
        return 0
    priv, pub = generate_keys(args.out, args.name or args.source, args.source)
    print("private key: %s (keep it secret; mode 0600)" % priv)
    print("public key:  %s (install it in each device's trust store)" % pub)
    print("confirmation key: %s (keep it on the hub; mode 0600)" % (priv[:-len(".key")] + ".confirm"))
    return 0
