"""Checks of the portable test helpers themselves (they must be able to fail)."""

from tests.core import support


def test_raises_returns_the_exception():
    def bad():
        raise ValueError("no")

    exc = support.raises(ValueError, bad)
    assert str(exc) == "no"


def test_raises_fails_when_nothing_raised():
    try:
        support.raises(ValueError, lambda: None)
    except AssertionError:
        return
    raise RuntimeError("support.raises accepted a call that raised nothing")


def test_data_path_points_into_tests_data():
    p = support.data_path("golden.gwl")
    assert p.endswith("tests/data/golden.gwl"), p


def test_core_package_imports():
    assert support.core_pkg.__name__ in ("agent.core", "core")
    if support.IS_MICROPYTHON:
        assert support.core_pkg.__name__ == "core"
