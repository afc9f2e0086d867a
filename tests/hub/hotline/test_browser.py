"""The review pages in a real headless browser (tests/hub/hotline/chromium.py), over an in-process hub
seeded with cases in several countries.

Log in (a wrong password first), see the case in the queue, reject it as a false positive: the allow
input has the lines and the allow list builder was called (the whole way to a device, with real
processes: test_false_positive_e2e.py). Screenshots of the queue and the summary go to
GATEWATCH_SCREENSHOTS (a folder; docs/ for the documentation) or tmp.
"""
from __future__ import annotations

import os

import pytest

from tests.hub.hotline.chromium import browser, click_through, log_in
from tests.hub.hotline.hubs import review_hub
from tests.hub.hotline.kit import Network, report
from tests.waiting import free_port
from tools.hotline.review import create_app
from tools.hotline.serve import Listener
from tools.hotline.store import now_iso

PASSWORD = "correct horse battery staple"


def seed(h, net_store):
    """Cases of A's fleet across countries, some already taken down days after they were opened."""
    plan = [("cdn.hosted-in-nl.test", "k.jpg", 3, None, None), ("cdn.hosted-in-nl.test", "a/2.jpg", 1, 30, 52),
            ("cdn.hosted-in-nl.test", "a/3.jpg", 2, 10, 20), ("img.hosted-in-fr.test", "k.jpg", 4, None, None),
            ("pics.hosted-in-de.test", "p/1.jpg", 2, None, None), ("files.hosted-in-dk.test", "x.jpg", 1, None, None),
            ("unresolvable.test", "u.jpg", 1, None, None)]
    n = 0
    for host, path, devices, takedown_h, removed_h in plan:
        for d in range(devices):
            n += 1
            h.hub.ingest_report(report(n, host=host, path=path, device=b"d%d" % d))
        if removed_h is not None:
            cid = next(c["id"] for c in h.store.cases() if c["url"].endswith("/" + path) and c["host"] == host)
            h.hub.decide(cid, "confirm", "seed")
            h.hub.decide(cid, "removed", "seed")
            # history: opened days ago, taken down and removed hours later
            opened = 1_799_568_000  # 2027-01-10T08:00:00Z
            with h.store.tx() as t:
                t.run("UPDATE cases SET created_at=?, takedown_at=?, removed_at=? WHERE id=?",
                      (now_iso(opened), now_iso(opened + takedown_h * 3600), now_iso(opened + removed_h * 3600), cid))


@pytest.mark.slow
def test_analyst_logs_in_sees_the_case_and_rejects_it_as_a_false_positive(tmp_path, dns, monkeypatch):
    from selenium.webdriver.common.by import By
    monkeypatch.setenv("SE_OFFLINE", "true")          # Selenium Manager must never fetch anything
    net = Network(tmp_path / "net", {"hotline-a": ["NL"], "hotline-b": ["FR"], "hotline-c": ["DE"],
                                     "hotline-d": ["DK"]})
    h, _feed, calls, known = review_hub(tmp_path, net, dns, PASSWORD)
    seed(h, h.store)
    target = next(c for c in h.store.cases() if c["url"] == "http://cdn.hosted-in-nl.test/k.jpg")
    shots = os.environ.get("GATEWATCH_SCREENSHOTS") or str(tmp_path)
    site = Listener(create_app(h.hub, b"s" * 48, secure_cookies=False), "127.0.0.1", free_port(), None,
                    "review").start()
    base = "http://127.0.0.1:%d" % site.port
    drv = browser(tmp_path / "profile")
    try:
        drv.get(base + "/")
        assert "/login" in drv.current_url
        log_in(drv, "alice", "not the password")
        assert "Wrong account or password" in drv.find_element(By.ID, "error").text
        log_in(drv, "alice", PASSWORD)
        row = drv.find_element(By.ID, "case-" + target["id"])
        assert "http://cdn.hosted-in-nl.test/k.jpg" in row.text and "known-0" in row.text and "NL" in row.text
        assert drv.find_elements(By.TAG_NAME, "img") == []
        drv.save_screenshot(os.path.join(shots, "hotline-queue.png"))
        click_through(drv, row.find_element(By.CSS_SELECTOR, "button.act-reject"))
        assert "reject as false positive" in drv.find_element(By.CLASS_NAME, "flash").text
        assert h.store.case(target["id"])["status"] == "rejected"
        assert not drv.find_elements(By.ID, "case-" + target["id"]) or "rejected" in \
            drv.find_element(By.ID, "case-" + target["id"]).text
        lines = (tmp_path / "allow" / "hotline-a.txt").read_text().splitlines()
        assert "entry,hotline-a/known,known-0" in lines and "sha256,%s" % known.hex() in lines
        assert len(calls) == 1 and calls[0][2] == "hotline-a"
        click_through(drv, drv.find_element(By.LINK_TEXT, "Summary"))
        assert drv.find_element(By.ID, "chart").is_displayed()
        assert "NL" in drv.find_element(By.ID, "summary-country").text
        drv.save_screenshot(os.path.join(shots, "hotline-summary.png"))
    finally:
        drv.quit()
        site.stop()
        h.close()
