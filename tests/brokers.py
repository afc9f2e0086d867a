"""Real mosquitto brokers for tests: free loopback port, own config and persistence folders.

Use the fixture (``from tests.brokers import mosquitto  # noqa: F401``) or call
``start_mosquitto(tmp_path, acl=..., users=...)`` for a broker with logins and an ACL. A broker can be
stopped (SIGTERM: mosquitto saves its persistence), killed (SIGKILL) and started again on the same
port with the same persistence, which is what the no-loss tests need.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tests.waiting import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
FIRMWARE_CONF = Path(__file__).resolve().parent.parent / "firmware" / "mosquitto"


def _port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """A mosquitto process: ``url``, ``port``, ``stop()``, ``start()``, ``kill()``, ``log_text()``."""

    def __init__(self, folder, port, conf_text):
        self.folder = Path(folder)
        self.host = "127.0.0.1"
        self.port = port
        self.conf = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        self.conf.write_text(conf_text)
        self.proc = None
        self.scheme, self.host_name = "mqtt", self.host

    @property
    def url(self):
        """mqtt:// (or mqtts://localhost) URL of the broker."""
        return "%s://%s:%d" % (self.scheme, self.host_name, self.port)

    def start(self, timeout=10.0):
        """Start (again) on the same port with the same persistence; wait until it listens."""
        if self.running:
            return self
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited with %s:\n%s" % (self.proc.returncode, self.log_text()))
            if _port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("mosquitto did not listen on port %d:\n%s" % (self.port, self.log_text()))

    @property
    def running(self):
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """Graceful stop (SIGTERM): mosquitto writes its persistence file."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._wait_port_free()

    def kill(self):
        """SIGKILL: no persistence save, like a power cut of the broker host."""
        if self.running:
            self.proc.kill()
            self.proc.wait()
        self._wait_port_free()

    def _wait_port_free(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _port_open(self.host, self.port):
            time.sleep(0.05)

    def log_text(self):
        """The broker's log so far (for failure messages)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def write_password_file(path, users):
    """Create a mosquitto password file for ``{user: password}`` with mosquitto_passwd."""
    path = Path(path)
    if path.exists():
        path.unlink()
    path.touch()
    for user, password in users.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.chmod(path, 0o600)
    return path


def start_mosquitto(tmp_path, *, acl=None, users=None, port=None, extra_conf="", start=True,
                    tls=None):
    """Start a real mosquitto on 127.0.0.1 with its own folders under ``tmp_path``.

    ``users``: {name: password} -> a password file and no anonymous logins. ``acl``: ACL file text.
    ``extra_conf``: more mosquitto.conf lines (e.g. the shipped fleet settings). ``tls``: dict with
    certfile, keyfile, cafile (and optionally require_certificate, use_identity_as_username) to make
    the listener mqtts (``broker.url`` then says mqtts://localhost).
    """
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed; run tests/setup/install.sh (apt-get install mosquitto)")
    folder = Path(tmp_path) / ("mosquitto-%d" % time.monotonic_ns())
    (folder / "data").mkdir(parents=True)
    port = port or free_port()
    lines = [
        "per_listener_settings false",
        "listener %d 127.0.0.1" % port,
    ]
    for key, value in sorted((tls or {}).items()):
        lines.append("%s %s" % (key, str(value).lower() if isinstance(value, bool) else value))
    lines += [
        "persistence true",
        "persistence_location %s/" % (folder / "data"),
        "autosave_interval 1",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "max_queued_messages 100000",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # keep access to the folders we own; no privilege drop in tests
    if users is not None:
        pw = write_password_file(folder / "passwd", users)
        lines += ["allow_anonymous false", "password_file %s" % pw]
    else:
        lines.append("allow_anonymous true")
    if acl is not None:
        acl_path = folder / "acl"
        acl_path.write_text(acl)
        os.chmod(acl_path, 0o600)
        lines.append("acl_file %s" % acl_path)
    if extra_conf:
        lines.append(extra_conf)
    broker = Broker(folder, port, "\n".join(lines) + "\n")
    if tls:
        broker.scheme, broker.host_name = "mqtts", "localhost"
    if start:
        broker.start()
    return broker


def shipped_fleet_broker(tmp_path, users):
    """mosquitto with the fleet config and ACL from firmware/mosquitto/, listening on loopback.

    Every line of the shipped mosquitto.conf is used except those that name machine paths,
    certificates or listeners (replaced by the test's own), so the access rules under test are
    exactly the shipped ones; the ACL file is the shipped file.
    """
    local = {"listener", "password_file", "acl_file", "persistence_location", "certfile", "keyfile",
             "cafile", "capath", "tls_version", "require_certificate", "use_identity_as_username",
             "log_dest", "user", "include_dir", "pid_file"}
    port = free_port()
    shipped = []
    for line in (FIRMWARE_CONF / "mosquitto.conf").read_text().splitlines():
        word = line.strip().split(" ", 1)[0]
        if word == "listener" and not any(x.startswith("listener ") for x in shipped):
            # the test's listener takes the shipped one's place, so the listener options that
            # follow it there (use_username_as_clientid) apply to it too
            shipped.append("listener %d 127.0.0.1" % port)
        elif word and not word.startswith("#") and word not in local:
            shipped.append(line.strip())
    assert any(x.startswith("listener ") for x in shipped), "the shipped mosquitto.conf has no listener"
    folder = Path(tmp_path) / ("fleet-broker-%d" % time.monotonic_ns())
    (folder / "data").mkdir(parents=True)
    pw = write_password_file(folder / "passwd", users)
    lines = shipped + [
        "password_file %s" % pw,
        "acl_file %s" % (FIRMWARE_CONF / "acl"),
        "persistence_location %s/" % (folder / "data"),
        "log_dest stderr",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    return Broker(folder, port, "\n".join(lines) + "\n").start()


@pytest.fixture
def mosquitto(tmp_path):
    """A running anonymous mosquitto on a free loopback port; torn down after the test."""
    broker = start_mosquitto(tmp_path)
    try:
        yield broker
    finally:
        broker.kill()
