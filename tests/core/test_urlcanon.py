"""URL canonicalisation and lookup expressions of the core, against the Safe Browsing documentation's
examples (developers.google.com/safe-browsing, "URLs and Hashing"), plus hostile input.

The table below is our own transcription of the documented examples. Runs unchanged under CPython and
MicroPython (the core has no IDNA table: IDNA is tested with the hook in tests/lists/test_names.py).
"""

from tests.core import support

urlcanon = support.import_core("urlcanon")
errors = support.import_core("errors")

# (input, canonical URL) as the Safe Browsing documentation lists them
DOCUMENTED = [
    ("http://host/%25%32%35", "http://host/%25"),
    ("http://host/%25%32%35%25%32%35", "http://host/%25%25"),
    ("http://host/%2525252525252525", "http://host/%25"),
    ("http://host/asdf%25%32%35asd", "http://host/asdf%25asd"),
    ("http://host/%%%25%32%35asd%%", "http://host/%25%25%25asd%25%25"),
    ("http://www.google.com/", "http://www.google.com/"),
    ("http://%31%36%38%2e%31%38%38%2e%39%39%2e%32%36/%2E%73%65%63%75%72%65/%77%77%77%2E%65%62%61%79%2E%63%6F%6D/",
     "http://168.188.99.26/.secure/www.ebay.com/"),
    ("http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx"
     "=hgplmcx/", "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-"
     "xplmvalidateinfoswqpcmlx=hgplmcx/"),
    ("http://host%23.com/%257Ea%2521b%2540c%2523d%2524e%25f%255E00%252611%252A22%252833%252944_55%252B",
     "http://host%23.com/~a!b@c%23d$e%25f^00&11*22(33)44_55+"),
    ("http://3279880203/blah", "http://195.127.0.11/blah"),
    ("http://www.google.com/blah/..", "http://www.google.com/"),
    ("www.google.com/", "http://www.google.com/"),
    ("www.google.com", "http://www.google.com/"),
    ("http://www.evil.com/blah#frag", "http://www.evil.com/blah"),
    ("http://www.GOOgle.com/", "http://www.google.com/"),
    ("http://www.google.com.../", "http://www.google.com/"),
    ("http://www.google.com/foo\tbar\rbaz\n2", "http://www.google.com/foobarbaz2"),
    ("http://www.google.com/q?", "http://www.google.com/q?"),
    ("http://www.google.com/q?r?", "http://www.google.com/q?r?"),
    ("http://www.google.com/q?r?s", "http://www.google.com/q?r?s"),
    ("http://evil.com/foo#bar#baz", "http://evil.com/foo"),
    ("http://evil.com/foo;", "http://evil.com/foo;"),
    ("http://evil.com/foo?bar;", "http://evil.com/foo?bar;"),
    (b"http://\x01\x80.com/", "http://%01%80.com/"),
    ("http://notrailingslash.com", "http://notrailingslash.com/"),
    ("http://www.gotaport.com:1234/", "http://www.gotaport.com/"),
    ("  http://www.google.com/  ", "http://www.google.com/"),
    ("http:// leadingspace.com/", "http://%20leadingspace.com/"),
    ("http://%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("https://www.securesite.com/", "https://www.securesite.com/"),
    ("http://host.com/ab%23cd", "http://host.com/ab%23cd"),
    ("http://host.com//twoslashes?more//slashes", "http://host.com/twoslashes?more//slashes"),
    # IPv6 (the v5 reference): compressed, IPv4-mapped and NAT64 as IPv4
    ("http://[2001:0db8:0000::1]/", "http://[2001:db8::1]/"),
    ("http://[::ffff:1.2.3.4]/", "http://1.2.3.4/"),
    ("http://[64:ff9b::1.2.3.4]/", "http://1.2.3.4/"),
]

# (URL, the expressions it is looked up under, in any order) from the same documentation
EXPRESSIONS = [
    ("http://a.b.c/1/2.html?param=1", ["a.b.c/1/2.html?param=1", "a.b.c/1/2.html", "a.b.c/", "a.b.c/1/",
                                       "b.c/1/2.html?param=1", "b.c/1/2.html", "b.c/", "b.c/1/"]),
    ("http://a.b.c.d.e.f.g/1.html", ["a.b.c.d.e.f.g/1.html", "a.b.c.d.e.f.g/", "c.d.e.f.g/1.html", "c.d.e.f.g/",
                                     "d.e.f.g/1.html", "d.e.f.g/", "e.f.g/1.html", "e.f.g/", "f.g/1.html", "f.g/"]),
    ("http://1.2.3.4/1/", ["1.2.3.4/1/", "1.2.3.4/"]),
]


def test_documented_canonical_forms():
    for given, want in DOCUMENTED:
        got = urlcanon.canonicalize(given).url()
        assert got == want, "%r: got %r, want %r" % (given, got, want)


def test_documented_expressions():
    for url, want in EXPRESSIONS:
        got = urlcanon.url_expressions(url)
        assert sorted(got) == sorted(want), (url, got)
        assert len(got) == len(set(got))


def test_expressions_most_specific_first_and_bounded():
    got = urlcanon.url_expressions("http://a.b.c.d.e.f.g.h/1/2/3/4/5.html?q=1")
    assert got[0] == "a.b.c.d.e.f.g.h/1/2/3/4/5.html?q=1"
    assert len(got) <= 5 * 6
    assert "d.e.f.g.h/1/2/3/" in got and "g.h/" in got and "h/" not in got  # the TLD alone never


def test_ipv4_spellings_are_one_address():
    for spelling in ("http://0xC37F000B/", "http://0303.0177.0.013/", "http://195.8323083/", "http://195.127.11/",
                     "http://0xc3.0x7f.0.0xb/", "http://195.127.0.11./", "http://195.127.0.11 xx/"):
        assert urlcanon.canonicalize(spelling).host == "195.127.0.11", spelling
    # not addresses: parts too large, bad octal, five parts: names as written
    for name in ("1.300.1.1", "08.1.1.1", "1.2.3.4.5", "0x"):
        assert urlcanon.canonicalize("http://%s/" % name).host == name.lower(), name


def test_names_seen_without_a_url():
    assert urlcanon.canonical_host("WWW.Example.ORG.") == "www.example.org"
    assert urlcanon.canonical_host("%77ww.example..org") == "www.example.org"
    assert urlcanon.name_expressions("a.b.c.example.org") == [
        "a.b.c.example.org/", "b.c.example.org/", "c.example.org/", "example.org/"]
    assert urlcanon.name_expressions("localhost") == ["localhost/"]
    assert urlcanon.domain_expression("*.Example.org") == "example.org/"
    assert urlcanon.digest("example.org/") == urlcanon.digest(b"example.org/")
    assert len(urlcanon.digest("x/")) == 32


def test_percent_encoding_tricks_name_the_same_expression():
    want = urlcanon.url_expressions("http://listed.example.org/dir/page.html")[0]
    for trick in ("http://%6C%69sted.example.org/dir/page.html", "http://LISTED.example.org./dir//page.html",
                  "http://listed.example.org/dir/./x/../page.html", "http://listed.example.org/%2564ir/page.html",
                  "http://user:pw@listed.example.org:8080/dir/page.html#frag", "listed.example.org/dir/page.html",
                  "http://listed.example.org/dir/page.html\n", "HTTP://listed.example.org/d\tir/page.html"):
        assert urlcanon.url_expressions(trick)[0] == want, trick


def test_hostile_inputs_get_a_form_or_a_clear_error():
    support.raises(errors.UrlError, urlcanon.canonicalize, "http://" + "a" * urlcanon.MAX_INPUT)
    support.raises(errors.UrlError, urlcanon.canonicalize, "")
    support.raises(errors.UrlError, urlcanon.canonicalize, "http:///path")
    support.raises(errors.UrlError, urlcanon.canonicalize, "mailto:x@example.org")
    support.raises(errors.UrlError, urlcanon.canonicalize, "javascript:alert(1)")
    support.raises(errors.UrlError, urlcanon.canonicalize, 12)
    support.raises(errors.UrlError, urlcanon.canonical_host, "...")
    e = support.raises(errors.UrlError, urlcanon.canonical_host, "x" * (urlcanon.MAX_INPUT + 1))
    assert "limit" in str(e)
    # long but within the limit: linear work, one escape round, expressions bounded
    deep = "%25" + "25" * 10000
    assert urlcanon.canonicalize("http://h/" + deep).path == "/%25"
    long_path = "http://h/" + "/".join(["seg"] * 3000)
    assert len(urlcanon.url_expressions(long_path)) == 5
    # control bytes, NUL and non-UTF-8 end up escaped, never raw
    c = urlcanon.canonicalize(b"http://h\x00st/\x00\xff\xfe?\x01")
    assert c.url() == "http://h%00st/%00%FF%FE?%01"
    # broken IPv6 literals and brackets: no crash, a host that is not an address
    for host in ("[::1", "[1:2:3:4:5:6:7:8:9]", "[::g]", "[1::2::3]", "[]", "[:]", "[::ffff:1.2.3]"):
        c = urlcanon.canonicalize("http://%s/" % host)
        assert not c.host.startswith("[") or c.host == host.lower(), host
    assert urlcanon.canonicalize("http://[fe80::1%25eth0]:80/").host == "[fe80::1]"


def test_unescape_is_one_pass_with_the_repeated_result():
    assert urlcanon.unescape(b"%2%35") == b"%"
    assert urlcanon.unescape(b"%%41%42") == b"\xab"
    assert urlcanon.unescape(b"%zz%4") == b"%zz%4"
    assert urlcanon.escape(b"a b#%\x7f\x80") == b"a%20b%23%25%7F%80"
