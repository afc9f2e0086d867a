"""The self-test passes on a working build and fails when matching is broken."""

from agent import selftest


def test_selftest_passes_repeatedly():
    for _ in range(5):
        ok, detail = selftest.run_selftest()
        assert ok, detail
        assert "match (pdq+sha256)" in detail


def test_selftest_fails_when_lookups_are_broken(monkeypatch):
    from agent.core import bloom
    monkeypatch.setattr(bloom.Bloom, "__contains__", lambda self, key: False)
    ok, detail = selftest.run_selftest()
    assert not ok and "FAILED" in detail
