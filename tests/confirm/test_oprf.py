"""The group and the OPRF against the RFCs' vectors, on both backends (libsodium and pure Python),
and the two backends against each other on random inputs."""

from __future__ import annotations

import os

import pytest

from agent.confirm import group, oprf, ristretto
from agent.core.errors import ConfirmError

h = bytes.fromhex
SEED, INFO = h("a3" * 32), b"test key"
BLIND = h("64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706")
INPUTS = (h("00"), h("5a" * 17))
# RFC 9497 Appendix A.1.1 (OPRF mode) and A.1.2 (VOPRF mode), ristretto255-SHA512
OPRF_SK = "5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e"
OPRF_VECTORS = [
    ("609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c",
     "7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e",
     "527759c3d9366f277d8c6020418d96bb393ba2afb20ff90df23fb7708264e2f3ab9135e3bd69955851de4b1f9fe8a0973396719b7912ba9ee8aa7d0b5e24bcf6"),
    ("da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418",
     "b4cbf5a4f1eeda5a63ce7b77c7d23f461db3fcab0dd28e4e17cecb5c90d02c25",
     "f4a74c9c592497375e796aa837e907b1a045d34306a749db9f34221f7e750cb4f2a6413a6bf6fa5e19ba6348eb673934a722a7ede2e7621306d18951e7cf2c73"),
]
VOPRF_SK = "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909"
VOPRF_PK = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e"
PROOF_R = h("222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e")
VOPRF_VECTORS = [
    ("863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
     "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
     "ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd066d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
     "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7da4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c"),
    ("cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c",
     "60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468",
     "401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
     "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6"),
]
# VOPRF batch of two (A.1.2.3): one proof for both
BATCH_BLINDS = (BLIND, h("222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e"))
BATCH_R = h("419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c")
BATCH_PROOF = ("cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a"
               "5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08")
# RFC 9496 Appendix A.1: multiples of the generator
MULTIPLES = ["e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
             "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919"]


@pytest.fixture(params=["libsodium", "python"])
def backend(request):
    if request.param == "python":
        impl = ristretto
    else:
        impl = group._libsodium()
    saved = group._impl
    group._use(impl)
    yield request.param
    group._use(saved)


def test_generator_multiples(backend):
    one = (1).to_bytes(32, "little")
    assert group.mul_base(one).hex() == MULTIPLES[0]
    assert group.mul_base((2).to_bytes(32, "little")).hex() == MULTIPLES[1]
    assert group.add(h(MULTIPLES[0]), h(MULTIPLES[0])).hex() == MULTIPLES[1]


def test_oprf_vectors(backend):
    sk, _ = oprf.derive_key_pair(SEED, INFO)
    assert sk.hex() == OPRF_SK
    for x, (blinded, evaluated, output) in zip(INPUTS, OPRF_VECTORS):
        r, b = oprf.blind(x, blind_scalar=BLIND)
        assert b.hex() == blinded
        e = oprf.blind_evaluate(sk, b)
        assert e.hex() == evaluated
        assert oprf.finalize(x, r, e).hex() == output == oprf.evaluate(sk, x).hex()


def test_voprf_vectors_and_batched_proof(backend):
    sk, pk = oprf.derive_key_pair(SEED, INFO, oprf.MODE_VOPRF)
    assert (sk.hex(), pk.hex()) == (VOPRF_SK, VOPRF_PK)
    for x, (blinded, evaluated, proof, output) in zip(INPUTS, VOPRF_VECTORS):
        r, b = oprf.blind(x, oprf.MODE_VOPRF, blind_scalar=BLIND)
        assert b.hex() == blinded
        ev, pr = oprf.voprf_blind_evaluate(sk, pk, [b], r=PROOF_R)
        assert (ev[0].hex(), pr.hex()) == (evaluated, proof)
        assert oprf.verify_proof(pk, [b], ev, pr)
        assert oprf.finalize(x, r, ev[0]).hex() == output
    blinded = [oprf.blind(x, oprf.MODE_VOPRF, blind_scalar=s)[1] for x, s in zip(INPUTS, BATCH_BLINDS)]
    ev, pr = oprf.voprf_blind_evaluate(sk, pk, blinded, r=BATCH_R)
    assert pr.hex() == BATCH_PROOF and oprf.verify_proof(pk, blinded, ev, pr)


def test_proofs_catch_another_key_or_a_changed_element(backend):
    sk, pk = oprf.generate_key_pair()
    other_sk, other_pk = oprf.generate_key_pair()
    blinded = [oprf.blind(b"token %d" % i, oprf.MODE_VOPRF)[1] for i in range(4)]
    ev, pr = oprf.voprf_blind_evaluate(sk, pk, blinded)
    assert oprf.verify_proof(pk, blinded, ev, pr)
    assert not oprf.verify_proof(other_pk, blinded, ev, pr)  # a per-device key is caught
    ev2, pr2 = oprf.voprf_blind_evaluate(other_sk, pk, blinded)  # evaluated with another key, proof "for" pk
    assert not oprf.verify_proof(pk, blinded, ev2, pr2)
    assert not oprf.verify_proof(pk, blinded, ev[:3] + [group.random_element()], pr)
    for bad in (b"", bytes(64), pr[:63], b"\x00" * 65, "text", None):
        assert not oprf.verify_proof(pk, blinded, ev, bad)


def test_bad_elements_and_scalars_refused(backend):
    p = 2 ** 255 - 19
    good = h(MULTIPLES[0])
    bad = [bytes(32), b"\x01" + bytes(31),  # identity; odd ("negative") encoding
           (p).to_bytes(32, "little"), (p + 2).to_bytes(32, "little"),  # not canonical
           good[:31] + bytes([good[31] | 0x80]),  # the top bit set
           good[:31], good + b"\x00", "e2f2", None, 7]
    for x in bad:
        assert not group.is_element(x), x
        with pytest.raises(ConfirmError):
            group.check_element(x)
    with pytest.raises(ConfirmError):
        oprf.blind_evaluate(group.random_scalar(), bytes(32))
    with pytest.raises(ConfirmError):
        group.scalar_invert(bytes(32))
    with pytest.raises(ConfirmError):
        group.check_scalar((group.ORDER).to_bytes(32, "little"))
    with pytest.raises(ConfirmError):
        oprf.blind(b"x" * 70000)


def test_the_two_backends_agree_on_random_inputs():
    sodium, saved = group._libsodium(), group._impl
    try:
        for _ in range(60):
            u, s, q = os.urandom(64), group.scalar_reduce(os.urandom(64)), os.urandom(32)
            results = []
            for impl in (sodium, ristretto):
                group._use(impl)
                a = group.from_hash(u)
                results.append((a, group.mul(s, a), group.mul_base(s), group.is_element(q),
                                group.scalar_invert(s), group.scalar_mul(s, s)))
            assert results[0] == results[1]
    finally:
        group._use(saved)
