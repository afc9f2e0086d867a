"""``python -m agent.intake.icap --listen 127.0.0.1:1344 --lists DIR --trust PUBKEY``: the ICAP service alone."""

import sys

from agent.intake.icap.protocol import IcapLimits
from agent.intake.icap.server import IcapServer
from agent.standalone import run


def make_server(inspector, args, folder, block_page):
    """The ICAP service for the standalone command line."""
    limits = IcapLimits(max_scan_bytes=args.max_scan_bytes, scan_timeout=args.scan_timeout,
                        max_connections=args.max_connections, early_head=args.early_head,
                        stall_timeout=args.stall_timeout)
    return IcapServer(inspector, limits=limits, istag=folder.istag, block_page=block_page)


def add_args(p) -> None:
    """ICAP-only options."""
    p.add_argument("--early-head", default="stall", choices=("stall", "always", "never"),
                   help="when to send the HTTP head before the scan ends: 'stall' (default) unblocks "
                        "Squid < 6.10 (its bug 5352); 'never' suits Squid >= 6.10 and e2guardian; see "
                        "agent/intake/icap/server.py")
    p.add_argument("--stall-timeout", type=float, default=0.1, metavar="SECONDS",
                   help="silence mid-body that counts as a stall (default 0.1)")


def main(argv=None) -> int:
    """Entry point."""
    return run(make_server, argv, "python -m agent.intake.icap", "ICAP service", 1344, add_args)


if __name__ == "__main__":
    sys.exit(main())
