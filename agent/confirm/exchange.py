"""One confirmation round and one token issuance as messages: built and checked, with no transport.

Owns: the device's side of private confirmation between "send this" and "this came back" (docs/
privacy.md): blinding a round's probes and padding them to four, the evaluation request, checking the
evaluation answer and unblinding it, the padded fetch request, checking every bucket against the
signed commitment and opening the records; the token issuance request of a batch and the check of its
answer (the batched proof against the token key the manifest names); reading an answer's reply id
and error word. ``agent.confirm.client`` (the agent, over paho) and ``tools.fleetsim`` (thousands of
simulated devices, over asyncio) both use it, so there is one implementation of what goes on the wire.
Must not touch: MQTT, reply topics, timeouts, the wallet, counters, the cache, the decision.

Every check raises ConfirmError; the caller counts and logs it (an answer that does not verify is no
answer: nothing is confirmed or refuted by it).
"""

from __future__ import annotations

import hashlib
import random
from typing import Dict, List, Optional, Sequence, Tuple

from agent.confirm import group, oprf, sealed, tokens, wire
from agent.confirm.wire import Entry, Probe
from agent.core.errors import ConfirmError
from agent.core.signals import HASH_BYTES


def read_answer(payload: bytes, rid: str) -> Tuple[dict, Optional[str]]:
    """(answer, the hub's error word or None) of the answer to request ``rid``; ConfirmError when it is
    not a protocol message or answers another request."""
    doc = wire.loads(payload, "answer")
    if wire.reply_id(doc) != rid:
        raise ConfirmError("answer for another request")
    return doc, wire.answer_error(doc)


def token_partition(topics, login: str) -> int:
    """The login's own token partition: one hub instance counts a device's batches (docs/cluster.md)."""
    return topics.pick_partition(hashlib.sha256(login.encode()).digest())


def eval_partition(topics, token: Tuple[bytes, bytes]) -> int:
    """The partition an evaluation spending ``token`` goes to: fixed by the token's random nonce, so
    that exactly one hub instance may accept it (a token sent to several instances is refused by all
    but its own) while requests still spread at random over the partitions."""
    return topics.pick_partition(hashlib.sha256(b"gatewatch-token-partition\x00" + token[0]).digest())


def token_request(batch: tokens.Issuance, rid: str) -> dict:
    """The issuance request of one batch (``tokens/req/<login>/<token_partition>``)."""
    return {"v": wire.PROTOCOL, "source": batch.source, "reply": rid, "e": [wire.b64(b) for b in batch.blinded]}


def token_answer(batch: tokens.Issuance, doc: dict, token_pk: bytes) -> List[Tuple[bytes, bytes]]:
    """The batch's tokens from the hub's answer; ConfirmError unless the proof pins them to ``token_pk``."""
    return batch.finish(wire.elements(doc, len(batch.blinded), wire.MAX_TOKENS_PER_ISSUE),
                        wire.unb64(doc.get("proof"), oprf.PROOF_BYTES, "proof"), token_pk)


class Round:
    """One evaluation and its fetch for up to ``wire.ELEMENTS`` probes of one list.

    ``lst`` is the list in force (source, name, signal, ident, version), ``s`` its manifest's
    ``sealed`` section. Use: ``eval_request`` -> send; ``eval_answer(doc)`` -> the ttl pair;
    ``fetch_request`` -> send; ``fetch_answer(doc)`` -> {probe: entries it opened}.
    """

    def __init__(self, lst, s: dict, probes: Sequence[Probe]):
        if not 1 <= len(probes) <= wire.ELEMENTS:
            raise ValueError("a round holds 1..%d probes" % wire.ELEMENTS)
        self.lst = lst
        self.s = s
        self.probes = list(probes)
        self.inputs = [sealed.oprf_input(lst.source, lst.name, lst.signal, band, value) for band, value in probes]
        self.blinded = [oprf.blind(x) for x in self.inputs]
        self.ticket: Optional[bytes] = None
        self.outputs: List[bytes] = []
        self.openings: List[sealed.Opening] = []
        self.real: List[int] = []

    def eval_request(self, token: Tuple[bytes, bytes], rid: str) -> dict:
        """The evaluation request: the blinded inputs padded with random elements to four, one token."""
        return {"v": wire.PROTOCOL, "key": self.s["key"], "reply": rid,
                "token": {"n": wire.b64(token[0]), "y": wire.b64(token[1])},
                "e": [wire.b64(b) for b in wire.pad_elements([b for _, b in self.blinded], group.random_element)]}

    def eval_answer(self, doc: dict) -> Tuple[float, float]:
        """Takes the evaluations and the ticket; (ttl positive, ttl negative)."""
        evaluated = wire.elements(doc, wire.ELEMENTS)
        ticket = wire.unb64(doc.get("ticket"), 16, "ticket")
        ttl = doc.get("ttl")
        if (not isinstance(ttl, list) or len(ttl) != 2
                or not all(type(t) in (int, float) and 0 <= t < 1e9 for t in ttl)):
            raise ConfirmError("field 'ttl' malformed")
        self.outputs = [oprf.finalize(x, r, e) for x, (r, _), e in zip(self.inputs, self.blinded, evaluated)]
        self.ticket = ticket
        return float(ttl[0]), float(ttl[1])

    def fetch_request(self, rid: str) -> dict:
        """The fetch request: the buckets the outputs fall in, padded with random indices to four."""
        n = self.s["buckets"]
        self.openings = [sealed.Opening(y) for y in self.outputs]
        self.real = sorted(set(o.bucket(n) for o in self.openings))
        indices = self.real + [random.randrange(n) for _ in range(wire.BUCKETS_PER_FETCH - len(self.real))]
        random.shuffle(indices)
        return {"v": wire.PROTOCOL, "list": self.lst.ident, "version": self.lst.version,
                "ticket": wire.b64(self.ticket), "reply": rid, "b": indices}

    def fetch_answer(self, doc: dict) -> Dict[Probe, List[Entry]]:
        """{probe: the entries it opened}, every bucket checked against the signed root first."""
        n = self.s["buckets"]
        root = bytes.fromhex(self.s["root"])
        lst = self.lst
        buckets = wire.parse_buckets(doc, n.bit_length() - 1)
        for i in self.real:
            if i not in buckets or not sealed.verify_bucket(i, buckets[i][0], buckets[i][1], root, n):
                raise ConfirmError("bucket %d does not match the commitment of %s v%d" % (i, lst.ident, lst.version))
        out: Dict[Probe, List[Entry]] = {}
        want = HASH_BYTES.get(lst.signal)
        for p, y, o in zip(self.probes, self.outputs, self.openings):
            found = sealed.open_bucket(y, buckets[o.bucket(n)][0])
            out[p] = [Entry(ident, h) for h, ident in found if want is None or len(h) == want]
        return out
