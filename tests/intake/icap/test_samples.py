"""The shipped configuration samples stay valid for the real tools."""

import os
import subprocess

import pytest

from tests.intake.icap.realservers import ROOT, find_binary

SQUID = find_binary("squid", "/usr/sbin/squid")
NFT = find_binary("nft", "/usr/sbin/nft")


@pytest.mark.skipif(SQUID is None, reason="squid missing: run tests/setup/install.sh")
def test_squid_sample_parses(tmp_path):
    conf = open(os.path.join(ROOT, "firmware", "squid", "squid.conf")).read()
    conf = conf.replace("include /etc/squid/gatewatch.conf",
                        "include " + os.path.join(ROOT, "firmware", "squid", "gatewatch.conf"))
    conf = conf.replace("coredump_dir /var/spool/squid", "coredump_dir %s" % tmp_path)
    path = tmp_path / "squid.conf"
    path.write_text(conf)
    res = subprocess.run([SQUID, "-k", "parse", "-f", str(path)], capture_output=True, timeout=60)
    out = (res.stdout + res.stderr).decode()
    assert res.returncode == 0 and "FATAL" not in out and "ERROR" not in out, out[-2000:]
    assert "icap_service gatewatch_resp respmod_precache" in open(
        os.path.join(ROOT, "firmware", "squid", "gatewatch.conf")).read()


@pytest.mark.skipif(NFT is None, reason="nft missing")
def test_nftables_redirect_sample_checks(tmp_path):
    res = subprocess.run([NFT, "-c", "-f", os.path.join(ROOT, "firmware", "nftables", "redirect.nft")],
                         capture_output=True, timeout=60)
    if res.returncode != 0 and b"Operation not permitted" in res.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert res.returncode == 0, res.stderr.decode()
