"""How every hub command reaches the broker: one set of flags, one way to build the client.

Owns: ``--broker``, ``--prefix``, ``--client-id``, ``--username`` and the password (never on the
command line, where every local user could read it in the process list: ``--password-file``, or
the variable that ``--password-env`` names), and ``--ca``/``--cert``/``--key`` for mqtts://. Used by
`publish`, `serve` and `reports collect`; ``--broker`` repeated names the nodes of one clustered
broker. Must not touch: what a command does once connected.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

from agent.core.errors import ConfigError

PASSWORD_ENV = "GATEWATCH_HUB_PASSWORD"
USERNAME_ENV = "GATEWATCH_HUB_USERNAME"


class _BrokerList(argparse.Action):
    """Repeated --broker URLs, kept as one comma-separated string (what MqttClient takes)."""

    def __call__(self, parser, namespace, values, option_string=None):
        prev = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, values if not prev else "%s,%s" % (prev, values))


def add_broker_arguments(parser, client_id: str, key_flag: str = "--key", required: bool = True) -> None:
    """Add the broker flags to ``parser``; ``client_id`` is the default MQTT client id."""
    g = parser.add_argument_group("broker")
    g.add_argument("--broker", required=required, action=_BrokerList,
                   help="mqtt://host:1883 or mqtts://host:8883; repeat it for each node of a clustered broker "
                        "(tried in turn when one is unreachable)")
    g.add_argument("--prefix", default="gatewatch/v1", help="topic prefix (default: %(default)s)")
    g.add_argument("--client-id", default=client_id, help="MQTT client id (default: %(default)s)")
    g.add_argument("--username", default=os.environ.get(USERNAME_ENV),
                   help="broker login (default: the environment variable %s)" % USERNAME_ENV)
    g.add_argument("--password-file", metavar="FILE", help="file whose first line is the broker password")
    g.add_argument("--password-env", default=PASSWORD_ENV, metavar="NAME",
                   help="environment variable holding the broker password (default: %(default)s)")
    g.add_argument("--ca", help="CA file for mqtts:// (default: the system store)")
    g.add_argument("--cert", help="client certificate for mqtts:// certificate login")
    g.add_argument(key_flag, dest="tls_key", help="client key for mqtts:// certificate login")


def password_of(args) -> Optional[str]:
    """The password from --password-file, else from the --password-env variable, else None."""
    if getattr(args, "password_file", None):
        try:
            with open(args.password_file, "r", encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("cannot read --password-file %s: %s" % (args.password_file,
                                                                    getattr(exc, "strerror", None) or exc))
    name = getattr(args, "password_env", None)
    return os.environ.get(name) if name else None


def tls_of(args) -> Optional[dict]:
    """TLS settings from --ca/--cert/--key, or None."""
    tls = {k: v for k, v in (("ca_certs", args.ca), ("certfile", args.cert), ("keyfile", args.tls_key)) if v}
    return tls or None


def client_from_args(args, **kw):
    """The MqttClient these flags describe (not yet connected)."""
    from agent.mqtt import MqttClient
    return MqttClient(args.broker, args.client_id, username=args.username, password=password_of(args),
                      tls=tls_of(args), **kw)


def topics_from_args(args):
    """The Topics under --prefix."""
    from agent.mqtt import Topics
    return Topics(args.prefix)
