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


def test_refuses_local_hosting_ip_and_user_info():
    support.raises(report.ReportError, sample, hosting={"url": "http://a.example/x", "ip": "192.168.1.20"})
    support.raises(report.ReportError, sample, hosting={"url": "http://a.example/x", "ip": "fd00::1"})
    support.raises(report.ReportError, sample, hosting={"url": "http://user:pw@a.example/x"})
    r = sample(hosting={"url": "http://a.example/x", "ip": "203.0.113.9", "country": "NL"})
    assert r["hosting"]["ip"] == "203.0.113.9"


def test_hosting_modes_strip_what_they_should():
    h = report.hosting_from_url("http://u:p@Images.Example:8080/a.jpg?session=1#frag", mode="url-noquery")
    assert "session" not in h["url"] and "u:p" not in h["url"] and "frag" not in h["url"]
    assert report.hosting_from_url("http://Images.Example:8080/a.jpg", mode="host") == {"host": "images.example"}
    assert report.hosting_from_url("http://a.example/x", mode="none") == {}
    support.raises(report.ReportError, report.hosting_from_url, "http://a.example/", "everything")


def test_decode_refuses_garbage():
    for data in (b"", b"\xff\xfe", b"[]", b"{}", b"x" * 5000):
        support.raises(report.ReportError, report.decode_report, data)


def test_report_ids_are_random_hex():
    a, b = report.new_report_id(), report.new_report_id()
    assert a != b and len(a) == 32
