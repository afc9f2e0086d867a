"""Linux backend specifics: sysfs files written, nft text checked and applied for real in a netns,
a blocked address really unreachable, watchdog device protocol, /proc parsing, key file modes."""

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from hal import linux
from hal.contracts import HalError
from tests.hal.rigs import NetNs, make_fake_leds


def _read(root, led, attr):
    with open(os.path.join(root, led, attr)) as f:
        return f.read().strip()


def test_led_writes_sysfs_attributes(tmp_path):
    root = make_fake_leds(str(tmp_path))
    g, r = "gatewatch:green:status", "gatewatch:red:status"
    led = linux.StatusLed(root=root, blink_ms=(100, 900))
    led.set_state("ok")
    assert (_read(root, g, "trigger"), _read(root, g, "brightness")) == ("none", "255")
    assert (_read(root, r, "trigger"), _read(root, r, "brightness")) == ("none", "0")
    led.set_state("updating")
    assert _read(root, g, "trigger") == "timer"
    assert (_read(root, g, "delay_on"), _read(root, g, "delay_off")) == ("100", "900")
    led.set_state("blocked")
    assert _read(root, r, "trigger") == "timer" and _read(root, g, "brightness") == "0"
    led.set_state("fault")
    assert (_read(root, r, "trigger"), _read(root, r, "brightness")) == ("none", "255")


def test_led_without_delay_files_still_blinks(tmp_path):
    # On a real kernel delay_on/off appear only after the timer trigger is set; do not create them.
    root = make_fake_leds(str(tmp_path), with_delay_files=False)
    linux.StatusLed(root=root).set_state("updating")
    assert _read(root, "gatewatch:green:status", "trigger") == "timer"
    assert not os.path.exists(os.path.join(root, "gatewatch:green:status", "delay_on"))


def test_single_led_boards_show_states_by_blink_rate(tmp_path):
    root = make_fake_leds(str(tmp_path), names=("green:power",))
    led = linux.StatusLed(root=root, green="green:power", red=None)
    seen = {}
    for state in ("ok", "updating", "blocked", "fault"):
        led.set_state(state)
        seen[state] = (_read(root, "green:power", "trigger"), _read(root, "green:power", "delay_on"),
                       _read(root, "green:power", "delay_off"))
    assert seen["ok"][0] == "none" and _read(root, "green:power", "max_brightness") == "255"
    blinks = [seen[s] for s in ("updating", "blocked", "fault")]
    assert all(b[0] == "timer" for b in blinks) and len(set(blinks)) == 3  # each state looks different


def test_missing_led_names_the_available_ones(tmp_path):
    root = make_fake_leds(str(tmp_path), names=("green:lan", "red:wan"))
    with pytest.raises(HalError, match=r"no green status LED 'gatewatch:green:status' .*available: green:lan, red:wan"):
        linux.StatusLed(root=root)
    led = linux.StatusLed(root=root, green="green:lan", red="red:wan")
    led.set_state("ok")


def test_ruleset_text_passes_nft_check_and_a_broken_one_fails():
    ns = NetNs()
    try:
        fw = linux.Firewall(nft=ns.nft, manage_table=False)
        assert fw.check() == (True, "")
        ok, message = fw.check(fw.ruleset_text().replace("flags timeout", "flags timeoutx"))
        assert not ok and "Error" in message
        # nft -c touched nothing: the namespace still has no table.
        assert ns.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout.strip() == ""
    finally:
        ns.close()


def test_constructing_a_firewall_changes_nothing_until_a_block():
    ns = NetNs()
    try:
        fw = linux.Firewall(nft=ns.nft)
        assert fw.list() == [] and fw.unblock("192.0.2.1") == ["192.0.2.1"]
        assert ns.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout.strip() == ""
        fw.block("192.0.2.1", 30)
        assert "table inet gatewatch" in ns.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    finally:
        ns.close()


def test_setup_is_idempotent_and_keeps_blocks():
    ns = NetNs()
    try:
        fw = linux.Firewall(nft=ns.nft)
        fw.block("192.0.2.77", 600)
        again = linux.Firewall(nft=ns.nft)  # agent restart
        assert again.is_blocked("192.0.2.77")
        again.block("192.0.2.78", 600)  # its setup finds the table and keeps what is in it
        rules = ns.run(["nft", "list", "chain", "inet", "gatewatch", "gatewatch_forward"],
                       capture_output=True, text=True).stdout
        assert rules.count("ip daddr @gatewatch_block4") == 1
    finally:
        ns.close()


def test_nft_failure_is_a_clear_error():
    ns = NetNs()
    try:
        fw = linux.Firewall(nft=ns.nft, manage_table=False)  # table never created
        with pytest.raises(HalError, match="failed"):
            fw.block("192.0.2.1", 10)
    finally:
        ns.close()
    with pytest.raises(HalError, match="install nftables"):
        linux.Firewall(nft=("/nonexistent/nft",)).block("192.0.2.1", 10)


_PROBE = textwrap.dedent("""
    import socket, sys
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    port = srv.getsockname()[1]
    c = socket.socket(); c.settimeout(1.0)
    try:
        c.connect(("127.0.0.1", port)); print("open")
    except OSError:
        print("blocked")
""")


def _probe(ns):
    return ns.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=30).stdout.strip()


def test_blocked_address_is_really_unreachable():
    """A real kernel check: in a private namespace, 127.0.0.1 is reachable, then blocked, then not."""
    ns = NetNs()
    try:
        fw = linux.Firewall(nft=ns.nft)
        assert _probe(ns) == "open"
        fw.block("127.0.0.1", 60)
        assert _probe(ns) == "blocked"
        fw.unblock("127.0.0.1")
        assert _probe(ns) == "open"
    finally:
        ns.close()


def test_parse_set_json_handles_plain_and_timed_elements():
    text = ('{"nftables": [{"metainfo": {}}, {"set": {"name": "s", "elem": ["192.0.2.1", '
            '{"elem": {"val": "192.0.2.2", "timeout": 60, "expires": 42}}]}}]}')
    assert linux.parse_set_json(text) == [{"address": "192.0.2.1", "expires_in": None},
                                           {"address": "192.0.2.2", "expires_in": 42}]


def test_watchdog_device_protocol(tmp_path):
    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    wd = linux.Watchdog(device=str(dev))
    wd.start(15)
    assert wd.timeout_applied is False  # a regular file has no WDIOC_SETTIMEOUT; said, not hidden
    wd.kick()
    wd.kick()
    wd.stop()
    assert dev.read_bytes() == b"\0\0V"  # 'V' is the magic close that disarms the kernel watchdog


def test_missing_watchdog_device(tmp_path):
    wd = linux.Watchdog(device=str(tmp_path / "nope"))
    with pytest.raises(HalError, match="cannot open watchdog"):
        wd.start(10)
    assert not wd.running


def test_system_info_from_a_fake_root(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Test Board Model B\0")
    (tmp_path / "proc/meminfo").write_text("MemTotal:       262144 kB\nMemFree: 1 kB\nMemAvailable:   131072 kB\n")
    (tmp_path / "proc/uptime").write_text("1234.56 100.00\n")
    info = linux.SystemInfo(root=str(tmp_path)).info()
    assert info["model"] == "Test Board Model B"
    assert info["memory_total"] == 262144 * 1024 and info["memory_available"] == 131072 * 1024
    assert info["uptime"] == 1234.56


def test_system_info_with_nothing_readable(tmp_path):
    info = linux.SystemInfo(root=str(tmp_path)).info()
    assert info["model"] is None and info["memory_total"] is None and info["uptime"] is None


def test_key_files_are_owner_only(tmp_path):
    ks = linux.KeyStore(root=str(tmp_path / "keys"))
    ks.device_secret()
    mode = stat.S_IMODE(os.stat(ks.secret_path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(ks.root).st_mode) == 0o700
    assert [n for n in os.listdir(ks.root) if n.endswith(".gwtmp")] == []


def test_corrupt_secret_is_refused_not_replaced(tmp_path):
    ks = linux.KeyStore(root=str(tmp_path))
    with open(ks.secret_path, "wb") as f:
        f.write(b"short")
    with pytest.raises(HalError, match="corrupt .*5 bytes"):
        ks.device_secret()
    with open(ks.secret_path, "rb") as f:
        assert f.read() == b"short"


def test_concurrent_first_use_agrees_on_one_secret(tmp_path):
    root = str(tmp_path / "keys")
    code = "import sys; from hal import linux; sys.stdout.write(linux.KeyStore(root=%r).device_secret().hex())" % root
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
             for _ in range(4)]
    secrets = {p.communicate(timeout=60)[0] for p in procs}
    assert len(secrets) == 1 and len(secrets.pop()) == 64


def test_serial_bad_url_is_a_clear_error():
    with pytest.raises(HalError, match="cannot open serial port 'nosuch://x'"):
        linux.SerialPort("nosuch://x")


def test_storage_leaves_no_temp_and_syncs(tmp_path):
    st = linux.Storage(root=str(tmp_path / "s"))
    (tmp_path / "s" / "stale.gwtmp").write_bytes(b"half")
    st = linux.Storage(root=str(tmp_path / "s"))  # start-up recovery removes stale temporaries
    st.write("x", b"1")
    assert sorted(os.listdir(tmp_path / "s")) == ["x"]
