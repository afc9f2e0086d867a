"""Report encoding and validation; runs unchanged under CPython and MicroPython."""

from tests.core import support

report = support.import_core("report")

T = 1795895999  # 2026-11-28T19:59:59Z
SECRET = b"device-secret-for-tests"


def good(**over):
    kw = dict(source="hl1", list_name="sha256", version=3, signal="sha256", distance=0,
              entry="sha256:00112233aabbccdd", hosting={"url": "https://img.example/a.jpg"},
              now=T, device_secret=SECRET, region="DE-BY", agent_version="0.1.0")
    kw.update(over)
    return report.make_report(**kw)


def test_time_is_rounded_down_to_the_hour():
    assert report.iso_hour(T) == "2026-11-28T19:00:00Z"
    assert report.iso_hour(0) == "1970-01-01T00:00:00Z"
    assert report.iso_hour(951782400 + 3599) == "2000-02-29T00:00:00Z"
    assert report.utc_day(T) == "2026-11-28"
    assert good()["time"] == "2026-11-28T19:00:00Z"


def test_pseudonym_rotates_daily_and_is_stable_within_a_day():
    a = report.device_pseudonym(SECRET, T)
    assert len(a) == 16
    assert report.device_pseudonym(SECRET, T - 19 * 3600) == a  # same UTC day
    assert report.device_pseudonym(SECRET, T + 4 * 3600 + 1) != a  # next UTC day
    assert report.device_pseudonym(b"other", T) != a
    assert report.device_pseudonym(None, T) is None
    assert good(device_secret=None)["device"] is None


def test_hmac_matches_rfc4231_case_2():
    mac = report.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert "".join("%02x" % b for b in mac) == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_encode_decode_round_trip():
    r = good()
    data = report.encode_report(r)
    back = report.decode_report(data)
    assert back == r
    assert len(r["id"]) == 32 and r["id"] != good()["id"]


def test_unknown_or_missing_fields_are_refused():
    r = good()
    r["client_ip"] = "192.0.2.7"
    support.raises(report.ReportError, report.validate_report, r)
    r = good()
    del r["agent"]
    support.raises(report.ReportError, report.validate_report, r)
    r = good()
    r["hosting"]["user_agent"] = "x"
    support.raises(report.ReportError, report.validate_report, r)


def test_bad_values_are_refused():
    for field, value in (("schema", 2), ("id", "XYZ"), ("source", "a/b"), ("version", -1),
                         ("signal", "crc32"), ("distance", True), ("time", "2026-11-28T19:05:00Z"),
                         ("device", "abc"), ("entry", ""), ("agent", "a b")):
        r = good()
        r[field] = value
        support.raises(report.ReportError, report.validate_report, r)
    for entry in ("a\nb", "x" * 257, 5):
        r = good()
        r["entry"] = entry
        support.raises(report.ReportError, report.validate_report, r)
    assert good(entry="folder/known image 01.png")["entry"] == "folder/known image 01.png"
    support.raises(report.ReportError, report.decode_report, b"{not json")
    support.raises(report.ReportError, report.decode_report, b"[1]")
    support.raises(report.ReportError, report.decode_report, b" " * 5000)


def test_hosting_modes_strip_user_info_query_and_fragment():
    url = "https://User:Pw@CDN.Example:8443/x/a.jpg?session=abc#frag"
    assert report.hosting_from_url(url, "url") == {"url": "https://cdn.example:8443/x/a.jpg?session=abc"}
    assert report.hosting_from_url(url) == {"url": "https://cdn.example:8443/x/a.jpg"}
    assert report.hosting_from_url(url, "host") == {"host": "cdn.example"}
    assert report.hosting_from_url(url, "none") == {}
    h = report.hosting_from_url("http://h.example", "url", ip="203.0.113.9", country="nl")
    assert h == {"url": "http://h.example/", "ip": "203.0.113.9", "country": "NL"}
    support.raises(report.ReportError, report.hosting_from_url, url, "everything")
    support.raises(report.ReportError, report.hosting_from_url, "ftp://x/y", "url")


def test_local_addresses_never_count_as_hosting_servers():
    for ip in ("192.168.1.20", "10.0.0.5", "172.20.1.1", "127.0.0.1", "169.254.3.3", "100.64.0.1",
               "::1", "fe80::1", "fd00::5", "::ffff:192.168.0.2"):
        assert report.is_local_ip(ip), ip
        assert "ip" not in report.hosting_from_url("http://h.example/", "host", ip=ip)
        support.raises(report.ReportError, good, hosting={"host": "h.example", "ip": ip})
    for ip in ("203.0.113.9", "2001:db8::1", "8.8.8.8"):
        assert not report.is_local_ip(ip), ip
    support.raises(report.ReportError, good, hosting={"url": "https://u:p@h.example/"})
    support.raises(report.ReportError, good, hosting={"url": "https://h.example/", "host": "h.example"})
