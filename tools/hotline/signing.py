"""Signed JSON documents between hotlines: canonical bytes, Ed25519 envelopes, their checks.

Owns the envelope ``{"signed": <object>, "key_id": "<16 hex>", "signature": "<base64>"}`` used by
the hotline directory and by every message one hub sends another, and the one canonical form that
is signed (sorted keys, no spaces, ASCII only). Must not touch key files (``tools.build`` reads and
writes those) or what a document means.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Iterable, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.core.errors import TrustError
from agent.lists.trust import key_id


def canonical(obj) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, ASCII (non-ASCII as \\u escapes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def seal(obj, key: Ed25519PrivateKey) -> dict:
    """The envelope of ``obj`` signed with ``key``."""
    return {"signed": obj, "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(key.sign(canonical(obj))).decode("ascii")}


def open_envelope(envelope, keys: Iterable[Ed25519PublicKey], what: str = "document") -> dict:
    """The signed object of ``envelope`` if one of ``keys`` made its signature; TrustError otherwise."""
    if not isinstance(envelope, dict) or set(envelope) != {"signed", "key_id", "signature"}:
        raise TrustError("%s is not a signed envelope (keys signed, key_id, signature)" % what)
    sig = envelope["signature"]
    if not isinstance(sig, str) or len(sig) > 200:
        raise TrustError("%s: the signature is not base64 text" % what)
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise TrustError("%s: the signature is not base64 text" % what) from None
    try:
        data = canonical(envelope["signed"])
    except (TypeError, ValueError):
        raise TrustError("%s: the signed part is not plain JSON" % what) from None
    for k in keys:
        try:
            k.verify(raw, data)
            return envelope["signed"]
        except InvalidSignature:
            continue
    raise TrustError("%s: the signature does not verify with the expected key (tampered, or signed "
                     "by another key)" % what)


def signer_id(envelope) -> Optional[str]:
    """The key id an envelope claims (unverified, for messages only)."""
    return envelope.get("key_id") if isinstance(envelope, dict) else None
