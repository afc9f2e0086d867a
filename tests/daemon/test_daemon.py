"""The agent daemon: configuration, and `gatewatch run` as a real process against mosquitto."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from agent.config import SETTINGS, defaults, load_config
from agent.core.errors import ConfigError
from agent.confirm.wire import Entry
from agent.intake.localapi import LocalApiClient
from agent.mqtt import MqttClient, Topics
from agent.hashing.samples import encode, generate_image
from tests.brokers import free_port, mosquitto  # noqa: F401
from tests.privacy import PayloadCapture
from tests.listkit import Hub, only, random_entries, wait_for
from tools.publish import publish_lists
from tools.confirm_service import ConfirmService
from tests import paths

ROOT = str(paths.ROOT)


# ------------------------------------------------------------------ configuration

def test_sample_config_and_docs_cover_every_setting():
    conf = load_config(os.path.join(ROOT, "firmware", "gatewatch.toml"), environ={})
    assert conf == defaults()
    with open(os.path.join(ROOT, "docs", "config.md"), encoding="utf-8") as f:
        doc = f.read()
    for section, items in SETTINGS.items():
        assert "## [%s]" % section in doc
        for key, default, _ in items:
            assert re.search(r"\| `%s` \| `" % re.escape(key), doc), "%s.%s undocumented" % (section, key)


def test_env_overrides_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[broker]\nurl = "mqtt://127.0.0.1:1"\n[policy]\nmode = "monitor"\n')
    conf = load_config(str(p), environ={"GATEWATCH_POLICY_MODE": "report-only",
                                        "GATEWATCH_LISTS_TRUST": "a.pub, b.pub",
                                        "GATEWATCH_LISTS_USE_DELTAS": "false",
                                        "GATEWATCH_LISTS_FETCH_TIMEOUT": "5"})
    assert conf["broker"]["url"] == "mqtt://127.0.0.1:1"
    assert conf["policy"]["mode"] == "report-only"
    assert conf["lists"]["trust"] == ["a.pub", "b.pub"]
    assert conf["lists"]["use_deltas"] is False
    assert conf["lists"]["fetch_timeout"] == 5.0


@pytest.mark.parametrize("text,env,match", [
    ("[nope]\nx = 1\n", {}, "unknown section"),
    ("[broker]\nurll = 'x'\n", {}, "unknown setting broker.urll"),
    ("[broker]\nkeepalive = 'x'\n", {}, "must be a number"),
    ("[lists]\nuse_deltas = 1\n", {}, "true or false"),
    ("[lists]\ntrust = 'a.pub'\n", {}, "list of strings"),
    ("[policy]\nmode = 'drop'\n", {}, "policy.mode"),
    ("[lists]\nmax_bytes = -1\n", {}, "negative"),
    ("not toml [", {}, "not valid TOML"),
    ("", {"GATEWATCH_LISTS_USE_DELTAS": "perhaps"}, "true or false"),
    ("", {"GATEWATCH_BROKER_KEEPALIVE": "ten"}, "number"),
])
def test_bad_config_refused(tmp_path, text, env, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(str(p), environ=env)


def test_run_with_bad_config_exits_2(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[broker]\nurll = 'x'\n")
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(p)], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "unknown setting broker.urll" in r.stderr


# ------------------------------------------------------------------ the daemon as a process

def _known_images():
    return [encode(generate_image(300 + i, (320, 240)), "JPEG", 90) for i in range(3)]


def _start_agent(tmp_path, conf_text, extra=()):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(conf_text)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(tmp_path / "agent.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)] + list(extra),
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    log.close()
    return proc


def _status(state):
    r = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--state-dir", str(state), "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None)


#: the first sections of a test device's config (fast status writes, the emulated HAL, a broker)
DEVICE_TOML = """
[agent]
state_dir = "%(state)s"
client_id = "%(client_id)s"
status_interval = 0.5
hal = "emulated"
[broker]
url = "%(broker)s"
[policy]
confirm_timeout = 5.0
"""


CLIENT_IP = "192.168.77.23"
USER_AGENT = "SecretBrowser/9.1 (subscriber-laptop)"
COOKIE = "sid=cookie-secret-4711"


def icap_respmod(port, url, body, ctype="image/jpeg"):
    """One ICAP RESPMOD as Squid sends it (client address, cookie, user agent included); the reply."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    req_hdr = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nCookie: %s\r\n\r\n"
               % (url, u.hostname, USER_AGENT, COOKIE)).encode()
    res_hdr = ("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (ctype, len(body))).encode()
    head = ("RESPMOD icap://127.0.0.1:%d/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\nX-Client-IP: %s\r\n"
            "Allow: 204\r\nEncapsulated: req-hdr=0, res-hdr=%d, res-body=%d\r\n\r\n"
            % (port, CLIENT_IP, len(req_hdr), len(req_hdr) + len(res_hdr))).encode()
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + req_hdr + res_hdr + chunked)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            out += data
    return out


def _log(tmp_path):
    return (tmp_path / "agent.log").read_text(errors="replace")


@pytest.mark.slow
def test_daemon_follows_updates_blocks_reports_and_stops_cleanly(mosquitto, tmp_path):
    known = _known_images()
    hub = Hub(tmp_path / "hub")
    v1 = hub.build([Entry("known-0", hashlib.sha256(known[0]).digest())], capacity=50)
    state = tmp_path / "state"
    (state / "trust").mkdir(parents=True)
    (state / "trust" / "hl1.pub").write_text(open(hub.pub_path).read())
    sock = str(tmp_path / "gw.sock")
    reports = []
    statuses = {}
    hub_client = MqttClient(mosquitto.url, "hub-serve")
    ConfirmService(hub_client, Topics(), hub.out).start()
    hub_client.connect()
    watcher = MqttClient(mosquitto.url, "watcher").connect()
    watcher.subscribe(Topics().reports_filter(), lambda m: reports.append(json.loads(m.payload))).wait(5)
    watcher.subscribe(Topics().status("dev-t1"), lambda m: statuses.update(json.loads(m.payload))).wait(5)
    with MqttClient(mosquitto.url, "publisher") as pub:
        publish_lists(pub, Topics(), only([v1], tmp_path / "p1"), chunk_size=4096)
    capture = PayloadCapture(mosquitto.url).__enter__()  # every payload on the broker from now on
    icap_port, proxy_port = free_port(), free_port()
    from tools.demo import Origin
    origin = Origin({"/k0.jpg": ("image/jpeg", known[0]), "/other.jpg": ("image/jpeg", known[2])}).start()
    proc = _start_agent(tmp_path, DEVICE_TOML % {"state": state, "client_id": "dev-t1", "broker": mosquitto.url} + """
[localapi]
socket = "%s"
[icap]
listen = "127.0.0.1:%d"
[proxy]
listen = "127.0.0.1:%d"
allow_loopback_upstream = true  # the test's origin is on loopback
""" % (sock, icap_port, proxy_port))
    try:
        wait_for(lambda: os.path.exists(sock) and (_status(state)[1] or {}).get("lists", {}).get("hl1/sha", {})
                 .get("version") == 1, 30)
        code, st = _status(state)
        assert code == 0 and st["running"] and st["broker"]["connected"]
        with LocalApiClient(sock) as api:
            d = api.check_bytes(known[0], url="http://origin.test/k0.jpg?session=secret", content_type="image/jpeg")
            assert d["action"] == "block" and d["reason"] == "match-confirmed", d
            assert api.check_bytes(known[1])["action"] == "allow"
            # a new version arrives while running: known[1] becomes blocked without a restart
            v2 = hub.build([Entry("known-0", hashlib.sha256(known[0]).digest()),
                            Entry("known-1", hashlib.sha256(known[1]).digest())], capacity=50)
            with MqttClient(mosquitto.url, "publisher") as pub:
                publish_lists(pub, Topics(), only([v1, v2], tmp_path / "p2"), chunk_size=4096)
            wait_for(lambda: (_status(state)[1] or {})["lists"]["hl1/sha"]["version"] == 2, 30)
            assert _status(state)[1]["lists"]["hl1/sha"]["via"] == "delta"
            d = api.check_bytes(known[1], url="http://origin.test/k1.jpg")
            assert d["action"] == "block", d
            assert api.check_bytes(b"not an image")["action"] == "allow"
            assert "error" in api._ask({"bytes": -1})
            assert "error" in api._ask({"what": 1})
        # through ICAP, as Squid would send it: subscriber details in the request must never leave
        answer = icap_respmod(icap_port, "http://origin.test/k0-again.jpg?session=secret", known[0])
        assert answer.startswith(b"ICAP/1.0 200") and b"403" in answer.split(b"\r\n\r\n", 2)[1], answer[:300]
        answer = icap_respmod(icap_port, "http://origin.test/other.jpg", known[2])
        assert answer.startswith(b"ICAP/1.0 204"), answer[:200]
        # through the built-in proxy, with a browser's cookie and user agent
        import urllib.error
        import urllib.request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:%d" % proxy_port}))
        opener.addheaders = [("User-Agent", USER_AGENT), ("Cookie", COOKIE)]
        with pytest.raises(urllib.error.HTTPError) as blocked:
            opener.open(origin.url("/k0.jpg?session=secret"), timeout=30).read()
        assert blocked.value.code == 403
        assert opener.open(origin.url("/other.jpg"), timeout=30).read() == known[2]
        wait_for(lambda: len(reports) == 4, 20)
        assert sorted(r["entry"] for r in reports) == ["known-0", "known-0", "known-0", "known-1"]
        # the query string may carry a session token: it stays home by default
        assert all("session" not in json.dumps(r) for r in reports)
        # the hosting URL, without its query; on loopback the origin's address is 127.0.0.1 (a
        # subscriber address is checked with the ICAP X-Client-IP above and the capture below)
        assert origin.url("/k0.jpg") in [r["hosting"].get("url") for r in reports]
        wait_for(lambda: statuses.get("lists", {}).get("hl1/sha", {}).get("version") == 2, 10)
        # a rollback attempt is refused and the status topic says why
        with MqttClient(mosquitto.url, "publisher") as pub:
            publish_lists(pub, Topics(), only([v1], tmp_path / "p3"), chunk_size=4096)
        wait_for(lambda: "rollback" in json.dumps(statuses), 20)
        assert statuses["lists"]["hl1/sha"]["version"] == 2
        assert "rollback" in _status(state)[1]["lists"]["hl1/sha"]["last_refusal"]["reason"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("agent did not stop on SIGTERM:\n" + _log(tmp_path))
        watcher.stop()
        hub_client.stop()
        origin.stop()
    assert rc == 0, _log(tmp_path)
    assert not os.path.exists(sock)
    code, st = _status(state)
    assert code == 1 and not st["running"] and st.get("stopped")
    assert "hl1+sha.v2.gwl" in os.listdir(state / "lists")
    # privacy: everything the device published (confirmation requests, reports, status)
    capture.__exit__(None, None, None)
    from agent.hashing.imaging import hash_image
    clean_pdq = hash_image(known[2], fast=False).pdq.hex()  # an image that never matched
    forbidden = [CLIENT_IP, USER_AGENT, COOKIE, "cookie-secret-4711", "session=secret",
                 "GET http://origin.test", clean_pdq, hashlib.sha256(known[2]).hexdigest()]
    n = sum(capture.assert_clean(forbidden, part) for part in ("/confirm/", "/tokens/", "/reports/", "/status/"))
    assert n >= 6, capture.messages


@pytest.mark.slow
def test_daemon_from_a_folder_without_broker(tmp_path):
    known = _known_images()
    hub = Hub(tmp_path / "hub")
    hub.build([Entry("known-0", hashlib.sha256(known[0]).digest())], capacity=50)
    state = tmp_path / "state"
    sock = str(tmp_path / "gw.sock")
    proc = _start_agent(tmp_path, '[agent]\nstate_dir = "%s"\nhal = "emulated"\n' % state,
                        ["--lists", hub.out, "--trust", hub.pub_path, "--socket", sock])
    try:
        wait_for(lambda: os.path.exists(sock), 30)
        with LocalApiClient(sock) as api:
            d = api.check_bytes(known[0], url="http://origin.test/a.jpg")
            # no hub to confirm with: exact hits block (near-certain) but are never reported
            assert (d["action"], d["reason"]) == ("block", "match-unconfirmed")
            img = tmp_path / "x.jpg"
            img.write_bytes(known[2])
            assert api.check_path(str(img))["action"] == "allow"
            assert "error" in api.check_path(str(tmp_path / "missing.jpg"))
            st = api.status()
            assert st["lists"]["hl1/sha"]["version"] == 1 and st["broker"]["url"] is None
            assert st["policy"]["unconfirmed"] == 1 and st["reports"]["spool_depth"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    assert rc == 0, _log(tmp_path)


def test_daemon_refuses_to_start_without_trust(tmp_path):
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--state-dir", str(tmp_path / "s")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "no trusted keys" in r.stderr


def test_list_folder_loads_files_under_any_name(tmp_path):
    """A school copying a list in as 'golden.gwl' gets it loaded, not silently skipped."""
    import shutil
    from agent.lists.trust import TrustStore
    from agent.updates.updater import ListStore
    data = str(paths.DATA)
    folder = tmp_path / "lists"
    folder.mkdir()
    shutil.copy(os.path.join(data, "golden.gwl"), str(folder / "golden.gwl"))
    trust = TrustStore.from_specs([os.path.join(data, "golden.pub")])
    loaded = ListStore(str(folder), trust).load()
    assert sorted(loaded) == ["golden/exact"]


@pytest.mark.parametrize("section,key,bad", [("reports", "hosting", "hostname"), ("proxy", "mode", "transparant"),
                                             ("icap", "early_head", "sometimes"), ("agent", "hal", "raspberry"),
                                             ("reports", "spool_policy", "drop")])
def test_a_misspelt_word_setting_is_refused_at_start(section, key, bad):
    env = {"GATEWATCH_%s_%s" % (section.upper(), key.upper()): bad}
    with pytest.raises(ConfigError, match="%s.%s must be" % (section, key)):
        load_config(None, environ=env)


def _run_cli(*args, timeout=60):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "agent.cli", "run"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_run_on_a_port_in_use_says_so(tmp_path):
    import socket
    hub = Hub(tmp_path / "hub")
    hub.build(random_entries(3, 1))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        r = _run_cli("--state-dir", tmp_path / "state", "--lists", hub.out, "--trust", hub.pub_path,
                     "--proxy", "127.0.0.1:%d" % port)
    finally:
        busy.close()
    assert r.returncode == 2, r.stderr
    assert "cannot listen on 127.0.0.1:%d for proxy" % port in r.stderr and "Traceback" not in r.stderr


def test_run_with_a_missing_list_folder_says_so_and_creates_nothing(tmp_path):
    hub = Hub(tmp_path / "hub")
    missing = tmp_path / "nowhere"
    r = _run_cli("--state-dir", tmp_path / "state", "--lists", missing, "--trust", hub.pub_path)
    assert r.returncode == 2 and "list folder %s does not exist" % missing in r.stderr, r.stderr
    assert not missing.exists()


def test_run_with_only_refused_lists_names_each_one(tmp_path):
    hub = Hub(tmp_path / "hub")
    hub.build(random_entries(3, 1))
    stranger = Hub(tmp_path / "stranger", source="hl1", key_name="other")
    r = _run_cli("--state-dir", tmp_path / "state", "--lists", hub.out, "--trust", stranger.pub_path)
    assert r.returncode == 2 and "hl1+sha.v1.gwl" in r.stderr and "signature does not verify" in r.stderr, r.stderr


def test_sigterm_while_starting_stops_cleanly(tmp_path):
    # the local API socket appears in the middle of start(); a SIGTERM right then used to meet the
    # default handler (exit -15) because signals were caught only once start() had returned
    hub = Hub(tmp_path / "hub")
    hub.build(random_entries(3, 2))
    sock = str(tmp_path / "gw.sock")
    proc = _start_agent(tmp_path, '[agent]\nstate_dir = "%s"\nhal = "emulated"\n' % (tmp_path / "state"),
                        ["--lists", hub.out, "--trust", hub.pub_path, "--socket", sock])
    wait_for(lambda: os.path.exists(sock), 30, interval=0.001)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, _log(tmp_path)
