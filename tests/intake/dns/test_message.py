"""DNS wire handling without I/O: which queries are looked up, what hostile bytes get, the block answer."""

import struct

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype

from agent.intake.dns.message import BlockAnswer, question_bytes, read_query, reply_matches, servfail


def query(name="www.example.org", rdtype="A", **kw):
    return dns.message.make_query(name, rdtype, **kw)


def rcode_of(wire):
    return struct.unpack_from("!H", wire, 2)[0] & 0xF


def test_a_plain_query_is_looked_up_by_its_name():
    q, err = read_query(query("WWW.Example.ORG").to_wire())
    assert err is None and q.name == b"WWW.Example.ORG" and q.qtype == dns.rdatatype.A


def test_hostile_queries_get_formerr_or_a_clean_drop():
    good = query().to_wire()
    header = good[:12]
    qd1 = header[:4] + struct.pack("!HHHH", 1, 0, 0, 0)
    cases = {
        "empty": (b"", None),
        "short header": (good[:11], None),
        "truncated question": (good[:-3], dns.rcode.FORMERR),
        "compression loop": (qd1 + b"\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR),
        "forward pointer": (qd1 + b"\xc0\x20\x00\x01\x00\x01" + b"\x00" * 20, dns.rcode.FORMERR),
        "huge counts": (header[:4] + struct.pack("!HHHH", 65535, 65535, 65535, 65535) + good[12:], dns.rcode.FORMERR),
        "label over 63": (qd1 + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01", dns.rcode.FORMERR),
        "name over 255": (qd1 + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01", dns.rcode.FORMERR),
        "garbage": (header + b"\xff" * 40, dns.rcode.FORMERR),
        "two questions": (query().to_wire()[:4] + struct.pack("!HHHH", 2, 0, 0, 0) + good[12:] + good[12:],
                          dns.rcode.FORMERR),
        "no question": (header[:4] + struct.pack("!HHHH", 0, 0, 0, 0), dns.rcode.FORMERR),
        "trailing junk": (good + b"junk", dns.rcode.FORMERR),
    }
    for what, (wire, want) in cases.items():
        q, answer = read_query(wire)
        assert q is None, what
        if want is None:
            assert answer is None, what
        else:
            assert answer is not None and rcode_of(answer) == want and answer[:2] == wire[:2], what
            assert struct.unpack_from("!HHHH", answer, 4) == (0, 0, 0, 0), what  # nothing echoed back
    # a response sent to us is never answered (no loops, no reflection)
    response = dns.message.make_response(query()).to_wire()
    assert read_query(response) == (None, None)
    # other opcodes (NOTIFY, UPDATE) are not implemented
    notify = query()
    notify.set_opcode(4)
    q, answer = read_query(notify.to_wire())
    assert q is None and rcode_of(answer) == dns.rcode.NOTIMP


def test_block_answer_nxdomain_with_soa_and_ede():
    q, _ = read_query(query("cdn.blocked.example.org", use_edns=0).to_wire())
    r = dns.message.from_wire(BlockAnswer(ttl=30).answer(q))
    assert r.rcode() == dns.rcode.NXDOMAIN and r.id == q.id and not r.answer
    soa = r.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 30 and soa[0].minimum == 30
    assert any(isinstance(o, dns.edns.EDEOption) and o.code == dns.edns.EDECode.BLOCKED for o in r.options)
    plain = dns.message.from_wire(BlockAnswer().answer(read_query(query("blocked.example.org").to_wire())[0]))
    assert plain.edns < 0  # no EDNS in the answer to a query without it


def test_block_answer_addresses_of_the_block_page():
    block = BlockAnswer(["192.0.2.80", "2001:db8::80"], ttl=60)
    for rdtype, want in (("A", "192.0.2.80"), ("AAAA", "2001:db8::80")):
        r = dns.message.from_wire(block.answer(read_query(query("blocked.example.org", rdtype).to_wire())[0]))
        assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].to_text() == want
    # HTTPS/SVCB, MX, TXT: no data (and so no ECH keys or address hints for a listed name)
    for rdtype in ("HTTPS", "MX", "TXT"):
        r = dns.message.from_wire(block.answer(read_query(query("blocked.example.org", rdtype).to_wire())[0]))
        assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority
    only_v4 = BlockAnswer(["192.0.2.80"])
    r = dns.message.from_wire(only_v4.answer(read_query(query("blocked.example.org", "AAAA").to_wire())[0]))
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


def test_bad_block_settings_are_refused():
    for addresses, ttl in ((["blockpage.example"], 60), (["192.0.2.1"], -1), (["192.0.2.1"], 10 ** 6)):
        try:
            BlockAnswer(addresses, ttl)
        except ValueError:
            continue
        raise AssertionError((addresses, ttl))


def test_replies_must_answer_the_question_asked():
    q = query("www.example.org").to_wire()
    r = dns.message.make_response(dns.message.from_wire(q)).to_wire()
    assert reply_matches(q, r)
    assert reply_matches(q, r[:12] + r[12:].replace(b"www", b"WWW"))  # 0x20 case randomisation
    assert not reply_matches(q, b"\x00\x00" + r[2:])  # another id
    assert not reply_matches(q, q)  # not a response
    other = dns.message.make_response(query("other.example.org")).to_wire()
    assert not reply_matches(q, q[:2] + other[2:])  # the right id, another question
    assert question_bytes(b"\x00" * 12) is None and question_bytes(q[:14]) is None
    assert rcode_of(servfail(q)) == dns.rcode.SERVFAIL and servfail(b"x") is None
