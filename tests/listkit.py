"""Helpers for the list-update, confirmation and daemon tests: keys, benign lists, waiting.

Entries are random digests or the digests of generated benign images: never real hash lists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import List, Optional

from agent.confirm.wire import Entry
from agent.lists.trust import TrustStore
from tests.waiting import wait_for  # noqa: F401  (imported from here by tests)
from tools.build import build_list, generate_keys, load_private_key


class Hub:
    """A hub's key and build folder for one source, with helpers to build versions of a list."""

    def __init__(self, folder, source: str = "hl1", key_name: str = "hub"):
        self.folder = str(folder)
        self.source = source
        os.makedirs(self.folder, exist_ok=True)
        priv, pub = generate_keys(os.path.join(self.folder, "keys-" + key_name), key_name, source)
        self.key_path, self.pub_path = priv, pub
        self.key = load_private_key(priv)
        self.out = os.path.join(self.folder, "built")

    def trust(self) -> TrustStore:
        return TrustStore.from_specs([self.pub_path])

    def build(self, entries: List[Entry], *, name: str = "sha", version: Optional[int] = None,
              capacity: int = 5000, out: Optional[str] = None, key=None, now=None,
              expires_days: float = 30, signal: str = "sha256") -> str:
        """Build and sign one version; returns the device file path."""
        path, _hub, _m = build_list(source=self.source, name=name, signal=signal, entries=entries,
                                    key=key or self.key, out_dir=out or self.out, version=version,
                                    capacity=capacity, now=now, expires_days=expires_days)
        return path


def random_entries(n: int, seed: int, signal: str = "sha256") -> List[Entry]:
    """``n`` benign random digests (deterministic from ``seed``)."""
    size = {"sha256": 32, "sha1": 20, "md5": 16}[signal]
    out = []
    for i in range(n):
        h = hashlib.sha256(b"gatewatch-test-%d-%d" % (seed, i)).digest()[:size]
        out.append(Entry("e%d-%d" % (seed, i), h))
    return out


def only(paths, folder) -> str:
    """A fresh folder holding copies of ``paths`` (a hub output with just those versions)."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    for p in paths:
        shutil.copy(p, folder)
    return folder
