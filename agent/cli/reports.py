"""Export the reports and pending hits a device holds (for sites without a broker).

    gatewatch reports export --state-dir DIR [--format json|csv] [--out FILE]

Prints what the state folder holds, oldest first, each with a ``state``: ``unsent`` (a confirmed hit's
report, waiting in spool/ until a hub acknowledges it; it is sent once a broker is configured) or
``pending`` (a hit that no hub could confirm, from pending/: report fields only, never a hash of the
image; it is never sent as a report). Reads without disturbing a running agent. Exit 0, or 2 if the
folder holds no state.
"""
from __future__ import annotations

import json
import os
import sys

from agent.core.errors import ConfigError

HELP = "export the unsent reports and pending (unconfirmed) hits this device holds"
DESCRIPTION = """\
For sites without a broker, or before handing a device over: prints what the state folder holds,
oldest first. "unsent": the report of a confirmed hit, kept until a hub acknowledges it (sent once a
broker is configured). "pending": a hit no hub could confirm; it holds report fields only (list,
version, entry id if known, hosting as configured, hour), never a hash of the image, and is never
sent as a report. Safe to run beside the running agent: it reads and writes nothing.

  gatewatch reports export --state-dir /srv/gatewatch --format csv --out hits.csv
"""

COLUMNS = ("state", "id", "time", "source", "list", "version", "signal", "distance", "entry",
           "hosting_url", "hosting_host", "hosting_ip", "hosting_country", "device", "region", "agent")


def add_arguments(parser):
    sub = parser.add_subparsers(dest="reports_cmd", metavar="{export}")
    sub.required = True
    e = sub.add_parser("export", help="print the unsent reports and pending hits of a state folder")
    e.add_argument("--state-dir", required=True, help="the agent's state folder (agent.state_dir)")
    e.add_argument("--format", choices=("json", "csv"), default="json", help="default: %(default)s")
    e.add_argument("--out", default="-", help="output file (default: standard output)")


def render(records, fmt):
    """(state, record) pairs as JSON (a list) or CSV text."""
    if fmt == "json":
        return json.dumps([dict(rec, state=state) for state, rec in records], indent=1, sort_keys=True) + "\n"
    from agent.csvsafe import csv_text

    def row(state, rec):
        h = rec.get("hosting") or {}
        flat = dict(rec, state=state, hosting_url=h.get("url"), hosting_host=h.get("host"),
                    hosting_ip=h.get("ip"), hosting_country=h.get("country"))
        return [flat.get(c) for c in COLUMNS]
    return csv_text(COLUMNS, (row(state, rec) for state, rec in records))


def main(args):
    """Export the unsent reports and pending hits of a state folder."""
    from agent.reports.pending import read_records

    if not os.path.isdir(args.state_dir):
        raise ConfigError("state folder %s does not exist" % args.state_dir)
    if not any(os.path.isdir(os.path.join(args.state_dir, d)) for d in ("spool", "pending")):
        raise ConfigError("%s holds no report spool (spool/ or pending/): is it the agent's state_dir?"
                          % args.state_dir)
    records = read_records(args.state_dir)
    text = render(records, args.format)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", newline="") as f:
            f.write(text)
    print("%d unsent report(s), %d pending hit(s)" % (sum(1 for s, _ in records if s == "unsent"),
                                                     sum(1 for s, _ in records if s == "pending")),
          file=sys.stderr)
    return 0
