"""Device-side confirmation with the hub over MQTT, Safe Browsing style, with a cache.

Owns the request/answer exchange and the cache of answers. The device sends only the short keys
that hit (never a full digest, never a perceptual hash); the hub answers with the full entries
behind those keys and the durations for which the device may cache a positive and a negative
answer; the scanner then decides locally (``Scanner.confirm``). Must not touch: the decision itself,
policy, reports.

Request (JSON, on ``<p>/confirm/req``)::

    {"v": 1, "id": "<request id>", "client": "<client id>",
     "lists": {"<source>/<list>": {"version": N, "keys": ["sha256:0a1b2c3d", ...]}}}

Answer (JSON, on ``<p>/confirm/resp/<client id>/<request id>``)::

    {"v": 1, "id": "<request id>", "ttl_positive": s, "ttl_negative": s,
     "lists": {"<source>/<list>": {"version": N, "entries": {"<key>": [{"id": .., "hash": hex}]}}}}

A list the hub does not know is absent from the answer, and an answer from an older version than the
device holds is no answer either (the hub may not have loaded the new entries yet); the device
treats both as unanswered and caches nothing for them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

from agent.confirm.wire import (MAX_KEYS_PER_LIST, MAX_LISTS, PROTOCOL, AnsweredEntries, Entry,  # noqa: F401
                                 parse_entries)

log = logging.getLogger("gatewatch.confirm")

class ConfirmCache:
    """Answers per (list, key) until the expiry the hub set; bounded, least recently used out."""

    def __init__(self, max_items: int = 10000, clock: Callable[[], float] = time.monotonic):
        self.max_items = max_items
        self.clock = clock
        self._items: "OrderedDict[Tuple[str, str], Tuple[float, List[Entry]]]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, ident: str, key: str) -> Optional[List[Entry]]:
        with self._lock:
            item = self._items.get((ident, key))
            if item is None or item[0] <= self.clock():
                if item is not None:
                    del self._items[(ident, key)]
                self.misses += 1
                return None
            self._items.move_to_end((ident, key))
            self.hits += 1
            return item[1]

    def put(self, ident: str, key: str, entries: List[Entry], ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._items[(ident, key)] = (self.clock() + ttl, entries)
            self._items.move_to_end((ident, key))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class Confirmer:
    """Asks the hub about the keys of a scan result; ``ask(result)`` -> {ident: AnsweredEntries}.

    Lists the hub did not answer in time are absent from the mapping: the caller treats them as
    unconfirmed (policy decides; no report is ever made for them).
    """

    def __init__(self, client, topics, client_id: str, *, timeout: float = 2.0,
                 cache: Optional[ConfirmCache] = None, max_ttl: float = 7 * 86400):
        self.client = client
        self.topics = topics
        self.client_id = client_id
        self.timeout = timeout
        self.cache = cache if cache is not None else ConfirmCache()
        self.max_ttl = max_ttl
        self._waiting: Dict[str, list] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self.timeouts = 0

    def start(self) -> "Confirmer":
        self.client.subscribe(self.topics.confirm_resp_filter(self.client_id), self._on_answer, qos=1)
        return self

    def _on_answer(self, msg) -> None:
        rid = msg.topic.rsplit("/", 1)[-1]
        with self._lock:
            slot = self._waiting.get(rid)
        if slot is None:
            return
        slot[1] = msg.payload
        slot[0].set()

    def ask(self, result, timeout: Optional[float] = None) -> Dict[str, AnsweredEntries]:
        """The hub's entries for every hit of ``result`` that could be answered (cache first)."""
        answered: Dict[str, Dict[str, List[Entry]]] = {}
        need: Dict[str, dict] = {}
        for hit in getattr(result, "hits", ()):
            ident = hit.list.ident
            by_key = answered.setdefault(ident, {})
            for key in hit.keys[:MAX_KEYS_PER_LIST]:
                # keyed by the list version too: after an update, old negatives no longer apply
                cached = self.cache.get("%s@%d" % (ident, hit.list.version), key)
                if cached is None:
                    need.setdefault(ident, {"version": hit.list.version, "keys": []})["keys"].append(key)
                else:
                    by_key[key] = cached
        if need:
            reply = self._request(need, self.timeout if timeout is None else timeout)
            if reply is None:
                for ident in need:
                    answered.pop(ident, None)
            else:
                self._absorb(reply, need, answered)
        return {ident: AnsweredEntries(ident, by_key) for ident, by_key in answered.items()}

    def _absorb(self, reply: dict, need: Dict[str, dict], answered: Dict[str, Dict[str, List[Entry]]]) -> None:
        try:
            ttl_pos = min(float(reply.get("ttl_positive", 0)), self.max_ttl)
            ttl_neg = min(float(reply.get("ttl_negative", 0)), self.max_ttl)
        except (TypeError, ValueError):
            ttl_pos = ttl_neg = 0.0
        lists = reply.get("lists") if isinstance(reply.get("lists"), dict) else {}
        for ident, asked in need.items():
            got = lists.get(ident)
            if not isinstance(got, dict) or not isinstance(got.get("entries"), dict):
                answered.pop(ident, None)  # the hub does not know this list: unanswered
                continue
            v = got.get("version")
            if not isinstance(v, int) or v < asked["version"]:
                # the hub answers from an older version than the device holds: its "no entry" may
                # just mean "not yet loaded", so this is no answer (and nothing is cached)
                answered.pop(ident, None)
                continue
            by_key = answered[ident]
            try:
                for key in asked["keys"]:
                    entries = parse_entries(got["entries"].get(key, []))
                    by_key[key] = entries
                    self.cache.put("%s@%d" % (ident, asked["version"]), key, entries, ttl_pos if entries else ttl_neg)
            except ValueError as exc:
                log.warning("malformed confirmation answer for %s: %s", ident, exc)
                answered.pop(ident, None)

    def _request(self, need: Dict[str, dict], timeout: float) -> Optional[dict]:
        rid = os.urandom(8).hex()
        slot = [threading.Event(), None]
        with self._lock:
            self._waiting[rid] = slot
        self.requests += 1
        try:
            if not self.client.connected:
                return None
            body = {"v": PROTOCOL, "id": rid, "client": self.client_id, "lists": need}
            self.client.publish(self.topics.confirm_req(self.topics.pick_partition()), json.dumps(body).encode(), qos=1)
            if not slot[0].wait(timeout):
                self.timeouts += 1
                return None
            reply = json.loads(slot[1])
            return reply if isinstance(reply, dict) and reply.get("id") == rid else None
        except ValueError:
            return None
        finally:
            with self._lock:
                self._waiting.pop(rid, None)
