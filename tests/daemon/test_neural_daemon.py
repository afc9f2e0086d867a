"""A neural list end to end through the real processes and public surfaces only: `gatewatch-hub lists
build --signal neural`, `publish`, `serve` and `reports collect` against a real mosquitto, `gatewatch
run` with its built-in proxy, HTTP through that proxy, and `gatewatch-hub reports export`.

Written against command lines, configuration, HTTP and the hub's report export only (never the
confirmation protocol's modules), so it keeps passing when the protocol underneath changes. Benign
scikit-image photos stand in for known material: a 10%-cropped copy of a listed photo (which PDQ
misses) is blocked once the hub confirms it and reported exactly once; an unrelated photo passes
and is not reported.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

from agent.hashing.samples import encode
from tests import paths
from tests.brokers import free_port, mosquitto  # noqa: F401
from tests.waiting import stop_process, wait_for

pytestmark = pytest.mark.slow

ROOT = str(paths.ROOT)
LISTED = ("astronaut", "chelsea", "rocket")


def crop10(img):
    """10% of each side removed in total, centred: PDQ moves by ~90 bits, the neural code by a few."""
    w, h = img.size
    dx, dy = int(w * 0.05), int(h * 0.05)
    return img.crop((dx, dy, w - dx, h - dy))


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                GATEWATCH_AGENT_HAL="emulated")


def _cli(module, *args, timeout=120):
    r = subprocess.run([sys.executable, "-m", module] + [str(a) for a in args], capture_output=True, text=True,
                       cwd=ROOT, env=_env(), timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def _start(tmp_path, name, module, *args):
    log = open(tmp_path / (name + ".log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", module] + [str(a) for a in args], stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT, env=_env())
    log.close()
    return proc


def _logs(tmp_path):
    return "\n".join("--- %s\n%s" % (p.name, p.read_text(errors="replace")[-3000:])
                     for p in sorted(tmp_path.glob("*.log")))


class Origin:
    """A loopback web server with fixed bodies (the pictures a client fetches through the gateway)."""

    def __init__(self, bodies):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                body = outer.bodies.get(self.path.split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.bodies = bodies
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.server.server_address[1], path)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _export(db):
    rc, out, err = _cli("tools.hub_cli", "reports", "export", "--db", db, "--source", "hotline", "--format", "json")
    assert rc == 0, err
    text = out.strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_daemon_blocks_a_cropped_listed_photo_and_reports_it_once(mosquitto, tmp_path):
    pytest.importorskip("ai_edge_litert", reason="the neural hash needs the tflite runtime (test extra)")
    data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) ships the photos")
    known = tmp_path / "known"
    known.mkdir()
    for n in LISTED:
        (known / (n + ".jpg")).write_bytes(encode(Image.fromarray(getattr(data, n)())))
    cropped = encode(crop10(Image.fromarray(data.chelsea())))
    unrelated = encode(Image.fromarray(data.camera()))

    # hub: a key, a neural list of the three photos, published; the confirmation service and the collector
    rc, out, err = _cli("tools.hub_cli", "keys", "generate", "--out", tmp_path / "keys", "--source", "hotline")
    assert rc == 0, err
    rc, out, err = _cli("tools.hub_cli", "lists", "build", "--source", "hotline", "--list", "known-neural",
                        "--signal", "neural", "--input", known, "--key", tmp_path / "keys" / "hotline.key",
                        "--out", tmp_path / "lists", "--no-progress")
    assert rc == 0, err
    assert json.loads(out)["entries"] == 3
    (built,) = (tmp_path / "lists").glob("*.gwl")
    rc, out, err = _cli("tools.hub_cli", "lists", "inspect", built)
    assert rc == 0, err
    threshold = json.loads(out)["manifest"]["lsh"]["threshold"]
    rc, out, err = _cli("tools.hub_cli", "publish", "--broker", mosquitto.url, "--lists", tmp_path / "lists")
    assert rc == 0, err
    reports_db = tmp_path / "reports.db"
    hub = [_start(tmp_path, "serve", "tools.hub_cli", "serve", "--broker", mosquitto.url, "--lists",
                  tmp_path / "lists", "--db", tmp_path / "confirm.sqlite"),
           _start(tmp_path, "collect", "tools.hub_cli", "reports", "collect", "--broker", mosquitto.url,
                  "--db", reports_db, "--lists", tmp_path / "lists")]

    state = tmp_path / "state"
    proxy_port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text("""
[agent]
state_dir = "%s"
client_id = "dev-neural"
status_interval = 0.5
hal = "emulated"
[broker]
url = "%s"
[lists]
trust = ["%s"]
[policy]
confirm_timeout = 10.0
[proxy]
listen = "127.0.0.1:%d"
allow_loopback_upstream = true  # the test's origin is on loopback
""" % (state, mosquitto.url, tmp_path / "keys" / "hotline.pub", proxy_port))
    origin = Origin({"/cat-cropped.jpg": cropped, "/camera.jpg": unrelated})
    agent = _start(tmp_path, "agent", "agent.cli", "run", "--config", cfg)

    def status():
        rc, out, _ = _cli("agent.cli", "status", "--state-dir", state, "--json", timeout=60)
        return json.loads(out) if out.strip() else {}

    try:
        wait_for(lambda: (status().get("lists") or {}).get("hotline/known-neural", {}).get("version") == 1, 60,
                 interval=0.5)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:%d" % proxy_port}))
        # the unrelated photo passes, byte for byte
        assert opener.open(origin.url("/camera.jpg"), timeout=60).read() == unrelated
        # the cropped copy of a listed photo: a neural candidate, confirmed by the hub, blocked
        with pytest.raises(urllib.error.HTTPError) as blocked:
            opener.open(origin.url("/cat-cropped.jpg?session=secret"), timeout=60).read()
        assert blocked.value.code == 403

        wait_for(lambda: len(_export(reports_db)) >= 1, 60, interval=0.5)
        time.sleep(3)  # a second report (a duplicate, or one for the unrelated photo) would arrive by now
        reports = _export(reports_db)
        assert len(reports) == 1, reports
        (r,) = reports
        assert (r["source"], r["list"], r["signal"], r["entry"]) == ("hotline", "known-neural", "neural", "chelsea.jpg"), r
        assert r["hosting"] == {"url": origin.url("/cat-cropped.jpg")}, r  # the query stays home
        assert 0 <= r["distance"] <= threshold, r
        st = status()
        assert st["reports"]["spool_depth"] == 0, st["reports"]  # the collector acknowledged it
    finally:
        for p in [agent] + hub:
            stop_process(p, grace=30)
        origin.stop()
    assert agent.returncode == 0, _logs(tmp_path)  # a clean stop on SIGTERM
