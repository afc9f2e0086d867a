"""Per-source policy: which hits act, and how, once the hub has confirmed them (or could not be asked).

Owns the ``[policy]`` settings about sources (docs/config.md) and ``settle``: from the hits about to
act, drop those an allow list overrides (``agent.allow``), hold back those the two-countries rule
or a source's trust does not let act alone, and give the rest their source's action. Must not
touch: confirmation, scanning, reports, I/O.

- ``source_action``: ``SOURCE=block|report-only|monitor``; a source not named gets ``policy.mode``.
  When hits of several sources act, the strongest action wins (block, then report-only, then
  monitor), and the report names a hit of a source whose action reports.
- ``source_country``: ``SOURCE=CC`` (ISO 3166-1 alpha-2). The device learns a source's country only
  here: the trust store names keys and sources, nothing else.
- ``min_countries``: a hit acts only when the image is confirmed in lists of sources of at least this
  many different countries (Apple's rule for its database, with 2). Sources without a
  ``source_country`` never count towards it, and two sources of the same country count once. 1: off.
- ``source_trust``: ``SOURCE=full|corroborate``; ``corroborate`` lets that source's hits act only
  when a source of another country confirms the image too (whatever ``min_countries`` says), so a
  new hotline can be taken on under probation. Needs the source's country.
- ``allow_others``: a source's allow list always overrides its own hits; sources named here (``*``:
  every trusted source) also override other sources' hits. Empty by default: one hotline cannot
  silence another's lists unless the operator says so.

With none of these set and no allow list loaded, ``settle`` changes nothing (today's behaviour).
"""

from __future__ import annotations

import logging
import re
from typing import Dict, Iterable, NamedTuple, Sequence, Tuple

from agent.core.errors import ConfigError

log = logging.getLogger("gatewatch.sources")

ACTIONS = ("block", "report-only", "monitor")
TRUST = ("full", "corroborate")
MAX_COUNTRIES = 8
_STRENGTH = {"monitor": 0, "report-only": 1, "block": 2}
_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COUNTRY_RE = re.compile(r"^[A-Za-z]{2}$")


def _pairs(setting: str, items: Iterable[str], check_value) -> Dict[str, str]:
    """``SOURCE=VALUE`` items -> {source: value}; ConfigError naming the item that is wrong."""
    out: Dict[str, str] = {}
    for item in items:
        where = "policy.%s item %r" % (setting, item)
        if not isinstance(item, str) or item.count("=") != 1:
            raise ConfigError("%s: use SOURCE=VALUE, e.g. %s" % (where, _EXAMPLES[setting]))
        source, value = (x.strip() for x in item.split("="))
        if not (source.isascii() and _SOURCE_RE.match(source)):
            raise ConfigError("%s: %r is not a source name (1-64 letters, digits, '.', '_' or '-')" % (where, source))
        if source in out:
            raise ConfigError("%s: source %s is named twice" % (where, source))
        out[source] = check_value(where, value)
    return out


_EXAMPLES = {"source_action": "hl2=report-only", "source_trust": "hl3=corroborate", "source_country": "hl1=DE"}


def _choice(allowed):
    def check(where, value):
        if value not in allowed:
            raise ConfigError("%s: %r is not one of %s" % (where, value, ", ".join(allowed)))
        return value
    return check


def _country(where, value):
    # ASCII only: 'ＤＥ' or 'D\u0395' must not pass for DE
    if not (value.isascii() and _COUNTRY_RE.match(value)):
        raise ConfigError("%s: %r is not a two-letter country code (ISO 3166-1 alpha-2, e.g. DE)" % (where, value))
    return value.upper()


class SourceRules:
    """The per-source settings of ``[policy]``, checked; the default changes nothing."""

    def __init__(self, source_action: Sequence[str] = (), source_trust: Sequence[str] = (),
                 source_country: Sequence[str] = (), min_countries: int = 1, allow_others: Sequence[str] = ()):
        self.actions = _pairs("source_action", source_action, _choice(ACTIONS))
        self.trust = _pairs("source_trust", source_trust, _choice(TRUST))
        self.countries = _pairs("source_country", source_country, _country)
        if type(min_countries) is not int or not 1 <= min_countries <= MAX_COUNTRIES:
            raise ConfigError("policy.min_countries must be a whole number from 1 (off) to %d, not %r"
                              % (MAX_COUNTRIES, min_countries))
        self.min_countries = min_countries
        for source, level in sorted(self.trust.items()):
            if level == "corroborate" and source not in self.countries:
                raise ConfigError("policy.source_trust: %s=corroborate needs the country of %s in "
                                  "policy.source_country (e.g. %s=DE): corroboration means another country"
                                  % (source, source, source))
        others = []
        for name in allow_others:
            if not isinstance(name, str) or not (name == "*" or (name.isascii() and _SOURCE_RE.match(name))):
                raise ConfigError("policy.allow_others item %r is not a source name or '*'" % (name,))
            others.append(name)
        self.allow_others = frozenset(others)

    @property
    def active(self) -> bool:
        """False when every setting is at its default: hits act as they always did."""
        return bool(self.actions or self.min_countries > 1 or "corroborate" in self.trust.values())

    def action(self, source: str, default: str) -> str:
        """The action of ``source``'s hits."""
        return self.actions.get(source, default)

    def may_override(self, allow_source: str, hit_source: str) -> bool:
        """Whether ``allow_source``'s allow list overrides a hit of ``hit_source``."""
        return allow_source == hit_source or "*" in self.allow_others or allow_source in self.allow_others


class Settlement(NamedTuple):
    """What the hits about to act come to: ``verdict`` act, allowed or uncorroborated."""

    verdict: str
    mode: str  # the action of the acting hits (block, report-only, monitor)
    result: object  # the scan result with only the hits that act and report (report from this one)
    reason: str = ""
    allowed: Tuple = ()  # AllowMatch of each hit an allow list let pass


def _source(hit) -> str:
    return getattr(hit.list, "source", None) or hit.list.ident.split("/", 1)[0]


def settle(result, rules: SourceRules, allow_index, default_mode: str) -> Settlement:
    """Apply allow lists and the per-source rules to ``result.hits`` (the hits about to act)."""
    hits = tuple(getattr(result, "hits", ()) or ())
    if not hits or (not rules.active and not allow_index):
        return Settlement("act", default_mode, result)
    allowed = allow_index.allowed(result, hits, rules.may_override) if allow_index else {}
    left = [h for n, h in enumerate(hits) if n not in allowed]
    matches = tuple(allowed[n] for n in sorted(allowed))
    for n in sorted(allowed):
        log.info("hit on %s v%d allowed by %s", hits[n].list.ident, getattr(hits[n].list, "version", 0),
                 allowed[n].describe())
    if not left:
        return Settlement("allowed", default_mode, result, "allowed-by-list", matches)
    countries = {rules.countries[s] for s in (_source(h) for h in left) if s in rules.countries}
    if rules.min_countries > 1 and len(countries) < rules.min_countries:
        log.info("hit on %s held back: confirmed in lists of %d countr%s (%s), policy.min_countries is %d",
                 ", ".join(sorted({h.list.ident for h in left})), len(countries),
                 "y" if len(countries) == 1 else "ies", ", ".join(sorted(countries)) or "none known",
                 rules.min_countries)
        return Settlement("uncorroborated", default_mode, result, "uncorroborated", matches)
    acting = []
    for h in left:
        s = _source(h)
        if rules.trust.get(s) == "corroborate":
            mine = rules.countries[s]
            if not any(rules.countries.get(_source(o)) not in (None, mine) for o in left if _source(o) != s):
                log.info("hit on %s held back: source %s needs a source of another country to confirm it "
                         "(policy.source_trust)", h.list.ident, s)
                continue
        acting.append(h)
    if not acting:
        return Settlement("uncorroborated", default_mode, result, "uncorroborated", matches)
    modes = {id(h): rules.action(_source(h), default_mode) for h in acting}
    mode = max(modes.values(), key=lambda m: _STRENGTH[m])
    reporting = [h for h in acting if modes[id(h)] != "monitor"] or acting
    return Settlement("act", mode, result._replace(hits=tuple(reporting)), "", matches)


def rules_from_policy(section: Dict[str, object]) -> SourceRules:
    """The SourceRules of a loaded ``[policy]`` section (agent.config)."""
    return SourceRules(source_action=section.get("source_action", ()), source_trust=section.get("source_trust", ()),
                       source_country=section.get("source_country", ()),
                       min_countries=section.get("min_countries", 1), allow_others=section.get("allow_others", ()))


DEFAULT_RULES = SourceRules()
