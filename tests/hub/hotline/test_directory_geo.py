"""The signed hotline directory and the hub's geolocation (test DNS server + the shipped country database)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.core.errors import ConfigError
from tests.hub.hotline.kit import ADDRESS, NAMES, Network, env_with_root, write_mmdb
from tests.paths import ROOT
from tools.build import generate_keys, load_private_key
from tools.hotline.directory import build_directory, load_directory
from tools.hotline.geo import CountryDb, HostingLocator

EXAMPLE = ROOT / "tools" / "hotline" / "example"


def test_directory_signs_routes_and_refuses_tampering(tmp_path):
    net = Network(tmp_path, {"hotline-a": ["NL", "BE"], "hotline-b": ["FR"]})
    d = load_directory(net.directory_file, net.dir_pub)
    assert d.responsible("FR") == "hotline-b" and d.responsible("BE") == "hotline-a"
    assert d.responsible("US") is None and d.responsible(None) is None
    doc = json.loads(open(net.directory_file).read())
    doc["signed"]["hotlines"][1]["countries"].append("NL")            # B takes over NL
    (tmp_path / "tampered.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="does not verify"):
        load_directory(str(tmp_path / "tampered.json"), net.dir_pub)
    _, other = generate_keys(str(tmp_path / "k2"), "other", "network")
    with pytest.raises(ConfigError, match="does not verify"):
        load_directory(net.directory_file, other)
    with pytest.raises(ConfigError, match="expired"):
        load_directory(net.directory_file, net.dir_pub, now=4e9)


@pytest.mark.parametrize("change,message", [
    (lambda h: h[1].update(countries=["NL"]), "covered by both"),
    (lambda h: h[1].update(hub="http://127.0.0.1:1"), "https"),
    (lambda h: h[1].update(countries=["fr"]), "ISO 3166"),
    (lambda h: h[1].update(id="hotline-a"), "its key names"),
    (lambda h: h[1].update(extra=1), "exactly the fields"),
    (lambda h: h.append(dict(h[0])), "listed twice"),
])
def test_directory_refuses_bad_members(tmp_path, change, message):
    net = Network(tmp_path, {"hotline-a": ["NL"], "hotline-b": ["FR"]})
    doc = json.loads(net.members_file.read_text())
    change(doc["hotlines"])
    net.members_file.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=message):
        build_directory(str(net.members_file), load_private_key(net.dir_key), str(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


def test_the_shipped_example_verifies_and_is_clearly_an_example():
    d = load_directory(str(EXAMPLE / "directory.json"), str(EXAMPLE / "directory.pub"), now=0)
    assert len(d.hotlines) >= 4 and len(d.countries()) >= 5
    for h in d.hotlines.values():
        assert "example" in h.name.lower() and h.hub.split("/")[2].split(":")[0].endswith(".invalid")


def test_shipped_database_places_the_test_addresses():
    db = CountryDb()
    for country, ip in ADDRESS.items():
        assert db.country(ip) == country
    for ip in ("127.0.0.1", "10.1.2.3", "192.0.2.1", "::1", "not an address"):
        assert db.country(ip) is None


def test_hub_resolves_hosting_names_with_time_out_and_cache(dns):
    loc = HostingLocator(CountryDb(), dns.server, timeout=1.0)
    for name, country in NAMES.items():
        assert loc.locate({"url": "http://%s:8080/a/b.jpg" % name}) == (ADDRESS[country], country)
    assert loc.locate({"host": "img.hosted-in-fr.test"}) == (ADDRESS["FR"], "FR")
    assert loc.locate({"url": "http://unknown.test/x.jpg"}) == (None, None)      # NXDOMAIN
    assert loc.locate({"url": "http://80.67.169.12/x.jpg"}) == ("80.67.169.12", "FR")  # an address: no DNS
    assert loc.locate({"host": "192.168.1.1"}) == (None, None)                       # never a LAN address
    assert loc.locate({}) == (None, None)
    before = loc.lookups
    dns.stop()                                                                        # answers come from the cache
    assert loc.locate({"url": "http://img.hosted-in-fr.test/other.jpg"}) == (ADDRESS["FR"], "FR")
    assert loc.lookups == before + 1
    assert loc.locate({"url": "http://cold.test/x.jpg"}) == (None, None)              # time-out: no country


def test_an_operators_mmdb_file_replaces_the_shipped_database(tmp_path, dns):
    # the operator's newer data places the address elsewhere than the shipped file does
    path = write_mmdb(tmp_path / "current.mmdb", {"80.67.168.0/22": "DK", "145.96.0.0/11": "NL"})
    loc = HostingLocator(CountryDb(path), dns.server, timeout=1.0)
    assert loc.locate({"url": "http://img.hosted-in-fr.test/k.jpg"}) == (ADDRESS["FR"], "DK")
    assert loc.db.country("8.8.8.8") is None and loc.db.country("2001:db8::1") is None
    (tmp_path / "broken.mmdb").write_bytes(b"\0" * 100)
    with pytest.raises(ConfigError, match="cannot read the country database"):
        CountryDb(str(tmp_path / "broken.mmdb"))


def test_bad_resolver_and_database_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="dns-server"):
        HostingLocator(CountryDb(), "resolver.example:53")
    with pytest.raises(ConfigError, match="country database"):
        CountryDb(str(tmp_path / "missing.mmdb"))


def test_locate_command(dns):
    r = subprocess.run([sys.executable, "-m", "tools.hub_cli", "hotline", "locate", "http://img.hosted-in-fr.test/k.jpg",
                        "--dns-server", dns.server], capture_output=True, text=True, cwd=ROOT, env=env_with_root(ROOT),
                       timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["country"] == "FR", r.stderr
