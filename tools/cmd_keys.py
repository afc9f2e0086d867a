"""Manage signing keys: `keys generate --out DIR` writes DIR/<name>.key (0600) and DIR/<name>.pub."""

from __future__ import annotations

from tools.build import generate_keys


def add_arguments(p) -> None:
    """Arguments of `gatewatch-hub keys`."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="generate an Ed25519 signing key pair")
    g.add_argument("--out", required=True, metavar="DIR")
    g.add_argument("--source", default="demo", help="the source (hotline) this key signs for (default: demo)")
    g.add_argument("--name", help="file name stem (default: the source)")


def main(args) -> int:
    """Run `gatewatch-hub keys`."""
    priv, pub = generate_keys(args.out, args.name or args.source, args.source)
    print("private key: %s (keep it secret; mode 0600)" % priv)
    print("public key:  %s (install it in each device's trust store)" % pub)
    return 0
