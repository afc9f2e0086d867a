"""The HAL contract suite: the same behaviour from every backend that can load.

Each test receives a rig (tests/hal/rigs.py) for one backend. Bad input must raise
HalArgumentError and change nothing; storage must survive a power cut at every write step.
"""

import pytest

import agent
from hal import contracts
from hal.contracts import HalArgumentError, HalError, PowerLoss, StorageMissing, WRITE_STEPS

# ------------------------------------------------------------------ StatusLed


def test_led_shows_every_state(rig):
    led = rig.led()
    assert led.state is None
    for state in ("ok", "updating", "blocked", "fault", "ok"):
        led.set_state(state)
        assert led.state == state


@pytest.mark.parametrize("bad", ["OK", "", "blinking", None, 1])
def test_led_refuses_unknown_state_and_keeps_the_old_one(rig, bad):
    led = rig.led()
    led.set_state("updating")
    with pytest.raises(HalArgumentError, match="LED state must be one of ok, updating, blocked, fault"):
        led.set_state(bad)
    assert led.state == "updating"


# ------------------------------------------------------------------ Firewall


def test_firewall_blocks_lists_and_unblocks(rig):
    fw = rig.firewall()
    assert fw.list() == []
    assert fw.block("192.0.2.1", 600) == ["192.0.2.1"]
    assert fw.block("2001:db8::1", 600) == ["2001:db8::1"]
    entries = fw.list()
    assert [e["address"] for e in entries] == ["192.0.2.1", "2001:db8::1"]
    assert all(0 < e["expires_in"] <= 600 for e in entries)
    assert fw.is_blocked("192.0.2.1") and not fw.is_blocked("192.0.2.2")
    fw.unblock("192.0.2.1")
    fw.unblock("192.0.2.1")  # twice: no error
    assert [e["address"] for e in fw.list()] == ["2001:db8::1"]


def test_firewall_canonicalises_ipv6(rig):
    fw = rig.firewall()
    assert fw.block("2001:DB8:0:0::0:5", 60) == ["2001:db8::5"]
    assert fw.is_blocked("2001:db8::5")


def test_firewall_reblock_refreshes_the_timeout(rig):
    fw = rig.firewall()
    fw.block("192.0.2.3", 30)
    fw.block("192.0.2.3", 3000)
    (entry,) = fw.list()
    assert entry["expires_in"] > 30


def test_firewall_block_expires(rig):
    fw = rig.firewall()
    fw.block("192.0.2.4", 1)
    fw.block("192.0.2.5", 600)
    rig.advance(2.5 if rig.real_time else 2)
    assert [e["address"] for e in fw.list()] == ["192.0.2.5"]


def test_firewall_blocks_a_host_by_its_addresses(rig):
    fw = rig.firewall()
    if rig.name == "micropython":
        with pytest.raises(HalError, match="cannot resolve host names"):
            fw.block("media.example", 60)
        return
    assert fw.block("media.example", 60) == ["192.0.2.10", "2001:db8::10"]
    assert fw.is_blocked("192.0.2.10") and fw.is_blocked("2001:db8::10")


@pytest.mark.parametrize("target,seconds", [
    ("192.0.2.1", 0), ("192.0.2.1", -5), ("192.0.2.1", True), ("192.0.2.1", 1.5),
    ("192.0.2.1", contracts.MAX_BLOCK_SECONDS + 1), ("", 60), (None, 60), ("bad host!", 60),
    ("192.0.2.1; flush ruleset", 60), ("fe80::1%eth0", 60), ("1.2.3", 60), ("-x.example", 60), ("a" * 300, 60),
])
def test_firewall_refuses_bad_input_and_changes_nothing(rig, target, seconds):
    fw = rig.firewall()
    fw.block("192.0.2.9", 600)
    before = [e["address"] for e in fw.list()]
    with pytest.raises(HalArgumentError):
        fw.block(target, seconds)
    assert [e["address"] for e in fw.list()] == before


def test_firewall_is_blocked_needs_an_address(rig):
    with pytest.raises(HalArgumentError):
        rig.firewall().is_blocked("media.example")


# ------------------------------------------------------------------ Watchdog


def test_watchdog_lifecycle(rig):
    wd = rig.watchdog()
    assert not wd.running and wd.owner
    with pytest.raises(HalError, match="before start"):
        wd.kick()
    wd.start(30)
    assert wd.running and wd.timeout == 30
    with pytest.raises(HalError, match="already started"):
        wd.start(30)
    wd.kick()
    wd.kick()
    if getattr(wd, "stoppable", True):
        wd.stop()
        assert not wd.running
        wd.stop()  # no error when not running
    else:
        with pytest.raises(HalError, match="cannot be stopped"):
            wd.stop()
        assert wd.running


@pytest.mark.parametrize("bad", [0, -1, 3601, 2.5, "30", None, True])
def test_watchdog_refuses_bad_timeout(rig, bad):
    wd = rig.watchdog()
    with pytest.raises(HalArgumentError, match="watchdog timeout"):
        wd.start(bad)
    assert not wd.running


# ------------------------------------------------------------------ Storage

OLD = b"O" * 4096 + b"old-end"
NEW = b"N" * 4096 + b"new-end"


def test_storage_round_trip_and_delete(rig):
    st = rig.storage()
    assert not st.exists("a.bin")
    with pytest.raises(StorageMissing):
        st.read("a.bin")
    st.write("a.bin", b"hello")
    st.write("a.bin", bytearray(b"world"))
    assert st.read("a.bin") == b"world"
    st.write("empty", b"")
    assert st.read("empty") == b""
    st.delete("a.bin")
    st.delete("a.bin")
    assert not st.exists("a.bin")


def test_storage_counts_bytes_written_per_hour(rig):
    clock = rig.clock() if rig.name == "emulated" else None
    st = rig.storage()
    st.write("a", b"x" * 1000)
    st.write("b", b"y" * 24)
    assert st.bytes_written() == 1024
    assert sum(st.written_per_hour().values()) == 1024
    if clock is not None:
        clock.advance(3600)
        st.write("a", b"z" * 10)
        assert st.bytes_written() == 10
        assert sorted(st.written_per_hour().values()) == [10, 1024]
        clock.advance(49 * 3600)
        st.write("a", b"")
        assert list(st.written_per_hour().values()) == [0]  # hours older than 48 are forgotten


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "/etc/passwd", ".hidden", "-x", "x.gwtmp", "a" * 129, None, 5])
def test_storage_refuses_bad_names(rig, bad):
    st = rig.storage()
    with pytest.raises(HalArgumentError):
        st.write(bad, b"data")
    assert st.bytes_written() == 0


@pytest.mark.parametrize("bad", ["text", None, 5, [1, 2]])
def test_storage_refuses_non_bytes(rig, bad):
    st = rig.storage()
    st.write("f", OLD)
    with pytest.raises(HalArgumentError, match="needs bytes"):
        st.write("f", bad)
    assert st.read("f") == OLD


def _power_loss_at(step):
    def hook(name):
        if name == step:
            raise PowerLoss(step)
    return hook


@pytest.mark.parametrize("step", WRITE_STEPS)
def test_storage_power_loss_at_any_step_leaves_old_or_new(rig, step):
    st = rig.storage()
    st.write("list.gwl", OLD)
    st.fault_hook = _power_loss_at(step)
    with pytest.raises(PowerLoss):
        st.write("list.gwl", NEW)
    rig.power_cut(st)
    after = rig.reboot_storage(st)
    content = after.read("list.gwl")
    assert content in (OLD, NEW), "power loss at %s left a mix: %r..." % (step, content[:16])
    if WRITE_STEPS.index(step) < WRITE_STEPS.index("renamed"):
        assert content == OLD
    if step == "dir_synced":
        assert content == NEW
    # The interrupted write left no temporary behind after the reboot, and writing works again.
    after.write("list.gwl", NEW)
    assert after.read("list.gwl") == NEW
    assert after.exists("list.gwl") and not any(
        name.endswith(contracts.TEMP_SUFFIX) for name in _names(rig, after))


@pytest.mark.parametrize("step", WRITE_STEPS)
def test_storage_power_loss_on_first_write_leaves_nothing_or_new(rig, step):
    st = rig.storage()
    st.fault_hook = _power_loss_at(step)
    with pytest.raises(PowerLoss):
        st.write("fresh", NEW)
    rig.power_cut(st)
    after = rig.reboot_storage(st)
    if after.exists("fresh"):
        assert after.read("fresh") == NEW
    else:
        with pytest.raises(StorageMissing):
            after.read("fresh")


def _names(rig, storage):
    import os
    if hasattr(storage, "flash"):
        return list(storage.flash.dir)
    return os.listdir(storage.root)


# ------------------------------------------------------------------ KeyStore


def test_device_secret_is_32_random_bytes_generated_once(rig):
    ks = rig.keystore()
    secret = ks.device_secret()
    assert isinstance(secret, bytes) and len(secret) == 32
    assert secret != b"\0" * 32
    assert ks.device_secret() == secret
    assert rig.reopen_keystore(ks).device_secret() == secret


def test_device_secret_differs_between_devices(rig, tmp_path):
    a = rig.keystore()
    sa = a.device_secret()
    rig.tmp = tmp_path / "other-device"
    rig.tmp.mkdir()
    b = rig.keystore()
    assert b.device_secret() != sa


def test_trust_anchors_per_source(rig):
    ks = rig.keystore()
    k1, k2, k3 = bytes(range(32)), bytes(range(1, 33)), b"\xff" * 32
    assert ks.sources() == [] and ks.trust_anchors("hotline-a") == []
    ks.add_trust_anchor("hotline-a", k2)
    ks.add_trust_anchor("hotline-a", k1)
    ks.add_trust_anchor("hotline-a", k1)  # no duplicate
    ks.add_trust_anchor("hotline.b", k3)
    assert ks.trust_anchors("hotline-a") == [k1, k2]
    assert ks.sources() == ["hotline-a", "hotline.b"]
    ks = rig.reopen_keystore(ks)
    ks.remove_trust_anchor("hotline-a", k1)
    ks.remove_trust_anchor("hotline-a", k1)
    assert ks.trust_anchors("hotline-a") == [k2]
    ks.remove_trust_anchor("hotline.b", k3)
    assert ks.sources() == ["hotline-a"]


@pytest.mark.parametrize("source,key", [
    ("hotline", b"\1" * 31), ("hotline", b"\1" * 33), ("hotline", "00" * 32), ("hotline", None),
    ("Hotline", b"\1" * 32), ("../etc", b"\1" * 32), ("", b"\1" * 32), ("a/b", b"\1" * 32),
])
def test_trust_anchor_bad_input_changes_nothing(rig, source, key):
    ks = rig.keystore()
    ks.add_trust_anchor("hotline", b"\2" * 32)
    with pytest.raises(HalArgumentError):
        ks.add_trust_anchor(source, key)
    assert ks.sources() == ["hotline"] and ks.trust_anchors("hotline") == [b"\2" * 32]


# ------------------------------------------------------------------ Clock, SystemInfo, SerialPort


def test_clock(rig):
    clock = rig.clock()
    a = clock.monotonic()
    b = clock.monotonic()
    assert b >= a
    assert clock.wall() > 1_600_000_000


def test_system_info(rig):
    info = rig.sysinfo().info()
    assert sorted(info) == sorted(contracts.SystemInfo.KEYS)
    assert info["agent_version"] == agent.__version__
    assert info["arch"]
    assert info["uptime"] is not None and info["uptime"] >= 0
    for key in ("memory_total", "memory_available"):
        assert info[key] is None or info[key] > 0


def test_serial_port_moves_bytes_both_ways(rig):
    port = rig.serial()
    assert port.write(b"status\n") == 7
    assert rig.peer_received(port, 7) == b"status\n"
    rig.peer_send(port, b"ok\n")
    assert port.read(3) == b"ok\n"
    port.close()


@pytest.mark.parametrize("kwargs,match", [
    ({"url": ""}, "URL"), ({"url": None}, "URL"), ({"url": "loop://", "baudrate": 12345}, "baud rate"),
    ({"url": "loop://", "timeout": -1}, "timeout"),
])
def test_serial_port_refuses_bad_settings(rig, kwargs, match):
    with pytest.raises(HalArgumentError, match=match):
        rig.backend.SerialPort(**kwargs)


def test_serial_port_refuses_non_bytes(rig):
    port = rig.serial()
    with pytest.raises(HalArgumentError):
        port.write("text")
    with pytest.raises(HalArgumentError):
        port.read(0)


def test_backend_has_every_contract_class(rig):
    from hal import CLASS_NAMES
    for cls_name in CLASS_NAMES:
        cls = getattr(rig.backend, cls_name)
        assert issubclass(cls, getattr(contracts, cls_name)), cls_name
