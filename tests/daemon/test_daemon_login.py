"""The daemon's broker logins: user/password under the shipped fleet ACL, and TLS client certificates."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config import defaults
from agent.daemon import Agent
from agent.confirm.wire import Entry
from agent.intake.localapi import LocalApiClient
from agent.mqtt import MqttClient, Topics
from agent.hashing.samples import encode, generate_image
from tests.brokers import Broker, free_port, shipped_fleet_broker
from tests.listkit import Hub, only, wait_for
from tools.collector import Collector, ReportStore
from tools.publish import publish_lists
from tools.confirm_service import ConfirmService
from tests import paths


def _agent_conf(tmp_path, hub, url, client_id, **broker):
    state = tmp_path / ("state-" + client_id)
    (state / "trust").mkdir(parents=True)
    (state / "trust" / "hl1.pub").write_text(open(hub.pub_path).read())
    conf = defaults()
    conf["agent"].update(state_dir=str(state), client_id=client_id, hal="emulated", status_interval=0.5)
    conf["broker"].update(url=url, **broker)
    conf["localapi"]["socket"] = str(tmp_path / ("%s.sock" % client_id))
    return conf


def _run_flow(tmp_path, hub_url_kw, agent_conf, known, hub):
    """Publish, serve, collect as the hub; the agent installs, blocks a known image, reports it."""
    topics = Topics()
    with MqttClient(client_id="hub-pub", **hub_url_kw) as pub:
        publish_lists(pub, topics, only([hub.v1], tmp_path / "pub"), chunk_size=8192)
    hub_client = MqttClient(client_id="hub-main", **hub_url_kw)
    ConfirmService(hub_client, topics, hub.out).start()
    store = ReportStore(str(tmp_path / "reports.sqlite"))
    Collector(hub_client, store, topics).start()
    statuses = []
    hub_client.subscribe(topics.status_filter(), lambda m: statuses.append(json.loads(m.payload)))
    hub_client.connect()
    agent = Agent(agent_conf).start()
    try:
        wait_for(lambda: agent.updater.lists.get("hl1/sha") is not None, 20)
        with LocalApiClient(agent_conf["localapi"]["socket"]) as api:
            d = api.check_bytes(known, url="http://origin.test/k.jpg")
        assert (d["action"], d["reason"]) == ("block", "match-confirmed"), d
        wait_for(lambda: store.count() == 1, 20)
        wait_for(lambda: any(s.get("lists", {}).get("hl1/sha", {}).get("version") == 1 for s in statuses), 20)
        return agent
    finally:
        agent.stop()
        hub_client.stop()
        store.close()


@pytest.fixture
def hub_and_known(tmp_path):
    known = encode(generate_image(501, (256, 192)), "JPEG", 90)
    hub = Hub(tmp_path / "hub")
    hub.v1 = hub.build([Entry("known-a", hashlib.sha256(known).digest())], capacity=50)
    return hub, known


@pytest.mark.slow
def test_password_login_under_the_shipped_acl(tmp_path, hub_and_known):
    hub, known = hub_and_known
    users = {"dev-0001": "device-pw", "gatewatch-hub": "hub-pw"}
    broker = shipped_fleet_broker(tmp_path, users)
    try:
        pwfile = tmp_path / "pw"
        pwfile.write_text("device-pw\n")
        conf = _agent_conf(tmp_path, hub, broker.url, "dev-0001", username="dev-0001", password_file=str(pwfile))
        _run_flow(tmp_path, {"url": broker.url, "username": "gatewatch-hub", "password": "hub-pw"}, conf, known, hub)
        # a wrong password: the agent still starts (fail-open), says why, and never connects
        conf2 = _agent_conf(tmp_path, hub, broker.url, "dev-0002", username="dev-0002", password="nope")
        agent = Agent(conf2).start()
        try:
            time.sleep(1.5)
            st = agent.status()
            assert st["broker"]["connected"] is False and st["broker"]["url"] == broker.url
            assert agent.client.last_connect_error and "refused" in agent.client.last_connect_error
        finally:
            agent.stop()
    finally:
        broker.kill()


# ------------------------------------------------------------------ TLS with client certificates

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, pub, signer, *, ca=False, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(pub)
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(signer, hashes.SHA256())


def make_pki(folder):
    """A throwaway CA, a server certificate for 127.0.0.1 and device/hub client certificates."""
    os.makedirs(folder, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("gatewatch-test-ca", "gatewatch-test-ca", ca_key.public_key(), ca_key, ca=True)
    out = {"ca": os.path.join(folder, "ca.crt")}
    with open(out["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    for name, san in (("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), ("dev-tls1", None),
                      ("gatewatch-hub", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(name if name != "server" else "127.0.0.1", "gatewatch-test-ca", key.public_key(), ca_key, san=san)
        out[name] = (os.path.join(folder, name + ".crt"), os.path.join(folder, name + ".key"))
        with open(out[name][0], "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(out[name][1], "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return out


@pytest.mark.slow
def test_client_certificate_login_over_tls(tmp_path, hub_and_known):
    hub, known = hub_and_known
    pki = make_pki(str(tmp_path / "pki"))
    folder = tmp_path / "tlsbroker"
    (folder / "data").mkdir(parents=True)
    port = free_port()
    acl = tmp_path / "acl"
    with open(str(paths.ROOT / "firmware" / "mosquitto" / "acl")) as f:
        acl.write_text(f.read())
    conf = "\n".join([
        "per_listener_settings false", "allow_anonymous false", "acl_file %s" % acl,
        "listener %d 127.0.0.1" % port, "cafile %s" % pki["ca"], "certfile %s" % pki["server"][0],
        "keyfile %s" % pki["server"][1], "require_certificate true", "use_identity_as_username true",
        "persistence false", "log_dest stderr", "set_tcp_nodelay true"] + (["user root"] if os.geteuid() == 0 else []))
    broker = Broker(folder, port, conf + "\n").start()
    url = "mqtts://127.0.0.1:%d" % port
    try:
        aconf = _agent_conf(tmp_path, hub, url, "dev-tls1", ca=pki["ca"], cert=pki["dev-tls1"][0],
                            key=pki["dev-tls1"][1])
        hub_tls = {"ca_certs": pki["ca"], "certfile": pki["gatewatch-hub"][0], "keyfile": pki["gatewatch-hub"][1]}
        _run_flow(tmp_path, {"url": url, "tls": hub_tls}, aconf, known, hub)
        # without a client certificate the broker refuses the device
        noconf = _agent_conf(tmp_path, hub, url, "dev-tls2", ca=pki["ca"])
        agent = Agent(noconf).start()
        try:
            time.sleep(1.5)
            assert agent.status()["broker"]["connected"] is False
        finally:
            agent.stop()
    finally:
        broker.kill()
