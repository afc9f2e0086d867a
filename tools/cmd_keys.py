"""`gatewatch-hub keys`: the command-line face of tools.build's key files."""

from __future__ import annotations

from tools.build import generate_keys

HELP = "generate a source's signing key pair"
DESCRIPTION = """\
keys generate --out DIR --source SOURCE writes DIR/NAME.key (the private key, mode 0600: keep it on
the hub) and DIR/NAME.pub (the public key, naming SOURCE: install it in each device's trust store).
NAME is the source unless --name says otherwise. Existing key files are never overwritten."""


def add_arguments(p) -> None:
    """Arguments of `gatewatch-hub keys`."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="generate an Ed25519 signing key pair", description=DESCRIPTION)
    g.add_argument("--out", required=True, metavar="DIR", help="folder for the key files (created if missing)")
    g.add_argument("--source", default="demo", help="the source (hotline) this key signs for (default: demo)")
    g.add_argument("--name", help="file name stem (default: the source)")


def main(args) -> int:
    """Generate a source's signing key pair."""
    priv, pub = generate_keys(args.out, args.name or args.source, args.source)
    print("private key: %s (keep it secret; mode 0600)" % priv)
    print("public key:  %s (install it in each device's trust store)" % pub)
    return 0
