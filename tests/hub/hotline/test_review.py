"""The review pages (Flask test client): log-in, CSRF, the queue, decisions, the summary; and what a
rejection writes into the source's allow input. The same pages in a real browser: test_browser.py.
"""
from __future__ import annotations

import re

import pytest

from agent.confirm.wire import Entry
from agent.core.errors import ConfigError
from tests.hub.hotline.hubs import review_hub
from tests.hub.hotline.kit import Network, report
from tools.build import build_list, load_private_key
from tools.hotline.allowfeed import AllowFeed, allow_lines, append_lines
from tools.hotline.review import LOCK_AFTER, LoginGuard, create_app

PASSWORD = "correct horse battery staple"


@pytest.fixture
def setup(tmp_path, dns):
    net = Network(tmp_path / "net", {"hotline-a": ["NL"], "hotline-b": ["FR"]})
    h, feed, calls, known = review_hub(tmp_path, net, dns, PASSWORD)
    app = create_app(h.hub, b"k" * 48, secure_cookies=False)
    app.config["TESTING"] = True
    yield {"hub": h, "app": app, "client": app.test_client(), "feed": feed, "calls": calls, "known": known,
           "tmp": tmp_path}
    h.close()


def token(client, path="/login"):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def login(client, password=PASSWORD, name="alice"):
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token(client)})


def test_wrong_password_and_unknown_account_are_refused(setup):
    c = setup["client"]
    for name, pw in (("alice", "wrong password!"), ("mallory", PASSWORD), ("alice", ""), ("a" * 65, PASSWORD)):
        r = login(c, pw, name)
        assert r.status_code in (400, 401) and ("Wrong account or password" in r.get_data(as_text=True)
                                                 or "too long" in r.get_data(as_text=True))
    assert c.get("/").status_code == 302                     # still not logged in
    assert login(c).status_code == 302 and c.get("/").status_code == 200


def test_repeated_failures_lock_the_account_for_a_while(setup):
    now = [0.0]
    guard = LoginGuard(clock=lambda: now[0])
    app = create_app(setup["hub"].hub, b"k" * 48, secure_cookies=False, guard=guard)
    c = app.test_client()
    for _ in range(LOCK_AFTER):
        assert login(c, "wrong password!").status_code == 401
    r = login(c)                                             # even the right password waits
    assert r.status_code == 429 and "wait a minute" in r.get_data(as_text=True)
    now[0] = 61.0
    assert login(c).status_code == 302


def test_forms_without_a_csrf_token_are_refused_and_change_nothing(setup):
    c, h = setup["client"], setup["hub"]
    h.hub.ingest_report(report(1, host="cdn.hosted-in-nl.test"))
    case = h.store.cases()[0]
    r = c.post("/login", data={"name": "alice", "password": PASSWORD})
    assert r.status_code == 400 and "CSRF token is missing" in r.get_data(as_text=True)
    assert login(c).status_code == 302
    r = c.post("/cases/%s/reject" % case["id"])
    assert r.status_code == 400 and "nothing was changed" in r.get_data(as_text=True)
    r = c.post("/cases/%s/reject" % case["id"], data={"csrf_token": "forged"})
    assert r.status_code == 400
    assert h.store.case(case["id"])["status"] == "new" and setup["calls"] == []


def test_queue_shows_the_case_and_never_an_image(setup):
    c, h = setup["client"], setup["hub"]
    for i, dev in enumerate((b"d1", b"d1", b"d2")):
        h.hub.ingest_report(report(i, host="cdn.hosted-in-nl.test", device=dev))
    login(c)
    page = c.get("/").get_data(as_text=True)
    case = h.store.cases()[0]
    row = re.search(r'<tr id="case-%s".*?</tr>' % case["id"], page, re.S).group(0)
    for text in ("http://cdn.hosted-in-nl.test/k.jpg", "145.100.100.100", "NL", "hotline-a/known", "known-0",
                 ">2<", ">3<", "2027-01-15T08:00:00Z", "hotline-a"):
        assert text in row, text
    assert "<img" not in page.lower() and "<a href=\"http://cdn" not in page     # text only, never fetched
    assert "Reject as false positive" in row and "Confirm, request takedown" in row


def test_reject_writes_the_allow_lines_and_calls_the_builder(setup):
    c, h = setup["client"], setup["hub"]
    h.hub.ingest_report(report(1, host="cdn.hosted-in-nl.test"))
    case = h.store.cases()[0]
    login(c)
    r = c.post("/cases/%s/reject" % case["id"], data={"csrf_token": token(c, "/")}, follow_redirects=True)
    assert r.status_code == 200 and "reject as false positive" in r.get_data(as_text=True)
    assert h.store.case(case["id"])["status"] == "rejected"
    lines = (setup["tmp"] / "allow" / "hotline-a.txt").read_text().splitlines()
    assert "entry,hotline-a/known,known-0" in lines and "sha256,%s" % setup["known"].hex() in lines
    assert setup["calls"] == [(str(setup["tmp"] / "allow" / "hotline-a.txt"), str(setup["tmp"] / "publish"),
                               "hotline-a", setup["feed"].keys["hotline-a"])]
    # a second decision on a closed case is refused, nothing is appended twice
    r = c.post("/cases/%s/reject" % case["id"], data={"csrf_token": token(c, "/")}, follow_redirects=True)
    assert "Not done" in r.get_data(as_text=True) and len(setup["calls"]) == 1


def test_confirm_then_removed_and_the_summary(setup):
    c, h = setup["client"], setup["hub"]
    h.hub.ingest_report(report(1, host="cdn.hosted-in-nl.test"))
    case = h.store.cases()[0]
    login(c)
    assert c.post("/cases/%s/removed" % case["id"], data={"csrf_token": token(c, "/")},
                  follow_redirects=True).status_code == 200
    assert h.store.case(case["id"])["status"] == "new"                            # not yet requested
    for action in ("confirm", "removed"):
        c.post("/cases/%s/%s" % (case["id"], action), data={"csrf_token": token(c, "/")})
    assert h.store.case(case["id"])["status"] == "removed"
    page = c.get("/summary").get_data(as_text=True)
    assert '<svg' in page and ">NL<" in page and "median" in page
    assert c.post("/cases/%s/explode" % case["id"], data={"csrf_token": token(c, "/")}).status_code == 404
    assert c.post("/cases/../etc/reject", data={"csrf_token": token(c, "/")}).status_code == 404


def test_allow_lines_for_each_signal(tmp_path):
    case = {"id": "x", "source": "hl", "list": "p", "entry": "e-1", "signal": "pdq"}
    assert allow_lines(case, None) == ["entry,hl/p,e-1"]
    build_list(source="hl", name="p", signal="pdq", entries=[Entry("e-1", b"\x11" * 32)],
               key=load_private_key(Network(tmp_path / "n", {"hl": ["NL"]}).keys["hl"]), out_dir=str(tmp_path / "l"))
    assert allow_lines(case, str(tmp_path / "l" / "hub"), radius=6) == ["entry,hl/p,e-1", "pdq,%s,6" % ("11" * 32)]
    assert allow_lines(case, str(tmp_path / "l" / "hub"))[1] == "pdq,%s,8" % ("11" * 32)   # the signal's default
    build_list(source="hl", name="n", signal="neural", entries=[Entry("e-2", b"\x22" * 16)],
               key=load_private_key(Network(tmp_path / "n2", {"hl": ["NL"]}).keys["hl"]), out_dir=str(tmp_path / "l"))
    neural = dict(case, list="n", entry="e-2", signal="neural")
    assert allow_lines(neural, str(tmp_path / "l" / "hub")) == ["entry,hl/n,e-2", "neural,%s,4" % ("22" * 16)]
    for bad in (-1, 15, 99, True, "8"):   # 15 would pass for pdq and stop every later build with a neural line
        with pytest.raises(ConfigError, match="allow-radius"):
            AllowFeed(str(tmp_path / "a"), str(tmp_path / "p"), {}, radius=bad)
    with pytest.raises(Exception, match="comma"):
        allow_lines(dict(case, entry="a,b"), None)
    p = tmp_path / "allow.txt"
    assert append_lines(str(p), ["entry,hl/p,e-1"]) == ["entry,hl/p,e-1"]
    assert append_lines(str(p), ["entry,hl/p,e-1", "md5,%s" % ("0" * 32)]) == ["md5,%s" % ("0" * 32)]
    assert p.read_text().count("entry,hl/p,e-1") == 1
