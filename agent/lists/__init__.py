"""Signed lists: keys, building, verification against a trust store, loading, and the hub's entries.

Owns: Ed25519 keys and their files, the acceptance rules of DESIGN.md (Lists), building a list file
plus the hub's private artifact, and ``LoadedList`` (a verified list ready for lookups). Must not
touch: the byte layout (``agent.core.listfile``), the bit positions (``agent.core.bloom``), the network.
"""

from __future__ import annotations

import base64
import csv
import glob
import hashlib
import io
import json
import os
import re
import secrets
import sys
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.matching import bloom_batch
from agent.matching import lsh_batch as lsh_np
from agent.atomicfile import write_atomic
from agent.core import listfile
from agent.core.bloom import Bloom, expected_fp_rate, optimal_parameters
from agent.core.errors import ListFormatError
from agent.core.lsh import band_values, exact_short_key, hamming
from agent.core.errors import ConfigError, TrustError

EXACT_SIGNALS = ("sha256", "sha1", "md5")
PERCEPTUAL_SIGNALS = ("pdq",)
HEX_LENGTHS = {"sha256": 64, "sha1": 40, "md5": 32, "pdq": 64}
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_FP_RATE = 1e-6
DEFAULT_EXPIRES_DAYS = 30
CLOCK_SKEW = 600  # seconds a manifest's creation time may lie in our future
# LSH defaults, chosen by bench/bench_lsh.py (docs/benchmarks.md, "Perceptual lists").
# min_quality 20: PDQ of flat or tiny images (quality near 0) is degenerate; textured pictures of low
# contrast still hash usefully at 30-50, and the reference matches them, so the gate stays low.
# bands 7 / flip 6 / depth 2: bench/bench_lsh.py found it the smallest setting that keeps recall of real
# transforms at 100% up to distance 31 on the test images; key_bits: a confirmation request carries
# only the low 16 bits of the band that hit, shared by ~N/65536 entries, so a Bloom false positive
# reveals little of an image that did not match.
DEFAULT_LSH = {"bands": 7, "flip_bits": 6, "depth": 2, "threshold": 31, "min_quality": 20, "key_bits": 16}
PUB_PREFIX = "gatewatch-ed25519"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(kind: str, value: str) -> str:
    """Source and list names go into file names and topics: keep them to a safe alphabet."""
    if not _NAME_RE.match(value or ""):
        raise ConfigError("%s name %r is invalid: use 1-64 letters, digits, '.', '_' or '-'" % (kind, value))
    return value


# ---------------------------------------------------------------- keys

def key_id(public: Ed25519PublicKey) -> str:
    """Short identifier of a public key: first 8 bytes of the SHA-256 of its raw form, in hex."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


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


def public_key_line(public: Ed25519PublicKey, source: str) -> str:
    """The one-line public key file: 'gatewatch-ed25519 <base64 raw key> <source>'."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "%s %s %s\n" % (PUB_PREFIX, base64.b64encode(raw).decode(), source)


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


def parse_public_key(text: str, origin: str = "public key") -> Tuple[Ed25519PublicKey, str]:
    """Parse a public key line into (key, source)."""
    parts = text.strip().split()
    if len(parts) != 3 or parts[0] != PUB_PREFIX:
        raise ConfigError("%s is not a gatewatch public key ('%s <base64> <source>')" % (origin, PUB_PREFIX))
    try:
        raw = base64.b64decode(parts[1], validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise ConfigError("%s: bad key material: %s" % (origin, e))
    return key, check_name("source", parts[2])


class TrustStore:
    """Ed25519 public keys per source: a list is accepted only if its own source's key signed it."""

    def __init__(self) -> None:
        self._keys: Dict[str, Dict[str, Ed25519PublicKey]] = {}

    def add(self, source: str, public: Ed25519PublicKey) -> None:
        """Trust ``public`` for lists of ``source``."""
        self._keys.setdefault(source, {})[key_id(public)] = public

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> "TrustStore":
        """From ``PATH`` (trusted for the source named in the file) or ``SOURCE=PATH`` items."""
        store = cls()
        for spec in specs:
            source = None
            path = spec
            if "=" in spec and not os.path.exists(spec):
                source, path = spec.split("=", 1)
            try:
                with open(path, "r", encoding="utf-8") as f:
                    key, named = parse_public_key(f.read(), path)
            except OSError as e:
                raise ConfigError("cannot read trusted key %s: %s" % (path, e.strerror))
            store.add(check_name("source", source) if source else named, key)
        return store

    def sources(self) -> List[str]:
        """Sources with at least one trusted key."""
        return sorted(self._keys)

    def verify(self, lf: listfile.ListFile) -> str:
        """Check the signature; return the key id that made it or raise TrustError."""
        source = lf.manifest["source"]
        keys = self._keys.get(source)
        if not keys:
            raise TrustError("list %s/%s is from source %r, which has no trusted key here"
                             % (source, lf.manifest["list"], source))
        signed = lf.signed_bytes()
        for kid, key in keys.items():
            try:
                key.verify(lf.signature, signed)
                return kid
            except InvalidSignature:
                continue
        raise TrustError("list %s/%s v%s: signature does not verify with any trusted key of %r "
                         "(tampered, or signed by another key)"
                         % (source, lf.manifest["list"], lf.manifest["version"], source))


# ---------------------------------------------------------------- verified, loaded lists

class LoadedList:
    """A list that passed every acceptance rule, ready for lookups."""

    def __init__(self, lf: listfile.ListFile, path: Optional[str] = None) -> None:
        m = lf.manifest
        f = m["filter"]
        self.file = lf
        self.manifest = m
        self.path = path
        self.source = m["source"]
        self.name = m["list"]
        self.signal = m["signal"]
        self.version = m["version"]
        self.lsh = m.get("lsh")
        try:
            salt = bytes.fromhex(f["salt"])
        except (TypeError, ValueError):
            raise ListFormatError("filter salt is not hex")
        self.bloom = Bloom(f["m"], f["k"], salt, bits=lf.content)

    @property
    def ident(self) -> str:
        """'source/list'."""
        return "%s/%s" % (self.source, self.name)

    def describe(self) -> dict:
        """Manifest fields worth showing to an operator."""
        m = self.manifest
        return {"source": self.source, "list": self.name, "signal": self.signal, "version": self.version,
                "created": m["created"], "expires": m["expires"], "entries": m["filter"]["entries"],
                "bytes": m["content_length"], "key_id": m["key_id"]}


def verify_bytes(data: bytes, trust: TrustStore, *, now: Optional[float] = None,
                 held_version: Optional[int] = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 path: Optional[str] = None) -> LoadedList:
    """Apply every acceptance rule to list file bytes; return the LoadedList or raise TrustError."""
    now = time.time() if now is None else now
    where = path or "list"
    if len(data) > max_bytes:
        raise TrustError("%s is %d bytes, over the size cap of %d bytes" % (where, len(data), max_bytes))
    try:
        lf = listfile.parse(data)
    except ListFormatError as e:
        raise TrustError("%s is malformed: %s" % (where, e))
    m = lf.manifest
    trust.verify(lf)
    if m["expires"] <= now:
        raise TrustError("list %s/%s v%d expired at %s; the hub must publish a fresh version"
                         % (m["source"], m["list"], m["version"], _iso(m["expires"])))
    if m["created"] > now + CLOCK_SKEW:
        raise TrustError("list %s/%s v%d claims creation in the future (%s); check the device clock"
                         % (m["source"], m["list"], m["version"], _iso(m["created"])))
    if held_version is not None and m["version"] <= held_version:
        raise TrustError("list %s/%s v%d is not newer than v%d held; rollback or replay refused"
                         % (m["source"], m["list"], m["version"], held_version))
    if hashlib.sha256(lf.content).hexdigest() != m["content_sha256"]:
        raise TrustError("list %s/%s v%d: content does not match the signed digest (corrupt or tampered)"
                         % (m["source"], m["list"], m["version"]))
    try:
        return LoadedList(lf, path)
    except ListFormatError as e:
        raise TrustError("%s is malformed: %s" % (where, e))


def load_list_file(path: str, trust: TrustStore, **kw) -> LoadedList:
    """Read and verify one list file."""
    cap = kw.get("max_bytes", DEFAULT_MAX_BYTES)
    try:
        size = os.path.getsize(path)
        if size <= cap:
            with open(path, "rb") as f:
                data = f.read(cap + 1)
    except OSError as e:  # TrustError is an OSError too: keep it out of this block
        raise TrustError("cannot read list %s: %s" % (path, e.strerror or e))
    if size > cap:
        raise TrustError("%s is %d bytes, over the size cap of %d bytes" % (path, size, cap))
    return verify_bytes(data, trust, path=path, **kw)


def list_files_in(directory: str) -> List[str]:
    """The .gwl files of a folder, newest version last per list."""
    if not os.path.isdir(directory):
        raise ConfigError("list folder %s does not exist" % directory)
    return sorted(glob.glob(os.path.join(directory, "*.gwl")), key=_version_sort_key)


def load_list_dir(directory: str, trust: TrustStore, **kw) -> List[LoadedList]:
    """Verify every list file of a folder, keeping the newest version of each list. Any refusal raises."""
    newest: Dict[str, LoadedList] = {}
    for path in list_files_in(directory):
        loaded = load_list_file(path, trust, **kw)
        held = newest.get(loaded.ident)
        if held is None or loaded.version > held.version:
            newest[loaded.ident] = loaded
    return [newest[k] for k in sorted(newest)]


def _version_sort_key(path: str):
    m = re.search(r"\.v(\d+)\.gwl$", path)
    return (re.sub(r"\.v\d+\.gwl$", "", path), int(m.group(1)) if m else 0)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ---------------------------------------------------------------- entries (hub side)

class Entry:
    """One list entry as the hub knows it: an identifier and the full hash."""

    __slots__ = ("id", "hash")

    def __init__(self, ident: str, hash_bytes: bytes) -> None:
        self.id = ident
        self.hash = hash_bytes

    def to_json(self) -> dict:
        """JSON form."""
        return {"id": self.id, "hash": self.hash.hex()}


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


def entry_keys(signal: str, hashes: np.ndarray, lsh: Optional[dict]) -> np.ndarray:
    """Bloom keys for entries: digest prefixes for exact lists, LSH band keys for perceptual ones."""
    if signal in EXACT_SIGNALS:
        return np.ascontiguousarray(hashes[:, :16]).view("<u8").astype(np.uint64)
    return lsh_np.band_keys_many(hashes, lsh["bands"])


# ---------------------------------------------------------------- building

def newest_built(out_dir: str, source: str, name: str) -> Optional[listfile.ListFile]:
    """The newest list file already built for source/name in out_dir (unverified: it is our own)."""
    paths = [p for p in glob.glob(os.path.join(out_dir, "%s.%s.v*.gwl" % (source, name)))
             if re.search(r"\.v\d+\.gwl$", p)]
    if not paths:
        return None
    path = max(paths, key=lambda p: int(re.search(r"\.v(\d+)\.gwl$", p).group(1)))
    with open(path, "rb") as f:
        return listfile.parse(f.read())


def build_list(*, source: str, name: str, signal: str, entries: Sequence[Entry], key: Ed25519PrivateKey,
               out_dir: str, fp_rate: float = DEFAULT_FP_RATE, version: Optional[int] = None,
               expires_days: float = DEFAULT_EXPIRES_DAYS, capacity: Optional[int] = None,
               lsh: Optional[dict] = None, now: Optional[float] = None,
               salt: Optional[bytes] = None) -> Tuple[str, str, dict]:
    """Build, sign and write a list; return (device file, hub file, manifest).

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
    lsh_params = None
    if signal in PERCEPTUAL_SIGNALS:
        lsh_params = dict(DEFAULT_LSH)
        lsh_params.update(lsh or {})
    keys_per_entry = lsh_params["bands"] if lsh_params else 1

    prev = newest_built(out_dir, source, name)
    if version is None:
        version = prev.manifest["version"] + 1 if prev else 1
    elif prev is not None and version <= prev.manifest["version"]:
        raise ConfigError("version %d is not newer than v%d already built in %s"
                          % (version, prev.manifest["version"], out_dir))
    pf = prev.manifest["filter"] if prev else None
    if (pf and prev.manifest["signal"] == signal and pf.get("capacity", 0) >= n
            and pf.get("fp_rate") == fp_rate and prev.manifest.get("lsh") == lsh_params):
        m, k, salt, cap = pf["m"], pf["k"], bytes.fromhex(pf["salt"]), pf["capacity"]
    else:
        cap = max(capacity or n, n, 1)
        m, k = optimal_parameters(cap * keys_per_entry, fp_rate)
        salt = secrets.token_bytes(16) if salt is None else salt

    bloom = Bloom(m, k, salt)
    if n:
        hashes = np.frombuffer(b"".join(e.hash for e in unique), dtype=np.uint8).reshape(n, -1)
        bloom_batch.add_many(bloom, entry_keys(signal, hashes, lsh_params))
    content = bytes(bloom.bits)
    manifest = {
        "format": listfile.FORMAT_VERSION, "source": source, "list": name, "signal": signal,
        "version": int(version), "created": now, "expires": int(now + expires_days * 86400),
        "key_id": key_id(key.public_key()), "content_length": len(content),
        "content_sha256": hashlib.sha256(content).hexdigest(),
        "filter": {"type": "bloom", "m": m, "k": k, "salt": salt.hex(), "entries": n, "capacity": cap,
                   "fp_rate": fp_rate, "keys_per_entry": keys_per_entry},
    }
    if lsh_params:
        manifest["lsh"] = lsh_params
    mbytes = listfile.encode_manifest(manifest)
    signature = key.sign(listfile.signed_part(mbytes))
    base = "%s.%s.v%d" % (source, name, version)
    device_path = os.path.join(out_dir, base + ".gwl")
    hub_dir = os.path.join(out_dir, "hub")
    os.makedirs(hub_dir, exist_ok=True)
    hub_path = os.path.join(hub_dir, base + ".entries.json")
    hub_doc = {"source": source, "list": name, "signal": signal, "version": int(version),
               "lsh": lsh_params, "entries": [e.to_json() for e in unique]}
    write_atomic(hub_path, json.dumps(hub_doc, separators=(",", ":")).encode(), mode=0o600)
    write_atomic(device_path, listfile.serialise(mbytes, signature, content))
    return device_path, hub_path, manifest


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


# ---------------------------------------------------------------- the hub's entries, for confirmation

class HubEntries:
    """The hub's full entries of one list version, indexed by the short keys devices send."""

    def __init__(self, doc: dict) -> None:
        self.source = doc["source"]
        self.name = doc["list"]
        self.signal = doc["signal"]
        self.version = doc["version"]
        self.lsh = doc.get("lsh")
        self.entries = [Entry(e["id"], bytes.fromhex(e["hash"])) for e in doc["entries"]]
        self._index: Dict[str, List[Entry]] = {}
        for e in self.entries:
            for k in self.short_keys_of(e.hash):
                self._index.setdefault(k, []).append(e)

    @classmethod
    def load(cls, path: str) -> "HubEntries":
        """Read a hub artifact written by ``build_list``."""
        try:
            with open(path, "r", encoding="utf-8") as f:
                return cls(json.load(f))
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError("cannot read hub entries %s: %s" % (path, e))

    @classmethod
    def load_dir(cls, directory: str) -> Dict[str, "HubEntries"]:
        """Newest hub artifact per list in a ``lists build`` output folder, keyed 'source/list'."""
        paths = sorted(glob.glob(os.path.join(directory, "hub", "*.entries.json")))
        if not paths:
            raise ConfigError("%s has no hub/ entries; pass a 'gatewatch-hub lists build' output folder"
                              % directory)
        out: Dict[str, HubEntries] = {}
        for p in paths:
            h = cls.load(p)
            ident = "%s/%s" % (h.source, h.name)
            if ident not in out or h.version > out[ident].version:
                out[ident] = h
        return out

    def short_keys_of(self, h: bytes) -> List[str]:
        """The short keys under which an entry is found."""
        if self.signal in EXACT_SIGNALS:
            return [exact_short_key(self.signal, h)]
        bands = self.lsh["bands"]
        return [pdq_short_key(self.signal, j, v, self.lsh) for j, v in enumerate(band_values(h, bands))]

    def lookup(self, short_key: str) -> List[Entry]:
        """Entries behind one short key (empty when none)."""
        return list(self._index.get(short_key, ()))


def pdq_short_key(signal: str, band: int, value: int, lsh: dict) -> str:
    """The short key of a band hit: the band and only the low ``key_bits`` bits of its value."""
    bits = lsh.get("key_bits", 64)
    return "%s:%d:%x" % (signal, band, value & ((1 << bits) - 1))


def closest(query_hashes: Sequence[bytes], entries: Iterable[Entry]) -> Tuple[Optional[Entry], Optional[int]]:
    """The entry nearest in Hamming distance to any of the query hashes (e.g. its dihedral variants)."""
    best, best_d = None, None
    for e in entries:
        for q in query_hashes:
            d = hamming(q, e.hash)
            if best_d is None or d < best_d:
                best, best_d = e, d
    return best, best_d
