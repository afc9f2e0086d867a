"""The agent's settings: one schema, its defaults, the TOML file and the environment overrides.

Owns: ``SETTINGS`` (every setting, its default and its one-line documentation, which docs/config.md,
the sample firmware/gatewatch.toml and the OpenWrt UCI mapping must match; tests check it), reading
and checking a configuration, and parsing listen addresses. Must not touch: starting anything
(``agent.daemon``), the command line (``agent.cli``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

from agent.core.errors import ConfigError
from agent.intake.proxy.netpolicy import DEFAULT_CLIENTS
from agent.core.report import HOSTING_MODES
from agent.reports.spool import POLICIES as SPOOL_POLICIES

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - 3.9/3.10
    import tomli as _toml

# (key, default, doc); the type is the default's type ([] = list of strings).
SETTINGS: Dict[str, List[Tuple[str, Any, str]]] = {
    "agent": [
        ("state_dir", "/var/lib/gatewatch", "folder for lists, trust keys, spool, status and ids"),
        ("client_id", "", "MQTT client id; empty: generated once as gw-<random> and kept in the state folder"),
        ("log_level", "info", "debug, info, warning or error"),
        ("hal", "", "HAL backend (emulated, linux, openwrt, micropython); empty: automatic choice"),
        ("status_interval", 10.0, "seconds between status file writes and status publishes"),
        ("watchdog", 0.0, "hardware watchdog timeout in seconds; 0 disables it"),
    ],
    "broker": [
        ("url", "", "mqtt://host:1883 or mqtts://host:8883; empty: no broker (lists from lists.dir only)"),
        ("urls", [], "more nodes of the same clustered broker (same scheme and login), tried in turn when one is unreachable; the agent starts at a random one"),
        ("username", "", "MQTT user name (empty: none, or the one in the URL)"),
        ("password", "", "MQTT password; prefer password_file"),
        ("password_file", "", "file whose first line is the MQTT password"),
        ("ca", "", "CA certificate file for mqtts:// (empty: the system store)"),
        ("cert", "", "client certificate file for certificate login"),
        ("key", "", "client key file for certificate login"),
        ("prefix", "gatewatch/v1", "topic prefix"),
        ("keepalive", 30, "MQTT keepalive in seconds"),
    ],
    "lists": [
        ("trust", [], "trusted public key files, list-signing and log keys (PATH or SOURCE=PATH); empty: every *.pub in <state_dir>/trust"),
        ("dir", "", "run from this folder of list files instead of (or before) the broker; never written"),
        ("max_bytes", 64 * 1024 * 1024, "largest list file or update accepted, in bytes"),
        ("fetch_timeout", 30.0, "seconds to wait for all chunks of an update before refusing it"),
        ("use_deltas", True, "fetch the delta when one version behind (false: always the snapshot)"),
        ("retry_delay", 30.0, "seconds before an update whose chunks were missing is tried again (doubling to 1 h)"),
        ("stale_hours", 6.0, "hours without a fresh signed timestamp from a source before its lists show stale (LED fault); 0: off"),
    ],
    "policy": [
        ("mode", "block", "block, report-only or monitor (see agent/policy.py for the reasons)"),
        ("exact_unconfirmed", "block", "exact-list hit while the hub is unreachable: block or allow"),
        ("candidate_unconfirmed", "allow", "perceptual candidate while the hub is unreachable: block or allow"),
        ("confirm_timeout", 2.0, "seconds to wait for the hub's confirmation"),
        ("firewall_seconds", 0, "also block the hosting address in the HAL firewall for this long; 0: off"),
        ("reconfirm_hours", 24.0, "ask the hub again about unconfirmed hits for this long (reported only if confirmed); 0: off"),
        # per source (agent.sources): SOURCE=VALUE items, as lists.trust takes SOURCE=PATH
        ("source_action", [], "SOURCE=ACTION items (block, report-only, monitor): that source's hits get this "
         "action instead of mode"),
        ("source_trust", [], "SOURCE=TRUST items: full (its hits act on their own) or corroborate (only when a "
         "source of another country confirms the image too); unnamed sources: full"),
        ("source_country", [], "SOURCE=CC items: each source's country (ISO 3166-1 alpha-2, e.g. hl1=DE), for "
         "min_countries and corroborate"),
        ("min_countries", 1, "a hit blocks or reports only when lists of sources of this many different "
         "countries confirm it (sources without a country never count); 1: off"),
        ("allow_others", [], "sources whose allow lists also override other sources' hits (\"*\": every trusted "
         "source); a source's own allow list always overrides its own hits"),
    ],
    "confirm": [
        ("cache_max", 10000, "answers kept in the confirmation cache"),
        ("max_ttl", 604800.0, "upper bound in seconds on the cache durations the hub sets"),
    ],
    "reports": [
        ("hosting", "url-noquery", "what of the hosting location a report carries: url, url-noquery, host, none"),
        ("region", "", "the operator's region code, e.g. DE-BY (empty: none)"),
        ("pseudonym", True, "add the daily-rotating device pseudonym (false: none)"),
        ("spool_max_bytes", 1024 * 1024, "spool size cap in bytes"),
        ("spool_max_reports", 10000, "spool cap in reports"),
        ("spool_policy", "drop-newest", "when the spool is full: drop-newest or drop-oldest (counted)"),
        ("ack", "hub", "keep a report until: hub (its collector stored it, docs/reports.md) or broker (PUBACK; older hubs)"),
        ("resend_after", 30.0, "seconds before a report the hub has not acknowledged is sent again (doubling)"),
        ("resend_max", 3600.0, "upper bound in seconds on the resend interval"),
    ],
    "localapi": [
        ("enabled", True, "serve the local check API"),
        ("socket", "", "socket path; empty: <state_dir>/gatewatch.sock"),
        ("max_bytes", 32 * 1024 * 1024, "largest body the local API scans"),
    ],
    "icap": [("listen", "", "HOST:PORT of the ICAP service (e.g. 127.0.0.1:1344); empty: off"),
             ("early_head", "stall", "stall (Squid < 6.10, bug 5352), never (Squid >= 6.10, e2guardian) or always")],
    "proxy": [("listen", "", "HOST:PORT of the built-in HTTP proxy (e.g. 0.0.0.0:3128); empty: off"),
              ("mode", "explicit", "explicit (clients configured to use the proxy) or transparent (nft redirect)"),
              ("clients", list(DEFAULT_CLIENTS), "networks (CIDR) whose hosts may use the proxy; [\"any\"] for everyone"),
              ("allow_loopback_upstream", False, "let requests reach loopback, link-local or this gateway's own "
               "addresses (refused by default: a gateway's admin pages live there); for tests and demos"),
              ("max_connections_per_client", 32, "connections one client address may hold; 0: no bound"),
              ("max_scan_bytes", 16 * 1024 * 1024, "largest image (and decoded Content-Encoding output) scanned; "
               "larger ones pass, counted and logged"),
              ("max_held_bytes", 64 * 1024 * 1024, "budget for all image bytes buffered at once; beyond it images "
               "pass unscanned, counted and logged"),
              ("undecodable_images", "pass", "an image in a Content-Encoding the agent cannot decode (br, zstd): "
               "pass (counted, logged) or block (502)")],
    # url/domain lists at the resolver and at the TLS handshake (README.md, "What each path sees")
    "dns": [("listen", "", "HOST:PORT of the DNS forwarder dnsmasq forwards to first (e.g. 127.0.0.1:5353); empty: off"),
            ("upstream", [], "resolvers unlisted queries go to (IP or IP:PORT, in order); empty: resolv_file's"),
            ("resolv_file", "", "file whose nameserver lines are the upstreams when upstream is empty "
             "(OpenWrt: /tmp/resolv.conf.d/resolv.conf.auto)"),
            ("block_address", [], "addresses (the block page's) that A/AAAA questions for listed names get; "
             "empty: NXDOMAIN"),
            ("block_ttl", 60, "seconds resolvers may cache a block answer")],
    "tls": [("listen", "", "HOST:PORT of the TLS splice behind an nft redirect of LAN tcp/443 (e.g. 0.0.0.0:3130); "
             "empty: off"),
            ("clients", list(DEFAULT_CLIENTS), "networks (CIDR) whose connections are spliced; [\"any\"] for everyone"),
            ("allow_loopback_upstream", False, "let connections reach loopback or this gateway's own addresses; "
             "for tests and demos")],
}


# Settings that take one of a few words: a typo is refused at start, not discovered in the field
# (``reports.hosting = "hostname"`` once made every report carry nothing about the hosting side).
CHOICES: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("agent", "log_level"): ("debug", "info", "warning", "error"),
    ("agent", "hal"): ("", "emulated", "linux", "openwrt", "micropython"),
    ("reports", "hosting"): HOSTING_MODES,
    ("reports", "spool_policy"): SPOOL_POLICIES,
    ("icap", "early_head"): ("stall", "never", "always"),
    ("proxy", "mode"): ("explicit", "transparent"),
    ("proxy", "undecodable_images"): ("pass", "block"),
}


def defaults() -> Dict[str, Dict[str, Any]]:
    """Every setting at its default."""
    return {sec: {k: (list(d) if isinstance(d, list) else d) for k, d, _ in items} for sec, items in SETTINGS.items()}


def _coerce(section: str, key: str, value: Any, default: Any, from_env: bool) -> Any:
    where = "%s %s.%s" % ("environment" if from_env else "config", section, key)
    if isinstance(default, bool):
        if from_env:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError("%s must be true or false, not %r" % (where, value))
        if not isinstance(value, bool):
            raise ConfigError("%s must be true or false, not %r" % (where, value))
        return value
    if isinstance(default, list):
        if from_env:
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("%s must be a list of strings" % where)
        return value
    if isinstance(default, (int, float)):
        try:
            if from_env and not value.strip().isascii():  # int('٢') is 2: a number here is ASCII digits
                raise ValueError(value)
            v = type(default)(value) if from_env else value
        except ValueError:
            raise ConfigError("%s must be a number, not %r" % (where, value))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError("%s must be a number, not %r" % (where, value))
        if isinstance(default, int) and not isinstance(v, int):
            raise ConfigError("%s must be a whole number, not %r" % (where, value))
        if v < 0:
            raise ConfigError("%s must not be negative" % where)
        return type(default)(v)
    if not isinstance(value, str):
        raise ConfigError("%s must be a string, not %r" % (where, value))
    return value


def load_config(path: Optional[str] = None, environ: Optional[Dict[str, str]] = None) -> Dict[str, Dict[str, Any]]:
    """Defaults, then the TOML file, then GATEWATCH_<SECTION>_<KEY> variables; unknown keys refused."""
    environ = os.environ if environ is None else environ
    conf = defaults()
    if path:
        try:
            with open(path, "rb") as f:
                doc = _toml.load(f)
        except OSError as exc:
            raise ConfigError("cannot read config %s: %s" % (path, exc.strerror))
        except _toml.TOMLDecodeError as exc:
            raise ConfigError("config %s is not valid TOML: %s" % (path, exc))
        for section, values in doc.items():
            if section not in SETTINGS or not isinstance(values, dict):
                raise ConfigError("config %s: unknown section [%s]; known: %s"
                                  % (path, section, ", ".join(SETTINGS)))
            known = {k: d for k, d, _ in SETTINGS[section]}
            for key, value in values.items():
                if key not in known:
                    raise ConfigError("config %s: unknown setting %s.%s; known: %s"
                                      % (path, section, key, ", ".join(known)))
                conf[section][key] = _coerce(section, key, value, known[key], False)
    for section, items in SETTINGS.items():
        for key, default, _ in items:
            name = "GATEWATCH_%s_%s" % (section.upper(), key.upper())
            if name in environ:
                conf[section][key] = _coerce(section, key, environ[name], default, True)
    for (section, key), allowed in CHOICES.items():
        if conf[section][key] not in allowed:
            raise ConfigError("%s.%s must be %s, not %r" % (section, key, " or ".join(
                ", ".join(allowed).rsplit(", ", 1)), conf[section][key]))
    policy_settings(conf)  # validates the policy section
    return conf


def policy_settings(conf):
    """The PolicySettings of a configuration (raises ConfigError on a bad value)."""
    from agent.policy import PolicySettings
    from agent.sources import rules_from_policy

    p = conf["policy"]
    return PolicySettings(mode=p["mode"], exact_unconfirmed=p["exact_unconfirmed"],
                          candidate_unconfirmed=p["candidate_unconfirmed"], confirm_timeout=p["confirm_timeout"],
                          reconfirm_hours=p["reconfirm_hours"], sources=rules_from_policy(p))


_PORT_RE = re.compile(r"^[0-9]{1,5}$")


def parse_listen(text: str, default_port: int) -> Tuple[str, int]:
    """'HOST:PORT', '[v6]:PORT', 'HOST' or '[v6]' -> (host, port); ConfigError on anything else."""
    where = "listen address %r: use HOST:PORT, e.g. 127.0.0.1:%d" % (text, default_port)
    if not isinstance(text, str) or not text.isascii() or not text.strip():
        raise ConfigError(where)
    host, port = text.strip(), str(default_port)
    if host.startswith("["):
        host, close, rest = host[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ConfigError(where)
        if rest:
            port = rest[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    elif host.count(":") > 1:
        raise ConfigError(where + " (put an IPv6 address in brackets: [::1]:%d)" % default_port)
    if not host or not _PORT_RE.match(port) or int(port) > 65535:
        raise ConfigError(where)
    return host, int(port)
