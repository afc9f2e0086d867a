"""hal.get_backend: argument, then GATEWATCH_HAL, then the fallback chain, with the reason."""

import logging

import pytest

import hal
from hal import contracts


def test_argument_wins(tmp_path):
    b = hal.get_backend("emulated", environ={"GATEWATCH_HAL": "linux"})
    assert b.name == "emulated" and b.reason == "requested by argument"
    assert b.StatusLed is hal.emulated.StatusLed


def test_environment_variable_next():
    b = hal.get_backend(environ={"GATEWATCH_HAL": "micropython"})
    assert b.name == "micropython" and "GATEWATCH_HAL" in b.reason


def test_fallback_chain(tmp_path):
    release = tmp_path / "openwrt_release"
    assert hal.get_backend(environ={}, openwrt_release=str(release), platform="linux").name == "linux"
    release.write_text("DISTRIB_ID='OpenWrt'\n")
    b = hal.get_backend(environ={}, openwrt_release=str(release), platform="linux")
    assert b.name == "openwrt" and str(release) in b.reason
    b = hal.get_backend(environ={}, openwrt_release=str(tmp_path / "none"), platform="darwin")
    assert b.name == "emulated" and "darwin" in b.reason


def test_choice_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="gatewatch.hal"):
        hal.get_backend("emulated")
    assert "HAL backend emulated (requested by argument)" in caplog.text


@pytest.mark.parametrize("bad", ["gpio", "", "Linux"])
def test_unknown_backend_is_a_clear_error(bad):
    with pytest.raises(contracts.HalArgumentError, match="choose one of: emulated, linux, openwrt, micropython"):
        hal.get_backend(bad if bad else None, environ={"GATEWATCH_HAL": "gpio"} if not bad else {})


def test_backend_has_only_contract_classes():
    b = hal.get_backend("emulated")
    with pytest.raises(AttributeError, match="has no 'Frobnicator'"):
        b.Frobnicator
    assert "emulated" in repr(b)
