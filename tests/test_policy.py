"""agent.policy on its own: each mode against each answer of the hub, with stand-in scan results."""

from typing import NamedTuple, Optional, Tuple

import pytest

from agent.policy import Policy, PolicyInspector, PolicySettings


class L(NamedTuple):
    signal: str
    ident: str = "s/l"


class H(NamedTuple):
    list: L
    confirmed: bool = False


class R(NamedTuple):
    verdict: str
    hits: Tuple[H, ...] = ()
    reason: Optional[str] = None


EXACT = R("match", (H(L("sha256")),))
CANDIDATE = R("candidate", (H(L("pdq")),))


def confirmer_saying(answer):
    """A confirmer whose hub confirms (True), refutes (False) or cannot be reached (None)."""
    def ask(result):
        return {} if answer is None else {"s/l": answer}

    def decide(result, answered):
        if answered["s/l"]:
            return result._replace(verdict="match", hits=tuple(h._replace(confirmed=True) for h in result.hits))
        return result._replace(verdict="clean", hits=())
    return ask, decide


@pytest.mark.parametrize("mode,answer,result,action,reported", [
    ("block", True, EXACT, "block", 1), ("block", True, CANDIDATE, "block", 1),
    ("block", False, EXACT, "allow", 0), ("block", False, CANDIDATE, "allow", 0),
    ("block", None, EXACT, "block", 0), ("block", None, CANDIDATE, "allow", 0),
    ("report-only", True, EXACT, "allow", 1), ("report-only", None, EXACT, "allow", 0),
    ("monitor", True, EXACT, "allow", 0), ("monitor", None, CANDIDATE, "allow", 0),
])
def test_modes_against_the_hubs_answers(mode, answer, result, action, reported):
    reports = []
    ask, decide = confirmer_saying(answer)
    policy = Policy(PolicySettings(mode=mode), ask, decide, lambda r, u: reports.append(u))
    assert policy.decide(result, "http://cdn.example/a.jpg").action == action
    assert len(reports) == reported  # a report only ever for a hit the hub confirmed


def test_unreachable_rules_are_settings():
    ask, decide = confirmer_saying(None)
    strict = Policy(PolicySettings(candidate_unconfirmed="block", exact_unconfirmed="allow"), ask, decide)
    assert strict.decide(CANDIDATE).action == "block" and strict.decide(EXACT).action == "allow"


def test_clean_and_error_results_allow_and_count():
    policy = Policy(PolicySettings())
    assert policy.decide(R("clean")).action == "allow"
    d = policy.decide(R("error", reason="truncated"))
    assert d.action == "allow" and "truncated" in d.reason and policy.counters.errors == 1


def test_no_lists_and_scanner_faults_fail_open_counted():
    policy = Policy(PolicySettings())
    assert PolicyInspector(lambda: None, policy).inspect(b"x").reason == "no-lists"

    class Broken:
        def scan_bytes(self, *a, **k):
            raise RuntimeError("boom")
    d = PolicyInspector(lambda: Broken(), policy).inspect(b"x")
    assert d.action == "allow" and policy.counters.errors == 1


def test_a_failing_report_never_turns_into_an_outage():
    ask, decide = confirmer_saying(True)

    def broken_spool(result, url):
        raise OSError("disk full")
    policy = Policy(PolicySettings(), ask, decide, broken_spool)
    assert policy.decide(EXACT).action == "block"
