"""Show the agent's status: lists, versions, ages, refusals, spool depth, broker state.

Owns reading and presenting ``<state_dir>/status.json``, which the daemon writes atomically (so a
reader never sees half a file). Must not touch the running agent: it only reads.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

from agent.core.errors import ConfigError, GatewatchError

HELP = "show the running agent's lists, versions, refusals, spool depth and broker state"
DESCRIPTION = 'Reads <state_dir>/status.json, which the agent writes; it never disturbs the running agent.'


def read_status(state_dir: str) -> dict:
    """The last status the daemon wrote, or ConfigError saying why there is none."""
    path = os.path.join(state_dir, "status.json")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError("no status in %s: is `gatewatch run` running with this state folder?" % state_dir)
    except (OSError, ValueError) as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc))


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, ValueError, TypeError):
        return False


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def annotate(st: dict, now: Optional[float] = None) -> dict:
    """Add ages relative to ``now`` and whether the daemon is still running."""
    now = time.time() if now is None else now
    st = dict(st)
    st["running"] = not st.get("stopped") and _alive(st.get("pid"))
    st["status_age_s"] = int(now - st.get("written_at", now))
    for d in st.get("lists", {}).values():
        if d.get("created") is not None:
            d["age_s"] = int(now - d["created"])
        if d.get("expires") is not None:
            d["expires_in_s"] = int(d["expires"] - now)
    return st


def render(st: dict) -> str:
    """Human-readable status."""
    b = st.get("broker") or {}
    lines = ["agent %s  %s  (status written %s ago, client id %s)" % (
        st.get("agent"), "running" if st.get("running") else "NOT RUNNING", _age(st.get("status_age_s")),
        st.get("client_id"))]
    lines.append("broker   %s  %s" % (b.get("url") or "none (lists from a folder)",
                                       "connected" if b.get("connected") else "disconnected" if b.get("url") else ""))
    lists = st.get("lists") or {}
    if not lists:
        lines.append("lists    none in force")
    for ident, d in sorted(lists.items()):
        lines.append("list     %-24s v%-6s age %-6s expires in %-6s via %s" % (
            ident, d.get("version") if d.get("version") is not None else "-", _age(d.get("age_s")),
            _age(d.get("expires_in_s")), d.get("via") or "-"))
        r = d.get("last_refusal")
        if r:
            lines.append("         last refusal: %s (kept v%s)" % (r.get("reason"), r.get("kept_version")))
    for name, lg in sorted((st.get("log") or {}).items()):  # transparency logs (docs/transparency.md)
        lines.append("log      %-24s head size %s  %s" % (name, lg.get("size") if lg.get("size") is not None else "-",
                                                          "FORKED" if lg.get("fork") else "ok"))
        for what in ("fork", "last_refusal"):
            if lg.get(what):
                lines.append("         %s: %s" % (what.replace("_", " "), lg[what].get("reason")))
    rep = st.get("reports") or {}
    lines.append("reports  spool depth %s, dropped %s, delivered %s" % (
        rep.get("spool_depth"), rep.get("spool_dropped"), rep.get("delivered", "-")))
    pol = st.get("policy") or {}
    lines.append("policy   mode %s: scanned %s, blocked %s, confirmed %s, unconfirmed %s, refuted %s" % (
        pol.get("mode"), pol.get("scanned"), pol.get("blocked"), pol.get("confirmed"), pol.get("unconfirmed"),
        pol.get("refuted")))
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="the agent's TOML configuration (for its state folder)")
    parser.add_argument("--state-dir", help="the agent's state folder (overrides the config)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args) -> int:
    """Show lists, versions, ages, refusals, spool depth and broker state of the running agent."""
    from agent.config import load_config

    try:
        state_dir = args.state_dir or load_config(args.config)["agent"]["state_dir"]
        st = annotate(read_status(state_dir))
    except GatewatchError as exc:
        print("gatewatch status: %s" % exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(st, sort_keys=True))
    else:
        print(render(st))
    return 0 if st["running"] else 1
