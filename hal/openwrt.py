"""OpenWrt HAL backend: UCI settings, procd's watchdog, fw4 nftables includes.

Owns what differs on OpenWrt from plain Linux: the UCI file format (parsed and written here, so no
``uci`` binary is needed in tests), the mapping of /etc/config/gatewatch onto the agent's TOML
configuration, the fw4 include text (the block sets live inside fw4's ``inet fw4`` table), and
a Watchdog that is a documented no-op because procd owns /dev/watchdog there. Everything else
(sysfs LEDs, storage, key store, clock, serial) is the linux backend's. Paths hang off a
configurable root so tests use a temporary folder.

Run ``python -m hal.openwrt render --uci FILE --out FILE`` to write the agent's TOML from UCI
(the procd init script does this before each start).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

from agent.core.errors import ConfigError
from hal import contracts, linux

NAME = "openwrt"

StatusLed = linux.StatusLed
Storage = linux.Storage
KeyStore = linux.KeyStore
Clock = linux.Clock
SerialPort = linux.SerialPort

FW4_TABLE = "fw4"
SET4 = "gatewatch_block4"
SET6 = "gatewatch_block6"


class Firewall(linux.Firewall):
    """The block sets inside fw4's table, defined by the shipped include (fw4 owns the table)."""

    def __init__(self, *, nft=("nft",), resolver=None, timeout=10.0):
        super().__init__(nft=nft, family="inet", table=FW4_TABLE, set4=SET4, set6=SET6,
                         manage_table=False, resolver=resolver, timeout=timeout)


class Watchdog(contracts.Watchdog):
    """procd opens /dev/watchdog on OpenWrt and kicks it itself; the agent must not open it too.

    So start/kick/stop only record (``history``) and ``owner`` reports "procd"; the agent's
    liveness is procd's respawn of the service instead.
    """

    owner = "procd"

    def __init__(self):
        super().__init__()
        self.history = []

    def _apply_start(self, timeout):
        self.history.append(("start", timeout))

    def _apply_kick(self):
        self.history.append(("kick",))

    def _apply_stop(self):
        self.history.append(("stop",))


class SystemInfo(linux.SystemInfo):
    """Model from /tmp/sysinfo/model (set by OpenWrt's board detection), then the linux sources."""

    MODEL_FILES = ("tmp/sysinfo/model",) + linux.SystemInfo.MODEL_FILES

    def _apply_info(self):
        info = super()._apply_info()
        release = parse_openwrt_release(self._read("etc/openwrt_release") or "")
        if release.get("DISTRIB_DESCRIPTION") and info.get("model"):
            info["model"] = "%s (%s)" % (info["model"], release["DISTRIB_DESCRIPTION"])
        return info


def parse_openwrt_release(text):
    """The KEY='value' pairs of /etc/openwrt_release."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            try:
                parts = shlex.split(value)
            except ValueError:
                parts = [value]
            out[key.strip()] = parts[0] if parts else ""
    return out


# ---------------------------------------------------------------- UCI

class UciSection:
    """One ``config <type> ['<name>']`` block: options are str, lists are list[str]."""

    def __init__(self, type_, name=None, options=None):
        self.type = type_
        self.name = name
        self.options = dict(options or {})

    def __repr__(self):
        return "UciSection(%r, %r, %r)" % (self.type, self.name, self.options)

    def __eq__(self, other):
        return isinstance(other, UciSection) and (self.type, self.name, self.options) == (other.type, other.name, other.options)


_UCI_IDENT = re.compile(r"^[A-Za-z0-9_]+$")


def parse_uci(text):
    """Parse UCI file text into a list of UciSection; ConfigError with the line number on bad input."""
    sections = []
    current = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(raw, comments=True, posix=True)
        except ValueError as exc:
            raise ConfigError("UCI line %d: %s (unbalanced quotes?): %r" % (lineno, exc, raw.strip())) from None
        if not words:
            continue
        keyword = words[0]
        if keyword == "package":
            continue
        if keyword == "config":
            if len(words) not in (2, 3) or not _UCI_IDENT.match(words[1]) or (len(words) == 3 and not _UCI_IDENT.match(words[2])):
                raise ConfigError("UCI line %d: expected: config <type> ['<name>'], got %r" % (lineno, raw.strip()))
            current = UciSection(words[1], words[2] if len(words) == 3 else None)
            sections.append(current)
        elif keyword in ("option", "list"):
            if current is None:
                raise ConfigError("UCI line %d: %s before any 'config' section" % (lineno, keyword))
            if len(words) != 3 or not _UCI_IDENT.match(words[1]):
                raise ConfigError("UCI line %d: expected: %s <name> '<value>', got %r" % (lineno, keyword, raw.strip()))
            name, value = words[1], words[2]
            if keyword == "option":
                current.options[name] = value
            else:
                existing = current.options.get(name, [])
                if isinstance(existing, str):
                    raise ConfigError("UCI line %d: %r is both an option and a list" % (lineno, name))
                current.options[name] = existing + [value]
        else:
            raise ConfigError("UCI line %d: unknown keyword %r (expected config, option or list)" % (lineno, keyword))
    return sections


def _quote(value):
    return "'" + value.replace("'", "'\\''") + "'"


def dump_uci(sections):
    """UCI file text for ``sections`` (parse_uci(dump_uci(s)) == s)."""
    lines = []
    for sec in sections:
        lines.append("config %s%s" % (sec.type, " " + _quote(sec.name) if sec.name else ""))
        for key, value in sec.options.items():
            if isinstance(value, list):
                lines.extend("\tlist %s %s" % (key, _quote(v)) for v in value)
            else:
                lines.append("\toption %s %s" % (key, _quote(value)))
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- UCI -> agent configuration

_BOOL = {"1": True, "yes": True, "on": True, "true": True, "enabled": True,
         "0": False, "no": False, "off": False, "false": False, "disabled": False}

# UCI section -> option -> (kind, extra, target). target is (toml section, toml key) in the
# daemon's configuration (agent/daemon.py SETTINGS, docs/config.md), or None for options only the
# init script uses (enabled, console, the intake switches, transparent).
UCI_SCHEMA = {
    "agent": {
        "enabled": ("bool", None, None),
        "state_dir": ("abspath", None, ("agent", "state_dir")),
        "log_level": ("choice", ("debug", "info", "warning", "error"), ("agent", "log_level")),
        "console": ("str", None, None),
    },
    "broker": {
        "url": ("url", ("mqtt", "mqtts"), ("broker", "url")),
        "username": ("str", None, ("broker", "username")),
        "password": ("str", None, ("broker", "password")),
        "password_file": ("abspath", None, ("broker", "password_file")),
        "ca": ("abspath", None, ("broker", "ca")),
        "prefix": ("str", None, ("broker", "prefix")),
    },
    "lists": {
        "trust": ("pathlist", None, ("lists", "trust")),
    },
    "policy": {
        "mode": ("choice", ("block", "report-only", "monitor"), ("policy", "mode")),
        "exact_unconfirmed": ("choice", ("block", "allow"), ("policy", "exact_unconfirmed")),
        "candidate_unconfirmed": ("choice", ("block", "allow"), ("policy", "candidate_unconfirmed")),
        "firewall_seconds": ("uint", None, ("policy", "firewall_seconds")),
        # per source (docs/config.md, "Per-source policy and allow lists"); the same checks as agent.sources
        "source_action": ("pairs", ("block", "report-only", "monitor"), ("policy", "source_action")),
        "source_trust": ("pairs", ("full", "corroborate"), ("policy", "source_trust")),
        "source_country": ("pairs", "country", ("policy", "source_country")),
        "min_countries": ("range", (1, 8), ("policy", "min_countries")),
        "allow_others": ("sources", None, ("policy", "allow_others")),
    },
    "reports": {
        "region": ("region", None, ("reports", "region")),
        "hosting": ("choice", ("url", "url-noquery", "host", "none"), ("reports", "hosting")),
        "pseudonym": ("bool", None, ("reports", "pseudonym")),
    },
    "intake": {
        "icap": ("bool", None, None),
        "icap_listen": ("hostport", None, None),
        "proxy": ("bool", None, None),
        "proxy_listen": ("hostport", None, None),
        "transparent": ("bool", None, None),
        "dns": ("bool", None, None),
        "dns_listen": ("hostport", None, None),
        "tls": ("bool", None, None),
        "tls_listen": ("hostport", None, None),
    },
}
REQUIRED = {"agent": ("state_dir",)}
DEFAULTS = {"icap_listen": "127.0.0.1:1344", "proxy_listen": "0.0.0.0:3128", "dns_listen": "127.0.0.1:5353",
            "tls_listen": "0.0.0.0:3130"}
# where OpenWrt's netifd writes the WAN's resolvers: the DNS forwarder's upstreams
RESOLV_AUTO = "/tmp/resolv.conf.d/resolv.conf.auto"


_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


def _source_name(where, name):
    # ASCII only, as agent.sources: look-alike letters must not pass for a source's name
    if not (name.isascii() and _SOURCE.match(name)):
        raise ConfigError("%s: %r is not a source name (1-64 letters, digits, '.', '_' or '-')" % (where, name))
    return name


def _pairs(where, values, extra):
    """SOURCE=VALUE items (a choice from ``extra``, or a country code) -> the same items, stripped."""
    out, seen = [], set()
    for item in values:
        if item.count("=") != 1:
            raise ConfigError("%s item %r: use SOURCE=VALUE, e.g. hl1=%s" % (where, item, "DE" if extra == "country" else extra[0]))
        source, value = (x.strip() for x in item.split("="))
        _source_name("%s item %r" % (where, item), source)
        if source in seen:
            raise ConfigError("%s item %r: source %s is named twice" % (where, item, source))
        seen.add(source)
        if extra == "country":
            if not (value.isascii() and _COUNTRY.match(value)):
                raise ConfigError("%s item %r: %r is not a two-letter country code (ISO 3166-1 alpha-2, e.g. DE)"
                                  % (where, item, value))
        elif value not in extra:
            raise ConfigError("%s item %r: %r is not one of %s" % (where, item, value, ", ".join(extra)))
        out.append("%s=%s" % (source, value))
    return out


def _convert(section, key, value):
    kind, extra, _ = UCI_SCHEMA[section][key]
    where = "gatewatch.%s.%s" % (section, key)
    if kind in ("pairs", "sources"):
        values = value if isinstance(value, list) else [value]
        if kind == "pairs":
            return _pairs(where, values, extra)
        return [v if v == "*" else _source_name(where, v) for v in values]
    if kind == "range":
        if isinstance(value, list) or not (value.isascii() and value.isdigit()) or not extra[0] <= int(value) <= extra[1]:
            raise ConfigError("%s must be a whole number from %d to %d, got %r" % (where, extra[0], extra[1], value))
        return int(value)
    if kind == "pathlist":
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not v.startswith("/"):
                raise ConfigError("%s entries must be absolute paths, got %r" % (where, v))
        return values
    if isinstance(value, list):
        raise ConfigError("%s must be an option, not a list" % where)
    if kind == "bool":
        if value.lower() not in _BOOL:
            raise ConfigError("%s must be a boolean (0/1, yes/no, on/off, true/false), got %r" % (where, value))
        return _BOOL[value.lower()]
    if kind == "uint":
        if not value.isdigit():
            raise ConfigError("%s must be a whole number >= 0, got %r" % (where, value))
        return int(value)
    if kind == "choice":
        if value not in extra:
            raise ConfigError("%s must be one of %s, got %r" % (where, ", ".join(extra), value))
        return value
    if kind == "region":
        if not re.match(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$", value):
            raise ConfigError("%s must be an ISO 3166 code such as 'DE' or 'DE-BY', got %r" % (where, value))
        return value
    if kind == "abspath":
        if not value.startswith("/"):
            raise ConfigError("%s must be an absolute path, got %r" % (where, value))
        return value
    if kind == "url":
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in extra or not rest:
            raise ConfigError("%s must be a URL with scheme %s and a host, got %r" % (where, "/".join(extra), value))
        return value
    if kind == "hostport":
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("%s must be host:port (e.g. 127.0.0.1:1344), got %r" % (where, value))
        return value
    return value


def parse_settings(text):
    """Validated UCI values: {section: {option: converted value}}; empty options count as unset.

    Unknown sections or options are errors: a typo must not silently fall back to a default.
    """
    seen = {}
    for sec in parse_uci(text):
        if sec.type not in UCI_SCHEMA:
            raise ConfigError("unknown UCI section type %r in gatewatch config (known: %s)" % (sec.type, ", ".join(sorted(UCI_SCHEMA))))
        if sec.type in seen:
            raise ConfigError("section type %r appears twice in gatewatch config; merge them" % sec.type)
        values = {}
        for key, value in sec.options.items():
            if key not in UCI_SCHEMA[sec.type]:
                raise ConfigError("unknown option gatewatch.%s.%s (known: %s)" % (sec.type, key, ", ".join(sorted(UCI_SCHEMA[sec.type]))))
            if value == "" or value == []:
                continue
            values[key] = _convert(sec.type, key, value)
        seen[sec.type] = values
    for section, keys in REQUIRED.items():
        for key in keys:
            if key not in seen.get(section, {}):
                raise ConfigError("gatewatch.%s.%s is required" % (section, key))
    policy = seen.get("policy", {})
    countries = {item.split("=")[0] for item in policy.get("source_country", ())}
    for item in policy.get("source_trust", ()):
        source, level = item.split("=")
        if level == "corroborate" and source not in countries:
            raise ConfigError("gatewatch.policy.source_trust: %s=corroborate needs the country of %s in "
                              "gatewatch.policy.source_country (corroboration means another country)" % (source, source))
    intake = seen.setdefault("intake", {})
    intake.setdefault("proxy", True)
    intake.setdefault("icap", False)
    intake.setdefault("dns", False)
    intake.setdefault("tls", False)
    if intake.get("transparent") and not intake["proxy"]:
        raise ConfigError("gatewatch.intake.transparent needs the proxy intake (gatewatch.intake.proxy=1)")
    if not any(intake[k] for k in ("icap", "proxy", "dns", "tls")):
        raise ConfigError("no intake enabled: set gatewatch.intake.icap, proxy, dns or tls to 1")
    return seen


def uci_to_config(text):
    """Map /etc/config/gatewatch text onto the agent's configuration dict (the TOML the daemon loads).

    Only the settings present in UCI are written; the daemon's defaults cover the rest. The HAL
    is fixed to openwrt; icap.listen/proxy.listen are set for the enabled intakes.
    """
    settings = parse_settings(text)
    config = {"agent": {"hal": NAME}}
    for section, values in settings.items():
        for key, value in values.items():
            target = UCI_SCHEMA[section][key][2]
            if target is not None:
                config.setdefault(target[0], {})[target[1]] = value
    intake = settings["intake"]
    if intake["icap"]:
        config["icap"] = {"listen": intake.get("icap_listen", DEFAULTS["icap_listen"])}
    if intake["proxy"]:
        config["proxy"] = {"listen": intake.get("proxy_listen", DEFAULTS["proxy_listen"])}
    if intake["dns"]:  # dnsmasq asks it first (/usr/libexec/gatewatch-dnsmasq enable); it asks the WAN's resolvers
        config["dns"] = {"listen": intake.get("dns_listen", DEFAULTS["dns_listen"]), "resolv_file": RESOLV_AUTO}
    if intake["tls"]:
        config["tls"] = {"listen": intake.get("tls_listen", DEFAULTS["tls_listen"])}
    return config


def service_options(text):
    """What the init script itself needs: enabled, console URL ('' = none), transparent, proxy port."""
    settings = parse_settings(text)
    intake = settings["intake"]
    port = None
    if intake["proxy"]:
        port = int(intake.get("proxy_listen", DEFAULTS["proxy_listen"]).rpartition(":")[2])
    tls_port = int(intake.get("tls_listen", DEFAULTS["tls_listen"]).rpartition(":")[2]) if intake["tls"] else None
    return {"enabled": settings.get("agent", {}).get("enabled", True),
            "console": settings.get("agent", {}).get("console", ""),
            "transparent": bool(intake.get("transparent", False)), "proxy_port": port, "tls_port": tls_port}


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[%s]" % ", ".join(_toml_value(v) for v in value)
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in ('"', "\\"):
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        return '"%s"' % "".join(out)
    raise ConfigError("cannot write %r to TOML" % (value,))


def config_to_toml(config):
    """TOML text for a config dict of top-level scalars and one level of tables."""
    lines = ["# Written by hal.openwrt from /etc/config/gatewatch; edit the UCI file, not this one."]
    for key, value in config.items():
        if not isinstance(value, dict):
            lines.append("%s = %s" % (key, _toml_value(value)))
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append("")
            lines.append("[%s]" % key)
            for k, v in value.items():
                lines.append("%s = %s" % (k, _toml_value(v)))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- fw4 include

def fw4_include(proxy_port=None, lan_device="br-lan", tls_port=None):
    """The nft text fw4 includes inside ``table inet fw4`` (table-post): block sets and chains.

    With ``proxy_port``, also a chain redirecting LAN tcp/80 not addressed to the router itself to
    the agent's proxy (transparent intake). With ``tls_port``, LAN tcp/443 goes to the TLS splice and
    LAN udp/443 (QUIC, whose ClientHello the splice cannot read) is dropped, so browsers use TCP.
    """
    text = ("# gatewatch: block sets (timeouts expire entries in the kernel) and the chains using them.\n"
            "# Included by fw4 inside table inet fw4; the agent adds elements with nft.\n")
    text += linux.ruleset_text(set4=SET4, set6=SET6, with_table=False).replace("\t", "", 1).replace("\n\t", "\n")
    if proxy_port is not None:
        if not isinstance(proxy_port, int) or not 0 < proxy_port < 65536:
            raise ConfigError("proxy port must be 1-65535, got %r" % (proxy_port,))
        if not re.match(r"^[A-Za-z0-9_.-]{1,15}$", lan_device):
            raise ConfigError("LAN device %r is not a valid interface name" % (lan_device,))
        text += ("chain gatewatch_redirect {\n"
                 "\ttype nat hook prerouting priority dstnat - 5; policy accept;\n"
                 "\tiifname \"%s\" fib daddr type != local tcp dport 80 counter redirect to :%d\n"
                 "}\n") % (lan_device, proxy_port)
    if tls_port is not None:
        if not isinstance(tls_port, int) or not 0 < tls_port < 65536:
            raise ConfigError("TLS port must be 1-65535, got %r" % (tls_port,))
        if not re.match(r"^[A-Za-z0-9_.-]{1,15}$", lan_device):
            raise ConfigError("LAN device %r is not a valid interface name" % (lan_device,))
        text += ("chain gatewatch_tls {\n"
                 "\ttype nat hook prerouting priority dstnat - 5; policy accept;\n"
                 "\tiifname \"%s\" fib daddr type != local tcp dport 443 counter redirect to :%d\n"
                 "}\n"
                 "chain gatewatch_quic {\n"
                 "\ttype filter hook forward priority filter - 5; policy accept;\n"
                 "\tiifname \"%s\" udp dport 443 counter drop\n"
                 "}\n") % (lan_device, tls_port, lan_device)
    return text


def redirect_include(options, lan_device="br-lan"):
    """The transparent-proxy and TLS-splice include for ``service_options()`` (a comment when both are off)."""
    transparent, tls_port = options.get("transparent"), options.get("tls_port")
    if not transparent and not tls_port:
        return "# gatewatch: transparent proxy disabled\n"
    full = fw4_include(proxy_port=options["proxy_port"] if transparent else None, lan_device=lan_device,
                       tls_port=tls_port)
    return full[full.index("chain gatewatch_redirect" if transparent else "chain gatewatch_tls"):]


def main(argv=None):
    """CLI: ``render`` the TOML (and redirect include) from UCI; ``check`` a UCI file."""
    parser = argparse.ArgumentParser(prog="python -m hal.openwrt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    render = sub.add_parser("render", help="write the agent's TOML config from the UCI file")
    render.add_argument("--uci", required=True)
    render.add_argument("--out", required=True)
    render.add_argument("--redirect-out", help="also write the fw4 redirect include here (only when changed)")
    render.add_argument("--lan-device", default="br-lan")
    check = sub.add_parser("check", help="validate the UCI file; exit 0 when valid")
    check.add_argument("--uci", required=True)
    args = parser.parse_args(argv)
    try:
        with open(args.uci) as f:
            text = f.read()
        config = uci_to_config(text)
        options = service_options(text)
    except (OSError, ConfigError) as exc:
        print("gatewatch config: %s" % exc, file=sys.stderr)
        return 2
    if args.cmd == "check":
        return 0
    _write_if_changed(args.out, config_to_toml(config), 0o600)
    if args.redirect_out:
        # Only rewrite when different: the file sits on flash and fw4 must reload after a change.
        _write_if_changed(args.redirect_out, redirect_include(options, args.lan_device), 0o644)
    return 0


def _write_if_changed(path, text, mode):
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temp = path + contracts.TEMP_SUFFIX
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    return True


if __name__ == "__main__":
    sys.exit(main())
