"""Emulated backend: history, drive/assert helpers, reset, and the flash model's power cuts."""

import pytest

from hal import contracts, emulated
from hal.contracts import PowerLoss, WRITE_STEPS


def test_led_history_and_assert_states():
    led = emulated.StatusLed()
    led.set_state("updating")
    led.set_state("ok")
    led.assert_states(["updating", "ok"])
    with pytest.raises(AssertionError):
        led.assert_states(["ok"])
    led.reset()
    led.assert_states([])
    assert led.state is None


def test_clock_is_settable_and_monotonic_never_goes_back():
    clock = emulated.Clock(wall=100.0, monotonic=5.0)
    clock.advance(10)
    assert (clock.wall(), clock.monotonic()) == (110.0, 15.0)
    clock.set(wall=50.0)  # NTP may move wall time back
    assert clock.wall() == 50.0
    with pytest.raises(contracts.HalArgumentError):
        clock.set(monotonic=1.0)
    with pytest.raises(contracts.HalArgumentError):
        clock.advance(-1)
    clock.reset()
    assert (clock.wall(), clock.monotonic()) == (100.0, 5.0)


def test_watchdog_expiry_follows_the_clock():
    clock = emulated.Clock()
    wd = emulated.Watchdog(clock=clock)
    wd.start(10)
    clock.advance(9)
    assert not wd.expired()
    wd.kick()
    clock.advance(9)
    assert not wd.expired()
    clock.advance(1)
    assert wd.expired()
    assert wd.history == [("start", 10), ("kick",)]


def test_firewall_history_and_assert_blocked():
    fw = emulated.Firewall(hosts={"h.example": ["192.0.2.1"]})
    fw.block("h.example", 5)
    fw.assert_blocked("192.0.2.1")
    with pytest.raises(AssertionError):
        fw.assert_blocked("192.0.2.2")
    with pytest.raises(contracts.HalError, match="cannot resolve 'x.example'"):
        fw.block("x.example", 5)
    assert fw.history == [("block", "192.0.2.1", 5)]
    fw.reset()
    assert fw.list() == [] and fw.history == []


def test_serial_drive_and_assert():
    port = emulated.SerialPort("emulated://x")
    port.drive_rx(b"help\n")
    assert port.read(100) == b"help\n"
    port.write(b"ok\n")
    port.assert_tx(b"ok\n")
    port.close()
    with pytest.raises(contracts.HalError):
        port.read(1)


def test_keystore_reset_forgets_everything():
    ks = emulated.KeyStore()
    ks.device_secret()
    ks.add_trust_anchor("hub", b"\1" * 32)
    assert ks.secret_mode == 0o600
    ks.reset()
    assert ks.sources() == [] and ks._apply_load_secret() is None


class _NoSyncStorage(emulated.Storage):
    """A careless writer: never fsyncs, so a power cut can leave an empty file under the real name."""

    def _op_fsync(self, handle):
        pass


class _NoDirSyncStorage(emulated.Storage):
    """A writer that forgets the directory fsync: the rename may be lost (old file comes back)."""

    def _op_fsync_dir(self):
        pass


def test_flash_model_catches_a_writer_that_skips_fsync():
    # The power-loss contract test is only worth something if the model can fail a bad writer.
    st = _NoSyncStorage()
    st.write("f", b"old")
    emulated.Storage._op_fsync_dir(st)
    st.write("f", b"new")
    emulated.Storage._op_fsync_dir(st)
    st.flash.power_cut()
    assert emulated.Storage(flash=st.flash).read("f") not in (b"old", b"new")


def test_flash_model_loses_unsynced_renames():
    st = _NoDirSyncStorage()
    emulated.Storage._op_fsync_dir(st)
    st.write("f", b"new")
    st.flash.power_cut()
    assert not emulated.Storage(flash=st.flash).exists("f")


def test_power_cut_after_rename_but_before_dir_sync_keeps_old():
    st = emulated.Storage()
    st.write("f", b"old")

    def hook(step):
        if step == "renamed":
            raise PowerLoss(step)
    st.fault_hook = hook
    with pytest.raises(PowerLoss):
        st.write("f", b"new")
    assert st.read("f") == b"new"  # the running system already sees the new file
    st.flash.power_cut()
    assert emulated.Storage(flash=st.flash).read("f") == b"old"  # the medium still has the old one


def test_storage_history_and_reset():
    st = emulated.Storage()
    st.write("f", b"x")
    assert st.history == [("create", "f.gwtmp"), ("rename", "f.gwtmp", "f")]
    assert len(WRITE_STEPS) == 8
    st.reset()
    assert not st.exists("f") and st.bytes_written() == 0
