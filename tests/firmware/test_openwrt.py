"""firmware/openwrt: the shipped UCI file maps to a valid agent config, the init script's validation
matches the mapping's schema, scripts pass ``sh -n``, the fw4 include passes ``nft -c`` inside
``table inet fw4`` (as fw4 includes it), the feed Makefile parses with GNU make and its fields follow
the packages feed's conventions (build dependency, maintainer, license file, conffiles without state)."""

import os
import re
import shutil
import sys
import subprocess

import pytest

from hal import openwrt
from tests.hal.rigs import NetNs
from tests import paths

PKG = str(paths.ROOT / "firmware" / "openwrt" / "gatewatch")
FILES = os.path.join(PKG, "files")


def _read(name):
    with open(os.path.join(FILES, name)) as f:
        return f.read()


def test_shipped_uci_config_maps_to_a_valid_config():
    config = openwrt.uci_to_config(_read("gatewatch.config"))
    assert config == {
        "agent": {"hal": "openwrt", "state_dir": "/srv/gatewatch", "log_level": "info"},
        "broker": {"url": "mqtts://hub.example.invalid:8883"},
        "policy": {"mode": "block", "exact_unconfirmed": "block", "candidate_unconfirmed": "allow", "firewall_seconds": 0,
                   "min_countries": 1},
        "reports": {"hosting": "url-noquery", "pseudonym": True},
        "proxy": {"listen": "0.0.0.0:3128"},
    }
    assert openwrt.service_options(_read("gatewatch.config")) == {
        "enabled": True, "console": "", "transparent": False, "proxy_port": 3128, "tls_port": None}


def test_rendered_toml_is_accepted_by_the_daemon(tmp_path):
    from agent import config
    path = tmp_path / "gatewatch.toml"
    path.write_text(openwrt.config_to_toml(openwrt.uci_to_config(_read("gatewatch.config"))))
    conf = config.load_config(str(path), environ={})
    assert conf["agent"]["hal"] == "openwrt" and conf["agent"]["state_dir"] == "/srv/gatewatch"
    assert conf["broker"]["url"] == "mqtts://hub.example.invalid:8883"
    assert conf["proxy"]["listen"] == "0.0.0.0:3128" and conf["icap"]["listen"] == ""


def test_every_mapped_option_is_a_daemon_setting():
    from agent import config
    known = {(sec, key) for sec, items in config.SETTINGS.items() for key, _d, _doc in items}
    for section, options in openwrt.UCI_SCHEMA.items():
        for name, (_kind, _extra, target) in options.items():
            assert target is None or target in known, "gatewatch.%s.%s maps to unknown %r" % (section, name, target)


def test_shipped_config_covers_every_option_of_the_schema():
    sections = {s.type: s.options for s in openwrt.parse_uci(_read("gatewatch.config"))}
    text = _read("gatewatch.config")
    for section, options in openwrt.UCI_SCHEMA.items():
        for name in options:
            # every option is shown to the operator, set or as a commented example
            assert name in sections.get(section, {}) or "#list %s " % name in text, (section, name)


def _init_validation():
    """section -> {option: validate_data type} from the init script's uci_load_validate calls."""
    text = _read("gatewatch.init")
    out = {}
    for func, body in re.findall(r"validate_(\w+)_section\(\) \{\n(.*?)\n\}", text, re.S):
        out[func] = {}
        for spec in re.findall(r"'([^']+)'", body):
            name, _, rest = spec.partition(":")
            out[func][name] = rest
    return out


def test_init_script_validates_the_same_options_and_types_as_the_mapping():
    validation = _init_validation()
    assert sorted(validation) == sorted(openwrt.UCI_SCHEMA)
    for section, options in openwrt.UCI_SCHEMA.items():
        assert sorted(validation[section]) == sorted(options), section
        for name, (kind, extra, _target) in options.items():
            vtype = validation[section][name]
            if kind == "bool":
                assert vtype.startswith("bool"), (section, name)
            elif kind == "uint":
                assert vtype.startswith("uinteger"), (section, name)
            elif kind in ("pathlist", "pairs", "sources"):
                assert vtype == "list(string)", (section, name)
            elif kind == "range":
                assert vtype.startswith("range(%d,%d)" % extra), (section, name)
            elif kind == "choice":
                choices = re.match(r'or\(([^)]*)\)', vtype).group(1)
                assert choices == ",".join('"%s"' % c for c in extra), (section, name)
            else:
                assert vtype.startswith("string"), (section, name)


POLICY = """
config agent 'agent'
	option state_dir '/srv/gatewatch'

config policy 'policy'
%s
"""
PER_SOURCE = ("\tlist source_action 'hl3=report-only'\n\tlist source_country 'hl1=DE'\n\tlist source_country 'hl2 = fr'\n"
              "\tlist source_country 'hl3=NL'\n\tlist source_trust 'hl3=corroborate'\n\toption min_countries '2'\n"
              "\tlist allow_others 'hl1'")


def test_per_source_policy_maps_onto_the_daemons_settings(tmp_path):
    from agent import config
    from agent.sources import rules_from_policy
    mapped = openwrt.uci_to_config(POLICY % PER_SOURCE)["policy"]
    assert mapped == {"source_action": ["hl3=report-only"], "source_country": ["hl1=DE", "hl2=fr", "hl3=NL"],
                      "source_trust": ["hl3=corroborate"], "min_countries": 2, "allow_others": ["hl1"]}
    path = tmp_path / "gatewatch.toml"
    path.write_text(openwrt.config_to_toml(openwrt.uci_to_config(POLICY % PER_SOURCE)))
    rules = rules_from_policy(config.load_config(str(path), environ={})["policy"])
    assert (rules.countries, rules.min_countries, rules.actions, rules.trust, set(rules.allow_others)) == (
        {"hl1": "DE", "hl2": "FR", "hl3": "NL"}, 2, {"hl3": "report-only"}, {"hl3": "corroborate"}, {"hl1"})
    one = openwrt.uci_to_config(POLICY % "\toption source_country 'hl1=DE'\n\toption allow_others '*'")["policy"]
    assert one == {"source_country": ["hl1=DE"], "allow_others": ["*"]}   # an option is a one-item list


@pytest.mark.parametrize("setting, items", [
    ("source_action", ["hl1=drop"]), ("source_action", ["hl1"]), ("source_action", ["hl1=block=x"]),
    ("source_action", ["hl1=block", "hl1=monitor"]), ("source_action", ["-hl=block"]),
    ("source_action", ["h\u0131=block"]), ("source_trust", ["hl1=maybe"]), ("source_country", ["hl1=DEU"]),
    ("source_country", ["hl1=\uff24\uff25"]), ("source_country", ["hl1=D1"]), ("allow_others", ["hl 1"]),
    ("allow_others", ["**"]), ("min_countries", "0"), ("min_countries", "9"), ("min_countries", "\u0662"),
    ("min_countries", "-1"), ("min_countries", ["2"]), ("source_trust", ["hl9=corroborate"]),
])
def test_per_source_policy_is_refused_where_the_agent_refuses_it(setting, items):
    """The UCI layer refuses what agent.sources refuses, with the setting named, before the agent starts."""
    from agent.core.errors import ConfigError
    from agent.sources import SourceRules
    if setting == "min_countries" and isinstance(items, str):
        line = "\toption min_countries '%s'" % items
        value = int(items) if re.fullmatch(r"-?[0-9]+", items) else items
    else:
        line = "\n".join("\tlist %s '%s'" % (setting, i) for i in items)
        value = list(items)
    with pytest.raises(ConfigError, match="gatewatch.policy.%s" % setting):
        openwrt.uci_to_config(POLICY % line)
    with pytest.raises(ConfigError):
        SourceRules(**{setting: value})


def test_init_refuses_a_bad_per_source_setting(tmp_path):
    text = _read("gatewatch.config").replace("#list source_country 'hl1=DE'", "list source_country 'hl1=Germany'")
    proc = _run_init(tmp_path, text)
    assert "PROCD open_instance" not in proc.stdout and "section 'policy' of /etc/config/gatewatch is invalid" in proc.stderr
    ok = _run_init(tmp_path, _read("gatewatch.config").replace("#list source_country 'hl1=DE'", "list source_country 'hl1=DE'"))
    assert "PROCD open_instance agent" in ok.stdout
    assert 'source_country = ["hl1=DE"]' in (tmp_path / "run" / "gatewatch.toml").read_text()


def test_init_script_has_procd_essentials():
    text = _read("gatewatch.init")
    for needle in ("USE_PROCD=1", "procd_set_param respawn", "procd_add_reload_trigger \"gatewatch\"",
                   "procd_add_validation validate_all", "uci_load_validate gatewatch agent",
                   "procd_set_param file \"$UCI_FILE\"", 'UCI_FILE="${GATEWATCH_UCI_FILE:-/etc/config/gatewatch}"',
                   "GATEWATCH_HAL=openwrt",
                   "python3 -m hal.openwrt render"):
        assert needle in text, needle


@pytest.mark.parametrize("name", ["gatewatch.init", "gatewatch.uci-defaults"])
def test_scripts_pass_sh_n(name):
    path = os.path.join(FILES, name)
    proc = subprocess.run(["sh", "-n", path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(path, os.X_OK), "%s must be executable" % name


def test_sh_n_does_catch_a_syntax_error(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text(_read("gatewatch.init").replace("start_service() {", "start_service() {{ ("))
    assert subprocess.run(["sh", "-n", str(bad)], capture_output=True).returncode != 0


def test_shipped_nft_include_is_the_generated_one():
    assert _read("gatewatch.nft") == openwrt.fw4_include()


def _nft_check_in_fw4_table(ns, tmp_path, body):
    include = tmp_path / "include.nft"
    include.write_text(body)
    wrapper = tmp_path / "fw4.nft"
    # fw4 includes table-post files from inside its own table; check the text in that position.
    wrapper.write_text('table inet fw4 {\n\tinclude "%s"\n}\n' % include)
    return ns.run(["nft", "-c", "-f", str(wrapper)], capture_output=True, text=True)


def test_nft_include_and_redirect_pass_nft_check(tmp_path):
    ns = NetNs()
    try:
        for body in (_read("gatewatch.nft"), openwrt.fw4_include(proxy_port=3128),
                     openwrt.fw4_include() + openwrt.redirect_include(
                         openwrt.uci_to_config(_read("gatewatch.config").replace("transparent '0'", "transparent '1'")))):
            proc = _nft_check_in_fw4_table(ns, tmp_path, body)
            assert proc.returncode == 0, proc.stderr
        broken = _nft_check_in_fw4_table(ns, tmp_path, _read("gatewatch.nft").replace("type ipv4_addr", "type ipv4_adr"))
        assert broken.returncode != 0  # the check is real: a typo fails it
    finally:
        ns.close()


def test_nft_include_loads_into_a_fw4_table_and_the_backend_uses_it(tmp_path):
    ns = NetNs()
    try:
        include = tmp_path / "20-gatewatch.nft"
        include.write_text(_read("gatewatch.nft"))
        ns.run(["nft", "-f", "-"], input='table inet fw4 {\ninclude "%s"\n}\n' % include, text=True, check=True)
        fw = openwrt.Firewall(nft=ns.nft)
        fw.block("192.0.2.50", 120)
        listed = ns.run(["nft", "list", "set", "inet", "fw4", "gatewatch_block4"], capture_output=True, text=True).stdout
        assert "192.0.2.50" in listed
    finally:
        ns.close()


def _stand_in_topdir(tmp_path):
    """Stand-ins for the OpenWrt build system's includes, so GNU make parses the real Makefile."""
    top = tmp_path / "top"
    if not top.exists():
        (top / "include").mkdir(parents=True)
        (top / "feeds/packages/lang/python").mkdir(parents=True)
        (top / "rules.mk").write_text("")
        (top / "include/package.mk").write_text("BuildPackage = $(eval PACKAGES += $(1))\n")
        (top / "feeds/packages/lang/python/python3-package.mk").write_text("Py3Package =\n")
    return top


def _make_show(tmp_path, expression):
    if shutil.which("make") is None:
        pytest.skip("GNU make not installed")
    top = _stand_in_topdir(tmp_path)
    proc = subprocess.run(
        ["make", "-s", "-C", PKG, "-f", "Makefile", "TOPDIR=%s" % top, "INCLUDE_DIR=%s/include" % top,
         "--eval", "show: ; @: $(info %s)" % expression, "show"],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _make_var(tmp_path, name, expand=True):
    """The value of one variable (or define) of the feed Makefile, as GNU make expands it
    (expand=False: as written)."""
    return _make_show(tmp_path, ("$(%s)" if expand else "$(value %s)") % name).rstrip("\n")


def test_feed_makefile_parses_and_installs_every_file(tmp_path):
    out = _make_show(tmp_path, "$(PKG_NAME) $(PACKAGES) | $(Package/gatewatch) | $(GATEWATCH_SRC)")
    name, deps, src = out.split(" | ")
    assert "SECTION:=net" in deps
    assert name.split() == ["gatewatch", "gatewatch"]
    for dep in ("+python3-light", "+python3-numpy", "+python3-pillow", "+python3-cryptography", "+libsodium",
                "+python3-ctypes",
                "+python3-paho-mqtt", "+python3-pyserial", "+nftables"):
        assert dep in deps
    assert os.path.samefile(src.strip(), os.path.dirname(os.path.dirname(PKG)) + "/..")
    makefile = open(os.path.join(PKG, "Makefile")).read()
    for name in os.listdir(FILES):
        assert "./files/%s " % name in makefile, "%s is not installed by the Makefile" % name


# ------------------------------------------------------------------ the init script, run under shims

SHIMS = r'''
procd_open_instance() { echo "PROCD open_instance $*"; }
procd_set_param() { echo "PROCD param $*"; }
procd_close_instance() { echo "PROCD close_instance"; }
procd_add_reload_trigger() { echo "PROCD reload_trigger $*"; }
procd_add_validation() { echo "PROCD validation $*"; }
fw4() { echo "FW4 $*"; }
# Stand-in for procd.sh's uci_load_validate: defaults from the specs, values from the UCI file,
# validity from the agent's own checker (the real one asks /sbin/validate_data).
uci_load_validate() {
	local _package="$1" _type="$2" _name="$3" _function="$4" _spec _var _default _result
	shift 4
	for _spec in "$@"; do
		_var="${_spec%%:*}"
		_default="${_spec#*:}"
		case "$_default" in *:*) _default="${_default#*:}" ;; *) _default="" ;; esac
		eval "local $_var"
		eval "$_var=\$_default"
	done
	eval "$(python3 -c 'import shlex, sys
from hal.openwrt import parse_uci
for sec in parse_uci(open(sys.argv[1]).read()):
    if sec.name == sys.argv[2]:
        for k, v in sec.options.items():
            if v != "":
                print("%s=%s" % (k, shlex.quote(" ".join(v) if isinstance(v, list) else v)))
' "$GATEWATCH_UCI_FILE" "$_name")"
	python3 -m hal.openwrt check --uci "$GATEWATCH_UCI_FILE" 2>/dev/null
	_result=$?
	[ -n "$_function" ] || return $_result
	"$_function" "$_name" "$_result"
}
'''


def _run_init(tmp_path, uci_text, action="start_service"):
    uci = tmp_path / "gatewatch.uci"
    uci.write_text(uci_text)
    shims = tmp_path / "shims.sh"
    shims.write_text(SHIMS)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if not (bindir / "python3").exists():
        os.symlink(sys.executable, bindir / "python3")
    root = str(paths.ROOT)
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ.get("PATH", "/usr/bin:/bin")), PYTHONPATH=root,
               GATEWATCH_UCI_FILE=str(uci), GATEWATCH_RUN_DIR=str(tmp_path / "run"),
               GATEWATCH_REDIRECT=str(tmp_path / "etc/redirect.nft"))
    proc = subprocess.run(["sh", "-c", '. "$1"; . "$2"; %s' % action, "sh", str(shims), os.path.join(FILES, "gatewatch.init")],
                          capture_output=True, text=True, env=env, cwd=root, timeout=120)
    return proc


def test_init_starts_the_agent_with_the_rendered_config(tmp_path):
    proc = _run_init(tmp_path, _read("gatewatch.config"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    toml_path = tmp_path / "run" / "gatewatch.toml"
    assert "PROCD open_instance agent" in lines
    assert "PROCD param command /usr/bin/gatewatch run --config %s" % toml_path in lines
    assert "PROCD param env GATEWATCH_HAL=openwrt" in lines
    assert "PROCD param respawn 3600 5 5" in lines
    assert "PROCD param file %s %s" % (tmp_path / "gatewatch.uci", toml_path) in lines
    assert "PROCD open_instance console" not in lines  # console '' = off
    assert toml_path.read_text() == openwrt.config_to_toml(openwrt.uci_to_config(_read("gatewatch.config")))
    assert (tmp_path / "etc/redirect.nft").read_text().startswith("# gatewatch: transparent proxy disabled")
    assert lines.count("FW4 -q reload") == 1  # the include file appeared
    again = _run_init(tmp_path, _read("gatewatch.config"))
    assert "FW4 -q reload" not in again.stdout  # unchanged include: fw4 is left alone


def test_init_starts_the_console_when_configured(tmp_path):
    text = _read("gatewatch.config").replace("option console ''", "option console '/dev/ttyS1'")
    lines = _run_init(tmp_path, text).stdout.splitlines()
    assert "PROCD open_instance console" in lines
    assert "PROCD param command python3 -m agent.console --port /dev/ttyS1 --state-dir /srv/gatewatch" in lines


def test_init_refuses_an_invalid_config(tmp_path):
    proc = _run_init(tmp_path, _read("gatewatch.config").replace("option mode 'block'", "option mode 'drop'"))
    assert "PROCD open_instance" not in proc.stdout
    assert "section 'policy' of /etc/config/gatewatch is invalid; not starting" in proc.stderr
    assert not (tmp_path / "run" / "gatewatch.toml").exists()


def test_init_does_nothing_when_disabled(tmp_path):
    proc = _run_init(tmp_path, _read("gatewatch.config").replace("option enabled '1'", "option enabled '0'"))
    assert proc.returncode == 0 and "PROCD open_instance" not in proc.stdout


def test_init_transparent_proxy_writes_the_redirect_and_reloads_fw4(tmp_path):
    _run_init(tmp_path, _read("gatewatch.config"))
    proc = _run_init(tmp_path, _read("gatewatch.config").replace("option transparent '0'", "option transparent '1'"))
    assert "FW4 -q reload" in proc.stdout.splitlines()
    assert "redirect to :3128" in (tmp_path / "etc/redirect.nft").read_text()


def test_init_service_triggers(tmp_path):
    lines = _run_init(tmp_path, _read("gatewatch.config"), action="service_triggers").stdout.splitlines()
    assert lines == ["PROCD reload_trigger gatewatch", "PROCD validation validate_all"]


# ------------------------------------------------------------------ feed conventions, license, conffiles

def _uci_state_dir():
    return {s.type: s.options for s in openwrt.parse_uci(_read("gatewatch.config"))}["agent"]["state_dir"]


def test_makefile_build_depends_on_host_setuptools(tmp_path):
    # python3-package.mk builds with `python3 -m build --no-isolation`: the setuptools backend that
    # pyproject.toml names must be in host Python (python-setuptools/host of the packages feed).
    backend = re.search(r'build-backend\s*=\s*"([^"]+)"', (paths.ROOT / "pyproject.toml").read_text()).group(1)
    assert backend.startswith("setuptools")
    assert "python-setuptools/host" in _make_var(tmp_path, "PKG_BUILD_DEPENDS").split()


def test_makefile_maintainer_is_name_and_email(tmp_path):
    maintainer = _make_var(tmp_path, "PKG_MAINTAINER")
    assert maintainer == "gatewatch developers <gatewatch@example.org>"
    # the form the feed's scripts and CI expect: "Name <email>"[, "Name <email>"...]
    for one in maintainer.split(","):
        assert re.fullmatch(r"[^<>@,]+ <[^<>@\s]+@[^<>@\s]+\.[a-z]+>", one.strip()), one


def test_license_file_exists_is_apache_2_and_the_makefile_ships_it(tmp_path):
    license_file = paths.ROOT / "LICENSE"
    assert license_file.is_file()
    text = license_file.read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert len(text) > 11000  # the full text, not a pointer to it
    pyproject = (paths.ROOT / "pyproject.toml").read_text()
    assert re.search(r'license\s*=\s*\{\s*text\s*=\s*"Apache-2.0"', pyproject)
    assert _make_var(tmp_path, "PKG_LICENSE") == "Apache-2.0"
    files = _make_var(tmp_path, "PKG_LICENSE_FILES").split()
    assert files == ["LICENSE"]
    # PKG_LICENSE_FILES is relative to PKG_BUILD_DIR: Build/Prepare must copy it there
    prepare = _make_var(tmp_path, "Build/Prepare", expand=False)
    assert "$(GATEWATCH_SRC)/LICENSE" in prepare and "$(PKG_BUILD_DIR)" in prepare


def test_conffiles_are_configuration_files_only(tmp_path):
    conffiles = _make_var(tmp_path, "Package/gatewatch/conffiles").split()
    assert conffiles == ["/etc/config/gatewatch"]
    makefile = open(os.path.join(PKG, "Makefile")).read()
    state = _uci_state_dir()
    for path in conffiles:
        assert not path.endswith("/"), "%s: a folder as conffile takes everything in it into backups" % path
        assert "*" not in path, path
        # every conffile is a file the package installs
        assert re.search(r"\$\(1\)%s\b" % re.escape(path), makefile), "%s is not installed" % path
        # and none is, holds or sits in the state folder (lists, spool, status)
        for sub in ("", "/lists", "/spool", "/status.json"):
            assert not (state + sub).startswith(path.rstrip("/")), (path, state + sub)
            assert not path.startswith(state), (path, state)


def test_state_dir_is_out_of_etc_and_on_flash_and_the_same_everywhere():
    state = _uci_state_dir()
    assert state == "/srv/gatewatch"
    # not in /etc (sysupgrade -c would back up every changed file there), not in /var or /tmp
    # (RAM on OpenWrt: lists, the report spool and the MQTT client id must survive a reboot)
    for bad in ("/etc/", "/var/", "/tmp/", "/run/"):
        assert not (state + "/").startswith(bad), state
    init_default = _init_validation()["agent"]["state_dir"]
    assert init_default == "string:" + state
    # the console instance uses the validated value, not a second hard-coded path
    assert '--state-dir "$state_dir"' in _read("gatewatch.init")


def _keep_entries():
    return [line.strip() for line in _read("gatewatch.upgrade").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_sysupgrade_keeps_the_operators_files_and_the_identity_but_no_state():
    entries = _keep_entries()
    state = _uci_state_dir()
    assert "/etc/gatewatch/" in entries
    for kept in ("client_id", "device_secret", "trust/"):
        assert "%s/%s" % (state, kept) in entries
    for path in entries:
        assert path.startswith("/"), path
        # sysupgrade runs `find` on each entry: a folder takes everything below it
        for sub in ("/lists/", "/spool/", "/status.json", "/gatewatch.sock"):
            target = state + sub
            assert not target.startswith(path if path.endswith("/") else path + "/") and target.rstrip("/") != path, \
                "%s would put %s into sysupgrade backups" % (path, target)
        assert (path.rstrip("/") + "/").startswith("/etc/gatewatch/") or path.startswith(state + "/"), path
    # the state folder is not below a kept folder either
    assert not any((state + "/").startswith(p) for p in entries if p.endswith("/"))
    makefile = open(os.path.join(PKG, "Makefile")).read()
    assert "./files/gatewatch.upgrade $(1)/lib/upgrade/keep.d/gatewatch" in makefile


def test_package_is_hidden_on_soft_float_targets(tmp_path):
    # python3-numpy is @!SOFT_FLOAT in the packages feed (most MIPS routers)
    deps = _make_var(tmp_path, "Package/gatewatch")
    assert "@!SOFT_FLOAT" in deps.split()
