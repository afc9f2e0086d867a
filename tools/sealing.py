"""The hub's confirmation keys and sealed tables: what `lists build` seals and `serve` answers from.

Owns: the confirmation key file (``NAME.confirm``, mode 0600: the OPRF key that seals entries and
answers blinded probes, and the token key that issues anonymous request tokens), sealing one list
version (every entry under each of its probes, ``agent.confirm.sealed``), and the files the
confirmation service reads (``hub/<source>+<list>.vN.sealed``, ``hub/<source>.confirm``). Must not
touch: the list file's bytes (``agent.lists.assemble``), MQTT.

Why the service reads only these: it never needs the plain entries. A host that answers devices
holds the OPRF key and records that open only under a probe equal to an entry's band or digest;
``hub/*.entries.json`` (the plain entries, for `scan --confirm-with` and audits) can stay elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from agent.confirm import oprf, sealed
from agent.confirm.wire import Entry, entry_probes
from agent.core.errors import ConfigError
from agent.lists.trust import check_name

CONFIRM_SUFFIX = ".confirm"
_KIND = "gatewatch-confirm-key"


class ConfirmKey:
    """One source's confirmation secrets: the OPRF key and the token-issuing key."""

    def __init__(self, source: str, oprf_sk: bytes, token_sk: bytes):
        self.source = source
        self.oprf_sk = oprf_sk
        self.token_sk = token_sk
        from agent.confirm import group

        self.oprf_pk = group.mul_base(oprf_sk)
        self.token_pk = group.mul_base(token_sk)

    @property
    def key_id(self) -> str:
        """What requests and manifests name this OPRF key by (16 hex digits of its public half)."""
        return key_id_of(self.oprf_pk)

    @classmethod
    def generate(cls, source: str) -> "ConfirmKey":
        return cls(source, oprf.generate_key_pair()[0], oprf.generate_key_pair()[0])

    def to_json(self) -> dict:
        return {"kind": _KIND, "source": self.source, "oprf": self.oprf_sk.hex(), "token": self.token_sk.hex()}

    def write(self, path: str) -> None:
        """Write the key file (0600); never over an existing file."""
        data = json.dumps(self.to_json(), indent=1).encode() + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, path: str) -> "ConfirmKey":
        """Read a key file; ConfigError with what to do when it is missing or damaged."""
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read(4096))
        except FileNotFoundError:
            raise ConfigError("no confirmation key %s: make one with `gatewatch-hub keys confirm --out DIR "
                              "--source SOURCE` (keys generate makes it too)" % path)
        except (OSError, ValueError) as exc:
            raise ConfigError("cannot read confirmation key %s: %s" % (path, exc))
        from agent.confirm import group
        from agent.core.errors import ConfirmError

        try:
            if not isinstance(doc, dict) or doc.get("kind") != _KIND:
                raise ValueError("not a gatewatch confirmation key")
            check_name("source", doc["source"])
            return cls(doc["source"], group.check_scalar(bytes.fromhex(doc["oprf"])),
                       group.check_scalar(bytes.fromhex(doc["token"])))
        except (KeyError, TypeError, ValueError, ConfirmError, ConfigError) as exc:
            raise ConfigError("%s is not a usable confirmation key: %s" % (path, exc))


def key_id_of(oprf_pk: bytes) -> str:
    """16 hex digits naming an OPRF key by its public half."""
    return hashlib.sha256(b"gatewatch-oprf-key\x00" + oprf_pk).hexdigest()[:16]


def default_confirm_path(signing_key_path: str) -> str:
    """NAME.confirm beside NAME.key."""
    return os.path.splitext(signing_key_path)[0] + CONFIRM_SUFFIX


def generate_confirm_key(out_dir: str, name: str, source: str) -> str:
    """Write ``<name>.confirm`` for ``source`` into out_dir; return its path."""
    check_name("source", source)
    check_name("key", name)
    path = os.path.join(out_dir, name + CONFIRM_SUFFIX)
    if os.path.lexists(path):
        raise ConfigError("%s exists; refusing to overwrite a key (move it away first)" % path)
    os.makedirs(out_dir, exist_ok=True)
    ConfirmKey.generate(source).write(path)
    return path


def seal_entries(key: ConfirmKey, name: str, signal: str, entries: Sequence[Entry], lsh: Optional[dict],
                 version: int) -> sealed.SealedTable:
    """Seal every entry under each of its probes; the table of one version."""
    records: List[Tuple[bytes, bytes]] = []
    for e in entries:
        for band, value in entry_probes(signal, e.hash, lsh):
            y = oprf.evaluate(key.oprf_sk, sealed.oprf_input(key.source, name, signal, band, value))
            records.append((y, sealed.seal(y, e.hash, e.id)))
    buckets = sealed.build_buckets(records, sealed.bucket_count(len(records)))
    table = sealed.SealedTable("%s/%s" % (key.source, name), version, key.key_id, buckets)
    if max((len(b) for b in buckets), default=0) > sealed.MAX_BUCKET_BYTES:
        raise ConfigError("a sealed bucket of %s/%s exceeds %d bytes" % (key.source, name, sealed.MAX_BUCKET_BYTES))
    return table


def commitment(table: sealed.SealedTable, key: ConfirmKey) -> Dict[str, object]:
    """The manifest's ``sealed`` section: the bucket commitment, the OPRF key's id, the token key."""
    out = table.commitment()
    out["tokens"] = key.token_pk.hex()
    return out


def service_key_name(key: ConfirmKey) -> str:
    """hub/<source>.<key id>.confirm: several keys of one source (a rotation) live side by side."""
    return "%s.%s%s" % (key.source, key.key_id, CONFIRM_SUFFIX)


def write_service_key(hub_dir: str, key: ConfirmKey) -> str:
    """Put the source's key where the confirmation service finds it (0600); a no-op when it is there."""
    path = os.path.join(hub_dir, service_key_name(key))
    if not os.path.exists(path):
        key.write(path)
    return path


def load_service_keys(hub_dir: str) -> Dict[str, ConfirmKey]:
    """Every confirmation key in a hub folder, by key id."""
    out: Dict[str, ConfirmKey] = {}
    try:
        names = sorted(os.listdir(hub_dir))
    except OSError:
        return out
    for n in names:
        if n.endswith(CONFIRM_SUFFIX):
            k = ConfirmKey.load(os.path.join(hub_dir, n))
            out[k.key_id] = k
    return out
