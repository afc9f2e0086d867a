"""mqtts:// against a real mosquitto TLS listener: server verification and client certificates."""
from __future__ import annotations

import datetime
import queue

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.mqtt import MqttClient, MqttError, Topics
from tests.brokers import FIRMWARE_CONF, start_mosquitto


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, ca=False, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(folder, name, cert, key):
    c, k = folder / (name + ".crt"), folder / (name + ".key")
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(c), str(k)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throw-away CA, a server certificate for localhost and two device certificates."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("gatewatch test CA", ca_key, "gatewatch test CA", ca_key, ca=True)
    out = {"ca": _write(d, "ca", ca, ca_key)[0]}
    import ipaddress
    srv_key = ec.generate_private_key(ec.SECP256R1())
    out["server"] = _write(d, "server", _cert("localhost", srv_key, "gatewatch test CA", ca_key,
                                              san=[x509.DNSName("localhost"),
                                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           srv_key)
    for dev in ("gw-0003", "gw-0004"):
        k = ec.generate_private_key(ec.SECP256R1())
        out[dev] = _write(d, dev, _cert(dev, k, "gatewatch test CA", ca_key), k)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("other CA", other_key, "other CA", other_key, ca=True)
    out["other_ca"] = _write(d, "other_ca", other, other_key)[0]
    return out


def test_mqtts_verifies_the_server(tmp_path, pki):
    cert, key = pki["server"]
    broker = start_mosquitto(tmp_path, tls={"certfile": cert, "keyfile": key, "cafile": pki["ca"]})
    try:
        assert broker.url.startswith("mqtts://localhost:")
        got = queue.Queue()
        with MqttClient(broker.url, "tls-1", tls={"ca_certs": pki["ca"]}) as c:
            assert c.subscribe("t", got.put).wait(5)
            assert c.publish("t", b"over tls", qos=1).wait(5)
            assert got.get(timeout=5).payload == b"over tls"
        bad = MqttClient(broker.url, "tls-2", tls={"ca_certs": pki["other_ca"]}, reconnect=(1, 1))
        with pytest.raises(MqttError):
            bad.connect(timeout=2)
        bad.stop()
        plain = MqttClient(broker.url.replace("mqtts://", "mqtt://"), "plain", reconnect=(1, 1))
        with pytest.raises(MqttError):
            plain.connect(timeout=2)
        plain.stop()
    finally:
        broker.kill()


def test_client_certificate_identity_drives_the_shipped_acl(tmp_path, pki):
    cert, key = pki["server"]
    broker = start_mosquitto(tmp_path, acl=(FIRMWARE_CONF / "acl").read_text(),
                             tls={"certfile": cert, "keyfile": key, "cafile": pki["ca"],
                                  "require_certificate": True, "use_identity_as_username": True})
    t = Topics()
    try:
        # the certificate's CN is the login (%u in the ACL): each device sees only its own status
        c3, k3 = pki["gw-0003"]
        c4, k4 = pki["gw-0004"]
        got3, got4 = queue.Queue(), queue.Queue()
        with MqttClient(broker.url, "gw-0003", tls={"ca_certs": pki["ca"], "certfile": c3, "keyfile": k3}) as d3, \
                MqttClient(broker.url, "gw-0004", tls={"ca_certs": pki["ca"], "certfile": c4, "keyfile": k4}) as d4:
            # a wildcard subscription is granted, but the broker delivers only what the ACL allows
            assert d3.subscribe(t.status_filter(), got3.put).wait(5)
            assert d4.publish(t.status("gw-0004"), b"mine", qos=1).wait(5)
            assert d4.publish(t.status("gw-0003"), b"forged", qos=1).wait(5)  # acked, dropped
            assert d3.publish(t.status("gw-0003"), b"own", qos=1).wait(5)
            msgs = []
            try:
                while True:
                    msgs.append(got3.get(timeout=1).payload)
            except queue.Empty:
                pass
            assert msgs == [b"own"]  # not device 4's status, not the forged one
        nocert = MqttClient(broker.url, "gw-0005", tls={"ca_certs": pki["ca"]}, reconnect=(1, 1))
        with pytest.raises(MqttError):
            nocert.connect(timeout=2)
        nocert.stop()
        assert got4.empty()
    finally:
        broker.kill()
