"""agent.allow through the real policy: a hit an allow list covers is neither blocked nor reported.

Lists are built and signed by the hub's code, scanned by the Scanner and confirmed against the hubs'
entries (tests/allowkit.py). Images are generated benign pictures standing in for listed material.
"""

import logging
from typing import NamedTuple, Optional

import pytest

from agent.allow import AllowIndex
from agent.core.allowlist import AllowEntry, MAX_RADIUS
from agent.sources import SourceRules
from tests.allowkit import IMAGES, Hotlines, device_pdq, flip, sha

A, B, C = IMAGES


@pytest.fixture
def world(tmp_path):
    return Hotlines(tmp_path, sources=("hl1", "hl2"))


def test_digest_allow_lets_the_image_pass_unreported(world, caplog):
    world.list_images("hl1", [A, B])
    policy = world.policy()
    assert world.decide(policy, A).action == "block" and len(world.reports) == 1
    world.allow("hl1", ["sha256,%s" % sha(A).hex()])
    with caplog.at_level(logging.INFO, logger="gatewatch.sources"):
        d = world.decide(policy, A)
    assert d.action == "allow" and d.reason == "allowed-by-list"
    assert len(world.reports) == 1 and policy.counters.allowed == 1 and policy.counters.blocked == 1
    assert world.decide(policy, B).action == "block" and len(world.reports) == 2  # only A is allowed
    # the log names the lists and the allow entry, never the URL or a hash of the image
    logged = caplog.text
    assert "hl1/known" in logged and "hl1/allow v1 entry #0 (sha256)" in logged
    assert "cdn.example" not in logged and sha(A).hex()[:8] not in logged


@pytest.mark.parametrize("radius", [0, 8, MAX_RADIUS["pdq"]])
def test_pdq_radius_edges(world, radius):
    # the allow entry lies exactly ``radius`` bits from the device's PDQ of A: allowed; one bit more: not
    world.list_images("hl1", [A], name="pdq", signal="pdq")
    policy = world.policy()
    assert world.decide(policy, A).action == "block"
    world.allow("hl1", ["pdq,%s,%d" % (flip(device_pdq(A), radius).hex(), radius)])
    d = world.decide(policy, A)
    assert d.action == "allow" and d.reason == "allowed-by-list", d
    world.allow("hl1", ["pdq,%s,%d" % (flip(device_pdq(A), radius + 1).hex(), radius)])
    d = world.decide(policy, A)
    assert d.action == "block" and d.reason == "match-confirmed", d
    assert policy.counters.allowed == 1 and len(world.reports) == 2


def test_entry_allow_covers_that_entry_of_that_list_only(world):
    world.list_images("hl1", [A, B])
    world.list_images("hl1", [A], name="other")
    policy = world.policy()
    world.allow("hl1", ["entry,hl1/known,k0"])
    # A hits both hl1/known (entry k0, allowed) and hl1/other (entry k0, not allowed): still blocked,
    # and the report names the hit that was not allowed
    d = world.decide(policy, A)
    assert d.action == "block" and [r.best.list.ident for r in world.reports] == ["hl1/other"]
    world.allow("hl1", ["entry,hl1/known,k0", "entry,hl1/other,k0"])
    assert world.decide(policy, A).action == "allow" and policy.counters.allowed == 1
    assert world.decide(policy, B).action == "block"  # k1 is not allowed
    assert len(world.reports) == 2


def test_another_sources_allow_list_overrides_only_when_configured(world):
    world.list_images("hl1", [A])
    world.allow("hl2", ["sha256,%s" % sha(A).hex(), "entry,hl1/known,k0"])
    assert world.decide(world.policy(), A).action == "block"  # default: only its own
    for others in (["hl2"], ["*"]):
        policy = world.policy(rules=SourceRules(allow_others=others))
        assert world.decide(policy, A).action == "allow" and policy.counters.allowed == 1
    policy = world.policy(rules=SourceRules(allow_others=["hl3"]))
    assert world.decide(policy, A).action == "block"


def test_hits_of_two_sources_need_both_allowed(world):
    world.list_images("hl1", [A])
    world.list_images("hl2", [A])
    world.allow("hl1", ["sha256,%s" % sha(A).hex()])
    policy = world.policy()
    d = world.decide(policy, A)
    assert d.action == "block" and world.reports[-1].best.list.source == "hl2"
    world.allow("hl2", ["sha256,%s" % sha(A).hex()])
    assert world.decide(policy, A).action == "allow"


def test_local_exact_hit_is_allowed_while_the_hub_is_away(world):
    world.list_images("hl1", [A])
    world.allow("hl1", ["sha256,%s" % sha(A).hex()])
    world.hub_reachable = False
    policy = world.policy()
    d = world.decide(policy, A)
    assert d.action == "allow" and d.reason == "allowed-by-list"
    assert policy.counters.pending == 0 and policy.counters.allowed == 1  # not asked again later
    world.hub_reachable = True
    assert policy.reconfirm() == 0 and world.reports == []


def test_an_allow_list_arriving_before_the_hub_is_back_stops_the_late_report(world):
    world.list_images("hl1", [A])
    world.hub_reachable = False
    policy = world.policy()
    assert world.decide(policy, A).action == "block" and policy.counters.pending == 1
    world.allow("hl1", ["sha256,%s" % sha(A).hex()])
    world.hub_reachable = True
    assert policy.reconfirm() == 0 and world.reports == []
    assert policy.counters.pending == 0 and policy.counters.allowed == 1


# -- the index on its own, with stand-in results (neural codes need no runtime here)

class L(NamedTuple):
    ident: str
    signal: str = "sha256"

    @property
    def source(self):
        return self.ident.split("/")[0]


class H(NamedTuple):
    list: L
    entry_id: Optional[str] = None


class Hashes(NamedTuple):
    pdq: Optional[bytes] = None
    pdq_quality: int = 100
    neural: Optional[bytes] = None
    neural_model: Optional[str] = "neural-v1"


class R(NamedTuple):
    hashes: Hashes
    digests: dict = {}


class AllowListStandIn(NamedTuple):
    source: str
    version: int
    allow: list
    signal: str = "allow"
    model: str = "neural-v1"

    @property
    def ident(self):
        return self.source + "/allow"


def _index(*entries):
    return AllowIndex([AllowListStandIn("hl1", 3, list(entries))])


def test_neural_radius_edges_and_model():
    code = bytes(range(16))
    hit = [H(L("hl1/neural", "neural"))]
    own = lambda a, h: a == h  # noqa: E731
    for r in (0, 4, MAX_RADIUS["neural"]):
        index = _index(AllowEntry("neural", hash=flip(code, r), radius=r))
        assert index.allowed(R(Hashes(neural=code)), hit, own)[0].distance == r
        index = _index(AllowEntry("neural", hash=flip(code, r + 1), radius=r))
        assert index.allowed(R(Hashes(neural=code)), hit, own) == {}
    index = _index(AllowEntry("neural", hash=code, radius=4))
    assert index.allowed(R(Hashes(neural=code, neural_model="neural-v2")), hit, own) == {}


def test_degenerate_pdq_never_matches_and_no_hashes_no_match():
    pdq = bytes(32)
    hit = [H(L("hl1/pdq", "pdq"))]
    own = lambda a, h: a == h  # noqa: E731
    index = _index(AllowEntry("pdq", hash=pdq, radius=8))
    assert index.allowed(R(Hashes(pdq=pdq, pdq_quality=100)), hit, own)
    assert index.allowed(R(Hashes(pdq=pdq, pdq_quality=5)), hit, own) == {}  # a flat picture
    assert index.allowed(R(None), hit, own) == {}  # the device computed no PDQ
    assert index.allowed(R(Hashes()), [H(L("hl1/k"), entry_id="x")], own) == {}
