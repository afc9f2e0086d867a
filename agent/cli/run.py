"""Run the agent: lists, updates, confirmation, reports and the intakes, until SIGTERM."""

from __future__ import annotations

import logging
import sys
from typing import Any, Dict

from agent.config import load_config
from agent.core.errors import GatewatchError
from agent.daemon import Agent

DESCRIPTION = 'Runs until SIGTERM: loads and updates signed lists, confirms hits with the hub, sends reports, serves the ICAP/proxy intakes you enable. Settings: --config FILE (docs/config.md).'

HELP = "run the agent (lists, updates, confirmation, reports, intakes) until stopped"


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="TOML configuration file (docs/config.md); default: built-in defaults")
    parser.add_argument("--state-dir", help="overrides agent.state_dir")
    parser.add_argument("--lists", help="run from this folder of list files (overrides lists.dir)")
    parser.add_argument("--trust", action="append", help="trusted public key file (repeatable; overrides lists.trust)")
    parser.add_argument("--broker", help="overrides broker.url")
    parser.add_argument("--icap", metavar="HOST:PORT", help="serve ICAP here (overrides icap.listen)")
    parser.add_argument("--proxy", metavar="HOST:PORT", help="serve the HTTP proxy here (overrides proxy.listen)")
    parser.add_argument("--socket", help="local API socket path (overrides localapi.socket)")


def conf_from_args(args) -> Dict[str, Dict[str, Any]]:
    conf = load_config(args.config)
    for value, section, key in ((args.state_dir, "agent", "state_dir"), (args.lists, "lists", "dir"),
                                (args.trust, "lists", "trust"), (args.broker, "broker", "url"),
                                (args.icap, "icap", "listen"), (args.proxy, "proxy", "listen"),
                                (args.socket, "localapi", "socket")):
        if value is not None:
            conf[section][key] = value
    return conf


def main(args) -> int:
    """Run the agent daemon: lists, updates, confirmation, reports and intakes until SIGTERM."""
    try:
        conf = conf_from_args(args)
    except GatewatchError as exc:
        print("gatewatch run: %s" % exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, conf["agent"]["log_level"].upper()),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = Agent(conf)
    # before start(): a SIGTERM while the parts start (procd stopping a booting router, a test
    # that saw the socket appear) must end in a clean stop, not the default kill
    agent.catch_signals()
    try:
        agent.start()
    except GatewatchError as exc:
        print("gatewatch run: %s" % exc, file=sys.stderr)
        return 2
    return agent.run()
