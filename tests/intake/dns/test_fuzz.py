"""Fuzzing the DNS forwarder: mutated queries in memory (tests/intake/dns/fuzz.py), then over UDP and TCP to
a live forwarder, which must still answer a valid query afterwards. Longer runs: bench/fuzz_names.py."""

import random
import socket
import struct

import dns.exception
import dns.message
import dns.query

from tests.intake.dns import fuzz


def test_mutated_queries_in_memory_never_raise():
    counts = fuzz.run(6000, seed=14)
    # every outcome occurs: the mutations reach the parser's refusals and its acceptances alike
    assert all(counts[k] > 100 for k in ("lookup", "error", "drop")), counts


def test_mutated_queries_over_sockets_leave_the_forwarder_serving(forwarder):
    fw = forwarder()
    rng = random.Random(3)
    base = fuzz.seeds()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(600):
        udp.sendto(fuzz.mutate(rng, rng.choice(base)), ("127.0.0.1", fw.port))
    udp.close()
    for _ in range(20):
        tcp = socket.create_connection(("127.0.0.1", fw.port))
        for _ in range(5):
            m = fuzz.mutate(rng, rng.choice(base))
            tcp.sendall(struct.pack("!H", len(m)) + m)
        tcp.close()
    # the flood overflowed the socket's receive buffer (the kernel drops datagrams then): retry as stubs do
    q = dns.message.make_query("www.example.org", "A")
    for attempt in range(10):
        try:
            r = dns.query.udp(q, "127.0.0.1", port=fw.port, timeout=1)
            break
        except dns.exception.Timeout:
            continue
    assert r.answer[0][0].to_text() == "203.0.113.7"
    r = dns.query.tcp(q, "127.0.0.1", port=fw.port, timeout=5)
    assert r.answer[0][0].to_text() == "203.0.113.7"
    assert fw.server.stats["error_answers"] > 0
