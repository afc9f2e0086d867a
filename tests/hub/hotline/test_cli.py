"""`gatewatch-hub hotline ...`: directory build/show, accounts, the per-hotline export, serve's refusals."""
from __future__ import annotations

import argparse
import csv
import io
import json

import pytest

from tests.hub.hotline.hubs import TestHub
from tests.hub.hotline.kit import Network, report
from tools.hotline.export import COLUMNS
from tools.hub_cli import main


def run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_directory_build_and_show(tmp_path, capsys):
    net = Network(tmp_path, {"hotline-a": ["NL"], "hotline-b": ["FR", "BE"]})
    rc, out, _ = run(["hotline", "directory", "build", "--input", str(net.members_file), "--key", net.dir_key,
                      "--out", str(tmp_path / "d.json"), "--version", "7"], capsys)
    assert rc == 0 and json.loads(out) == {"directory": str(tmp_path / "d.json"), "version": 7, "hotlines": 2,
                                           "countries": ["BE", "FR", "NL"]}
    rc, out, _ = run(["hotline", "directory", "show", str(tmp_path / "d.json"), "--trust", net.dir_pub], capsys)
    assert rc == 0 and [h["id"] for h in json.loads(out)["hotlines"]] == ["hotline-a", "hotline-b"]
    rc, _, err = run(["hotline", "directory", "show", str(tmp_path / "d.json"), "--trust",
                      str(tmp_path / "keys" / "hotline-a.pub")], capsys)
    assert rc == 2 and "does not verify" in err


def test_account_add_refuses_short_passwords(tmp_path, capsys):
    (tmp_path / "pw").write_text("short\n")
    rc, _, err = run(["hotline", "account", "add", "--db", str(tmp_path / "h.sqlite"), "--name", "alice",
                      "--password-file", str(tmp_path / "pw")], capsys)
    assert rc == 2 and "12 to" in err
    (tmp_path / "pw").write_text("a long enough passphrase\n")
    rc, out, _ = run(["hotline", "account", "add", "--db", str(tmp_path / "h.sqlite"), "--name", "alice",
                      "--password-file", str(tmp_path / "pw")], capsys)
    assert rc == 0 and "account alice set" in out
    rc, _, err = run(["hotline", "account", "add", "--db", str(tmp_path / "h.sqlite"), "--name", "al/ice",
                      "--password-file", str(tmp_path / "pw")], capsys)
    assert rc == 2 and "invalid" in err


def test_export_per_hotline_in_csv_and_json(tmp_path, capsys, dns):
    net = Network(tmp_path / "net", {"hotline-a": ["NL"], "hotline-b": ["FR"], "hotline-c": ["DE"]})
    db = str(tmp_path / "a.sqlite")
    h = TestHub(net, "hotline-a", db, dns=dns, sources=["hotline-a"])
    h.hub.ingest_report(report(1))                                            # FR: hotline-b's
    h.hub.ingest_report(report(2, device=b"other"))
    h.hub.ingest_report(report(3, host="pics.hosted-in-de.test"))             # DE: hotline-c's
    h.hub.ingest_report(report(4, host="cdn.hosted-in-nl.test", source="hotline-c"))  # NL, C's list
    h.close()
    rc, out, _ = run(["hotline", "export", "--db", db, "--hotline", "hotline-b", "--format", "json"], capsys)
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 1 and set(rows[0]) == set(COLUMNS)
    assert (rows[0]["country"], rows[0]["sightings"], rows[0]["reports"], rows[0]["origins"]) == ("FR", 2, 2, "hotline-a")
    rc, out, _ = run(["hotline", "export", "--db", db, "--hotline", "hotline-c", "--format", "csv"], capsys)
    table = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and tuple(table[0]) == COLUMNS and len(table) == 2             # its country and its list
    assert {t["country"] for t in table} == {"DE", "NL"}
    rc, _, err = run(["hotline", "export", "--db", str(tmp_path / "none.sqlite"), "--hotline", "x"], capsys)
    assert rc == 2 and "does not exist" in err


def test_serve_refuses_a_key_the_directory_does_not_name(tmp_path, capsys):
    net = Network(tmp_path, {"hotline-a": ["NL"], "hotline-b": ["FR"]})
    base = ["hotline", "serve", "--directory", net.directory_file, "--directory-key", net.dir_pub,
            "--db", str(tmp_path / "h.sqlite"), "--peer-listen", "127.0.0.1:0", "--tls-cert", net.cert,
            "--tls-key", net.tls_key, "--duration", "0.1"]
    rc, _, err = run(base + ["--hotline", "hotline-a", "--key", net.keys["hotline-b"]], capsys)
    assert rc == 2 and "not the key the directory names for hotline-a" in err
    rc, _, err = run(base + ["--hotline", "hotline-z", "--key", net.keys["hotline-b"]], capsys)
    assert rc == 2 and "not in the directory" in err
    rc, _, err = run(base + ["--hotline", "hotline-a", "--key", net.keys["hotline-a"], "--review-listen",
                             "0.0.0.0:0"], capsys)
    assert rc == 2 and "not loopback" in err
    rc, _, err = run(base + ["--hotline", "hotline-a", "--key", net.keys["hotline-a"], "--broker",
                             "mqtt://127.0.0.1:1"], capsys)
    assert rc == 2 and "name the list sources" in err              # a collector must know its sources
    rc, out, _ = run(base + ["--hotline", "hotline-a", "--key", net.keys["hotline-a"]], capsys)
    assert rc == 0 and "hub hotline-a stopped" in out


def test_serve_checks_the_allow_list_options_at_start(tmp_path, capsys, caplog):
    """A signing key that cannot sign, or allow options without --allow-dir, stop the hub at start (not at the
    first rejection); a served source without a key is said in the log; sources of --lists are served."""
    from tools.hotline.cli import add_arguments
    from tools.hotline.serve import build_hub
    net = Network(tmp_path, {"hotline-a": ["NL"]})
    base = ["hotline", "serve", "--directory", net.directory_file, "--directory-key", net.dir_pub, "--db",
            str(tmp_path / "h.sqlite"), "--peer-listen", "127.0.0.1:0", "--tls-cert", net.cert, "--tls-key",
            net.tls_key, "--duration", "0.1", "--hotline", "hotline-a", "--key", net.keys["hotline-a"]]
    (tmp_path / "not-a-key").write_text("hello\n")
    rc, _, err = run(base + ["--allow-dir", str(tmp_path / "allow"), "--allow-key",
                             "hotline-a=%s" % (tmp_path / "not-a-key")], capsys)
    assert rc == 2 and "not-a-key" in err
    rc, _, err = run(base + ["--publish-dir", str(tmp_path / "pub")], capsys)
    assert rc == 2 and "need --allow-dir" in err
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "hotline-x+known.v1.gwl").write_bytes(b"")
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(base[1:] + ["--lists", str(tmp_path / "lists"), "--source", "hotline-a", "--allow-dir",
                                    str(tmp_path / "allow"), "--allow-key", "hotline-a=%s" % net.keys["hotline-a"]])
    with caplog.at_level("WARNING"):
        hub, store = build_hub(args)
    store.close()
    assert hub.sources == {"hotline-a", "hotline-x"}
    assert "no --allow-key for source hotline-x" in caplog.text and "source hotline-a" not in caplog.text


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.1:x", "127.0.0.1:99999", ":80", "127.0.0.1:٨٠"])
def test_bad_listen_addresses_are_refused(tmp_path, capsys, listen):
    net = Network(tmp_path, {"hotline-a": ["NL"]})
    rc, _, err = run(["hotline", "serve", "--directory", net.directory_file, "--directory-key", net.dir_pub,
                      "--db", str(tmp_path / "h.sqlite"), "--peer-listen", listen, "--tls-cert", net.cert,
                      "--tls-key", net.tls_key, "--hotline", "hotline-a", "--key", net.keys["hotline-a"]], capsys)
    assert rc == 2 and "HOST:PORT" in err
