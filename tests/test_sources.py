"""agent.sources through the real policy: per-source actions, the two-countries rule, a source's trust,
and the settings that configure them (refused when misspelt or out of range).

Lists are built and signed by the hub's code and confirmed against its entries (tests/allowkit.py).
"""

import pytest

from agent.config import load_config, policy_settings
from agent.core.errors import ConfigError
from agent.sources import SourceRules
from tests.allowkit import IMAGES, Hotlines

A, B, C = IMAGES


@pytest.fixture
def world(tmp_path):
    w = Hotlines(tmp_path, sources=("hl1", "hl2", "hl3"))
    w.list_images("hl1", [A, B, C])  # A in hl1 only; B in hl1 and hl2; C in hl1 and hl3
    w.list_images("hl2", [B])
    w.list_images("hl3", [C])
    return w


COUNTRIES = ["hl1=DE", "hl2=FR", "hl3=de"]  # hl3 is in Germany too (codes are case-insensitive)


def test_defaults_keep_todays_behaviour(world):
    policy = world.policy()
    assert [world.decide(policy, x).action for x in (A, B, C)] == ["block"] * 3
    assert len(world.reports) == 3 and policy.counters.uncorroborated == 0


@pytest.mark.parametrize("action,decided,reported", [
    ("block", "block", 1), ("report-only", "allow", 1), ("monitor", "allow", 0)])
def test_action_per_source(world, action, decided, reported):
    policy = world.policy(rules=SourceRules(source_action=["hl1=%s" % action]))
    d = world.decide(policy, A)
    assert d.action == decided and len(world.reports) == reported
    # a source named nowhere keeps policy.mode
    policy = world.policy(mode="monitor", rules=SourceRules(source_action=["hl1=%s" % action]))
    assert world.decide(policy, A).action == decided


def test_strongest_action_wins_and_the_report_names_a_reporting_source(world):
    policy = world.policy(rules=SourceRules(source_action=["hl1=monitor", "hl2=block"]))
    d = world.decide(policy, B)
    assert d.action == "block" and [r.best.list.source for r in world.reports] == ["hl2"]
    policy = world.policy(rules=SourceRules(source_action=["hl1=monitor", "hl2=report-only"]))
    assert world.decide(policy, B).action == "allow" and len(world.reports) == 2


def test_two_countries_rule(world):
    policy = world.policy(rules=SourceRules(source_country=COUNTRIES, min_countries=2))
    # one source only: neither blocked nor reported, counted
    d = world.decide(policy, A)
    assert d.action == "allow" and d.reason == "uncorroborated" and world.reports == []
    # two sources of different countries (DE, FR): blocked and reported
    assert world.decide(policy, B).action == "block" and len(world.reports) == 1
    # two sources of the same country (DE, DE): one country, as one source
    d = world.decide(policy, C)
    assert d.action == "allow" and d.reason == "uncorroborated" and len(world.reports) == 1
    assert policy.counters.uncorroborated == 2 and policy.counters.blocked == 1


def test_a_source_without_a_country_never_counts(world):
    policy = world.policy(rules=SourceRules(source_country=["hl1=DE"], min_countries=2))
    assert world.decide(policy, B).action == "allow" and world.reports == []


def test_two_countries_rule_while_the_hub_is_away(world):
    world.hub_reachable = False
    policy = world.policy(rules=SourceRules(source_country=COUNTRIES, min_countries=2))
    assert world.decide(policy, A).action == "allow"  # one country: even an exact hit passes
    assert world.decide(policy, B).action == "block"  # two countries' exact lists: blocked unconfirmed
    assert world.reports == [] and policy.counters.pending == 1  # reported once the hub confirms
    world.hub_reachable = True
    assert policy.reconfirm() == 1 and len(world.reports) == 1


def test_an_allowed_hit_does_not_count_towards_the_rule(world):
    world.allow("hl2", ["entry,hl2/known,k1"])
    policy = world.policy(rules=SourceRules(source_country=COUNTRIES, min_countries=2))
    assert world.decide(policy, B).action == "allow" and world.reports == []


def test_corroborate_trust(world):
    rules = SourceRules(source_country=COUNTRIES, source_trust=["hl2=corroborate", "hl3=corroborate"])
    world.list_images("hl2", [B, A], name="more")  # A: hl1 (DE) and hl2 (FR)
    world.list_images("hl3", [B], name="more")  # B: hl1, hl2 and hl3
    policy = world.policy(rules=rules)
    # hl3 (DE) with hl1 (DE) only: hl3's hit is held, hl1's acts on its own
    d = world.decide(policy, C)
    assert d.action == "block" and [h.list.source for h in d.result.hits] == ["hl1"]
    # hl2 (FR) corroborated by hl1 (DE): both act
    d = world.decide(policy, A)
    assert d.action == "block" and sorted({h.list.source for h in d.result.hits}) == ["hl1", "hl2"]
    # a source on probation alone: held back
    alone = Hotlines(world.folder + "-alone", sources=("hl2",))
    alone.list_images("hl2", [A])
    policy = alone.policy(rules=SourceRules(source_country=["hl2=FR"], source_trust=["hl2=corroborate"]))
    d = alone.decide(policy, A)
    assert d.action == "allow" and d.reason == "uncorroborated" and alone.reports == []


# -- the settings

def _load(tmp_path, text, env=None):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load_config(str(p), environ=env or {})


def test_settings_from_file_and_environment(tmp_path):
    conf = _load(tmp_path, '[policy]\nsource_action = ["hl2=report-only"]\nsource_country = ["hl1=de", "hl2=FR"]\n'
                           'min_countries = 2\nsource_trust = ["hl2=corroborate"]\nallow_others = ["*"]\n')
    rules = policy_settings(conf).sources
    assert rules.actions == {"hl2": "report-only"} and rules.countries == {"hl1": "DE", "hl2": "FR"}
    assert rules.min_countries == 2 and rules.trust == {"hl2": "corroborate"} and rules.may_override("x", "y")
    conf = _load(tmp_path, "", {"GATEWATCH_POLICY_SOURCE_ACTION": "hl1=monitor, hl2=block",
                                "GATEWATCH_POLICY_MIN_COUNTRIES": "3",
                                "GATEWATCH_POLICY_ALLOW_OTHERS": "hl9"})
    rules = policy_settings(conf).sources
    assert rules.actions == {"hl1": "monitor", "hl2": "block"} and rules.min_countries == 3
    assert rules.may_override("hl9", "hl1") and not rules.may_override("hl8", "hl1")
    assert not policy_settings(_load(tmp_path, "")).sources.active


@pytest.mark.parametrize("text,env,words", [
    ("[policy]\nsource_actions = []\n", {}, "unknown setting policy.source_actions"),
    ("[policy.sources.hl1]\naction = 'block'\n", {}, "unknown setting policy.sources"),
    ("[policy]\nsource_action = ['hl1=blok']\n", {}, "'blok' is not one of block, report-only, monitor"),
    ("[policy]\nsource_action = ['hl1']\n", {}, "use SOURCE=VALUE"),
    ("[policy]\nsource_action = ['hl1=block=x']\n", {}, "use SOURCE=VALUE"),
    ("[policy]\nsource_action = ['h/1=block']\n", {}, "not a source name"),
    ("[policy]\nsource_action = ['hl1=block', 'hl1=monitor']\n", {}, "named twice"),
    ("[policy]\nsource_action = 'hl1=block'\n", {}, "list of strings"),
    ("[policy]\nsource_trust = ['hl1=total']\n", {}, "'total' is not one of full, corroborate"),
    ("[policy]\nsource_trust = ['hl1=corroborate']\n", {}, "needs the country of hl1"),
    ("[policy]\nsource_country = ['hl1=DEU']\n", {}, "two-letter country code"),
    ("[policy]\nsource_country = ['hl1=\uff24\uff25']\n", {}, "two-letter country code"),  # full-width DE
    ("[policy]\nmin_countries = 0\n", {}, r"from 1 \(off\) to 8"),
    ("[policy]\nmin_countries = 99\n", {}, r"from 1 \(off\) to 8"),
    ("[policy]\nmin_countries = 2.0\n", {}, "whole number"),
    ("[policy]\nmin_countries = true\n", {}, "number"),
    ("", {"GATEWATCH_POLICY_MIN_COUNTRIES": "\u0662"}, "must be a number"),  # Arabic-Indic two
    ("", {"GATEWATCH_POLICY_MIN_COUNTRIES": "-2"}, "negative"),
    ("[policy]\nallow_others = ['hl 2']\n", {}, "not a source name or '*'"),
])
def test_bad_settings_are_refused(tmp_path, text, env, words):
    with pytest.raises(ConfigError, match=words):
        _load(tmp_path, text, env)
