"""A local test resolver on loopback: answers every A question with one fixed benign address (TEST-NET-3)
and AAAA with one documentation address, counting the questions it saw. Used as the "upstream" of the
forwarder and of dnsmasq in tests and in bench/bench_dns.py; it never leaves loopback.

    python -m tests.intake.dns.upstream --port 0     # prints "listening on 127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import struct
import sys

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

ADDRESS_V4 = "203.0.113.7"
ADDRESS_V6 = "2001:db8::7"


class Zone:
    """Answers for every name: A -> ADDRESS_V4, AAAA -> ADDRESS_V6, others no data; 'nx.*' NXDOMAIN."""

    def __init__(self):
        self.seen = collections.Counter()

    def answer(self, wire: bytes) -> bytes:
        q = dns.message.from_wire(wire)
        name = q.question[0].name
        self.seen[name.to_text(omit_final_dot=True).lower()] += 1
        r = dns.message.make_response(q, recursion_available=True)
        if name.labels[0].lower() == b"nx":
            r.set_rcode(dns.rcode.NXDOMAIN)
        elif q.question[0].rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(name, 300, "IN", "A", ADDRESS_V4))
        elif q.question[0].rdtype == dns.rdatatype.AAAA:
            r.answer.append(dns.rrset.from_text(name, 300, "IN", "AAAA", ADDRESS_V6))
        return r.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone):
        self.zone = zone

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            self.transport.sendto(self.zone.answer(data), addr)
        except Exception:
            pass


async def serve(zone: Zone, host: str, port: int, ready=None):
    loop = asyncio.get_running_loop()

    async def tcp(reader, writer):
        try:
            while True:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
                out = zone.answer(await reader.readexactly(n))
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except Exception:
            writer.close()

    for attempt in range(20):  # UDP picks a free port; TCP must get the same number (it may be taken)
        udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(zone), local_addr=(host, port))
        try:
            server = await asyncio.start_server(tcp, host, udp.get_extra_info("sockname")[1])
            break
        except OSError:
            udp.close()
            if port or attempt == 19:
                raise
    port = udp.get_extra_info("sockname")[1]
    if ready is not None:
        ready(port)
    async with server:
        await asyncio.Event().wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    zone = Zone()

    def ready(port):
        print("listening on %s:%d" % (a.host, port), flush=True)
    try:
        asyncio.run(serve(zone, a.host, a.port, ready))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
