"""Anonymous request tokens: how the hub bounds each device's evaluations without knowing who asks.

Owns: the token's form (a random nonce naming its epoch, and the VOPRF output of the source's token
key on it), preparing and finishing an issuance batch on the device (the DLEQ proof is checked
against the token key the signed manifest names, so a hub cannot mark one device's tokens with a key
of its own), the device's wallet (kept on disk, 0600), and the hub's check of a spent token. Must not
touch: MQTT, the confirmation exchange itself (``agent.confirm.client``).

The scheme is Privacy Pass's privately verifiable tokens (RFC 9578 in spirit, over RFC 9497's VOPRF
with ristretto255): a device logs in, asks for a batch of blinded tokens once per epoch, always the
whole batch and on a schedule, so the issuance says nothing about what the device saw; each
confirmation request then spends one token that the hub can check but cannot link to the issuance.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from agent.confirm import group, oprf
from agent.core.errors import ConfirmError

EPOCH_SECONDS = 6 * 3600
DEFAULT_BUDGET = 64  # tokens per device, source and epoch (the hub's limit; devices ask for it all)
_PREFIX = b"gatewatch-token-v1\x00"


def epoch_of(now: float) -> int:
    """The token epoch a time falls in."""
    return int(now // EPOCH_SECONDS)


def token_input(source: str, nonce: bytes) -> bytes:
    """The VOPRF input of a token."""
    return _PREFIX + source.encode() + b"\x00" + nonce


def nonce_epoch(nonce: bytes) -> int:
    """The epoch a nonce was made for (its first four bytes)."""
    return struct.unpack(">I", nonce[:4])[0]


def new_nonce(epoch: int) -> bytes:
    """32 bytes: the epoch, then 28 random bytes."""
    return struct.pack(">I", epoch & 0xFFFFFFFF) + os.urandom(28)


class Issuance:
    """One batch being issued on the device: the nonces, their blinds, the blinded elements."""

    def __init__(self, source: str, count: int, epoch: int):
        self.source = source
        self.epoch = epoch
        self.nonces = [new_nonce(epoch) for _ in range(count)]
        self.blinds: List[bytes] = []
        self.blinded: List[bytes] = []
        for n in self.nonces:
            r, b = oprf.blind(token_input(source, n), oprf.MODE_VOPRF)
            self.blinds.append(r)
            self.blinded.append(b)

    def finish(self, evaluated: Sequence[bytes], proof: bytes, token_pk: bytes) -> List[Tuple[bytes, bytes]]:
        """(nonce, output) of every token; ConfirmError unless the proof pins them to ``token_pk``."""
        if len(evaluated) != len(self.blinded):
            raise ConfirmError("issuance answer holds %d elements for %d asked" % (len(evaluated), len(self.blinded)))
        if not oprf.verify_proof(token_pk, self.blinded, evaluated, proof):
            raise ConfirmError("issuance proof does not verify against the token key the list names")
        return [(n, oprf.finalize(token_input(self.source, n), r, e))
                for n, r, e in zip(self.nonces, self.blinds, evaluated)]


class TokenWallet:
    """Unspent tokens per source (thread-safe), kept in ``path`` when one is given."""

    def __init__(self, path: Optional[str] = None, clock=time.time):
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: Dict[str, List[Tuple[bytes, bytes]]] = {}
        self._batches: Dict[str, int] = {}  # the newest epoch whose batch each source gave (spent or not)
        self._dirty = False
        self._load()

    def _load(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read(1 << 20))
            for source, items in doc.get("tokens", {}).items():
                self._tokens[source] = [(bytes.fromhex(n), bytes.fromhex(y)) for n, y in items
                                        if len(n) == 64 and len(y) == 128]
            self._batches = {s: e for s, e in doc.get("batches", {}).items() if type(e) is int}
        except (OSError, ValueError, AttributeError, TypeError):
            self._tokens, self._batches = {}, {}  # a damaged wallet costs one epoch's tokens, never a crash

    def _save(self) -> None:
        self._dirty = False
        if not self.path:
            return
        from agent.atomicfile import write_atomic

        doc = {"tokens": {s: [[n.hex(), y.hex()] for n, y in items] for s, items in self._tokens.items()},
               "batches": self._batches}
        try:
            write_atomic(self.path, json.dumps(doc).encode(), mode=0o600)
        except OSError:
            pass  # a full disk: tokens still work from memory until a restart

    def _fresh(self, items):
        now_epoch = epoch_of(self.clock())
        return [(n, y) for n, y in items if nonce_epoch(n) >= now_epoch - 1]

    def add(self, source: str, tokens: Sequence[Tuple[bytes, bytes]]) -> None:
        with self._lock:
            self._tokens[source] = self._fresh(self._tokens.get(source, [])) + list(tokens)
            for n, _ in tokens:
                self._batches[source] = max(self._batches.get(source, 0), nonce_epoch(n))
            self._save()

    def take(self, source: str) -> Optional[Tuple[bytes, bytes]]:
        """One unspent token of ``source`` (oldest first), or None.

        Not written to disk here (no fsync on the path of a confirmation): a token spent and then lost
        in a power cut comes back after the restart and is refused once as spent (counted), no more."""
        with self._lock:
            items = self._fresh(self._tokens.get(source, []))
            if not items:
                self._tokens[source] = []
                return None
            tok = items.pop(0)
            self._tokens[source] = items
            self._dirty = True
            return tok

    def save(self) -> None:
        """Write the wallet if tokens were spent since the last write."""
        with self._lock:
            if self._dirty:
                self._save()

    def count(self, source: str) -> int:
        with self._lock:
            return len(self._fresh(self._tokens.get(source, [])))

    def has_epoch(self, source: str, epoch: int) -> bool:
        """True when ``source`` already gave this device its batch for ``epoch`` (spent or not)."""
        with self._lock:
            return self._batches.get(source, -1) >= epoch


class SpentTokens:
    """The hub's check of spent tokens: right key, current or previous epoch, never spent before."""

    def __init__(self, clock=time.time, max_per_epoch: int = 50_000_000):
        self.clock = clock
        self.max_per_epoch = max_per_epoch
        self._lock = threading.Lock()
        self._spent: Dict[int, set] = {}

    def redeem(self, source: str, token_sk: bytes, nonce: bytes, output: bytes) -> Optional[str]:
        """None when the token is good (and now spent); else the reason word."""
        epoch = nonce_epoch(nonce)
        now = epoch_of(self.clock())
        if epoch not in (now, now - 1):
            return "token-expired"
        with self._lock:  # a replay is refused before any group operation is spent on it
            if nonce in self._spent.get(epoch, ()):
                return "token-spent"
        if oprf.evaluate(token_sk, token_input(source, nonce), oprf.MODE_VOPRF) != output:
            return "token-invalid"
        with self._lock:
            for e in [e for e in self._spent if e < now - 1]:
                del self._spent[e]
            spent = self._spent.setdefault(epoch, set())
            if nonce in spent:
                return "token-spent"
            if len(spent) >= self.max_per_epoch:
                return "token-overflow"
            spent.add(nonce)
        return None


def issue(token_sk: bytes, token_pk: bytes, blinded: Sequence[bytes]) -> Tuple[List[bytes], bytes]:
    """The hub's side of an issuance batch: evaluations and the batched proof."""
    for b in blinded:
        group.check_element(b, "blinded token")
    return oprf.voprf_blind_evaluate(token_sk, token_pk, list(blinded))
