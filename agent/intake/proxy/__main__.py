"""``python -m agent.intake.proxy --listen 0.0.0.0:3128 --lists DIR --trust PUBKEY [--proxy-mode transparent]``."""

import sys

from agent.intake.standalone import run
from agent.intake.proxy.server import MODES, ProxyLimits, ProxyServer


def add_args(p) -> None:
    """Proxy-only options."""
    p.add_argument("--proxy-mode", default="explicit", choices=MODES,
                   help="explicit (clients configured to use the proxy) or transparent (behind an "
                        "nftables redirect of port 80, routed by the Host header)")


def make_server(inspector, args, folder, block_page):
    """The proxy for the standalone command line."""
    limits = ProxyLimits(max_scan_bytes=args.max_scan_bytes, scan_timeout=args.scan_timeout,
                         max_connections=args.max_connections)
    return ProxyServer(inspector, mode=args.proxy_mode, limits=limits, block_page=block_page)


def main(argv=None) -> int:
    """Entry point."""
    return run(make_server, argv, "python -m agent.intake.proxy", "HTTP proxy", 3128, add_args)


if __name__ == "__main__":
    sys.exit(main())
