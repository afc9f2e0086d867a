"""The hub store's contract, run over every backend: SQLite (embedded default) and PostgreSQL.

Each test gets an empty database (an SQLite file, or a fresh database in the session's PostgreSQL
cluster), so the same assertions pin the same behaviour on both.
"""
from __future__ import annotations

import pytest

from agent.core.errors import ConfigError
from tools.hotline.cases import case_id
from tools.hotline.store import SqliteHubStore, open_store


def case(url="http://img.hosted-in-fr.test/k.jpg", period="2027-01", responsible="hotline-b"):
    host = url.split("/")[2]
    return {"id": case_id(url, host, period), "period": period, "url": url, "host": host, "ip": "80.67.169.12",
            "country": "FR", "source": "hotline-a", "list": "known", "entry": "known-0", "signal": "sha256",
            "responsible": responsible}


def to(dests):
    return lambda c, counts, *_: [(d, "%s rev %d sightings %d" % (d, c["rev"], counts["hotline-a"]["sightings"]))
                                  for d in dests]


@pytest.fixture
def store(store_db):
    s = open_store(store_db)
    yield s
    s.close()


def test_backend_is_the_one_asked_for(store, store_db):
    assert store.kind == ("postgresql" if store_db.startswith("postgresql://") else "sqlite")


def test_a_report_id_counts_once_and_a_device_once_a_day(store):
    c = case()
    got = [store.ingest("%032x" % i, c, "hotline-a", "2027-01-05", "d1", "2027-01-05T10:00:00Z", to(["hotline-b"]))
           for i in range(50)]  # one device's flood
    assert got[0] == {"case": c["id"], "new_case": True, "new_sighting": True}
    assert all(g == {"case": c["id"], "new_case": False, "new_sighting": False} for g in got[1:])
    assert store.ingest("%032x" % 0, c, "hotline-a", "2027-01-05", "d1", "2027-01-05T10:00:00Z", to([])) is None
    store.ingest("%032x" % 100, c, "hotline-a", "2027-01-05", "d2", "2027-01-05T09:00:00Z", to(["hotline-b"]))
    store.ingest("%032x" % 101, c, "hotline-a", "2027-01-06", "d1", "2027-01-06T13:00:00Z", to(["hotline-b"]))
    got = store.case(c["id"])
    assert (got["sightings"], got["reports"]) == (3, 52)
    assert (got["first_seen"], got["last_seen"]) == ("2027-01-05T09:00:00Z", "2027-01-06T13:00:00Z")
    assert got["status"] == "new" and got["country"] == "FR" and got["origins"] == ["hotline-a"]
    assert store.count_cases() == 1 and store.count_reports() == 52


def test_outbox_holds_the_newest_state_once_per_destination(store):
    c = case()
    for i in range(5):
        store.ingest("%032x" % i, c, "hotline-a", "2027-01-05", "d%d" % i, "2027-01-05T10:00:00Z",
                     to(["hotline-b", "hotline-c"]))
    due = store.outbox_due()
    assert sorted(d["dest"] for d in due) == ["hotline-b", "hotline-c"]
    b = next(d for d in due if d["dest"] == "hotline-b")
    assert b["body"] == "hotline-b rev 5 sightings 5" and b["rev"] == 5
    # a newer state queued while revision 5 was on its way: the ack of 5 must not drop it
    store.ingest("%032x" % 9, c, "hotline-a", "2027-01-05", "d9", "2027-01-05T10:00:00Z", to(["hotline-b"]))
    assert not store.outbox_done("hotline-b", c["id"], 5)
    b = next(d for d in store.outbox_due() if d["dest"] == "hotline-b")
    assert b["rev"] == 6 and store.outbox_done("hotline-b", c["id"], 6)
    assert [d["dest"] for d in store.outbox_due()] == ["hotline-c"]


def test_retry_and_refusal_are_kept(store):
    c = case()
    store.ingest("%032x" % 1, c, "hotline-a", "2027-01-05", "d", "2027-01-05T10:00:00Z", to(["hotline-b", "hotline-c"]))
    store.outbox_retry("hotline-b", c["id"], 1, 4e9, "ConnectionRefusedError")
    store.outbox_refused("hotline-c", c["id"], 1, "HTTP 403: wrong key")
    assert store.outbox_due() == []  # one waits, the other is refused for good
    rows = {o["dest"]: o for o in store.outbox()}
    assert rows["hotline-b"]["attempts"] == 1 and rows["hotline-b"]["last_error"] == "ConnectionRefusedError"
    assert rows["hotline-c"]["refused"] == "HTTP 403: wrong key"
    assert [d["dest"] for d in store.outbox_due(now=4e9 + 1)] == ["hotline-b"]
    # a newer state replaces a refused message and is tried again
    store.ingest("%032x" % 2, c, "hotline-a", "2027-01-05", "d", "2027-01-05T10:00:00Z", to(["hotline-c"]))
    assert [d["dest"] for d in store.outbox_due()] == ["hotline-c"]


def test_received_counts_keep_the_highest_revision(store):
    c = case()
    counts = {"sightings": 3, "reports": 9, "first_seen": "2027-01-05T09:00:00Z", "last_seen": "2027-01-05T11:00:00Z",
              "revision": 9}
    none = lambda *_: []  # noqa: E731
    assert store.receive(c, "hotline-a", counts, None, lambda _c: False, none) == "new"
    assert store.receive(c, "hotline-a", counts, None, lambda _c: False, none) == "same"   # the same message again
    older = dict(counts, sightings=1, reports=1, revision=2)
    assert store.receive(c, "hotline-a", older, None, lambda _c: False, none) == "same"    # late, out of order
    assert store.case(c["id"])["sightings"] == 3
    assert store.receive(c, "hotline-c", dict(counts, sightings=2, reports=2, revision=1), None,
                         lambda _c: False, none) == "updated"
    got = store.case(c["id"])
    assert (got["sightings"], got["reports"], got["origins"]) == (5, 11, ["hotline-a", "hotline-c"])


def test_status_moves_forward_only_and_only_when_allowed(store):
    c = case()
    none = lambda *_: []  # noqa: E731
    status = {"status": "takedown_requested", "takedown_at": "2027-01-05T12:00:00Z", "removed_at": None,
              "rejected_at": None}
    store.receive(c, "hotline-x", None, status, lambda _c: False, none)
    assert store.case(c["id"])["status"] == "new"                      # not allowed: ignored
    store.receive(c, "hotline-b", None, status, lambda _c: True, none)
    got = store.case(c["id"])
    assert (got["status"], got["takedown_at"], got["status_by"]) == ("takedown_requested", "2027-01-05T12:00:00Z",
                                                                      "hotline-b")
    assert store.set_status(c["id"], "new", "hotline-b", none) is None  # never backwards
    done = store.set_status(c["id"], "removed", "hotline-b", to([]))
    assert done["status"] == "removed" and done["removed_at"]
    assert store.set_status(c["id"], "rejected", "hotline-b", none) is None  # terminal stays
    assert store.set_status("0" * 32, "removed", "hotline-b", none) is None


def test_cases_filter_by_status_and_responsible(store):
    a, b = case(), case(url="http://cdn.hosted-in-nl.test/x.jpg", responsible="hotline-a")
    for i, c in enumerate((a, b)):
        store.ingest("%032x" % i, c, "hotline-a", "2027-01-05", "d", "2027-01-05T10:00:00Z", to([]))
    assert {c["id"] for c in store.cases()} == {a["id"], b["id"]}
    assert [c["id"] for c in store.cases(responsible="hotline-a")] == [b["id"]]
    store.set_status(b["id"], "rejected", "hotline-a", to([]))
    assert [c["id"] for c in store.cases(status=["new"])] == [a["id"]]


def test_accounts(store):
    assert store.account_hash("alice") is None
    store.set_account("alice", "$argon2id$x")
    store.set_account("alice", "$argon2id$y")
    assert store.account_hash("alice") == "$argon2id$y"


def test_a_failed_transaction_changes_nothing(store):
    c = case()

    def boom(*_):
        raise RuntimeError("message building failed")
    with pytest.raises(RuntimeError):
        store.ingest("%032x" % 1, c, "hotline-a", "2027-01-05", "d", "2027-01-05T10:00:00Z", boom)
    assert store.count_cases() == 0 and store.count_reports() == 0 and store.outbox() == []
    assert store.ingest("%032x" % 1, c, "hotline-a", "2027-01-05", "d", "2027-01-05T10:00:00Z", to([]))


def test_state_survives_reopening(store_db):
    s = open_store(store_db)
    s.ingest("%032x" % 1, case(), "hotline-a", "2027-01-05", "d", "2027-01-05T10:00:00Z", to(["hotline-b"]))
    s.close()
    s = open_store(store_db)
    try:
        assert s.count_cases() == 1 and len(s.outbox_due()) == 1
    finally:
        s.close()


def test_bad_databases_are_refused_with_a_reason(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        SqliteHubStore(str(tmp_path / "missing" / "hub.sqlite"))
    (tmp_path / "junk").write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match="not a usable hub database"):
        open_store(str(tmp_path / "junk"))
    with pytest.raises(ConfigError, match="cannot connect"):
        open_store("postgresql://nobody@127.0.0.1:1/none")
