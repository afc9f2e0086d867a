"""DNS messages for the forwarder, with no I/O: which queries to look up, the block answer, reply checks.

Owns: reading a query from untrusted bytes (dnspython parses it: it refuses compression loops and
forward pointers, counts that run past the message, bad labels; anything it refuses gets a FORMERR
built from the 12-byte header alone, or a silent drop when even that is missing or the bytes are a
response), the answer for a listed name (NXDOMAIN, or the configured block-page addresses for A/AAAA
and no data for other types, with an SOA so that dnsmasq caches it for the block TTL, and the
Extended DNS Error "Blocked" when the query spoke EDNS), and checking that an upstream reply answers
the very question asked. Must not touch: sockets, the event loop, lists or policy.

Why dnspython: a well-kept DNS library that is careful with hostile wire data, packaged for OpenWrt
(python3-dns). Forwarded queries and their replies are never re-encoded: the bytes pass unchanged.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple, Optional, Sequence, Tuple

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

HEADER = 12
MAX_MESSAGE = 65535
_QR = 0x8000


class Query(NamedTuple):
    """A query worth looking up: its one question, and the parsed message for building an answer."""

    id: int
    name: bytes  # labels joined by '.', no root: what agent.core.urlcanon canonicalises
    qtype: int
    message: object  # dns.message.Message


def _error_from_header(wire: bytes, rcode: int) -> Optional[bytes]:
    """A bare error answer (no sections) echoing the query's id, opcode and RD; None when no header."""
    if len(wire) < HEADER:
        return None
    qid, flags = struct.unpack_from("!HH", wire, 0)
    if flags & _QR:
        return None  # a response sent to us: never answer (no loops, no reflection)
    flags = _QR | (flags & 0x7800) | (flags & 0x0100) | 0x0080 | (rcode & 0xF)  # opcode, RD, RA
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)


def read_query(wire: bytes) -> Tuple[Optional[Query], Optional[bytes]]:
    """(query, None) to look up; (None, answer) for a query we answer with an error; (None, None) to drop.

    Never raises: every refusal of the parser becomes FORMERR (the sender gets an answer and stops
    retrying), a non-QUERY opcode NOTIMP, a query with other than one question FORMERR.
    """
    if len(wire) < HEADER or len(wire) > MAX_MESSAGE:
        return None, None
    if struct.unpack_from("!H", wire, 2)[0] & _QR:
        return None, None
    try:
        msg = dns.message.from_wire(wire)
    except Exception:  # dnspython's refusals (FormError, BadPointer, ...) and anything unexpected
        return None, _error_from_header(wire, dns.rcode.FORMERR)
    if msg.opcode() != dns.opcode.QUERY:
        return None, _error_from_header(wire, dns.rcode.NOTIMP)
    if len(msg.question) != 1:
        return None, _error_from_header(wire, dns.rcode.FORMERR)
    q = msg.question[0]
    labels = [bytes(label) for label in q.name.labels if label]
    return Query(msg.id, b".".join(labels), int(q.rdtype), msg), None


class BlockAnswer:
    """How a listed name is answered: NXDOMAIN (no addresses), or the block page's addresses."""

    def __init__(self, addresses: Sequence[str] = (), ttl: int = 60):
        self.v4, self.v6 = [], []
        for a in addresses:
            ip = ipaddress.ip_address(str(a).strip())  # ValueError: the caller says which setting
            (self.v4 if ip.version == 4 else self.v6).append(str(ip))
        if not 0 <= int(ttl) <= 86400:
            raise ValueError("block TTL must be 0..86400 seconds")
        self.ttl = int(ttl)

    def answer(self, query: Query) -> bytes:
        """The wire answer to ``query`` for a listed name."""
        msg = query.message
        res = dns.message.make_response(msg, recursion_available=True)
        res.flags |= dns.flags.AA  # we speak for this name: dnsmasq and stubs take it as final
        name = msg.question[0].name
        rdclass = msg.question[0].rdclass
        addresses = self.v4 if query.qtype == dns.rdatatype.A else self.v6 if query.qtype == dns.rdatatype.AAAA else []
        if not self.v4 and not self.v6:
            res.set_rcode(dns.rcode.NXDOMAIN)
        elif addresses and rdclass == dns.rdataclass.IN:
            res.answer.append(dns.rrset.from_text(name, self.ttl, "IN", dns.rdatatype.to_text(query.qtype),
                                                  *addresses))
        if not res.answer:
            # negative answers carry an SOA whose minimum is the block TTL (RFC 2308): caches keep it that long
            res.authority.append(dns.rrset.from_text(
                name, self.ttl, "IN", "SOA", "gatewatch.invalid. nobody.invalid. 1 %d %d %d %d"
                % (self.ttl, self.ttl, self.ttl, self.ttl)))
        if msg.edns >= 0:
            res.use_edns(0, payload=1232, options=[dns.edns.EDEOption(dns.edns.EDECode.BLOCKED, "gatewatch")])
        return res.to_wire()


def servfail(query_wire: bytes) -> Optional[bytes]:
    """SERVFAIL for a query no upstream answered (dnsmasq then tries its next server)."""
    return _error_from_header(query_wire, dns.rcode.SERVFAIL)


def question_bytes(wire: bytes) -> Optional[bytes]:
    """The question section of a message with one question, lower-cased; None if it is not plain.

    Bounded: labels of at most 63 bytes, a name of at most 255, no compression pointer (a question
    name comes first in a message: there is nothing before it to point to).
    """
    if len(wire) < HEADER or struct.unpack_from("!H", wire, 4)[0] != 1:
        return None
    i = HEADER
    while True:
        if i >= len(wire):
            return None
        n = wire[i]
        if n == 0:
            i += 1
            break
        if n > 63 or i + 1 + n > len(wire) or i - HEADER > 255:
            return None
        i += 1 + n
    if i + 4 > len(wire):
        return None
    return wire[HEADER:i].lower() + wire[i:i + 4]  # names compare case-blind (0x20 randomisation)


def reply_matches(query_wire: bytes, reply: bytes) -> bool:
    """Whether ``reply`` is a response to ``query_wire``: same id, QR set, the same question."""
    if len(reply) < HEADER or reply[:2] != query_wire[:2] or not struct.unpack_from("!H", reply, 2)[0] & _QR:
        return False
    q = question_bytes(query_wire)
    return q is not None and q == question_bytes(reply)
