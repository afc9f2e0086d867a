"""`gatewatch-hub hotline ...`: the command-line face of the hotline hub (arguments and output only)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from agent.core.errors import ConfigError

HELP = "run a hotline's hub: cases by hosting country, forwarding between hubs, review pages, directory, export"
DESCRIPTION = """\
hotline serve: collect the fleet's reports into cases (one per hosting URL per month), place the hosting
server in a country (DNS at the hub, a country database), forward each case to the hub of the hotline
covering that country and a copy to the list's source, receive cases from other hubs, and serve the
analysts' review pages. hotline directory build|show: the signed map of countries to hotlines.
hotline account add: an analyst's log-in. hotline export: one hotline's cases as CSV or JSON.
hotline locate: where a hosting URL is, as the hub sees it. A case an analyst rejects as a false positive
of a list this hub serves becomes the next signed allow list of that source in --publish-dir: point it
at the folder `gatewatch-hub publish --every` sends. See docs/hotlines.md.

  gatewatch-hub hotline directory build --input members.json --key network.key --out directory.json
  gatewatch-hub hotline account add --db hub.sqlite --name alice --password-file pw.txt
  gatewatch-hub hotline serve --hotline hotline-a --key keys/hotline-a.key --directory directory.json \\
      --directory-key network.pub --db hub.sqlite --peer-listen 0.0.0.0:8443 --tls-cert hub.crt \\
      --tls-key hub.key --review-listen 127.0.0.1:8080 --broker mqtts://broker:8883 --lists lists/ \\
      --allow-dir allow/ --publish-dir lists/ --allow-key hotline-a=keys/hotline-a.key --entries lists/hub
  gatewatch-hub hotline export --db hub.sqlite --hotline hotline-b --format csv --out cases.csv
"""


def add_arguments(p) -> None:
    """Arguments of `gatewatch-hub hotline`."""
    from tools.broker_args import add_broker_arguments
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    d = sub.add_parser("directory", help="build or show the signed hotline directory")
    dsub = d.add_subparsers(dest="dir_action", metavar="{build,show}", required=True)
    b = dsub.add_parser("build", help="sign a members file into a directory",
                        description="Sign a members file (JSON: {\"hotlines\": [{id, name, countries, key, hub}]}) "
                                    "with the network's directory key.")
    b.add_argument("--input", required=True, metavar="FILE", help="the members file (JSON)")
    b.add_argument("--key", required=True, metavar="KEY", help="the directory's private key (keys generate)")
    b.add_argument("--out", required=True, metavar="FILE", help="the signed directory file to write")
    b.add_argument("--version", type=int, help="directory version (default: the input's, or 1)")
    b.add_argument("--expires-days", type=float, default=365, help="days until hubs refuse it (default: %(default)s)")
    s = dsub.add_parser("show", help="check a directory's signature and print its members")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--trust", required=True, metavar="PUB", help="the directory's public key file")

    v = sub.add_parser("serve", help="run the hub (collector, endpoint for other hubs, outbox, review pages)",
                       description="Run one hotline's hub until stopped (docs/hotlines.md).")
    v.add_argument("--hotline", required=True, help="this hub's hotline id (as in the directory)")
    v.add_argument("--key", required=True, metavar="KEY", help="this hotline's private key; the directory names its public half")
    v.add_argument("--directory", required=True, metavar="FILE", help="the signed hotline directory")
    v.add_argument("--directory-key", required=True, metavar="PUB", help="the directory's public key file")
    v.add_argument("--db", required=True, help="SQLite file, or a postgresql:// URL")
    v.add_argument("--peer-listen", required=True, metavar="HOST:PORT", help="HTTPS endpoint for other hubs")
    v.add_argument("--tls-cert", required=True, dest="peer_cert", metavar="FILE", help="certificate chain of the endpoint")
    v.add_argument("--tls-key", required=True, dest="peer_key", metavar="FILE", help="its private key")
    v.add_argument("--peer-ca", metavar="FILE", help="CA file to check other hubs' certificates (default: the system store)")
    v.add_argument("--review-listen", metavar="HOST:PORT", help="serve the review pages here (plain HTTP only on loopback)")
    v.add_argument("--review-cert", metavar="FILE", help="TLS certificate for the review pages")
    v.add_argument("--review-key", metavar="FILE", help="its private key")
    v.add_argument("--secret-file", metavar="FILE", help="key of the review sessions (made 0600 if missing; "
                   "default: beside an SQLite database)")
    v.add_argument("--source", action="append", default=[], help="a list source this hub serves (repeat or "
                   "comma-separate): its reports are collected, its false positives go to its allow list")
    v.add_argument("--lists", help="also serve the sources of the list files in this folder")
    v.add_argument("--group", default="", help="shared-subscription group of the collector (default: none)")
    v.add_argument("--connect-timeout", type=float, default=30.0, help="broker connect time-out in seconds")
    v.add_argument("--dns-server", metavar="IP[:PORT]", help="resolver for hosting names (default: the system's)")
    v.add_argument("--dns-timeout", type=float, default=2.0, help="seconds per DNS lookup (default: %(default)s)")
    v.add_argument("--geo-db", metavar="FILE", help="country database: a MaxMind .mmdb, or a geoip2fast .dat.gz "
                   "(default: the one geoip2fast ships)")
    v.add_argument("--allow-dir", metavar="DIR", help="allow input files, one per source (SOURCE.txt)")
    v.add_argument("--publish-dir", metavar="DIR", help="where rebuilt allow lists go (default: --allow-dir)")
    v.add_argument("--allow-key", action="append", default=[], metavar="SOURCE=KEY",
                   help="the signing key of a source's allow list")
    v.add_argument("--entries", metavar="DIR", help="the hub's entries folder (lists/hub) for hash allow lines")
    v.add_argument("--allow-radius", type=int, default=None, help="radius in bits of pdq/neural allow lines, 0-14 "
                   "(default: the signal's, pdq 8, neural 4)")
    v.add_argument("--retry-first", type=float, default=2.0, help="first retry of an unacknowledged forward, s")
    v.add_argument("--retry-max", type=float, default=300.0, help="longest retry interval, s")
    v.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    add_broker_arguments(v, "gatewatch-hotline-%s" % socket.gethostname(), key_flag="--mqtt-key", required=False)

    a = sub.add_parser("account", help="add or change an analyst's log-in")
    asub = a.add_subparsers(dest="acct_action", metavar="{add}", required=True)
    aa = asub.add_parser("add", help="create an account or set its password")
    aa.add_argument("--db", required=True, help="SQLite file, or a postgresql:// URL")
    aa.add_argument("--name", required=True)
    aa.add_argument("--password-file", metavar="FILE", help="file whose first line is the password (default: ask)")

    e = sub.add_parser("export", help="one hotline's cases as CSV or JSON for its case system")
    e.add_argument("--db", required=True, help="SQLite file, or a postgresql:// URL")
    e.add_argument("--hotline", required=True, help="the hotline whose cases to export")
    e.add_argument("--format", choices=("csv", "json"), default="csv", help="default: %(default)s")
    e.add_argument("--out", default="-", help="output file (default: standard output)")

    loc = sub.add_parser("locate", help="resolve a hosting URL or host and place it in a country")
    loc.add_argument("target", metavar="URL_OR_HOST")
    loc.add_argument("--dns-server", metavar="IP[:PORT]")
    loc.add_argument("--dns-timeout", type=float, default=2.0)
    loc.add_argument("--geo-db", metavar="FILE")


def main(args) -> int:
    """Run a hotline subcommand."""
    if args.action == "serve":
        from tools.hotline.serve import run
        return run(args)
    if args.action == "directory":
        from tools.hotline.directory import build_directory, load_directory
        if args.dir_action == "build":
            from tools.build import load_private_key
            d = build_directory(args.input, load_private_key(args.key), args.out, version=args.version,
                                expires_days=args.expires_days)
            print(json.dumps({"directory": args.out, "version": d.version, "hotlines": len(d.hotlines),
                              "countries": d.countries()}))
            return 0
        d = load_directory(args.file, args.trust)
        print(json.dumps(d.to_json(), indent=1))
        return 0
    if args.action == "account":
        from tools.hotline.review import add_account
        from tools.hotline.store import open_store
        if args.password_file:
            try:
                with open(args.password_file, "r", encoding="utf-8") as f:
                    password = f.readline().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError("cannot read --password-file %s: %s" % (args.password_file, e))
        else:
            import getpass
            password = getpass.getpass("password for %s: " % args.name)
        store = open_store(args.db)
        try:
            add_account(store, args.name, password)
        finally:
            store.close()
        print("account %s set" % args.name)
        return 0
    if args.action == "export":
        from tools.hotline.export import export
        from tools.hotline.store import open_store
        if "://" not in args.db and not os.path.exists(args.db):
            raise ConfigError("hub database %s does not exist" % args.db)
        store = open_store(args.db)
        try:
            text = export(store, args.hotline, args.format)
        finally:
            store.close()
        from tools.collector import write_output
        write_output(text, args.out)
        return 0
    if args.action == "locate":
        from tools.hotline.geo import CountryDb, HostingLocator
        t = args.target
        hosting = {"url": t} if "://" in t else {"host": t}
        loc = HostingLocator(CountryDb(args.geo_db), args.dns_server, args.dns_timeout)
        ip, country = loc.locate(hosting)
        print(json.dumps({"target": t, "ip": ip, "country": country, "database": loc.db.source}))
        return 0 if country else 1
    raise ConfigError("unknown action %r" % args.action)


if __name__ == "__main__":  # python -m tools.hotline.cli ...
    p = argparse.ArgumentParser(prog="gatewatch-hub hotline", description=HELP)
    add_arguments(p)
    from agent.cli.subcommands import run as _run  # noqa: F401  (same error handling as the console script)
    try:
        sys.exit(main(p.parse_args()))
    except ConfigError as exc:
        print("gatewatch-hub hotline: error: %s" % exc, file=sys.stderr)
        sys.exit(2)
