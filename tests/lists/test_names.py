"""url and domain lists: entries from text, IDNA, building, deltas, lookups through the scanner, the
confirmation and the policy, and what a report of a name hit carries.

Every URL and name here is a benign example under example.org / example.net / .example.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from agent.confirm.sealed import EXACT_BAND
from agent.action import Action
from agent.confirm.wire import EntryIndex
from agent.core import urlcanon
from agent.core.delta import apply
from agent.core.errors import ConfigError
from agent.core.report import decode_report
from agent.lists import names
from agent.lists.store import load_folder
from agent.matching.scanner import Scanner
from agent.policy import Policy, PolicyInspector, PolicySettings
from tests import paths
from tests.listkit import Hub
from tools import delta as hub_delta

ROOT = str(paths.ROOT)


def _naive_unescape(data: bytes) -> bytes:
    """The documented rule literally: unescape the whole string until nothing changes."""
    while True:
        out, i = bytearray(), 0
        while i < len(data):
            if data[i] == 37 and i + 2 < len(data) + 0 and all(chr(c) in "0123456789abcdefABCDEF"
                                                               for c in data[i + 1:i + 3]) and i + 3 <= len(data):
                out.append(int(data[i + 1:i + 3], 16))
                i += 3
            else:
                out.append(data[i])
                i += 1
        if bytes(out) == data:
            return data
        data = bytes(out)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"%", b"2", b"5", b"3", b"a", b"F", b"%25", b"%32", b"x"]), max_size=24))
def test_one_pass_unescape_equals_repeated_unescape(parts):
    data = b"".join(parts)
    assert urlcanon.unescape(data) == _naive_unescape(data)


def test_idna_unicode_and_a_label_are_one_entry():
    a = names.url_lookups("http://Bücher.example/katalog/")[0]
    b = names.url_lookups("http://xn--bcher-kva.example/katalog/")[0]
    c = names.url_lookups("http://bücher\u3002example/katalog/")[0]  # ideographic full stop (UTS #46)
    assert a == b == c and a[0] == "xn--bcher-kva.example/katalog/"
    assert names.name_lookups("WWW.BÜCHER.example.")[-1][0] == "xn--bcher-kva.example/"


def test_invalid_idna_is_deterministic_and_never_raises():
    for bad in ("http://😀.example/", "http://xn--zz.example/", "http://a\u0301\u0301.example/",
                b"http://\xc3\x28.example/", "http://\u200d.example/"):
        first = names.url_lookups(bad)
        assert first == names.url_lookups(bad) and first[0][0].isascii(), bad
    # a label IDNA refuses stays itself: it never turns into another (listed) name
    assert names.url_lookups("http://😀.example/")[0][0] == "%F0%9F%98%80.example/"


def test_read_names_lines_comments_duplicates_and_errors():
    entries = names.read_names("# benign examples\n\nhttp://Listed.example.org/a/\nlisted.example.org/a/\n"
                               "http://listed.example.org/b?x=1#frag\n", "url", "urls.txt")
    assert [e.id for e in entries] == ["listed.example.org/a/", "listed.example.org/b?x=1"]
    assert entries[0].hash == urlcanon.digest("listed.example.org/a/")
    doms = names.read_names("Blocked.Example.org.\n*.wild.example\nhttp://host.example.net/path\n", "domain", "d")
    assert [e.id for e in doms] == ["blocked.example.org/", "wild.example/", "host.example.net/"]
    for text, signal, words in (("http://ok.example/\nmailto:x@example.org\n", "url", "line 2"),
                                ("192.0.2.7\n", "domain", "not a domain name"),
                                ("...\n", "domain", "line 1")):
        with pytest.raises(ConfigError, match=words):
            names.read_names(text, signal, "in.txt")
    long = names.read_names("http://long.example/" + "a" * 500, "url", "x")[0]
    assert len(long.id) <= names.MAX_ENTRY_ID and long.hash == urlcanon.digest("long.example/" + "a" * 500)


def hub_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tools.hub_cli"] + list(args), capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=env)


def test_lists_build_reads_a_text_file_of_urls(tmp_path):
    hub = Hub(tmp_path / "hub", source="hl")
    (tmp_path / "urls.txt").write_text("http://listed.example.org/dir/\n")
    r = hub_cli("lists", "build", "--source", "hl", "--list", "urls", "--signal", "url", "--input",
                str(tmp_path / "urls.txt"), "--key", hub.key_path, "--out", hub.out)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["entries"] == 1
    with open(out["hub_entries"]) as f:
        doc = json.load(f)
    assert doc["signal"] == "url" and doc["entries"][0]["id"] == "listed.example.org/dir/"
    r = hub_cli("lists", "inspect", out["device_list"])
    assert json.loads(r.stdout)["manifest"]["signal"] == "url"
    # a folder is no input for names; an empty file says what it expected
    r = hub_cli("lists", "build", "--source", "hl", "--list", "d", "--signal", "domain", "--input", str(tmp_path),
                "--key", hub.key_path, "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "text file" in r.stderr
    (tmp_path / "empty.txt").write_text("# nothing\n")
    r = hub_cli("lists", "build", "--source", "hl", "--list", "d", "--signal", "domain", "--input",
                str(tmp_path / "empty.txt"), "--key", hub.key_path, "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "holds no domain name" in r.stderr


def _build(hub, signal, lines, name, version=None):
    entries = names.read_names("\n".join(lines), signal, name)
    return hub.build(entries, name=name, signal=signal, version=version, capacity=100)


def test_a_delta_moves_a_url_list_to_its_next_version(tmp_path):
    hub = Hub(tmp_path / "hub", source="hl")
    v1 = _build(hub, "url", ["http://one.example.org/"], "urls")
    v2 = _build(hub, "url", ["http://one.example.org/", "http://two.example.org/x/"], "urls")
    old, new = open(v1, "rb").read(), open(v2, "rb").read()
    d = hub_delta.encode(old, new)
    assert len(d) < len(new) and apply(old, d) == new
    lists = load_folder(os.path.dirname(v2), hub.trust()).lists
    scanner = Scanner(list(lists.values()))
    assert scanner.lookup_url("http://two.example.org/x/y.html")[0].verdict == "match"


@pytest.fixture
def lookup_stack(tmp_path):
    hub = Hub(tmp_path / "hub", source="hl")
    _build(hub, "url", ["http://listed.example.org/dir/", "http://deep.example.net/a/b.html?id=7"], "urls")
    _build(hub, "domain", ["blocked.example.org"], "doms")
    lists = load_folder(hub.out, hub.trust()).lists
    return Scanner(list(lists.values())), EntryIndex.load_dir(hub.out)


def test_lookups_hit_like_exact_digests_and_confirm_by_equality(lookup_stack):
    scanner, hub = lookup_stack
    (r,) = scanner.lookup_url("http://LISTED.example.org/dir/sub/page.html?s=1")
    assert r.verdict == "match" and r.hits[0].list.signal == "url"
    assert r.hits[0].probes == ((EXACT_BAND, urlcanon.digest("listed.example.org/dir/")),)
    assert r.digests["url"] == urlcanon.digest("listed.example.org/dir/")
    assert scanner.confirm(r, hub).best.entry_id == "listed.example.org/dir/"
    assert scanner.lookup_url("http://deep.example.net/a/b.html?id=8")[0].verdict == "clean"
    assert scanner.lookup_url("http://listed.example.org/other/")[0].verdict == "clean"
    # domain lists answer for every subdomain, in URLs and for names alone
    assert scanner.lookup_url("http://a.b.blocked.example.org/any")[0].hits[0].list.signal == "domain"
    (d,) = scanner.lookup_domain("CDN.Blocked.Example.ORG.")
    assert scanner.confirm(d, hub).best.entry_id == "blocked.example.org/"
    assert scanner.lookup_domain("listed.example.org")[0].verdict == "clean"  # url lists are not domains
    assert scanner.lookup_url("mailto:x")[0].verdict == "error"
    assert scanner.lookup_domain("")[0].verdict == "error"


def test_policy_blocks_and_reports_name_hits_with_the_host_only(lookup_stack, tmp_path):
    scanner, hub = lookup_stack
    reports = []

    class Spool:
        def put(self, rid, data):
            reports.append(decode_report(data))

    action = Action(spool=Spool(), hosting="url-noquery")
    confirmer = lambda result: {h.list.ident: hub[h.list.ident] for h in result.hits}  # noqa: E731
    policy = Policy(PolicySettings(), confirmer, scanner.confirm, action.report)
    inspector = PolicyInspector(lambda: scanner, policy)
    d = inspector.inspect_url("http://listed.example.org/dir/p.html?session=secret")
    assert d.action == "block" and d.reason == "match-confirmed"
    assert reports[-1]["hosting"] == {"url": "http://listed.example.org/dir/p.html"}  # the query stays home
    assert reports[-1]["signal"] == "url" and reports[-1]["entry"] == "listed.example.org/dir/"
    d = inspector.inspect_name("Www.Blocked.Example.Org.")
    assert d.action == "block"
    assert reports[-1]["hosting"] == {"host": "www.blocked.example.org"} and reports[-1]["signal"] == "domain"
    assert inspector.inspect_name("example.org").action == "allow"
    assert len(reports) == 2
    # the quick answer (no thread, no hub) exists only for names nothing lists
    assert inspector.inspect_name_fast("www.example.org").action == "allow"
    assert inspector.inspect_name_fast("blocked.example.org") is None
    assert inspector.inspect_url_fast("http://listed.example.org/dir/") is None
    assert len(reports) == 2
    # hub unreachable: an exact name hit still blocks, and nothing is reported
    offline = PolicyInspector(lambda: scanner, Policy(PolicySettings(), lambda r: {}, scanner.confirm,
                                                      action.report))
    assert offline.inspect_name("blocked.example.org").reason == "match-unconfirmed" and len(reports) == 2


def test_a_refuted_specific_hit_does_not_hide_a_listed_prefix(lookup_stack):
    scanner, hub = lookup_stack
    seen = []

    def confirmer(result):
        seen.append(result.digests)
        # the hub knows nothing behind the most specific expression (a Bloom false positive, staged
        # here by asking about an unrelated digest first): refuted; the next result is the listed one
        return {h.list.ident: hub[h.list.ident] for h in result.hits}

    policy = Policy(PolicySettings(), confirmer, scanner.confirm, None)
    fake = scanner.lookup_url("http://listed.example.org/dir/x")[0]
    forged = fake._replace(digests={"url": urlcanon.digest("listed.example.org/dir/x")})

    class Staged:
        lists = scanner.lists

        def lookup_url(self, url):
            return (forged,) + scanner.lookup_url(url)

    d = PolicyInspector(lambda: Staged(), policy).inspect_url("http://listed.example.org/dir/x")
    assert d.action == "block" and policy.counters.refuted == 1 and len(seen) == 2
