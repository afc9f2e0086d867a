"""A signed list's bytes from entries: the Bloom fill, the manifest, the signature.

Owns: which Bloom keys an entry becomes (digest prefixes for exact signals, LSH band keys for
perceptual ones) and the manifest fields a new list carries. Shared by the hub's `lists build`
(``tools.build``, which adds versions, files and the hub's private entries) and the on-device
self-test (which signs a throwaway list with a throwaway key). Must not touch: files, keys on disk.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Callable, Optional, Sequence

import numpy as np

from agent.core import fuse, listfile
from agent.core.bloom import Bloom, optimal_parameters
from agent.core import lsh as core_lsh
from agent.core.errors import ConfigError, ListFormatError
from agent.core.signals import EXACT_SIGNALS, HASH_BYTES, PERCEPTUAL_SIGNALS
from agent.matching import bloom_batch, fuse_batch
from agent.matching import lsh_batch

DEFAULT_FP_RATE = 1e-6
DEFAULT_NEURAL_MODEL = "neural-v3"  # agent.hashing.neural.DEFAULT_MODEL (not imported: numpy/PIL at import; a test checks they agree)
# LSH defaults, chosen by bench/bench_lsh.py (docs/benchmarks.md, "Perceptual lists").
# min_quality 20: PDQ of flat or tiny images (quality near 0) is degenerate; textured pictures of low
# contrast still hash usefully at 30-50, and the reference matches them, so the gate stays low.
# bands 7 / flip 6 / depth 2: bench/bench_lsh.py found it the smallest setting that keeps recall of real
# transforms at 100% up to distance 31 on the test images; key_bits: a confirmation request carries
# only the low 16 bits of the band that hit, shared by ~N/65536 entries, so a Bloom false positive
# reveals little of an image that did not match.
DEFAULT_LSH = {"bands": 7, "flip_bits": 6, "depth": 2, "threshold": 31, "min_quality": 20, "key_bits": 16}
# Neural (docs/neural.md, "LSH"): 4 bands of 32 bits, multi-probe up to 2 of the 8 weakest bits per
# band (148 probes per query; the code and its 3 extra queries make 592 per image, 0.14 false candidates
# per image against 1M random entries); 32-bit bands, because 16-bit ones collide at that list size.
# The threshold is the model manifest's (22 for neural-v3); min_quality gates on the PDQ quality of the
# same decode (flat and tiny images all map to a few codes); key_bits as for PDQ.
DEFAULT_NEURAL_LSH = {"bands": 4, "flip_bits": 8, "depth": 2, "min_quality": 20, "key_bits": 16}


def entry_keys(signal: str, hashes: np.ndarray, lsh: Optional[dict]) -> np.ndarray:
    """Bloom keys for entries: digest prefixes for exact lists, LSH band keys for perceptual ones."""
    if signal in EXACT_SIGNALS:
        return np.ascontiguousarray(hashes[:, :16]).view("<u8").astype(np.uint64)
    nbits, tag = core_lsh.layout(signal)
    if hashes.shape[1] * 8 != nbits:
        raise ConfigError("a %s hash is %d bytes, got %d" % (signal, nbits // 8, hashes.shape[1]))
    return lsh_batch.band_keys_many(hashes, lsh["bands"], nbits, tag)


def neural_threshold(model: str = DEFAULT_NEURAL_MODEL) -> int:
    """The match threshold the model's manifest states (models/<model>.json)."""
    from agent.hashing.neural import load_manifest

    return int(load_manifest(model)["threshold"])


def lsh_params(signal: str, lsh: Optional[dict], model: Optional[str] = None) -> Optional[dict]:
    """The LSH section of a new list: the defaults overridden by ``lsh`` (None for exact lists)."""
    if signal not in PERCEPTUAL_SIGNALS:
        return None
    if signal == "neural":
        params = dict(DEFAULT_NEURAL_LSH)
        if "threshold" not in (lsh or {}):
            params["threshold"] = neural_threshold(model or DEFAULT_NEURAL_MODEL)
    else:
        params = dict(DEFAULT_LSH)
    params.update(lsh or {})
    try:
        listfile.check_lsh(params, core_lsh.layout(signal)[0])
    except ListFormatError as e:
        raise ConfigError("lsh parameters for %s: %s" % (signal, e))
    return params


def assemble(*, source: str, name: str, signal: str, version: int, hashes: Sequence[bytes],
             sign: Callable[[bytes], bytes], key_id: str, created: int, expires: int,
             fp_rate: float = DEFAULT_FP_RATE, lsh: Optional[dict] = None, capacity: Optional[int] = None,
             params: Optional[tuple] = None, model: Optional[str] = None, sealed: Optional[dict] = None,
             filter_type: str = "bloom") -> bytes:
    """The list file's bytes. ``params`` (m, k, salt, capacity) reuses a Bloom layout for small deltas;
    ``sealed`` is the commitment to the hub's sealed entries (tools.sealing.commitment); ``filter_type``
    "fuse16" holds the keys in a binary fuse filter instead (agent.core.fuse: static, no small deltas,
    false positives at 2^-16 per key for ~18 bits of filter per key; ``fp_rate`` does not apply)."""
    if signal not in EXACT_SIGNALS + PERCEPTUAL_SIGNALS:
        raise ConfigError("signal %r is not supported; use one of %s"
                          % (signal, ", ".join(EXACT_SIGNALS + PERCEPTUAL_SIGNALS)))
    n = len(hashes)
    want = HASH_BYTES[signal]
    for h in hashes:
        if len(h) != want:
            raise ConfigError("a %s hash is %d bytes, got one of %d" % (signal, want, len(h)))
    keys_per_entry = lsh["bands"] if lsh else 1
    arr = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(n, -1) if n else None
    if filter_type == fuse.TYPE:
        keys = entry_keys(signal, arr, lsh) if n else np.zeros((0, 2), dtype=np.uint64)
        content, fparams = fuse_batch.build(keys)
        filt = {"type": fuse.TYPE, "entries": n, "keys_per_entry": keys_per_entry, **fparams}
    elif filter_type == "bloom":
        if params is None:
            cap = max(capacity or n, n, 1)
            m, k = optimal_parameters(cap * keys_per_entry, fp_rate)
            salt = secrets.token_bytes(16)
        else:
            m, k, salt, cap = params
        bloom = Bloom(m, k, salt)
        if n:
            bloom_batch.add_many(bloom, entry_keys(signal, arr, lsh))
        content = bytes(bloom.bits)
        filt = {"type": "bloom", "m": m, "k": k, "salt": salt.hex(), "entries": n, "capacity": cap,
                "fp_rate": fp_rate, "keys_per_entry": keys_per_entry}
    else:
        raise ConfigError("filter type %r is not supported; use bloom or %s" % (filter_type, fuse.TYPE))
    manifest = {
        "format": listfile.FORMAT_VERSION, "source": source, "list": name, "signal": signal,
        "version": int(version), "created": int(created), "expires": int(expires),
        "key_id": key_id, "content_length": len(content),
        "content_sha256": hashlib.sha256(content).hexdigest(),
        "filter": filt,
    }
    if lsh:
        manifest["lsh"] = lsh
    if signal == "neural":
        manifest["model"] = model or DEFAULT_NEURAL_MODEL
    if sealed is not None:
        manifest["sealed"] = sealed
    mbytes = listfile.encode_manifest(manifest)
    return listfile.serialise(mbytes, sign(listfile.signed_part(mbytes)), content)
