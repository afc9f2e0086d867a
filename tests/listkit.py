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
    """A hub's key and build folder for one source, with helpers to build versions of a list.

    ``log=True`` also keeps a transparency log (``tools.translog``): every build is appended to it,
    proofs land next to the lists, and ``trust()`` includes the log key (so devices require proofs).
    Without it (the default) devices need no proof: today's behaviour.
    """

    def __init__(self, folder, source: str = "hl1", key_name: str = "hub", log: bool = False):
        self.folder = str(folder)
        self.source = source
        os.makedirs(self.folder, exist_ok=True)
        priv, pub = generate_keys(os.path.join(self.folder, "keys-" + key_name), key_name, source)
        self.key_path, self.pub_path = priv, pub
        self.key = load_private_key(priv)
        from tools.sealing import ConfirmKey, default_confirm_path

        self.confirm_key = ConfirmKey.load(default_confirm_path(priv))
        self.out = os.path.join(self.folder, "built")
        self.log = None
        if log:
            from tools.translog import LogStore, generate_log_keys

            lpriv, self.log_pub_path = generate_log_keys(os.path.join(self.folder, "keys-log"), "hub-log", "hub",
                                                         [source])
            self.log_key = load_private_key(lpriv)
            with open(self.log_pub_path, "r", encoding="utf-8") as f:
                self.log = LogStore.create(os.path.join(self.folder, "log"), "hub", f.read())

    def trust(self) -> TrustStore:
        return TrustStore.from_specs([self.pub_path] + ([self.log_pub_path] if self.log is not None else []))

    def build(self, entries: List[Entry], *, name: str = "sha", version: Optional[int] = None,
              capacity: int = 5000, out: Optional[str] = None, key=None, now=None,
              expires_days: float = 30, signal: str = "sha256", logged: bool = True, sealed: bool = True,
              filter_type: str = "bloom") -> str:
        """Build and sign one version (appended to the log, if the hub keeps one, unless ``logged`` is
        False; sealed for private confirmation unless ``sealed`` is False); returns the device file path."""
        path, _hub, _m = build_list(source=self.source, name=name, signal=signal, entries=entries,
                                    key=key or self.key, out_dir=out or self.out, version=version,
                                    capacity=capacity, now=now, expires_days=expires_days,
                                    confirm_key=self.confirm_key if sealed else None, filter_type=filter_type)
        if self.log is not None and logged:
            self.log.append([path], self.log_key)
            self.log.write_folder(os.path.dirname(path))
        return path


def random_entries(n: int, seed: int, signal: str = "sha256") -> List[Entry]:
    """``n`` benign random digests, or random 256-bit PDQ hashes (deterministic from ``seed``)."""
    size = {"sha256": 32, "sha1": 20, "md5": 16, "pdq": 32}[signal]
    out = []
    for i in range(n):
        h = hashlib.sha256(b"gatewatch-test-%d-%d" % (seed, i)).digest()[:size]
        out.append(Entry("e%d-%d" % (seed, i), h))
    return out


def only(paths, folder) -> str:
    """A fresh folder holding copies of ``paths`` (a hub output with just those versions), with their
    log proofs and the log's heads when there are any."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    for p in paths:
        shutil.copy(p, folder)
        for extra in [p[:-4] + ".proof"] + [os.path.join(os.path.dirname(p), n) for n in os.listdir(os.path.dirname(p))
                                            if n.endswith(".heads")]:
            if os.path.exists(extra):
                shutil.copy(extra, folder)
    return folder


def device_confirmer(client, lists, login: str, *, timeout: float = 3.0, cache=None, tokens: bool = True):
    """A started Confirmer on ``client`` for ``lists``; with ``tokens``, waits until it holds this
    epoch's anonymous tokens of every sealed list's source (a ConfirmService must be running)."""
    from agent.confirm.client import Confirmer, sealed_section

    from agent.mqtt import Topics

    c = Confirmer(client, Topics(), login, timeout=timeout, cache=cache, lists=lambda: lists).start()
    if tokens:
        sources = {lst.source for lst in lists if sealed_section(lst)}
        wait_for(lambda: all(c.wallet.count(s) > 0 for s in sources), timeout=15)
    return c



def issue_tokens(service, source: str, n: int, login: str = "test-device"):
    """``n`` tokens of ``source`` issued in-process by a ConfirmService (verified as a device would)."""
    import json

    from agent.confirm import tokens, wire

    key = next(k for k in service.keys.values() if k.source == source)
    batch = tokens.Issuance(source, n, tokens.epoch_of(service.clock()))
    _topic, body = service.answer_tokens(login, wire.dumps(
        {"v": 2, "source": source, "reply": "0" * 32, "e": [wire.b64(b) for b in batch.blinded]}))
    doc = json.loads(body)
    return batch.finish([wire.unb64(e, 32) for e in doc["e"]], wire.unb64(doc["proof"], 64), key.token_pk)
