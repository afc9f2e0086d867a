"""Who may sign lists: source and list names, public keys and their files, the trust store.

Owns: the safe alphabet of source and list names, the one-line public key file, ``TrustStore``
(Ed25519 public keys per source, and the keys of the transparency logs each source's lists must be
in) and signature checks. Must not touch: private keys and signing
(the hub, ``tools.build``), the byte layout (``agent.core.listfile``), the other acceptance rules
(``agent.lists.verify``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from typing import Dict, Iterable, List, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.core import listfile
from agent.core.errors import ConfigError, TrustError

PUB_PREFIX = "gatewatch-ed25519"
#: a transparency log's key file: 'gatewatch-log-ed25519 <base64 raw key> <log> <source>[,<source>...]'
LOG_PUB_PREFIX = "gatewatch-log-ed25519"
# '+' is not in the alphabet: it separates source and list in file names (agent.lists.store).
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(kind: str, value: str) -> str:
    """Source and list names go into file names and topics: keep them to a safe alphabet."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or not value.isascii():
        raise ConfigError("%s name %r is invalid: use 1-64 letters, digits, '.', '_' or '-'" % (kind, value))
    return value


def key_id(public: Ed25519PublicKey) -> str:
    """Short identifier of a public key: first 8 bytes of the SHA-256 of its raw form, in hex."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_line(public: Ed25519PublicKey, source: str) -> str:
    """The one-line public key file: 'gatewatch-ed25519 <base64 raw key> <source>'."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "%s %s %s\n" % (PUB_PREFIX, base64.b64encode(raw).decode(), source)


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


def _signer(keys: Dict[str, Ed25519PublicKey], message: bytes, signature: bytes) -> Optional[str]:
    """The id of the first of ``keys`` whose signature ``signature`` over ``message`` is, or None."""
    for kid, key in keys.items():
        try:
            key.verify(signature, message)
            return kid
        except InvalidSignature:
            continue
    return None


def log_key_line(public: Ed25519PublicKey, log: str, sources: Iterable[str]) -> str:
    """The one-line file of a log key: the log's name and the sources whose lists must be in it."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    names = sorted(set(check_name("source", s) for s in sources))
    if not names:
        raise ConfigError("a log key must name at least one source whose lists the log holds")
    return "%s %s %s %s\n" % (LOG_PUB_PREFIX, base64.b64encode(raw).decode(), check_name("log", log), ",".join(names))


def parse_log_key(text: str, origin: str = "log key") -> Tuple[Ed25519PublicKey, str, List[str]]:
    """Parse a log key line into (key, log name, sources)."""
    parts = text.strip().split()
    if len(parts) != 4 or parts[0] != LOG_PUB_PREFIX:
        raise ConfigError("%s is not a gatewatch log key ('%s <base64> <log> <source>[,<source>...]')"
                          % (origin, LOG_PUB_PREFIX))
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(parts[1], validate=True))
    except ValueError as e:
        raise ConfigError("%s: bad key material: %s" % (origin, e))
    return key, check_name("log", parts[2]), [check_name("source", s) for s in parts[3].split(",")]


class TrustStore:
    """Ed25519 public keys per source: a list is accepted only if its own source's key signed it.

    Log keys (``add_log``) sign the tree heads of a transparency log; a source that a trusted log
    key names must show every list version in that log (``agent.lists.translog``).
    """

    def __init__(self) -> None:
        self._keys: Dict[str, Dict[str, Ed25519PublicKey]] = {}
        self._log_keys: Dict[str, Dict[str, Ed25519PublicKey]] = {}  # log name -> key id -> key
        self._log_sources: Dict[str, set] = {}  # source -> names of the logs its lists must be in

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
                    text = f.read(4096)
            except OSError as e:
                raise ConfigError("cannot read trusted key %s: %s" % (path, e.strerror))
            except UnicodeDecodeError:
                raise ConfigError("%s is not a gatewatch public key (not text)" % path)
            if text.lstrip().startswith(LOG_PUB_PREFIX + " "):
                key, log, named_sources = parse_log_key(text, path)
                store.add_log(log, key, [check_name("source", source)] if source else named_sources)
                continue
            key, named = parse_public_key(text, path)
            store.add(check_name("source", source) if source else named, key)
        return store

    def add_log(self, log: str, public: Ed25519PublicKey, sources: Iterable[str]) -> None:
        """Trust ``public`` for the tree heads of ``log``, and require the lists of ``sources`` in it."""
        self._log_keys.setdefault(check_name("log", log), {})[key_id(public)] = public
        for source in sources:
            self._log_sources.setdefault(check_name("source", source), set()).add(log)

    def logs_for(self, source: str) -> List[str]:
        """The logs a list of ``source`` must be in (empty: no log key names it; no proof needed)."""
        return sorted(self._log_sources.get(source, ()))

    def sources_in_log(self, log: str) -> List[str]:
        """The sources whose lists must be in ``log``."""
        return sorted(s for s, logs in self._log_sources.items() if log in logs)

    def logs(self) -> List[str]:
        """Every log with a trusted key."""
        return sorted(self._log_keys)

    def verify_log_signature(self, log: str, message: bytes, signature: bytes) -> Optional[str]:
        """The id of the trusted key of ``log`` that signed ``message``, or None."""
        return _signer(self._log_keys.get(log, {}), message, signature)

    def sources(self) -> List[str]:
        """Sources with at least one trusted key."""
        return sorted(self._keys)

    def verify_signature(self, source: str, message: bytes, signature: bytes) -> Optional[str]:
        """The id of the trusted key of ``source`` that signed ``message``, or None (no key, no match)."""
        return _signer(self._keys.get(source, {}), message, signature)

    def verify(self, lf: listfile.ListFile) -> str:
        """Check a list file's signature; return the key id that made it or raise TrustError."""
        source = lf.manifest["source"]
        if source not in self._keys:
            raise TrustError("list %s/%s is from source %r, which has no trusted key here"
                             % (source, lf.manifest["list"], source))
        kid = self.verify_signature(source, lf.signed_bytes(), lf.signature)
        if kid is None:
            raise TrustError("list %s/%s v%s: signature does not verify with any trusted key of %r "
                             "(tampered, or signed by another key)"
                             % (source, lf.manifest["list"], lf.manifest["version"], source))
        return kid
