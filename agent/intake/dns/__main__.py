"""``python -m agent.intake.dns --listen 127.0.0.1:5353 --upstream IP[:PORT] --lists DIR --trust PUBKEY``."""

import sys

from agent.core.errors import ConfigError
from agent.intake.dns.message import BlockAnswer
from agent.intake.dns.server import DnsLimits, DnsServer, Upstreams
from agent.standalone import run


def add_args(p) -> None:
    """DNS-only options."""
    p.add_argument("--upstream", action="append", default=[], metavar="IP[:PORT]",
                   help="resolver unlisted queries go to (repeat for more, tried in order)")
    p.add_argument("--resolv-file", default="", metavar="FILE",
                   help="read the upstreams from this file's nameserver lines when no --upstream is given "
                        "(OpenWrt: /tmp/resolv.conf.d/resolv.conf.auto)")
    p.add_argument("--block-address", action="append", default=[], metavar="IP",
                   help="answer A/AAAA questions for listed names with this address (the block page's); "
                        "none: NXDOMAIN for every type")
    p.add_argument("--block-ttl", type=int, default=60, metavar="SECONDS",
                   help="how long resolvers may cache a block answer (default 60)")


def make_server(inspector, args, folder, block_page):
    """The DNS forwarder for the standalone command line."""
    try:
        block = BlockAnswer(args.block_address, args.block_ttl)
    except ValueError as e:
        raise ConfigError("--block-address/--block-ttl: %s" % e)
    return DnsServer(inspector, upstreams=Upstreams(args.upstream, args.resolv_file), block=block,
                     limits=DnsLimits(max_tcp_connections=args.max_connections))


def main(argv=None) -> int:
    """Entry point."""
    return run(make_server, argv, "python -m agent.intake.dns", "DNS forwarder", 5353, add_args)


if __name__ == "__main__":
    sys.exit(main())
