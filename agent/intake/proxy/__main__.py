"""``python -m agent.intake.proxy --listen 0.0.0.0:3128 --lists DIR --trust PUBKEY [--proxy-mode transparent]``."""

import sys

from agent.standalone import run
from agent.intake.proxy.netpolicy import DEFAULT_CLIENTS
from agent.intake.proxy.server import MODES, UNDECODABLE, ProxyLimits, ProxyServer


def add_args(p) -> None:
    """Proxy-only options."""
    p.add_argument("--proxy-mode", default="explicit", choices=MODES,
                   help="explicit (clients configured to use the proxy) or transparent (behind an "
                        "nftables redirect of port 80, routed by the Host header)")
    p.add_argument("--allow-loopback-upstream", action="store_true",
                   help="let requests reach origins on loopback, link-local or this gateway's own address "
                        "(refused by default; for tests and demos)")
    p.add_argument("--clients", default=",".join(DEFAULT_CLIENTS), metavar="CIDR,...",
                   help="networks whose hosts may use the proxy ('any' for everyone; default: loopback, "
                        "RFC 1918, ULA and link-local)")
    p.add_argument("--max-connections-per-client", type=int, default=ProxyLimits().max_connections_per_client,
                   help="connections one client address may hold (0: no bound)")
    p.add_argument("--max-held-bytes", type=int, default=ProxyLimits().max_held_bytes,
                   help="budget for all buffered image bytes; images beyond it pass unscanned (counted)")
    p.add_argument("--undecodable-images", default="pass", choices=UNDECODABLE,
                   help="an image whose Content-Encoding cannot be decoded: pass (counted, logged) or 502")


def make_server(inspector, args, folder, block_page):
    """The proxy for the standalone command line."""
    limits = ProxyLimits(max_scan_bytes=args.max_scan_bytes, scan_timeout=args.scan_timeout,
                         max_connections=args.max_connections,
                         max_connections_per_client=args.max_connections_per_client,
                         max_held_bytes=args.max_held_bytes)
    clients = None if args.clients.strip().lower() == "any" else [c for c in args.clients.split(",") if c.strip()]
    return ProxyServer(inspector, mode=args.proxy_mode, limits=limits, block_page=block_page, clients=clients,
                       allow_loopback_upstream=args.allow_loopback_upstream,
                       undecodable_images=args.undecodable_images)


def main(argv=None) -> int:
    """Entry point."""
    return run(make_server, argv, "python -m agent.intake.proxy", "HTTP proxy", 3128, add_args)


if __name__ == "__main__":
    sys.exit(main())
