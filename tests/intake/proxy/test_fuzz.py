"""A fast, deterministic slice of the proxy fuzz run (the big one: python bench/fuzz_http.py)."""

from tests.intake.proxy.fuzz import run, run_live


def test_fuzz_parser_and_proxy_in_memory():
    r = run(cases=1800, seed=20261201, case_timeout=2.0)
    assert r["cases"] == 1800
    assert (r["exceptions"], r["hangs"], r["unanswered"]) == (0, 0, 0), r["examples"]
    assert r["after_ok"] and r["held_after"] == 0 and r["active_after"] == 0
    # the mutations reach both the refusals and the normal paths
    assert r["statuses"].get(("request", "400"), 0) > 100 and r["statuses"].get(("request", "200"), 0) > 50
    assert r["statuses"].get(("response", "403"), 0) > 0 and r["statuses"].get(("response", "502"), 0) > 50


def test_fuzz_live_proxy_keeps_serving():
    r = run_live(cases=120, seed=7, case_timeout=5.0)
    assert (r["exceptions"], r["hangs"]) == (0, 0), r["examples"]
    assert r["after_ok"] and r["held_after"] == 0 and r["active_after"] == 0
