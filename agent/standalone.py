"""Running an intake without the daemon: signed lists from a folder, no MQTT (schools, tests).

Owns the command line shared by ``python -m agent.intake.icap`` and ``python -m agent.intake.proxy``: it
loads the folder by the one rule of ``agent.lists.store.load_folder``, decides through the same
``agent.policy.PolicyInspector`` as the daemon (with no hub), reloads the folder when it changes,
and runs one server until SIGINT/SIGTERM. It must not parse protocols or scan.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from typing import List, Optional

from agent.config import parse_listen
from agent.core.errors import ConfigError, GatewatchError
from agent.lists.store import load_folder
from agent.lists.translog import LogVerifier
from agent.lists.trust import TrustStore

log = logging.getLogger("gatewatch.standalone")


class FolderLists:
    """The verified lists of one folder, reloaded when the folder changes; the ISTag follows them.

    Loads by the one rule of ``agent.lists.store.load_folder``: good lists load, each refused file
    is logged with why and kept in ``refused``. A list that expires is dropped at the next look,
    the same as at start.
    """

    def __init__(self, directory: str, trust_specs: List[str], clock=time.time):
        from agent.matching.scanner import Scanner

        if not os.path.isdir(directory):
            raise ConfigError("list folder %s does not exist" % directory)
        self.directory = directory
        self.trust = TrustStore.from_specs(trust_specs)
        # the newest log heads seen, kept across reloads (in memory: a standalone service has no state folder)
        self.log = LogVerifier(self.trust, clock=clock)
        self.clock = clock
        self.scanner = Scanner([])
        self.refused: list = []
        self._stamp = None
        self._tag = "gatewatch-empty"
        self.reload()

    def _folder_stamp(self):
        names = sorted(n for n in os.listdir(self.directory) if n.endswith((".gwl", ".proof", ".heads")))
        return tuple((n, os.stat(os.path.join(self.directory, n)).st_mtime_ns) for n in names)

    def reload(self) -> bool:
        """Load the folder again if it changed or a list in force expired; True when the set changed."""
        stamp = self._folder_stamp()
        now = self.clock()
        if stamp == self._stamp and not any(l.expired(now) for l in self.scanner.lists):
            return False
        result = load_folder(self.directory, self.trust, now=now, log_verifier=self.log)
        self._stamp = stamp
        self.refused = result.refused
        lists = list(result.lists.values())
        self.scanner.swap(lists)
        ident = ",".join("%s@%s" % (l.ident, l.version) for l in lists)
        self._tag = self.scanner.fingerprint()
        if lists:
            log.info("loaded %d list(s) from %s: %s", len(lists), self.directory, ident)
        else:
            log.error("no list in %s is in force: nothing is blocked (%d refused)", self.directory, len(self.refused))
        return True

    def istag(self) -> str:
        """Changes whenever the loaded set changes."""
        return self._tag


def build_parser(prog: str, what: str, default_port: int) -> argparse.ArgumentParser:
    """Arguments shared by the standalone ICAP service and proxy."""
    p = argparse.ArgumentParser(prog=prog, description="gatewatch %s with signed lists from a folder" % what)
    p.add_argument("--listen", default="127.0.0.1:%d" % default_port, metavar="HOST:PORT",
                   help="address to listen on (port 0 picks a free one; default 127.0.0.1:%d)" % default_port)
    p.add_argument("--lists", required=True, metavar="DIR", help="folder of signed .gwl list files")
    p.add_argument("--trust", required=True, action="append", metavar="PUBKEY",
                   help="trusted public key file (or SOURCE=FILE); repeat for several sources")
    p.add_argument("--mode", default="block", choices=("block", "report-only", "monitor"))
    p.add_argument("--reload", type=float, default=30.0, metavar="SECONDS",
                   help="how often to look for changed lists (0: never)")
    p.add_argument("--contact-url", default=None, help="help/hotline link on the block page")
    p.add_argument("--image-block", default="placeholder", choices=("placeholder", "403"),
                   help="what image requests get when blocked")
    p.add_argument("--max-scan-bytes", type=int, default=16 * 1024 * 1024,
                   help="images larger than this pass unscanned (counted)")
    p.add_argument("--scan-timeout", type=float, default=10.0, help="seconds; beyond it the image passes")
    p.add_argument("--max-connections", type=int, default=256)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(make_server, argv: Optional[List[str]], prog: str, what: str, default_port: int, add_args=None) -> int:
    """Parse ``argv``, build ``make_server(inspector, args, folder, block_page)`` and serve until a signal."""
    parser = build_parser(prog, what, default_port)
    if add_args is not None:
        add_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        host, port = parse_listen(args.listen, default_port)
        from agent.intake.blockpage import BlockPage
        from agent.policy import Policy, PolicyInspector, PolicySettings

        folder = FolderLists(args.lists, args.trust)
        if not folder.scanner.lists:
            # never serve silently with nothing to match: say why each list was refused
            raise ConfigError("no list in %s passed verification%s" % (
                args.lists, "".join("\n  %s: %s" % r for r in folder.refused) or " (the folder holds no .gwl file)"))
        # the same decision path as the daemon, with no hub: exact hits block, candidates pass
        from agent.allow import AllowLists
        policy = Policy(PolicySettings(mode=args.mode), allow=AllowLists(lambda: folder.scanner.lists))
        inspector = PolicyInspector(lambda: folder.scanner, policy)
        page_kw = {"image_mode": args.image_block}
        if args.contact_url:
            page_kw["contact_url"] = args.contact_url
        server = make_server(inspector, args, folder, BlockPage(**page_kw))
    except GatewatchError as exc:
        print("%s: error: %s" % (prog, exc), file=sys.stderr)
        return 2
    return asyncio.run(_serve(server, host, port, folder, args.reload, what))


async def _serve(server, host: str, port: int, folder: FolderLists, every: float, what: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await server.start(host, port)
    except OSError as exc:
        print("cannot listen on %s:%d: %s" % (host, port, exc.strerror or exc), file=sys.stderr)
        return 2
    print("gatewatch %s listening on %s:%d" % (what, host, server.port), flush=True)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every if every > 0 else None)
            except asyncio.TimeoutError:
                await loop.run_in_executor(None, folder.reload)
    finally:
        await server.close()
    print("stopped; counters: %s" % dict(server.stats), flush=True)
    return 0
