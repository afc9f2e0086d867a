"""Anonymised report encoding of the core (agent/core/report.py); MicroPython-safe.

Checks the schema's privacy promises: exactly the allowed keys, the hour-rounded time, a daily
pseudonym from HMAC-SHA256 (RFC 4231 vectors, since MicroPython has no hmac module), no local
addresses or user info in the hosting part.
"""

from tests.core import support

report = support.import_core("report")

NOW = 1700003723  # 2023-11-14T23:15:23Z


def sample(**kw):
    args = dict(source="demo-hotline", list_name="benign", version=3, signal="pdq", distance=4,
                entry="e-17", hosting={"url": "http://images.example/a.jpg"}, now=NOW,
                device_secret=b"secret", region="DE-BE", agent_version="0.1.0",
                report_id="0123456789abcdef0123456789abcdef")
    args.update(kw)
    return report.make_report(**args)


def test_hmac_sha256_rfc4231():
    mac = report.hmac_sha256(b"\x0b" * 20, b"Hi There")
    assert "".join("%02x" % b for b in mac) == \
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    mac = report.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert "".join("%02x" % b for b in mac) == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    mac = report.hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert "".join("%02x" % b for b in mac) == \
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_time_is_rounded_to_the_hour():
    assert report.iso_hour(NOW) == "2023-11-14T23:00:00Z"
    assert report.iso_hour(0) == "1970-01-01T00:00:00Z"
    assert report.iso_hour(951782400 + 3599) == "2000-02-29T00:00:00Z"  # leap day
    assert report.utc_day(NOW) == "2023-11-14"
    # Past 2038: 32-bit time_t (armhf) and MicroPython's small ints must not break the date.
    assert report.iso_hour(2 ** 31) == "2038-01-19T03:00:00Z"
    assert report.iso_hour(4102444800 + 7200) == "2100-01-01T02:00:00Z"
    assert report.utc_day(2 ** 34) == "2514-05-30"


def test_pseudonym_rotates_daily():
    a = report.device_pseudonym(b"secret", NOW)
    assert a == report.device_pseudonym(b"secret", NOW - 3600)
    assert a != report.device_pseudonym(b"secret", NOW + 86400)
    assert a != report.device_pseudonym(b"other", NOW)
    assert len(a) == 16
    assert report.device_pseudonym(None, NOW) is None
    assert sample(device_secret=None)["device"] is None


def test_report_has_exactly_the_schema_keys():
    r = sample()
    assert sorted(r.keys()) == sorted(report.KEYS)
    assert r["time"] == "2023-11-14T23:00:00Z"
    assert r["hosting"] == {"url": "http://images.example/a.jpg"}


def test_encode_decode_round_trip():
    r = sample()
    data = report.encode_report(r)
    assert isinstance(data, bytes)
    back = report.decode_report(data)
    assert back == r


def test_refuses_extra_or_identifying_fields():
    r = sample()
    for key, value in (("client_ip", "192.0.2.1"), ("user_agent", "x"), ("pdq", "00" * 32)):
        bad = dict(r)
        bad[key] = value
        exc = support.raises(report.ReportError, report.encode_report, bad)
        assert "not allowed" in str(exc)
    bad = dict(r)
    del bad["agent"]
    support.raises(report.ReportError, report.encode_report, bad)
    bad = sample()
    bad["hosting"]["user_agent"] = "x"
    support.raises(report.ReportError, report.validate_report, bad)


def test_bad_values_are_refused():
    for field, value in (("schema", 2), ("id", "XYZ"), ("source", "a/b"), ("version", -1),
                         ("signal", "crc32"), ("distance", True), ("time", "2026-11-28T19:05:00Z"),
                         ("device", "abc"), ("entry", ""), ("agent", "a b")):
        r = sample()
        r[field] = value
        support.raises(report.ReportError, report.validate_report, r)
    for entry in ("a\nb", "x" * 257, 5):
        r = sample()
        r["entry"] = entry
        support.raises(report.ReportError, report.validate_report, r)
    assert sample(entry="folder/known image 01.png")["entry"] == "folder/known image 01.png"
    support.raises(report.ReportError, report.decode_report, b"{not json")
    support.raises(report.ReportError, report.decode_report, b"[1]")
    support.raises(report.ReportError, report.decode_report, b" " * 5000)


def test_local_addresses_never_count_as_hosting_servers():
    for ip in ("192.168.1.20", "10.0.0.5", "172.20.1.1", "127.0.0.1", "169.254.3.3", "100.64.0.1",
               "::1", "fe80::1", "fd00::5", "::ffff:192.168.0.2"):
        assert report.is_local_ip(ip), ip
        assert "ip" not in report.hosting_from_url("http://h.example/", "host", ip=ip)
        support.raises(report.ReportError, sample, hosting={"host": "h.example", "ip": ip})
    for ip in ("203.0.113.9", "2001:db8::1", "8.8.8.8"):
        assert not report.is_local_ip(ip), ip
    support.raises(report.ReportError, sample, hosting={"url": "https://u:p@h.example/"})
    support.raises(report.ReportError, sample, hosting={"url": "https://h.example/", "host": "h.example"})
    r = sample(hosting={"url": "http://a.example/x", "ip": "203.0.113.9", "country": "NL"})
    assert r["hosting"]["ip"] == "203.0.113.9"


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


def test_decode_refuses_garbage():
    for data in (b"", b"\xff\xfe", b"[]", b"{}", b"x" * 5000):
        support.raises(report.ReportError, report.decode_report, data)


def test_report_ids_are_random_hex():
    a, b = report.new_report_id(), report.new_report_id()
    assert a != b and len(a) == 32
