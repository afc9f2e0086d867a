"""Fleet simulator: N simulated agents on loopback, each with its own MQTT session, store and updater.

Owns only the simulation: every simulated agent runs the real device code (agent.updates.updater with its
own state folder and MQTT client), so times measured here are the real update path. Used by the
benchmarks (publish-to-active for 1, 10, 100 agents) and by tests; it never reaches beyond the
broker URL it is given, which must be a loopback broker.

    python -m tools.fleet --broker mqtt://127.0.0.1:1883 --agents 10 --trust hub.pub --lists OUT
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

from agent.lists.trust import TrustStore
from agent.mqtt import MqttClient, Topics
from agent.lists.store import ListStore
from agent.updates.updater import Updater


class SimulatedAgent:
    """One device: client id, state folder, updater; records when each version became active."""

    def __init__(self, broker_url: str, index: int, trust: TrustStore, folder: str, topics: Topics,
                 fetch_timeout: float = 60.0, held: Optional[List[str]] = None):
        self.client_id = "sim-%04d" % index
        self.store = ListStore(os.path.join(folder, self.client_id), trust)
        for path in held or ():
            shutil.copy(path, self.store.directory)
        self.active: Dict[tuple, float] = {}
        self._lock = threading.Lock()
        self.client = MqttClient(broker_url, self.client_id, reconnect=(1, 5))
        self.updater = Updater(self.client, topics, self.store, fetch_timeout=fetch_timeout,
                               on_lists=self._on_lists)
        for ident, lst in self.updater.lists.items():
            self.active[(ident, lst.version)] = 0.0

    def _on_lists(self, lists) -> None:
        now = time.monotonic()
        with self._lock:
            for ident, lst in lists.items():
                self.active.setdefault((ident, lst.version), now)

    def start(self) -> None:
        self.updater.start()
        self.client.start()

    def stop(self) -> None:
        self.updater.stop()
        self.client.stop()


class Fleet:
    """N simulated agents. ``start()``, ``wait_active(ident, version)``, ``stop()``."""

    def __init__(self, broker_url: str, n: int, trust: TrustStore, folder: Optional[str] = None, *,
                 prefix: str = "gatewatch/v1", held: Optional[List[str]] = None, fetch_timeout: float = 60.0):
        self._tmp = None
        if folder is None:
            self._tmp = tempfile.mkdtemp(prefix="gatewatch-fleet-")
            folder = self._tmp
        topics = Topics(prefix)
        self.agents = [SimulatedAgent(broker_url, i, trust, folder, topics, fetch_timeout, held) for i in range(n)]

    def start(self, timeout: float = 60.0) -> "Fleet":
        for a in self.agents:
            a.start()
        deadline = time.monotonic() + timeout
        for a in self.agents:
            if not a.client.wait_connected(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("simulated agent %s could not connect" % a.client_id)
        return self

    def wait_active(self, ident: str, version: int, timeout: float = 120.0) -> List[float]:
        """Monotonic times at which each agent had ``version`` active; raises on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            times = [a.active.get((ident, version)) for a in self.agents]
            if all(t is not None for t in times):
                return times
            if time.monotonic() > deadline:
                missing = [a.client_id for a, t in zip(self.agents, times) if t is None]
                reasons = {a.client_id: (a.updater.status.get(ident).last_refusal if a.updater.status.get(ident)
                                         else None) for a in self.agents if a.client_id in missing[:3]}
                raise RuntimeError("%d agents lack %s v%d after %.0fs: %s" % (len(missing), ident, version,
                                                                             timeout, reasons))
            time.sleep(0.01)

    def stop(self) -> None:
        for a in self.agents:
            a.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


def publish_to_active(broker_url: str, lists_dir: str, n: int, trust: TrustStore, ident: str, version: int, *,
                      held: Optional[List[str]] = None, chunk_size: Optional[int] = None) -> dict:
    """Start N agents, publish ``lists_dir``, and time until every agent has ``version`` active."""
    from tools.publish import DEFAULT_CHUNK, publish_lists

    fleet = Fleet(broker_url, n, trust, held=held).start()
    try:
        with MqttClient(broker_url, "fleet-publisher-%d" % os.getpid()) as pub:
            t0 = time.monotonic()
            # old retained chunks are harmless here; clearing them would add its wait to the time
            publish_lists(pub, Topics(), lists_dir, chunk_size=chunk_size or DEFAULT_CHUNK, clear_stale=False)
            t_pub = time.monotonic() - t0
            times = sorted(t - t0 for t in fleet.wait_active(ident, version))
        vias = {a.updater.status[ident].via for a in fleet.agents}
        return {"agents": n, "publish_s": round(t_pub, 4), "first_s": round(times[0], 4),
                "median_s": round(times[len(times) // 2], 4), "last_s": round(times[-1], 4),
                "via": sorted(v for v in vias if v)}
    finally:
        fleet.stop()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fleet", description=__doc__.splitlines()[0])
    p.add_argument("--broker", required=True, help="a loopback broker, e.g. mqtt://127.0.0.1:1883")
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--trust", required=True, help="the hub's public key file")
    p.add_argument("--lists", required=True, help="folder of built lists to publish")
    p.add_argument("--held", action="append", help="list file every agent already holds (repeatable)")
    args = p.parse_args(argv)
    from tools.publish import find_lists

    groups = find_lists(args.lists)
    (source, name), items = sorted(groups.items())[0]
    out = publish_to_active(args.broker, args.lists, args.agents, TrustStore.from_specs([args.trust]),
                            "%s/%s" % (source, name), items[-1].version, held=args.held)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
