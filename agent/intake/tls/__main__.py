"""``python -m agent.intake.tls --listen 0.0.0.0:3130 --lists DIR --trust PUBKEY`` behind an nft redirect of 443."""

import sys

from agent.intake.proxy.netpolicy import DEFAULT_CLIENTS
from agent.intake.tls.server import TlsLimits, TlsSpliceServer
from agent.standalone import run


def add_args(p) -> None:
    """TLS-only options."""
    p.add_argument("--clients", default=",".join(DEFAULT_CLIENTS), metavar="CIDR,...",
                   help="networks whose connections are spliced ('any' for everyone; default: loopback, "
                        "RFC 1918, ULA and link-local)")
    p.add_argument("--allow-loopback-upstream", action="store_true",
                   help="let connections reach loopback or this gateway's own addresses (tests and demos)")


def make_server(inspector, args, folder, block_page):
    """The TLS splice for the standalone command line."""
    clients = None if args.clients.strip().lower() == "any" else [c for c in args.clients.split(",") if c.strip()]
    return TlsSpliceServer(inspector, limits=TlsLimits(max_connections=args.max_connections), clients=clients,
                           allow_loopback_upstream=args.allow_loopback_upstream)


def main(argv=None) -> int:
    """Entry point."""
    return run(make_server, argv, "python -m agent.intake.tls", "TLS splice", 3130, add_args)


if __name__ == "__main__":
    sys.exit(main())
