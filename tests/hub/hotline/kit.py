"""Helpers for the hotline hub's tests: a network of invented hotlines (keys, a signed directory, TLS),
benign test names and the addresses the shipped country database places in the countries we need.

The addresses are only looked up in the database; nothing is ever sent to them. The test DNS server
(tests/dnsserver.py) maps benign ``.test`` names to them.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.core.report import hosting_from_url, make_report
from tools.build import generate_keys, load_private_key

#: public addresses the shipped database places in these countries (checked by test_geo)
ADDRESS = {"NL": "145.100.100.100", "FR": "80.67.169.12", "DE": "194.25.0.60", "DK": "130.225.254.116"}
#: benign test names -> country they are hosted in (via ADDRESS)
NAMES = {"img.hosted-in-fr.test": "FR", "cdn.hosted-in-nl.test": "NL", "pics.hosted-in-de.test": "DE",
         "files.hosted-in-dk.test": "DK"}


def dns_records():
    """{test name: address} for TestDns."""
    return {n: ADDRESS[c] for n, c in NAMES.items()}


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(folder):
    """A test CA and a server certificate for 127.0.0.1/localhost; returns (ca, cert, key) paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("gatewatch test CA")).issuer_name(_name("gatewatch test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "hub.pem", folder / "hub.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)


class Network:
    """Invented hotlines with keys, a signed directory and one TLS certificate for every hub (loopback)."""

    def __init__(self, folder, members, ports=None):
        """``members``: {hotline id: [countries]}; ``ports``: {hotline id: port} of their hub endpoints."""
        from tools.hotline.directory import build_directory
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dir_key, self.dir_pub = generate_keys(str(self.folder / "keys"), "directory", "network")
        self.keys = {}
        self.ports = dict(ports or {})
        items = []
        for hid, countries in members.items():
            priv, pub = generate_keys(str(self.folder / "keys"), hid, hid)
            self.keys[hid] = priv
            port = self.ports.setdefault(hid, 9)  # 9 (discard): a hub with no endpoint in this test
            items.append({"id": hid, "name": "Example hotline %s (invented, for tests)" % hid,
                          "countries": countries, "key": open(pub).read().strip(),
                          "hub": "https://127.0.0.1:%d" % port})
        self.members_file = self.folder / "members.json"
        self.members_file.write_text(json.dumps({"hotlines": items}, indent=1))
        self.directory_file = str(self.folder / "directory.json")
        self.directory = build_directory(str(self.members_file), load_private_key(self.dir_key), self.directory_file)
        self.ca, self.cert, self.tls_key = make_tls(self.folder / "tls")

    def key(self, hid):
        return load_private_key(self.keys[hid])


def report(i, host="img.hosted-in-fr.test", source="hotline-a", device=b"dev-1", now=1_800_000_000, path=None,
           list_name="known", entry="known-0", signal="sha256"):
    """A valid report as a device of ``source``'s fleet makes it (benign test names only)."""
    url = "http://%s/%s" % (host, path or "k.jpg")
    return make_report(source, list_name, 1, signal, 0, entry, hosting=hosting_from_url(url, "url-noquery"),
                       now=now, device_secret=device, region=None, agent_version="0.1.0",
                       report_id=("%032x" % (i + 1)))


def env_with_root(root):
    """The environment for a subprocess that imports this tree first."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([p for p in (str(root), os.environ.get("PYTHONPATH")) if p]))


# A MaxMind-format country database of our own, for the operator's --geo-db path ---------------------------
def _mmdb_value(v) -> bytes:
    """MaxMind DB data-section encoding of str, (type, int), list of str and dict (the subset we need)."""
    if isinstance(v, str):
        b = v.encode("utf-8")
        assert len(b) < 29
        return bytes([(2 << 5) | len(b)]) + b
    if isinstance(v, tuple):  # (type, value): uint16 (5), uint32 (6), uint64 (9, an extended type)
        kind, n = v
        b = n.to_bytes(8, "big").lstrip(b"\0")
        return (bytes([(kind << 5) | len(b)]) if kind < 8 else bytes([len(b), kind - 7])) + b
    if isinstance(v, list):
        return bytes([len(v), 11 - 7]) + b"".join(_mmdb_value(x) for x in v)   # extended type 11: array
    if isinstance(v, dict):
        assert len(v) < 29
        return bytes([(7 << 5) | len(v)]) + b"".join(_mmdb_value(k) + _mmdb_value(x) for k, x in v.items())
    raise TypeError(v)


def write_mmdb(path, networks):
    """An IPv4 country database (record size 24) placing ``{cidr: country}``; everything else unknown."""
    data, offsets = b"", {}
    for country in sorted(set(networks.values())):
        offsets[country] = len(data)
        data += _mmdb_value({"country": {"iso_code": country}})
    root = [None, None]
    for cidr, country in networks.items():
        net = ipaddress.ip_network(cidr)
        bits = int(net.network_address)
        node = root
        for i in range(net.prefixlen):
            bit = (bits >> (31 - i)) & 1
            if i == net.prefixlen - 1:
                node[bit] = ("data", country)
            else:
                if not isinstance(node[bit], list):
                    node[bit] = [None, None]
                node = node[bit]
    order, queue = [], [root]
    while queue:
        n = queue.pop(0)
        order.append(n)
        queue += [c for c in n if isinstance(c, list)]
    index = {id(n): i for i, n in enumerate(order)}
    count = len(order)

    def record(c):
        if isinstance(c, list):
            return index[id(c)]
        if c is None:
            return count
        return count + 16 + offsets[c[1]]
    tree = b"".join(record(n[0]).to_bytes(3, "big") + record(n[1]).to_bytes(3, "big") for n in order)
    meta = {"node_count": (6, count), "record_size": (5, 24), "ip_version": (5, 4),
            "database_type": "gatewatch-test-Country", "languages": ["en"], "binary_format_major_version": (5, 2),
            "binary_format_minor_version": (5, 0), "build_epoch": (9, 1800000000), "description": {"en": "test"}}
    with open(path, "wb") as f:
        f.write(tree + b"\0" * 16 + data + b"\xab\xcd\xefMaxMind.com" + _mmdb_value(meta))
    return str(path)
