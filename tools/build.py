"""Building lists on the hub: signing keys, entries from images or hash files, signed list files.

Owns: private keys and their files, reading the inputs of `lists build` (a folder of images, or a
text file of hashes), versions and the reuse of a filter's layout across versions (so deltas stay
small), and the two outputs: the device's list file and the hub's private entries file (0600).
Must not touch: the byte layout (``agent.core.listfile``), the Bloom keys (``agent.lists.assemble``),
the network.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.atomicfile import write_atomic
from agent.confirm.wire import Entry
from agent.core import listfile
from agent.core.bloom import expected_fp_rate
from agent.core.errors import ConfigError
from agent.core.signals import EXACT_SIGNALS, HEX_LENGTHS, PERCEPTUAL_SIGNALS
from agent.lists.assemble import DEFAULT_FP_RATE, assemble, lsh_params
from agent.lists.store import list_file_name, parse_file_name
from agent.lists.trust import check_name, key_id, public_key_line

DEFAULT_EXPIRES_DAYS = 30


# ---------------------------------------------------------------- keys

def generate_keys(out_dir: str, name: str, source: str) -> Tuple[str, str]:
    """Write ``<name>.key`` (PKCS#8 PEM, mode 0600) and ``<name>.pub`` into out_dir; return both paths."""
    check_name("key", name)
    check_name("source", source)
    os.makedirs(out_dir, exist_ok=True)
    priv_path = os.path.join(out_dir, name + ".key")
    pub_path = os.path.join(out_dir, name + ".pub")
    for p in (priv_path, pub_path):
        if os.path.exists(p):
            raise ConfigError("%s exists; refusing to overwrite a key (move it away first)" % p)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_atomic(priv_path, pem, mode=0o600)
    os.chmod(priv_path, 0o600)
    write_atomic(pub_path, public_key_line(private.public_key(), source).encode())
    return priv_path, pub_path


def load_private_key(path: str) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key."""
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError("cannot read private key %s: %s" % (path, e))
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("%s is not an Ed25519 private key" % path)
    return key



# ---------------------------------------------------------------- entries

def _parse_hex(signal: str, text: str, where: str) -> bytes:
    text = text.strip().lower()
    if len(text) != HEX_LENGTHS[signal] or not re.fullmatch(r"[0-9a-f]+", text):
        raise ConfigError("%s: %r is not a %s hash (%d hex digits expected)"
                          % (where, text[:80], signal, HEX_LENGTHS[signal]))
    return bytes.fromhex(text)


def read_hash_text(path: str, signal: str) -> List[Entry]:
    """Entries from a text file: one hex digest a line, CSV with a type column, or 'pdq,<hex>' lines."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("cannot read hash file %s: %s" % (path, e))
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    entries: List[Entry] = []
    if lines and "," in lines[0] and "type" in [c.strip().lower() for c in lines[0].split(",")]:
        reader = csv.DictReader(io.StringIO("\n".join(lines)))
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        hcol = next((cols[c] for c in ("hash", "value", "signal_value", "digest") if c in cols), None)
        if hcol is None:
            raise ConfigError("%s: CSV has a type column but no hash/value column" % path)
        icol = cols.get("id")
        for n, row in enumerate(reader, start=2):
            if (row.get(cols["type"]) or "").strip().lower() != signal:
                continue
            h = _parse_hex(signal, row.get(hcol) or "", "%s line %d" % (path, n))
            entries.append(Entry((row.get(icol) or "").strip() if icol else "", h))
    else:
        for n, ln in enumerate(lines, start=1):
            parts = [p.strip() for p in ln.split(",")]
            if len(parts) >= 2:
                if parts[0].lower() != signal:
                    continue
                value = parts[1]
            else:
                value = parts[0]
            entries.append(Entry("", _parse_hex(signal, value, "%s line %d" % (path, n))))
    for e in entries:
        if not e.id:
            e.id = "%s:%s" % (signal, e.hash.hex()[:16])
    if not entries:
        raise ConfigError("%s holds no %s hashes" % (path, signal))
    return entries


def hash_folder(path: str, signal: str, progress: bool = False) -> Tuple[List[Entry], List[str]]:
    """Entries from a folder of images (recursive); returns (entries, skipped file messages)."""
    from agent.hashing.imaging import digests, hash_image
    from agent.core.errors import ImageError

    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    entries: List[Entry] = []
    skipped: List[str] = []
    for fpath in _progress(files, progress, "hashing"):
        with open(fpath, "rb") as f:
            data = f.read()
        rel = os.path.relpath(fpath, path)
        if signal in EXACT_SIGNALS:
            if not data:
                skipped.append("%s: empty file" % rel)
                continue
            h = dict(zip(EXACT_SIGNALS, digests(data)))[signal]
        else:
            try:
                h = hash_image(data, fast=False).pdq
            except ImageError as e:
                skipped.append("%s: %s" % (rel, e))
                continue
            if h is None:
                skipped.append("%s: too small for a PDQ hash" % rel)
                continue
        entries.append(Entry(rel, h))
    if not entries:
        raise ConfigError("%s holds no images that could be hashed" % path)
    return entries, skipped


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # progress is optional
        return items
    return tqdm(items, desc=desc, unit="file", file=sys.stderr)



# ---------------------------------------------------------------- building

def newest_built(out_dir: str, source: str, name: str) -> Optional[listfile.ListFile]:
    """The newest list file already built for source/name in out_dir (unverified: it is our own)."""
    versions = []
    for path in glob.glob(os.path.join(out_dir, "*.gwl")):
        parsed = parse_file_name(os.path.basename(path))
        if parsed is not None and parsed[:2] == (source, name):
            versions.append((parsed[2], path))
    if not versions:
        return None
    with open(max(versions)[1], "rb") as f:
        return listfile.parse(f.read())


def build_list(*, source: str, name: str, signal: str, entries: Sequence[Entry], key: Ed25519PrivateKey,
               out_dir: str, fp_rate: float = DEFAULT_FP_RATE, version: Optional[int] = None,
               expires_days: float = DEFAULT_EXPIRES_DAYS, capacity: Optional[int] = None,
               lsh: Optional[dict] = None, now: Optional[float] = None) -> Tuple[str, str, dict]:
    """Build, sign and write a list; return (device file, hub entries file, manifest).

    A new version reuses the filter parameters (m, k, salt) of the newest version in out_dir when the
    entries fit its capacity, so that a delta between the two is just the bits that changed.
    """
    check_name("source", source)
    check_name("list", name)
    if signal not in EXACT_SIGNALS + PERCEPTUAL_SIGNALS:
        raise ConfigError("signal %r is not supported; use one of %s"
                          % (signal, ", ".join(EXACT_SIGNALS + PERCEPTUAL_SIGNALS)))
    if not (0 < fp_rate < 0.5):
        raise ConfigError("--fp-rate must be between 0 and 0.5, got %r" % fp_rate)
    if expires_days <= 0:
        raise ConfigError("--expires-days must be positive")
    now = int(time.time() if now is None else now)
    os.makedirs(out_dir, exist_ok=True)
    # Deduplicate by hash: one Bloom key set per distinct entry.
    seen: Dict[bytes, Entry] = {}
    for e in entries:
        seen.setdefault(e.hash, e)
    unique = list(seen.values())
    n = len(unique)
    params = lsh_params(signal, lsh)

    prev = newest_built(out_dir, source, name)
    if version is None:
        version = prev.manifest["version"] + 1 if prev else 1
    elif prev is not None and version <= prev.manifest["version"]:
        raise ConfigError("version %d is not newer than v%d already built in %s"
                          % (version, prev.manifest["version"], out_dir))
    pf = prev.manifest["filter"] if prev else None
    reuse = None
    if (pf and prev.manifest["signal"] == signal and pf.get("capacity", 0) >= n
            and pf.get("fp_rate") == fp_rate and prev.manifest.get("lsh") == params):
        reuse = (pf["m"], pf["k"], bytes.fromhex(pf["salt"]), pf["capacity"])
    data = assemble(source=source, name=name, signal=signal, version=version, hashes=[e.hash for e in unique],
                    sign=key.sign, key_id=key_id(key.public_key()), created=now,
                    expires=int(now + expires_days * 86400), fp_rate=fp_rate, lsh=params, capacity=capacity,
                    params=reuse)
    base = list_file_name(source, name, version)[:-len(".gwl")]
    device_path = os.path.join(out_dir, base + ".gwl")
    hub_dir = os.path.join(out_dir, "hub")
    os.makedirs(hub_dir, exist_ok=True)
    hub_path = os.path.join(hub_dir, base + ".entries.json")
    hub_doc = {"source": source, "list": name, "signal": signal, "version": int(version),
               "lsh": params, "entries": [e.to_json() for e in unique]}
    write_atomic(hub_path, json.dumps(hub_doc, separators=(",", ":")).encode(), mode=0o600)
    write_atomic(device_path, data)
    return device_path, hub_path, listfile.parse(data).manifest


def filter_stats(loaded_or_file) -> dict:
    """Statistics of a list's filter: fill, design and expected false-positive rates, bits per entry."""
    lf = getattr(loaded_or_file, "file", loaded_or_file)
    f = lf.manifest["filter"]
    ones = int(np.unpackbits(np.frombuffer(lf.content, dtype=np.uint8)).sum())
    n_keys = f["entries"] * f.get("keys_per_entry", 1)
    return {"bits": f["m"], "bytes": lf.manifest["content_length"], "probes": f["k"],
            "entries": f["entries"], "capacity": f.get("capacity"), "design_fp_rate": f.get("fp_rate"),
            "fill": round(ones / f["m"], 6),
            "expected_fp_rate": expected_fp_rate(f["m"], f["k"], n_keys) if n_keys else 0.0,
            "bits_per_entry": round(f["m"] / max(f["entries"], 1), 3)}
