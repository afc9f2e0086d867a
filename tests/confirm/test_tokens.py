"""Anonymous tokens: issuance checked against the signed token key, the wallet on disk, the hub's
check of a spent token (right key, this or the last epoch, once)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from agent.confirm import oprf, tokens
from agent.core.errors import ConfirmError


class Clock:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def issue(sk, pk, source="hl1", n=4, epoch=None, clock=None):
    batch = tokens.Issuance(source, n, tokens.epoch_of((clock or Clock())()) if epoch is None else epoch)
    evaluated, proof = tokens.issue(sk, pk, batch.blinded)
    return batch, evaluated, proof


def test_issuance_is_pinned_to_the_signed_token_key():
    sk, pk = oprf.generate_key_pair()
    other_sk, other_pk = oprf.generate_key_pair()
    batch, ev, proof = issue(sk, pk)
    got = batch.finish(ev, proof, pk)
    assert len(got) == 4 and len({n for n, _ in got}) == 4
    with pytest.raises(ConfirmError, match="proof"):
        batch.finish(ev, proof, other_pk)  # a hub keeping a key of its own for this device
    ev2, proof2 = tokens.issue(other_sk, other_pk, batch.blinded)
    with pytest.raises(ConfirmError):
        batch.finish(ev2, proof2, pk)
    with pytest.raises(ConfirmError):
        batch.finish(ev[:3], proof, pk)


def test_spent_tokens_are_refused_and_epochs_roll():
    sk, pk = oprf.generate_key_pair()
    clock = Clock()
    spent = tokens.SpentTokens(clock)
    batch, ev, proof = issue(sk, pk, clock=clock)
    (n1, y1), (n2, y2) = batch.finish(ev, proof, pk)[:2]
    assert spent.redeem("hl1", sk, n1, y1) is None
    assert spent.redeem("hl1", sk, n1, y1) == "token-spent"
    assert spent.redeem("hl2", sk, n2, y2) == "token-invalid"  # another source's token
    assert spent.redeem("hl1", sk, n2, os.urandom(64)) == "token-invalid"
    clock.t += tokens.EPOCH_SECONDS  # the previous epoch's tokens still count
    assert spent.redeem("hl1", sk, n2, y2) is None
    batch, ev, proof = issue(sk, pk, clock=clock)
    (n3, y3) = batch.finish(ev, proof, pk)[0]
    clock.t += 2 * tokens.EPOCH_SECONDS  # two epochs later: expired
    assert spent.redeem("hl1", sk, n3, y3) == "token-expired"


def test_wallet_keeps_tokens_across_a_restart_and_drops_old_epochs(tmp_path):
    sk, pk = oprf.generate_key_pair()
    clock = Clock()
    path = str(tmp_path / "tokens.json")
    w = tokens.TokenWallet(path, clock=clock)
    batch, ev, proof = issue(sk, pk, n=3, clock=clock)
    w.add("hl1", batch.finish(ev, proof, pk))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = w.take("hl1")
    w.save()
    w2 = tokens.TokenWallet(path, clock=clock)
    assert w2.count("hl1") == 2 and first not in [w2.take("hl1"), w2.take("hl1")]
    assert w2.has_epoch("hl1", tokens.epoch_of(clock()))
    while w2.take("hl1"):
        pass
    w2.save()  # all spent: the epoch's batch was still given (no second batch is asked for)
    assert tokens.TokenWallet(path, clock=clock).has_epoch("hl1", tokens.epoch_of(clock()))
    clock.t += 2 * tokens.EPOCH_SECONDS
    assert tokens.TokenWallet(path, clock=clock).count("hl1") == 0


def test_a_damaged_wallet_costs_tokens_never_a_crash(tmp_path):
    path = tmp_path / "tokens.json"
    for junk in (b"", b"{", b"[]", json.dumps({"tokens": {"hl1": [["zz", "yy"]]}}).encode(),
                 json.dumps({"tokens": {"hl1": "x"}}).encode(), os.urandom(200)):
        path.write_bytes(junk)
        assert tokens.TokenWallet(str(path)).count("hl1") == 0
