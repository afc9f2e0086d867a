"""What device and hub exchange to confirm a hit: entries, short keys, request and answer limits.

Owns: ``Entry`` (an entry as the hub knows it), ``EntryIndex`` (entries found by the short keys
devices send; the hub answers from it and `gatewatch scan --confirm-with` confirms locally with
it), the hub's entries file written by `lists build`, and parsing entries out of an answer. The
short keys themselves are ``agent.core.lsh.short_keys``: one function on both sides. Must not touch:
MQTT (``agent.confirm.client``, ``tools.confirm_service``), the decision (``agent.matching``).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, List

from agent.core.errors import ConfigError
from agent.core.lsh import short_keys
from agent.core.signals import EXACT_SIGNALS, HEX_LENGTHS

PROTOCOL = 1
MAX_KEYS_PER_LIST = 64
MAX_LISTS = 16
MAX_ENTRIES_PER_ANSWER = 1024


class Entry:
    """One list entry as the hub knows it: an identifier and the full hash."""

    __slots__ = ("id", "hash")

    def __init__(self, ident: str, hash_bytes: bytes) -> None:
        self.id = ident
        self.hash = hash_bytes

    def to_json(self) -> dict:
        """JSON form."""
        return {"id": self.id, "hash": self.hash.hex()}


def parse_entries(items) -> List[Entry]:
    """Entries from an answer; raises ValueError on anything malformed."""
    if not isinstance(items, list) or len(items) > MAX_ENTRIES_PER_ANSWER:
        raise ValueError("entries must be a list")
    out = []
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("id"), str) or not isinstance(it.get("hash"), str):
            raise ValueError("entry must have string id and hash")
        out.append(Entry(it["id"][:200], bytes.fromhex(it["hash"])))
    return out


class EntryIndex:
    """The full entries of one list version, indexed by the short keys devices send."""

    def __init__(self, doc: dict) -> None:
        self.source = doc["source"]
        self.name = doc["list"]
        self.signal = doc["signal"]
        self.version = doc["version"]
        self.lsh = doc.get("lsh")
        want = HEX_LENGTHS.get(self.signal)
        self.entries = [Entry(e["id"], bytes.fromhex(e["hash"])) for e in doc["entries"]]
        if want is None or any(len(e.hash) * 2 != want for e in self.entries):
            raise ValueError("entries do not fit signal %r" % self.signal)
        self._index: Dict[str, List[Entry]] = {}
        for e in self.entries:
            for k in self.short_keys_of(e.hash):
                self._index.setdefault(k, []).append(e)

    @property
    def ident(self) -> str:
        """'source/list'."""
        return "%s/%s" % (self.source, self.name)

    @classmethod
    def load(cls, path: str) -> "EntryIndex":
        """Read a hub entries file written by `gatewatch-hub lists build`."""
        try:
            with open(path, "r", encoding="utf-8") as f:
                return cls(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError("cannot read hub entries %s: %s" % (path, e))

    @classmethod
    def load_dir(cls, directory: str) -> Dict[str, "EntryIndex"]:
        """Newest hub entries file per list in a ``lists build`` output folder, keyed 'source/list'."""
        paths = sorted(glob.glob(os.path.join(directory, "hub", "*.entries.json")))
        if not paths:
            raise ConfigError("%s has no hub/ entries; pass a 'gatewatch-hub lists build' output folder"
                              % directory)
        out: Dict[str, EntryIndex] = {}
        for p in paths:
            h = cls.load(p)
            if h.ident not in out or h.version > out[h.ident].version:
                out[h.ident] = h
        return out

    def short_keys_of(self, h: bytes) -> List[str]:
        """The short keys under which an entry is found."""
        return short_keys(self.signal, h, None if self.signal in EXACT_SIGNALS else self.lsh)

    def lookup(self, short_key: str) -> List[Entry]:
        """Entries behind one short key (empty when none)."""
        return list(self._index.get(short_key, ()))


class AnsweredEntries:
    """The hub's entries behind some short keys of one list, as an answer carried them."""

    def __init__(self, ident: str, by_key: Dict[str, List[Entry]]):
        self.ident = ident
        self.by_key = by_key

    def lookup(self, short_key: str) -> List[Entry]:
        """Entries behind one short key (empty when none)."""
        return list(self.by_key.get(short_key, ()))
