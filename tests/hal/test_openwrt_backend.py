"""OpenWrt backend specifics: procd's watchdog, board model, UCI parsing/writing and the config mapping."""

import pytest
from hypothesis import given, settings, strategies as st

from agent.core.errors import ConfigError
from hal import openwrt
from hal.openwrt import UciSection, dump_uci, parse_uci, uci_to_config


def test_watchdog_is_owned_by_procd_and_only_recorded():
    wd = openwrt.Watchdog()
    assert wd.owner == "procd"
    wd.start(30)
    wd.kick()
    wd.stop()
    assert wd.history == [("start", 30), ("kick",), ("stop",)]


def test_system_info_reads_openwrt_board_files(tmp_path):
    (tmp_path / "tmp/sysinfo").mkdir(parents=True)
    (tmp_path / "tmp/sysinfo/model").write_text("Test Router AX1\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/openwrt_release").write_text("DISTRIB_ID='OpenWrt'\nDISTRIB_DESCRIPTION='OpenWrt 23.05.3 r23809'\n")
    assert openwrt.SystemInfo(root=str(tmp_path)).info()["model"] == "Test Router AX1 (OpenWrt 23.05.3 r23809)"


UCI = """
# comment
config agent 'agent'
	option enabled '1'
	option state_dir '/etc/gatewatch'
	option region 'DE'
	list note 'a b'
	list note "it's"

config broker
	option url mqtts://hub.example:8883
"""


def test_parse_uci_sections_options_lists_quotes():
    sections = parse_uci(UCI)
    assert sections[0] == UciSection("agent", "agent", {"enabled": "1", "state_dir": "/etc/gatewatch", "region": "DE",
                                                         "note": ["a b", "it's"]})
    assert sections[1] == UciSection("broker", None, {"url": "mqtts://hub.example:8883"})


@pytest.mark.parametrize("text,match", [
    ("option a 'b'", "line 1: option before any 'config'"),
    ("config agent 'x'\n\toption a 'unterminated", "line 2: .*quotes"),
    ("config agent 'x'\n\toption 'a'", "line 2: expected: option <name>"),
    ("config a-b", "line 1: expected: config <type>"),
    ("config agent\n\tfrob a 'b'", "line 2: unknown keyword 'frob'"),
    ("config agent\n\toption a '1'\n\tlist a '2'", "line 3: 'a' is both an option and a list"),
])
def test_parse_uci_errors_name_the_line(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_uci(text)


_ident = st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)
_value = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_ident, st.one_of(st.none(), _ident),
                          st.dictionaries(_ident, st.one_of(_value, st.lists(_value, min_size=1, max_size=3)), max_size=4)),
                max_size=4))
def test_dump_then_parse_round_trips(raw):
    sections = [UciSection(t, n, o) for t, n, o in raw]
    assert parse_uci(dump_uci(sections)) == sections


MINIMAL = "config agent 'agent'\n\toption state_dir '/etc/gatewatch'\n"


def test_minimal_config_gets_defaults():
    assert uci_to_config(MINIMAL) == {
        "agent": {"hal": "openwrt", "state_dir": "/etc/gatewatch"},
        "proxy": {"listen": "0.0.0.0:3128"},
    }
    assert openwrt.service_options(MINIMAL) == {"enabled": True, "console": "", "transparent": False, "proxy_port": 3128,
                                                  "tls_port": None}  # no TLS splice configured


def test_every_option_maps_where_the_daemon_expects_it():
    text = MINIMAL + """
config broker
	option url 'mqtts://hub.example:8883'
	option username 'dev'
	option password_file '/etc/gatewatch/broker.pw'
	option ca '/etc/ssl/hub.pem'
	option prefix 'gatewatch/v1'
config lists
	list trust '/etc/gatewatch/trust/a.pub'
	list trust '/etc/gatewatch/trust/b.pub'
config policy
	option mode 'report-only'
	option exact_unconfirmed 'allow'
	option candidate_unconfirmed 'block'
	option firewall_seconds '600'
config reports
	option region 'DE-BY'
	option hosting 'host'
	option pseudonym '0'
config intake
	option icap '1'
	option icap_listen '127.0.0.1:11344'
	option proxy_listen '192.168.1.1:8080'
	option transparent 'yes'
"""
    assert uci_to_config(text) == {
        "agent": {"hal": "openwrt", "state_dir": "/etc/gatewatch"},
        "broker": {"url": "mqtts://hub.example:8883", "username": "dev", "password_file": "/etc/gatewatch/broker.pw",
                   "ca": "/etc/ssl/hub.pem", "prefix": "gatewatch/v1"},
        "lists": {"trust": ["/etc/gatewatch/trust/a.pub", "/etc/gatewatch/trust/b.pub"]},
        "policy": {"mode": "report-only", "exact_unconfirmed": "allow", "candidate_unconfirmed": "block",
                   "firewall_seconds": 600},
        "reports": {"region": "DE-BY", "hosting": "host", "pseudonym": False},
        "icap": {"listen": "127.0.0.1:11344"},
        "proxy": {"listen": "192.168.1.1:8080"},
    }
    assert openwrt.service_options(text)["transparent"] is True
    assert openwrt.service_options(text)["proxy_port"] == 8080


@pytest.mark.parametrize("extra,match", [
    ("config policy\n\toption mode 'drop'", "gatewatch.policy.mode must be one of block, report-only, monitor"),
    ("config policy\n\toption exact_unconfirmed 'maybe'", "exact_unconfirmed must be one of block, allow"),
    ("config policy\n\toption firewall_seconds '-1'", "whole number"),
    ("config intake\n\toption icap 'perhaps'", "must be a boolean"),
    ("config intake\n\toption icap '1'\n\toption icap_listen '1344'", "host:port"),
    ("config intake\n\toption proxy_listen 'x:99999'", "host:port"),
    ("config intake\n\toption proxy '0'", "no intake enabled"),
    ("config intake\n\toption proxy '0'\n\toption icap '1'\n\toption transparent '1'", "transparent needs the proxy"),
    ("config frob", "unknown UCI section type 'frob'"),
    ("config policy\n\toption mdoe 'block'", "unknown option gatewatch.policy.mdoe"),
    ("config agent\n\toption log_level 'info'", "section type 'agent' appears twice"),
    ("config policy\n\tlist mode 'block'", "must be an option, not a list"),
    ("config lists\n\tlist trust 'relative.pub'", "absolute paths"),
    ("config reports\n\toption region 'de'", "ISO 3166"),
    ("config broker\n\toption url 'http://h'", "scheme mqtt/mqtts"),
    ("config broker\n\toption url 'mqtt://'", "scheme mqtt/mqtts and a host"),
])
def test_bad_config_is_refused_with_the_option_named(extra, match):
    with pytest.raises(ConfigError, match=match):
        uci_to_config(MINIMAL + extra + "\n")


@pytest.mark.parametrize("text,match", [
    ("config broker\n\toption url 'mqtt://h:1883'", "gatewatch.agent.state_dir is required"),
    ("config agent\n\toption state_dir 'relative'", "absolute path"),
])
def test_required_and_typed_options(text, match):
    with pytest.raises(ConfigError, match=match):
        uci_to_config(text)


def test_toml_output_parses_back_to_the_same_dict():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    config = uci_to_config(MINIMAL + "config policy\n\toption firewall_seconds '600'\n"
                           "config lists\n\tlist trust '/a b/q\"x.pub'\n"
                           "config intake\n\toption icap '1'\n\toption transparent '1'\n")
    config.setdefault("broker", {})["password"] = 'p"a\\ss\tword\u00e9'
    assert tomllib.loads(openwrt.config_to_toml(config)) == config


def test_redirect_include_only_when_transparent():
    assert openwrt.redirect_include(openwrt.service_options(MINIMAL)).startswith("# gatewatch: transparent proxy disabled")
    text = openwrt.redirect_include(openwrt.service_options(
        MINIMAL + "config intake\n\toption transparent '1'\n\toption proxy_listen '0.0.0.0:8080'\n"))
    assert text.startswith("chain gatewatch_redirect") and "redirect to :8080" in text


@pytest.mark.parametrize("port,dev", [(0, "br-lan"), (70000, "br-lan"), ("80", "br-lan"), (3128, 'br-lan"; drop')])
def test_fw4_include_refuses_bad_arguments(port, dev):
    with pytest.raises(ConfigError):
        openwrt.fw4_include(proxy_port=port, lan_device=dev)


def test_render_cli_writes_toml_and_reports_errors(tmp_path, capsys):
    uci = tmp_path / "gatewatch"
    uci.write_text(MINIMAL + "config broker\n\toption password 'secret'\n")
    out = tmp_path / "run/gatewatch.toml"
    redirect = tmp_path / "redirect.nft"
    assert openwrt.main(["render", "--uci", str(uci), "--out", str(out), "--redirect-out", str(redirect)]) == 0
    assert 'hal = "openwrt"' in out.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o600"  # it may hold the broker password
    mtime = redirect.stat().st_mtime_ns
    assert openwrt.main(["render", "--uci", str(uci), "--out", str(out), "--redirect-out", str(redirect)]) == 0
    assert redirect.stat().st_mtime_ns == mtime  # unchanged content is not rewritten (flash wear)
    uci.write_text(MINIMAL + "config policy\n\toption mode 'drop'\n")
    before = out.read_text()
    assert openwrt.main(["check", "--uci", str(uci)]) == 2
    assert openwrt.main(["render", "--uci", str(uci), "--out", str(out)]) == 2
    assert "gatewatch.policy.mode must be one of" in capsys.readouterr().err
    assert out.read_text() == before  # a bad file changes nothing
