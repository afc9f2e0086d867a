"""Device-side private confirmation over MQTT: blinded probes out, sealed entries back, a cache.

Owns: the exchange with the hub for the hits of one scan (evaluation, then bucket fetch) over MQTT,
the reply topics (fresh random ids, pre-subscribed, each used once), the token wallet's refills,
timeouts, counters and the cache of answers. The messages themselves, checking every bucket against
the signed manifest's commitment and opening the records the probes' outputs open are
``agent.confirm.exchange``'s (one implementation, which the fleet simulator uses too). Must not
touch: the decision (``Scanner.confirm``), policy, reports.

For each list with hits (docs/privacy.md):

1. Evaluation, ``<p>/confirm/eval``: the OPRF inputs of the hit's probes (list, band, full band value
   or digest), blinded, padded with random elements to four, with one anonymous token. The hub sees
   four uniformly random group elements and a token it cannot link to anyone. Its answer (on a
   random reply topic) gives the evaluations and a one-use ticket.
2. Fetch, ``<p>/confirm/fetch``: the buckets the outputs fall in, padded with random bucket indices to
   four. Every bucket comes with its Merkle proof; the device checks it against the root its signed
   list names (a bucket that fails is no answer: nothing is confirmed or refuted by it), then opens
   the records whose tag its outputs give. A probe opens an entry only if it equals that entry's band
   or digest: a chosen probe without the image opens nothing, and no answer carries a plain entry.

A list with no ``sealed`` section, a source without tokens, a hub that does not answer in time or
answers what does not verify: the list is unanswered (policy decides; no report is made).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

from agent.confirm import exchange, group, tokens, wire
from agent.confirm.wire import AnsweredEntries, Entry, Probe
from agent.core.errors import ConfirmError, CryptoUnavailable, GatewatchError

log = logging.getLogger("gatewatch.confirm")

REPLY_POOL = 4


class ConfirmCache:
    """Answers per (list version, probe) until the expiry the hub set; bounded, least recently used out."""

    def __init__(self, max_items: int = 10000, clock: Callable[[], float] = time.monotonic):
        self.max_items = max_items
        self.clock = clock
        self._items: "OrderedDict[Tuple[str, Probe], Tuple[float, List[Entry]]]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, ident: str, probe: Probe) -> Optional[List[Entry]]:
        with self._lock:
            item = self._items.get((ident, probe))
            if item is None or item[0] <= self.clock():
                if item is not None:
                    del self._items[(ident, probe)]
                self.misses += 1
                return None
            self._items.move_to_end((ident, probe))
            self.hits += 1
            return item[1]

    def put(self, ident: str, probe: Probe, entries: List[Entry], ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._items[(ident, probe)] = (self.clock() + ttl, entries)
            self._items.move_to_end((ident, probe))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class _Waiter:
    __slots__ = ("event", "payload")

    def __init__(self):
        self.event = threading.Event()
        self.payload = None


def sealed_section(lst) -> Optional[dict]:
    """The manifest's ``sealed`` section of a loaded list, or None."""
    manifest = getattr(getattr(lst, "file", None), "manifest", None) or getattr(lst, "manifest", None) or {}
    s = manifest.get("sealed") if isinstance(manifest, dict) else None
    return s if isinstance(s, dict) else None


class Confirmer:
    """Asks the hub about the hits of a scan result; ``ask(result)`` -> {ident: AnsweredEntries}.

    Lists the hub did not answer (in time, verifiably, or at all) are absent from the mapping: the
    caller treats them as unconfirmed (policy decides; no report is ever made for them).
    """

    def __init__(self, client, topics, login: Optional[str] = None, *, timeout: float = 2.0,
                 cache: Optional[ConfirmCache] = None, max_ttl: float = 7 * 86400,
                 wallet: Optional[tokens.TokenWallet] = None, lists: Callable[[], tuple] = tuple,
                 clock: Callable[[], float] = time.time):
        self.client = client
        self.topics = topics
        self.login = login
        self.timeout = timeout
        self.cache = cache if cache is not None else ConfirmCache()
        self.max_ttl = max_ttl
        self.wallet = wallet if wallet is not None else tokens.TokenWallet()
        self.lists = lists  # the lists in force (for token refills: which sources, which token keys)
        self.clock = clock
        self._waiting: Dict[str, _Waiter] = {}
        self._lock = threading.Lock()
        self._pool: List[str] = []
        self._pool_lock = threading.Lock()
        self._issue_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._arrived = threading.Condition()
        self._refiller: Optional[threading.Thread] = None
        # counters for status (no identity, no probe, no hash in any of them)
        self.requests = 0
        self.timeouts = 0
        self.refused = 0  # the hub answered with an error word
        self.bad_answers = 0  # answers that did not verify: a bucket proof, a malformed message
        self.no_tokens = 0
        self.unsealed = 0  # hits on lists that offer no private confirmation
        self.unavailable: Optional[str] = None
        try:
            group.load()
        except CryptoUnavailable as exc:
            self.unavailable = str(exc)
            log.error("private confirmation unavailable: %s", exc)

    # ------------------------------------------------------------ set-up
    def start(self) -> "Confirmer":
        """Subscribe the reply pool and token answers; refill tokens in the background."""
        for _ in range(REPLY_POOL):
            self._add_reply_topic()
        if self.login:
            self.client.subscribe(self.topics.tokens_resp_filter(self.login), self._on_answer, qos=1)
            self._refiller = threading.Thread(target=self._refill_loop, name="gatewatch-tokens", daemon=True)
            self._refiller.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.wallet.save()

    def _add_reply_topic(self) -> None:
        rid = os.urandom(16).hex()
        self.client.subscribe(self.topics.confirm_resp(rid), self._on_answer, qos=1)
        with self._pool_lock:
            self._pool.append(rid)

    def _take_reply(self) -> str:
        with self._pool_lock:
            rid = self._pool.pop(0) if self._pool else None
        if rid is None:  # more requests at once than the pool holds: subscribe one now
            rid = os.urandom(16).hex()
            self.client.subscribe(self.topics.confirm_resp(rid), self._on_answer, qos=1).wait(self.timeout)
        self._add_reply_topic()  # the next request's topic is subscribed before it is needed
        return rid

    def _drop_reply(self, rid: str) -> None:
        try:
            self.client.unsubscribe(self.topics.confirm_resp(rid))
        except Exception:  # not connected: the subscription dies with the session
            pass

    def _on_answer(self, msg) -> None:
        rid = msg.topic.rsplit("/", 1)[-1]
        with self._lock:
            w = self._waiting.get(rid)
        if w is not None:
            w.payload = msg.payload
            w.event.set()

    def _exchange(self, topic: str, body: dict, rid: str, deadline: float, refusals: Optional[list] = None
                  ) -> Optional[dict]:
        """The answer to one request, or None (time-out, refusal, malformed); a refusal's word is
        appended to ``refusals`` when given."""
        w = _Waiter()
        with self._lock:
            self._waiting[rid] = w
        try:
            if not self.client.connected:
                return None
            self.client.publish(topic, wire.dumps(body), qos=1)
            if not w.event.wait(max(0.0, deadline - time.monotonic())):
                self.timeouts += 1
                return None
            doc, err = exchange.read_answer(w.payload, rid)
            if err is not None:
                self.refused += 1
                log.warning("the hub refused a confirmation request: %s", err)
                if refusals is not None:
                    refusals.append(err)
                return None
            return doc
        except ConfirmError as exc:
            self.bad_answers += 1
            log.warning("confirmation answer refused: %s", exc)
            return None
        finally:
            with self._lock:
                self._waiting.pop(rid, None)

    # ------------------------------------------------------------ tokens
    def _token_sources(self) -> Dict[str, bytes]:
        out = {}
        for lst in self.lists() or ():
            s = sealed_section(lst)
            if s and isinstance(s.get("tokens"), str):
                try:
                    out[lst.source] = bytes.fromhex(s["tokens"])
                except ValueError:
                    continue
        return out

    def refill(self, source: str, token_pk: bytes, count: int = tokens.DEFAULT_BUDGET,
               timeout: Optional[float] = None) -> int:
        """Ask for this epoch's batch of tokens of ``source`` (if not held yet); how many were added."""
        if self.unavailable or not self.login:
            return 0
        epoch = tokens.epoch_of(self.clock())
        with self._issue_lock:
            if self.wallet.has_epoch(source, epoch):
                return 0
            batch = tokens.Issuance(source, count, epoch)
            rid = os.urandom(16).hex()
            body = exchange.token_request(batch, rid)
            deadline = time.monotonic() + (timeout if timeout is not None else max(self.timeout, 10.0))
            # the login's own partition: one hub instance counts this device's batches
            partition = exchange.token_partition(self.topics, self.login)
            doc = self._exchange(self.topics.tokens_req(self.login, partition), body, rid, deadline)
            if doc is None:
                return 0
            try:
                got = exchange.token_answer(batch, doc, token_pk)
            except ConfirmError as exc:
                self.bad_answers += 1
                log.error("token issuance refused: %s", exc)
                return 0
            self.wallet.add(source, got)
            with self._arrived:
                self._arrived.notify_all()
            return len(got)

    def refill_all(self) -> int:
        """This epoch's tokens for every source whose lists are in force (those not held yet)."""
        n = 0
        for source, pk in self._token_sources().items():
            try:
                n += self.refill(source, pk)
            except GatewatchError as exc:
                log.warning("token refill for %s failed: %s", source, exc)
        return n

    def _refill_loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            if not self.client.connected:
                self._wake.wait(1.0)  # waiting for the broker costs nothing: look again soon
                self._wake.clear()
                continue
            self.refill_all()
            epoch = tokens.epoch_of(self.clock())
            missing = [s for s in self._token_sources() if not self.wallet.has_epoch(s, epoch)]
            if missing:
                wait = backoff * random.uniform(1.0, 2.0)  # the hub is away: again soon, then less often
                backoff = min(backoff * 2, 60.0)
            else:
                backoff = 1.0
                # at the next epoch, plus a random spread so that a fleet does not ask all at once
                now = self.clock()
                wait = tokens.EPOCH_SECONDS - now % tokens.EPOCH_SECONDS + random.uniform(0, 600)
            self.wallet.save()  # what was spent since the last look (never on a confirmation's path)
            self._wake.wait(min(wait, 600.0))
            self._wake.clear()

    def lists_changed(self) -> None:
        """New lists are in force: fetch tokens for a new source now (never because of a scan)."""
        self._wake.set()

    # ------------------------------------------------------------ asking
    def ask(self, result, timeout: Optional[float] = None) -> Dict[str, AnsweredEntries]:
        """The entries the hub's sealed tables open for every hit of ``result`` (cache first)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        answered: Dict[str, AnsweredEntries] = {}
        for hit in getattr(result, "hits", ()):
            lst = hit.list
            ident = lst.ident
            if ident in answered:
                continue
            by_probe: Dict[Probe, List[Entry]] = {}
            need = []
            vkey = "%s@%d" % (ident, lst.version)
            for p in hit.probes:
                cached = self.cache.get(vkey, p)
                if cached is None:
                    need.append(p)
                else:
                    by_probe[p] = cached
            if need:
                got = self._confirm_list(lst, need, deadline)
                if got is None:
                    continue  # unanswered: absent from the mapping
                entries, ttl = got
                for p in need:
                    if p not in entries:
                        continue  # not asked: an earlier probe already opened the entry
                    by_probe[p] = entries[p]
                    t = min(ttl[0] if by_probe[p] else ttl[1], self.max_ttl)
                    self.cache.put(vkey, p, by_probe[p], t)
            answered[ident] = AnsweredEntries(ident, by_probe)
        return answered

    def _confirm_list(self, lst, probes: List[Probe], deadline: float):
        """({probe: entries}, (ttl positive, ttl negative)) for one list, or None when unanswered."""
        s = sealed_section(lst)
        if s is None:
            self.unsealed += 1
            return None
        if self.unavailable:
            return None
        out: Dict[Probe, List[Entry]] = {}
        ttl = (0.0, 0.0)
        # the scanner lists a hit's probes most likely first (exact bands of the image as it is, then
        # flipped bits and other orientations): one band equal to an entry's opens that entry's record,
        # so the rest are asked only while nothing has opened (a token each round)
        for i in range(0, len(probes), wire.ELEMENTS):
            got = self._round(lst, s, probes[i:i + wire.ELEMENTS], deadline)
            if got is None:
                return None
            part, ttl = got
            out.update(part)
            if any(part.values()):
                break
        return out, ttl

    def _token(self, source: str, deadline: float):
        """One token of ``source``; right after a start (no batch of this epoch yet) it waits, until the
        deadline, for the scheduled batch: waiting asks the hub nothing, so it says nothing either."""
        tok = self.wallet.take(source)
        while tok is None and not self.wallet.has_epoch(source, tokens.epoch_of(self.clock())):
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                break
            with self._arrived:
                self._arrived.wait(min(left, 0.5))
            tok = self.wallet.take(source)
        return tok

    def _round(self, lst, s: dict, probes: List[Probe], deadline: float):
        # a token the hub calls spent or expired (one spent just before a power cut comes back from
        # the wallet on disk) costs one more try with the next token, never the confirmation
        for _attempt in range(3):
            tok = self._token(lst.source, deadline)
            if tok is None:
                self.no_tokens += 1
                log.warning("no confirmation token left for %s this epoch: the hit stays unconfirmed", lst.source)
                return None
            self.requests += 1
            rnd = exchange.Round(lst, s, probes)  # fresh blinds each try: two tries look like strangers
            rid = self._take_reply()
            body = rnd.eval_request(tok, rid)
            refusals: list = []
            try:
                doc = self._exchange(self.topics.confirm_eval(exchange.eval_partition(self.topics, tok)), body, rid,
                                     deadline, refusals)
            finally:
                self._drop_reply(rid)
            if doc is not None or not set(refusals) & {"token-spent", "token-expired"}:
                break
        if doc is None:
            return None
        try:
            ttl = rnd.eval_answer(doc)
        except ConfirmError as exc:
            self.bad_answers += 1
            log.warning("evaluation answer refused: %s", exc)
            return None
        entries = self._fetch(rnd, deadline)
        if entries is None:
            return None
        return entries, ttl

    def _fetch(self, rnd: exchange.Round, deadline: float):
        rid = self._take_reply()
        body = rnd.fetch_request(rid)
        try:
            doc = self._exchange(self.topics.confirm_fetch(self.topics.pick_partition()), body, rid, deadline)
        finally:
            self._drop_reply(rid)
        if doc is None:
            return None
        try:
            return rnd.fetch_answer(doc)
        except ConfirmError as exc:
            self.bad_answers += 1
            log.warning("bucket answer refused: %s", exc)
            return None

    def stats(self) -> dict:
        """Counters for status."""
        return {"requests": self.requests, "timeouts": self.timeouts, "refused": self.refused,
                "bad_answers": self.bad_answers, "no_tokens": self.no_tokens, "unsealed": self.unsealed,
                "cache": len(self.cache), "unavailable": self.unavailable,
                "crypto": None if self.unavailable else group.backend(),
                "tokens": {source: self.wallet.count(source) for source in self._token_sources()}}
