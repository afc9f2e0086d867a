"""The TLS splice in-process on loopback (the original destination given by the test instead of netfilter):
a listed server name is cut with an alert, an unlisted one reaches the real server, whose own certificate
the client sees; what cannot be checked passes, counted."""

import datetime
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.intake.tls.server import TlsLimits, TlsSpliceServer
from tests.intake.dns.conftest import NameInspector
from tests.intake.icap.support import LoopThread
from tests.intake.tls.hellos import built_hello, sni_ext

NAMES = ("www.example.org", "listed.example.org")


def make_cert(tmp_path, names=NAMES):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path), cert.public_bytes(serialization.Encoding.DER)


class EchoTls:
    """A TLS server on loopback that echoes one line per connection."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(conn,), daemon=True).start()

    def one(self, conn):
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                line = tls.recv(1024)
                self.seen.append(line)
                tls.sendall(b"echo " + line)
        except (OSError, ssl.SSLError):
            conn.close()

    def stop(self):
        self.sock.close()


@pytest.fixture
def rig(tmp_path):
    cert, key, der = make_cert(tmp_path)
    origin = EchoTls(cert, key)
    inspector = NameInspector(listed=(b"listed.example.org",))
    splice = LoopThread(TlsSpliceServer(inspector, allow_loopback_upstream=True,
                                        limits=TlsLimits(hello_timeout=1.0),
                                        destination=lambda sock: ("127.0.0.1", origin.port)))
    yield splice, origin, cert, der
    splice.stop()
    origin.stop()


def tls_client(port, name, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname=name)


def test_unlisted_name_reaches_the_server_with_its_own_certificate(rig):
    splice, origin, cert, der = rig
    with tls_client(splice.port, "www.example.org", cert) as tls:
        assert tls.getpeercert(binary_form=True) == der  # no interception: the server's own certificate
        tls.sendall(b"hello\n")
        assert tls.recv(100) == b"echo hello\n"
    assert splice.server.stats["spliced"] == 1 and splice.server.inspector.asked == [b"www.example.org"]


def test_listed_name_is_cut_with_an_alert_and_never_reaches_the_server(rig):
    splice, origin, cert, der = rig
    with pytest.raises(ssl.SSLError, match="ACCESS_DENIED|access denied"):
        tls_client(splice.port, "Deep.Listed.Example.org", cert)
    assert splice.server.stats["blocked"] == 1 and origin.seen == []


def test_what_cannot_be_checked_passes_counted(rig):
    splice, origin, cert, der = rig
    # not TLS: relayed as it is (the origin's TLS stack then refuses it)
    s = socket.create_connection(("127.0.0.1", splice.port), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    s.recv(100)
    s.close()
    # no server name: relayed
    s = socket.create_connection(("127.0.0.1", splice.port), timeout=5)
    s.sendall(built_hello(b""))
    s.close()
    # a malformed hello: relayed
    s = socket.create_connection(("127.0.0.1", splice.port), timeout=5)
    s.sendall(built_hello(sni_ext(b"a.example", b"b.example")))
    s.close()
    from tests.waiting import wait_for
    wait_for(lambda: splice.server.stats["bypassed"] == 3)
    st = splice.server.stats
    assert (st["not_tls"], st["no_sni"], st["malformed"]) == (1, 1, 1)


def test_a_silent_client_is_dropped_after_the_hello_timeout_and_service_goes_on(rig):
    splice, origin, cert, der = rig
    idle = socket.create_connection(("127.0.0.1", splice.port), timeout=5)
    idle.sendall(b"\x16\x03\x01")  # a record head, then nothing
    assert idle.recv(10) == b""  # closed after hello_timeout
    idle.close()
    assert splice.server.stats["hello_timeouts"] == 1
    with tls_client(splice.port, "www.example.org", cert) as tls:
        tls.sendall(b"x\n")
        assert tls.recv(100) == b"echo x\n"


def test_a_connection_to_the_splice_itself_is_refused(tmp_path):
    box = {}
    server = TlsSpliceServer(NameInspector(), destination=lambda sock: ("127.0.0.1", box["port"]))
    lt = LoopThread(server)
    box["port"] = lt.port
    try:
        s = socket.create_connection(("127.0.0.1", lt.port), timeout=5)
        assert s.recv(10) == b""
        s.close()
        assert server.stats["refused_upstreams"] == 1
    finally:
        lt.stop()
