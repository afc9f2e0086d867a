"""OpenWrt with url/domain lists: the UCI options of the DNS forwarder and the TLS splice, the fw4 include
they need (443 to the splice, QUIC dropped) checked by nft, and the dnsmasq set-up script run against
stand-ins for uci and the dnsmasq init script."""

import os
import subprocess

from hal import openwrt
from tests.firmware.test_openwrt import FILES, _nft_check_in_fw4_table, _read
from tests.hal.rigs import NetNs

NAMES_ON = {"option dns '0'": "option dns '1'", "option tls '0'": "option tls '1'"}


def uci_with(**changes):
    text = _read("gatewatch.config")
    for a, b in (changes or NAMES_ON).items():
        assert a in text
        text = text.replace(a, b)
    return text


def test_dns_and_tls_options_map_onto_the_daemons_sections():
    config = openwrt.uci_to_config(uci_with())
    assert config["dns"] == {"listen": "127.0.0.1:5353", "resolv_file": "/tmp/resolv.conf.d/resolv.conf.auto"}
    assert config["tls"] == {"listen": "0.0.0.0:3130"}
    assert openwrt.service_options(uci_with())["tls_port"] == 3130
    # a DNS-only router is a valid set-up (no proxy, no ICAP)
    only_dns = uci_with(**{"option proxy '1'": "option proxy '0'", "option dns '0'": "option dns '1'"})
    assert "proxy" not in openwrt.uci_to_config(only_dns)


def test_tls_include_redirects_443_drops_quic_and_passes_nft(tmp_path):
    include = openwrt.redirect_include(openwrt.service_options(uci_with()))
    assert "tcp dport 443 counter redirect to :3130" in include and "udp dport 443 counter drop" in include
    both = openwrt.redirect_include(openwrt.service_options(uci_with(**dict(NAMES_ON, **{
        "option transparent '0'": "option transparent '1'"}))))
    assert "redirect to :3128" in both and "redirect to :3130" in both
    ns = NetNs()
    try:
        for body in (openwrt.fw4_include() + include, openwrt.fw4_include() + both):
            proc = _nft_check_in_fw4_table(ns, tmp_path, body)
            assert proc.returncode == 0, proc.stderr
    finally:
        ns.close()


def test_dnsmasq_script_sets_the_forwarder_first_and_strict_order(tmp_path):
    log = tmp_path / "calls"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "uci").write_text('#!/bin/sh\necho "uci $*" >> "%s"\n' % log)
    (bindir / "uci").chmod(0o755)
    init = tmp_path / "dnsmasq"
    init.write_text('#!/bin/sh\necho "dnsmasq $*" >> "%s"\n' % log)
    init.chmod(0o755)
    script = os.path.join(FILES, "gatewatch-dnsmasq.sh")
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]), GATEWATCH_DNSMASQ_INIT=str(init))
    assert subprocess.run(["sh", script, "enable"], env=env, timeout=30).returncode == 0
    calls = log.read_text().splitlines()
    assert "uci add_list dhcp.@dnsmasq[0].server=127.0.0.1#5353" in calls
    assert "uci set dhcp.@dnsmasq[0].strictorder=1" in calls
    assert calls[-2:] == ["uci commit dhcp", "dnsmasq restart"]
    log.write_text("")
    assert subprocess.run(["sh", script, "disable"], env=env, timeout=30).returncode == 0
    assert "uci -q del_list dhcp.@dnsmasq[0].server=127.0.0.1#5353" in log.read_text()
    bad = subprocess.run(["sh", script, "on"], env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "usage" in bad.stderr
