"""Hashing and matching on the board's own CPU: run inside the emulated arm64/armhf root filesystems
by firmware/qemu/run-user.sh (Debian's numpy, Pillow and cryptography), and natively as well.

Generated benign images stand in for known material. A list of them is built and signed here,
verified and loaded, then the known images, their transformed copies and unrelated images are
scanned. The numpy batch lookup must agree bit for bit with the portable core on the golden list.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys

import numpy as np
import pytest
from PIL import Image
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.matching import bloom_batch
from agent.hashing import samples
from agent.core import listfile
from agent.core.bloom import Bloom
from agent.hashing.imaging import hash_image
from agent.confirm.wire import Entry, EntryIndex
from agent.lists.trust import TrustStore
from agent.lists.verify import load_list_file
from tools.build import build_list
from agent.matching.scanner import Scanner

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data")
SIZE = (320, 240)  # small: every pixel costs ~10x under qemu-user


def test_board_identity():
    """Under run-user.sh the interpreter really is the ARM one (GW_BOARD names the board)."""
    board = os.environ.get("GW_BOARD")
    machine = platform.machine()
    sys.stdout.write("board=%s machine=%s python=%s numpy=%s\n" % (board, machine, platform.python_version(),
                                                                   np.__version__))
    if board == "arm64":
        assert machine == "aarch64"
    elif board == "armhf":
        assert machine.startswith("armv7") or machine.startswith("armv8"), machine
        assert sys.maxsize == 2 ** 31 - 1  # a 32-bit userland
    else:
        assert board is None


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("lists"))
    known = [samples.generate_image(seed, size=SIZE) for seed in (11, 12, 13)]
    blobs = [samples.encode(img, "JPEG", 90) for img in known]
    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    trust.add("board-test", key.public_key())
    exact_entries = [Entry("k%d" % i, hashlib.sha256(b).digest()) for i, b in enumerate(blobs)]
    pdq_entries = [Entry("k%d" % i, hash_image(b, fast=False).pdq) for i, b in enumerate(blobs)]
    exact, _, _ = build_list(source="board-test", name="exact", signal="sha256", entries=exact_entries,
                             key=key, out_dir=d, fp_rate=1e-6, expires_days=1)
    pdq, _, _ = build_list(source="board-test", name="pdq", signal="pdq", entries=pdq_entries,
                           key=key, out_dir=d, fp_rate=1e-6, expires_days=1)
    scanner = Scanner([load_list_file(exact, trust), load_list_file(pdq, trust)])
    return scanner, known, blobs, EntryIndex.load_dir(d)


def test_known_images_match(lists):
    scanner, _, blobs, _ = lists
    for b in blobs:
        r = scanner.scan_bytes(b)
        assert r.verdict == "match", r.to_json()
        assert sorted(h.list.signal for h in r.hits) == ["pdq", "sha256"]


def test_transformed_copies_are_candidates(lists):
    scanner, known, _, hub = lists
    for img in known:
        for kind, data in (("jpeg q50", samples.encode(img, "JPEG", 50)),
                           ("png", samples.encode(img, "PNG")),
                           ("mirrored", samples.encode(img.transpose(Image.FLIP_LEFT_RIGHT), "JPEG", 90))):
            r = scanner.scan_bytes(data)
            assert r.verdict == "candidate", (kind, r.to_json())
            confirmed = scanner.confirm(r, hub)
            assert confirmed.verdict == "match", (kind, confirmed.to_json())
            assert confirmed.best.distance <= 31


def test_unrelated_images_are_never_confirmed(lists):
    """An unrelated image may be a perceptual candidate (the LSH filter trades that for recall), but
    never an exact match, and the hub's entries never confirm it."""
    scanner, _, _, hub = lists
    for seed in (101, 102, 103, 104):
        r = scanner.scan_bytes(samples.encode(samples.generate_image(seed, size=SIZE), "JPEG", 90))
        assert r.verdict in ("clean", "candidate"), (seed, r.to_json())
        assert not any(h.list.signal == "sha256" for h in r.hits)
        assert scanner.confirm(r, hub).verdict == "clean", (seed, r.to_json())


def test_bad_input_is_an_error_not_a_crash(lists):
    scanner, _, blobs, _ = lists
    for data in (b"", b"not an image at all", blobs[0][:200]):
        r = scanner.scan_bytes(data)
        assert r.verdict == "error" and r.reason, r


def test_batch_lookup_agrees_with_core_on_golden():
    with open(os.path.join(DATA, "golden.json")) as f:
        exp = json.load(f)["lists"]["golden.gwl"]
    with open(os.path.join(DATA, "golden.gwl"), "rb") as f:
        lf = listfile.parse(f.read())
    m = lf.manifest["filter"]
    bloom = Bloom(m["m"], m["k"], bytes.fromhex(m["salt"]), bytearray(lf.content))
    keys = [bytes.fromhex(k) for k in exp["present"] + exp["absent"]]
    keys += [hashlib.sha256(b"extra-%d" % i).digest()[:16] for i in range(500)]
    batch = bloom_batch.contains_many(bloom, keys)
    single = np.array([k in bloom for k in keys])
    assert (batch == single).all()
    assert batch[:len(exp["present"])].all() and not batch[len(exp["present"]):len(exp["present"]) + len(exp["absent"])].any()
    pos = bloom_batch.positions(bloom, [bytes.fromhex(k) for k in exp["positions"]])
    assert pos.tolist() == list(exp["positions"].values())
