"""Several hotlines' lists, allow lists and a device policy over them, for the allow and per-source tests.

The device side is real: lists built and signed by tools.build / tools.allow, verified by
agent.lists.verify, scanned by the Scanner, confirmed against the hubs' entries by
``Scanner.confirm`` and decided by ``agent.policy.Policy``. Images are generated benign pictures.
"""

from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Optional

from agent.allow import AllowLists
from agent.confirm.wire import Entry, EntryIndex
from agent.hashing.imaging import hash_image
from agent.hashing.samples import encode, generate_image
from agent.lists.trust import TrustStore
from agent.lists.verify import load_list_file
from agent.matching.scanner import Scanner
from agent.policy import Policy, PolicySettings
from agent.sources import SourceRules
from tests.listkit import Hub
from tools.allow import build_allow_list

IMAGES = [encode(generate_image(7100 + i, (256, 192)), "JPEG", 90) for i in range(3)]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def device_pdq(data: bytes) -> bytes:
    """The PDQ hash the device computes for ``data`` (fast decode, as the scanner does)."""
    return hash_image(data, fast=True).pdq


def flip(h: bytes, n: int) -> bytes:
    """``h`` with its ``n`` lowest bits flipped: exactly ``n`` bits away."""
    x = int.from_bytes(h, "big") ^ ((1 << n) - 1)
    return x.to_bytes(len(h), "big")


class Hotlines:
    """Hubs by source; their lists in force on one device; the device's policy over them."""

    def __init__(self, folder, sources=("hl1",)):
        self.folder = str(folder)
        self.hubs: Dict[str, Hub] = {s: Hub(os.path.join(self.folder, s), source=s) for s in sources}
        self.paths: Dict[str, str] = {}  # ident -> newest device file
        self.reports: List = []
        self.hub_reachable = True
        self.scanner = Scanner([])

    def trust(self) -> TrustStore:
        return TrustStore.from_specs([h.pub_path for h in self.hubs.values()])

    def list_images(self, source: str, images, name: str = "known", signal: str = "sha256"):
        """``source`` lists ``images`` of IMAGES (entry 'k<i>' for IMAGES[i]); PDQ as the hub hashes it."""
        entries = [Entry("k%d" % IMAGES.index(data), sha(data) if signal == "sha256" else hash_image(data, fast=False).pdq)
                   for data in images]
        path = self.hubs[source].build(entries, name=name, signal=signal)
        self.paths["%s/%s" % (source, name)] = path
        self.load()

    def allow(self, source: str, lines: List[str]):
        """``source`` publishes an allow list of ``lines`` (the hub's input format)."""
        hub = self.hubs[source]
        inp = os.path.join(hub.folder, "allow-input.txt")
        with open(inp, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.paths["%s/allow" % source] = build_allow_list(inp, hub.out, source, hub.key_path)
        self.load()

    def load(self):
        trust = self.trust()
        self.scanner.swap([load_list_file(p, trust) for p in self.paths.values()])

    def _ask(self, result):
        if not self.hub_reachable:
            return {}
        out = {}
        for hub in self.hubs.values():
            if os.path.isdir(os.path.join(hub.out, "hub")):
                out.update(EntryIndex.load_dir(hub.out))
        return out

    def policy(self, mode: str = "block", rules: Optional[SourceRules] = None, **kw) -> Policy:
        settings = PolicySettings(mode=mode, sources=rules, **kw)
        return Policy(settings, self._ask, self.scanner.confirm, lambda r, url: self.reports.append(r),
                      allow=AllowLists(lambda: self.scanner.lists))

    def decide(self, policy: Policy, data: bytes):
        return policy.decide(self.scanner.scan_bytes(data), "http://cdn.example/x.jpg")
