"""Acceptance rules added for hostile but signed lists: each is refused with a reason, nothing raises."""

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core import listfile
from agent.core.errors import TrustError
from agent.lists.assemble import assemble, lsh_params
from agent.lists.trust import TrustStore, key_id
from agent.lists.verify import verify_bytes

NOW = 1_800_000_000


def signed(key, manifest_over=None, content=None, signal="sha256", lsh=None):
    data = assemble(source="s", name="l", signal=signal, version=1, hashes=[b"\x07" * 32], sign=key.sign,
                    key_id=key_id(key.public_key()), created=NOW - 10, expires=NOW + 86400, lsh=lsh)
    lf = listfile.parse(data)
    m = dict(lf.manifest)
    if content is not None:
        m["content_sha256"] = hashlib.sha256(content).hexdigest()
        m["content_length"] = len(content)
    else:
        content = lf.content
    for k, v in (manifest_over or {}).items():
        m[k] = v
    raw = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    return listfile.serialise(raw, key.sign(listfile.signed_part(raw)), content)


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trust(key):
    t = TrustStore()
    t.add("s", key.public_key())
    return t


def test_a_good_list_loads(key, trust):
    assert verify_bytes(signed(key), trust, now=NOW).ident == "s/l"


def test_a_filter_with_every_bit_set_is_refused(key, trust):
    lf = listfile.parse(signed(key))
    with pytest.raises(TrustError, match="full"):
        verify_bytes(signed(key, content=b"\xff" * len(lf.content)), trust, now=NOW)


@pytest.mark.parametrize("field,value,words", [
    ("k", "20", "filter field 'k'"), ("m", -5, "filter field 'm'"), ("salt", None, "salt"),
])
def test_wrong_types_are_refused_not_raised(key, trust, field, value, words):
    lf = listfile.parse(signed(key))
    filt = dict(lf.manifest["filter"])
    filt[field] = value
    with pytest.raises(TrustError, match=words):
        verify_bytes(signed(key, {"filter": filt}), trust, now=NOW)


def test_a_pdq_list_without_lsh_and_absurd_probing_are_refused(key, trust):
    good = signed(key, signal="pdq", lsh=lsh_params("pdq", None))
    assert verify_bytes(good, trust, now=NOW).lsh["bands"] == 7
    m = dict(listfile.parse(good).manifest)
    del m["lsh"]
    with pytest.raises(TrustError, match="lsh"):
        verify_bytes(signed(key, {"lsh": None, "signal": "pdq"}), trust, now=NOW)
    with pytest.raises(TrustError, match="lsh field"):
        verify_bytes(signed(key, {"lsh": dict(m["filter"], bands=7, flip_bits=36, depth=36, threshold=31)}),
                     trust, now=NOW)


def test_a_signal_this_agent_cannot_match_is_refused(key, trust, monkeypatch):
    # a neural list on a device without a TFLite runtime would never match: refused, with the reason
    from agent.hashing import neural

    def no_runtime():
        raise neural.RuntimeMissing("no TFLite runtime installed for the neural hash (test)")

    monkeypatch.setattr(neural, "find_runtime", no_runtime)
    monkeypatch.setattr(neural, "_HASHERS", {})
    data = signed(key, {"signal": "neural", "model": neural.DEFAULT_MODEL,
                        "lsh": {"bands": 4, "flip_bits": 8, "depth": 2, "threshold": 28, "key_bits": 16}})
    with pytest.raises(TrustError, match="cannot compute .*no TFLite runtime installed"):
        verify_bytes(data, trust, now=NOW)
