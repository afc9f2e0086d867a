"""CPython-side checks of agent.core.report against the stdlib (hmac, datetime, json)."""
from __future__ import annotations

import datetime
import hashlib
import hmac
import json

from hypothesis import given, settings, strategies as st

from agent.core import report


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2 ** 37))
def test_iso_hour_and_day_match_datetime(t):
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    assert report.iso_hour(t) == dt.strftime("%Y-%m-%dT%H:00:00Z")
    assert report.utc_day(t) == dt.strftime("%Y-%m-%d")


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=2 ** 34))
def test_pseudonym_is_truncated_stdlib_hmac_of_the_day(secret, t):
    day = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")
    want = hmac.new(secret, day.encode(), hashlib.sha256).hexdigest()[:16]
    assert report.device_pseudonym(secret, t) == want


def test_encoding_is_compact_json_with_exactly_the_schema_keys():
    r = report.make_report("hl1", "pdq", 9, "pdq", 12, "case-77", now=1_800_000_000,
                           hosting=report.hosting_from_url("https://h.example/p.png?t=1", "url"),
                           agent_version="0.1.0")
    data = report.encode_report(r)
    obj = json.loads(data)
    assert sorted(obj) == sorted(report.KEYS)
    assert b" " not in data and obj["schema"] == report.SCHEMA_VERSION
    assert obj["hosting"] == {"url": "https://h.example/p.png?t=1"}
    assert obj["device"] is None and obj["region"] is None


def test_error_is_a_gatewatch_value_error():
    from agent.core.errors import GatewatchError
    assert issubclass(report.ReportError, GatewatchError)
    assert issubclass(report.ReportError, ValueError)
