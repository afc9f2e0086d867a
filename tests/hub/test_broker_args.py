"""tools.broker_args: every hub command takes the same broker flags, and no password on the command line."""

import argparse

import pytest

from agent.core.errors import ConfigError
from tools import broker_args
from tools.hub_cli import COMMANDS

BROKER_COMMANDS = [(["publish"], ["--lists", "x"]), (["serve"], ["--lists", "x", "--db", "d"]),
                   (["reports", "collect"], ["--db", "d"])]


def _parse(argv):
    from agent.cli.subcommands import build_parser
    from agent import __version__
    return build_parser("gatewatch-hub", "", COMMANDS, __version__).parse_args(argv)


@pytest.mark.parametrize("command,rest", BROKER_COMMANDS)
def test_the_same_flags_everywhere(command, rest, tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\nignored\n")
    argv = command + rest + ["--broker", "mqtts://hub.example:8883", "--prefix", "p/v1", "--client-id", "c1",
                                    "--username", "u", "--password-file", str(pw), "--ca", "ca.pem",
                                    "--cert", "c.pem", "--key", "k.pem"]
    args = _parse(argv)
    assert (args.broker, args.prefix, args.client_id, args.username) == ("mqtts://hub.example:8883", "p/v1", "c1", "u")
    assert broker_args.password_of(args) == "s3cret"
    assert broker_args.tls_of(args) == {"ca_certs": "ca.pem", "certfile": "c.pem", "keyfile": "k.pem"}
    with pytest.raises(SystemExit):
        _parse(command + rest + ["--broker", "mqtt://h", "--password", "visible-in-ps"])


def test_password_from_the_environment_and_clear_errors(tmp_path, monkeypatch):
    p = argparse.ArgumentParser()
    broker_args.add_broker_arguments(p, "x")
    monkeypatch.setenv("GATEWATCH_HUB_PASSWORD", "from-env")
    assert broker_args.password_of(p.parse_args(["--broker", "mqtt://h"])) == "from-env"
    monkeypatch.setenv("OTHER", "other")
    assert broker_args.password_of(p.parse_args(["--broker", "mqtt://h", "--password-env", "OTHER"])) == "other"
    with pytest.raises(ConfigError, match="cannot read --password-file"):
        broker_args.password_of(p.parse_args(["--broker", "mqtt://h", "--password-file", str(tmp_path / "no")]))
