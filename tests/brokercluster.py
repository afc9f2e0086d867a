"""A real clustered broker for tests and benchmarks: 3 aedes nodes over one Redis, on loopback ports.

``start_cluster(tmp_path)`` starts redis-server (its own folder, append-only file on, so a restart
keeps retained messages and sessions) and ``nodes`` aedes processes (firmware/aedes/node.mjs) that
share it. ``cluster.urls`` is what the agent and the hub are given; ``kill_node(i)`` SIGKILLs one
node (its clients must fail over), ``start_node(i)`` brings it back on its port, and
``restart_redis()`` stops Redis gracefully and starts it again on the same port and data.

``Deployment`` puts the same faults behind one interface for the small deployment too (one
mosquitto: "killing a node" kills the broker and starts it again), so that a fault test runs
unchanged on both (the ``deployment`` fixture in tests/cluster/conftest.py).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.paths import ROOT
from tests.waiting import free_port, wait_port

AEDES_DIR = ROOT / "firmware" / "aedes"
NODE_SCRIPT = AEDES_DIR / "node.mjs"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NODE = shutil.which("node") or "/usr/bin/node"


def ensure_installed():
    """Fail with the fix when Redis or the node packages are missing (tests/setup installs both)."""
    if not os.path.exists(REDIS_SERVER):
        pytest.fail("redis-server is not installed; run tests/setup/install.sh (tests/setup/apt-cluster.txt)")
    if not (AEDES_DIR / "node_modules" / "aedes" / "package.json").exists():
        r = subprocess.run(["sh", str(ROOT / "tests" / "setup" / "post-cluster.sh")], timeout=600,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            pytest.fail("tests/setup/post-cluster.sh failed:\n%s" % r.stdout[-3000:])


def _stop(proc, sig=signal.SIGTERM, grace=10.0):
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class AedesCluster:
    """Redis plus N aedes nodes; ``urls``, ``kill_node``, ``start_node``, ``restart_redis``, ``stop``."""

    def __init__(self, folder, nodes=3, host="127.0.0.1"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.redis_port = free_port()
        self.ports = [free_port() for _ in range(nodes)]
        self.redis = None
        self.procs = [None] * nodes

    @property
    def urls(self):
        """One mqtt:// URL per node."""
        return ["mqtt://%s:%d" % (self.host, p) for p in self.ports]

    @property
    def redis_url(self):
        return "redis://%s:%d" % (self.host, self.redis_port)

    def start(self):
        """Start Redis and every node; wait until all listen."""
        self.start_redis()
        for i in range(len(self.ports)):
            self.start_node(i, wait=False)
        for i in range(len(self.ports)):
            wait_port(self.ports[i], 20, self.procs[i])
        return self

    def start_redis(self):
        data = self.folder / "redis"
        data.mkdir(exist_ok=True)
        logf = open(self.folder / "redis.log", "ab")
        # AOF with fsync on every write: a restart (or a kill) keeps retained messages and sessions
        self.redis = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.redis_port), "--bind", self.host, "--dir", str(data),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--protected-mode", "yes", "--loglevel", "warning", "--maxclients", "10000"],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        wait_port(self.redis_port, 20, self.redis)

    def restart_redis(self, down=0.5):
        """Graceful stop (SIGTERM), ``down`` seconds without Redis, start on the same port and data."""
        _stop(self.redis)
        time.sleep(down)
        self.start_redis()

    def start_node(self, i, wait=True):
        """Start node ``i`` (again) on its port."""
        if self.procs[i] is not None and self.procs[i].poll() is None:
            return
        logf = open(self.folder / ("node-%d.log" % i), "ab")
        self.procs[i] = subprocess.Popen(
            [NODE, str(NODE_SCRIPT), "--port", str(self.ports[i]), "--host", self.host,
             "--redis", self.redis_url, "--id", "node-%d-%d" % (i, time.monotonic_ns())],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(AEDES_DIR))
        logf.close()
        if wait:
            wait_port(self.ports[i], 20, self.procs[i])

    def kill_node(self, i):
        """SIGKILL node ``i``: its clients lose their connections without a word."""
        _stop(self.procs[i], signal.SIGKILL)

    def node_alive(self, i):
        return self.procs[i] is not None and self.procs[i].poll() is None

    def log_text(self):
        """Every log, for failure messages."""
        out = []
        for p in sorted(self.folder.glob("*.log")):
            out.append("== %s ==\n%s" % (p.name, p.read_text(errors="replace")[-3000:]))
        return "\n".join(out)

    def stop(self):
        """Stop every node and Redis."""
        for p in self.procs:
            _stop(p, grace=3.0)
        _stop(self.redis)


def start_cluster(folder, nodes=3):
    """A started AedesCluster under ``folder``."""
    ensure_installed()
    return AedesCluster(folder, nodes).start()


class Deployment:
    """One broker deployment behind the faults the tests inject: ``cluster`` (3 aedes nodes over
    Redis) or ``mosquitto`` (the small deployment: one broker)."""

    def __init__(self, kind, folder):
        self.kind = kind
        if kind == "cluster":
            self.cluster = start_cluster(folder)
            self.broker = None
        else:
            from tests.brokers import start_mosquitto
            self.cluster = None
            self.broker = start_mosquitto(folder, extra_conf="set_tcp_nodelay true")

    @classmethod
    def of_cluster(cls, cluster):
        """The Deployment interface over an AedesCluster that is already running."""
        d = cls.__new__(cls)
        d.kind, d.cluster, d.broker = "cluster", cluster, None
        return d

    @property
    def urls(self):
        return self.cluster.urls if self.cluster else [self.broker.url]

    def kill_node(self, i=0, down=1.0):
        """Kill one broker node. The small deployment has only one: it is killed and started again
        after ``down`` seconds (what survives is what its persistence saved, as on a real host)."""
        if self.cluster:
            self.cluster.kill_node(i)
        else:
            self.broker.kill()
            time.sleep(down)
            self.broker.start()

    def restart_store(self):
        """Restart what keeps retained messages and sessions: Redis, or the one mosquitto (graceful)."""
        if self.cluster:
            self.cluster.restart_redis()
        else:
            self.broker.stop()
            self.broker.start()

    def heal(self):
        """Every node running again."""
        if self.cluster:
            for i in range(len(self.cluster.ports)):
                self.cluster.start_node(i)
        elif not self.broker.running:
            self.broker.start()

    def log_text(self):
        return self.cluster.log_text() if self.cluster else self.broker.log_text()

    def stop(self):
        if self.cluster:
            self.cluster.stop()
        else:
            self.broker.kill()
