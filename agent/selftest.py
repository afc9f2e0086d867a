"""Check the whole scanning path on this device: hash a built-in benign image and match it.

A throwaway key signs a list built from the built-in image (a generated picture, no real material);
the list is verified, loaded, and the same image is scanned and confirmed (exact and perceptual) while
a different generated image must end clean after confirmation. Prints the outcome; exit 0 when everything agreed.
"""

from __future__ import annotations

import time
from typing import Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.confirm.wire import Entry, EntryIndex
from agent.lists.assemble import assemble, lsh_params
from agent.lists.trust import TrustStore, key_id
from agent.lists.verify import verify_bytes

HELP = "check the whole scanning path on this device with a built-in benign image"
DESCRIPTION = """\
Builds a throwaway list from a built-in generated picture (no real material), verifies and loads it,
scans that picture (it must match, exact and perceptual) and another generated one (it must end
clean). Prints the outcome; exit 0 when everything agreed, 1 otherwise."""


def run_selftest() -> Tuple[bool, str]:
    """Run the self-test; return (ok, one-line detail)."""
    from agent.hashing import samples
    from agent.hashing.imaging import digests, hash_image
    from agent.matching.scanner import Scanner

    start = time.perf_counter()
    try:
        known = samples.tiny_png()
        other = samples.encode(samples.generate_image(7, size=(160, 120)), "PNG")
        h = hash_image(known, fast=False)
        key = Ed25519PrivateKey.generate()
        trust = TrustStore()
        trust.add("selftest", key.public_key())
        now = int(time.time())
        lists, hub = [], {}
        for name, signal, value, lsh in (("exact", "sha256", digests(known)[0], None),
                                         ("pdq", "pdq", h.pdq, lsh_params("pdq", {"min_quality": 0}))):
            data = assemble(source="selftest", name=name, signal=signal, version=1, hashes=[value],
                            sign=key.sign, key_id=key_id(key.public_key()), created=now, expires=now + 86400,
                            lsh=lsh)
            lists.append(verify_bytes(data, trust, now=now))
            hub["selftest/" + name] = EntryIndex({"source": "selftest", "list": name, "signal": signal,
                                                  "version": 1, "lsh": lsh,
                                                  "entries": [Entry("builtin", value).to_json()]})
        scanner = Scanner(lists)
        got = scanner.confirm(scanner.scan_bytes(known), hub)
        # the other image may be a Bloom candidate (design rate); confirmation must clear it
        clean = scanner.confirm(scanner.scan_bytes(other), hub)
    except Exception as e:  # the self-test reports every failure instead of dying
        return False, "selftest failed: %s: %s" % (type(e).__name__, e)
    signals = sorted(hit.list.signal for hit in got.hits)
    ok = got.verdict == "match" and signals == ["pdq", "sha256"] and clean.verdict == "clean"
    return ok, "selftest %s: known image %s (%s), other image %s, %.0f ms" % (
        "ok" if ok else "FAILED", got.verdict, "+".join(signals) or "no hits", clean.verdict,
        (time.perf_counter() - start) * 1000)


def add_arguments(p) -> None:
    """`gatewatch selftest` takes no arguments."""


def main(args) -> int:
    """Run `gatewatch selftest`."""
    ok, detail = run_selftest()
    print(detail)
    return 0 if ok else 1
