"""The transparent SNI path for real, in three network namespaces this test creates: a client (curl),
a router (firmware/nftables/names.nft loaded with nft, the agent's TLS splice) and a server (openssl
s_server with a self-signed certificate for benign example names).

A listed name is cut; an unlisted one works end to end, and curl pins the server's own public key, so
any interception would fail the test. QUIC (UDP 443) towards the server is dropped by the same file.
"""

import base64
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.lists.names import read_names
from tests import paths
from tests.intake.tls.test_server import make_cert
from tests.listkit import Hub
from tests.waiting import stop_process, wait_for

ROOT = str(paths.ROOT)
NEEDS = ("ip", "nft", "openssl", "curl")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or any(shutil.which(t) is None for t in NEEDS),
                       reason="needs root and %s (tests/setup/apt-dns.txt)" % ", ".join(NEEDS)),
]
LAN, WAN = "10.213.7", "198.18.7"  # inside the test's own namespaces only


def sh(*argv, check=True, **kw):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60, **kw)


class Namespaces:
    def __init__(self):
        tag = secrets.token_hex(3)
        self.client, self.router, self.server = ("gw%s-%s" % (k, tag) for k in ("c", "r", "s"))
        self.made = []
        for ns in (self.client, self.router, self.server):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            self.run(ns, "ip", "link", "set", "lo", "up")
        # client c0 <-> router br-lan; router wan0 <-> server s0 (names are per namespace)
        sh("ip", "link", "add", "c0", "netns", self.client, "type", "veth", "peer", "name", "br-lan",
           "netns", self.router)
        sh("ip", "link", "add", "wan0", "netns", self.router, "type", "veth", "peer", "name", "s0",
           "netns", self.server)
        for ns, dev, addr in ((self.client, "c0", LAN + ".2/24"), (self.router, "br-lan", LAN + ".1/24"),
                              (self.router, "wan0", WAN + ".1/24"), (self.server, "s0", WAN + ".2/24")):
            self.run(ns, "ip", "addr", "add", addr, "dev", dev)
            self.run(ns, "ip", "link", "set", dev, "up")
        self.run(self.client, "ip", "route", "add", "default", "via", LAN + ".1")
        self.run(self.server, "ip", "route", "add", "default", "via", WAN + ".1")
        self.run(self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def run(self, ns, *argv, check=True):
        return sh("ip", "netns", "exec", ns, *argv, check=check)

    def popen(self, ns, argv, **kw):
        return subprocess.Popen(["ip", "netns", "exec", ns] + list(argv), **kw)

    def remove(self):
        for ns in self.made:
            sh("ip", "netns", "del", ns, check=False)


def pin(cert_path):
    cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def curl(nets, name, cert):
    return nets.run(nets.client, "curl", "-sS", "--max-time", "10", "--cacert", cert, "--pinnedpubkey", pin(cert),
                    "--resolve", "%s:443:%s.2" % (name, WAN), "https://%s/" % name, check=False)


def test_sni_splice_cuts_listed_names_and_passes_the_rest_untouched(tmp_path):
    cert, key, _der = make_cert(tmp_path, ("www.example.org", "listed.example.org", "cdn.listed.example.org"))
    hub = Hub(tmp_path / "hub", source="hotline")
    hub.build(read_names("listed.example.org\n", "domain", "doms"), name="doms", signal="domain", capacity=10)
    nets = Namespaces()
    procs = []
    try:
        nets.run(nets.router, "nft", "-f", os.path.join(ROOT, "firmware", "nftables", "names.nft"))
        server = nets.popen(nets.server, ["openssl", "s_server", "-accept", "443", "-cert", cert, "-key", key,
                                          "-www", "-quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(server)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        agent = nets.popen(nets.router, [sys.executable, "-m", "agent.intake.tls", "--listen", "0.0.0.0:3130",
                                         "--lists", hub.out, "--trust", hub.pub_path, "--reload", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        procs.append(agent)
        assert b"listening on" in agent.stdout.readline()
        wait_for(lambda: nets.run(nets.server, "ss", "-ltn", check=False).stdout.count(":443") > 0, 10)

        ok = curl(nets, "www.example.org", cert)
        assert ok.returncode == 0, ok.stderr  # verified against, and pinned to, the server's own key
        assert "s_server" in ok.stdout or "Ciphers" in ok.stdout  # openssl's -www status page
        for name in ("listed.example.org", "cdn.listed.example.org"):
            cut = curl(nets, name, cert)
            assert cut.returncode != 0 and ("alert" in cut.stderr.lower() or "reset" in cut.stderr.lower()), \
                (name, cut.returncode, cut.stderr)
        # QUIC towards the server is dropped in the router (browsers then use TCP 443)
        nets.run(nets.client, sys.executable, "-c", "import socket; s=socket.socket(socket.AF_INET, "
                 "socket.SOCK_DGRAM); [s.sendto(b'q', ('%s.2', 443)) for _ in range(3)]" % WAN)
        rules = nets.run(nets.router, "nft", "list", "chain", "inet", "gatewatch_names", "forward").stdout
        assert "packets 3" in rules, rules
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        out = ""
        if procs[1:]:
            try:
                out = procs[1].communicate(timeout=10)[0].decode()
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            stop_process(p, 5)
        nets.remove()
    # the agent's own counters: two names cut, one connection spliced; nothing passed unchecked
    assert "'blocked': 2" in out and "'spliced': 1" in out and "'bypassed': 0" in out, out
