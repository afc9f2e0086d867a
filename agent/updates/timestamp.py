"""The hub's signed timestamp per source (TUF's timestamp role): format, parsing and verification.

Owns: the byte layout of a timestamp and every check a device applies to one before it counts as
fresh word from a source (docs/lists-over-mqtt.md, "Timestamps"). Must not touch: private keys and
signing (the hub, ``tools.publish``), what the updater does with a timestamp
(``agent.updates.updater``), the network.

The retained message on ``<p>/lists/<source>/timestamp`` is JSON::

    {"schema": 1, "signed": "<canonical JSON text>", "signature": "<base64 Ed25519 signature>"}

``signed`` is the exact text that was signed, ASCII, keys sorted, no spaces (the manifests' encoding)::

    {"expires":1767225600,"format":1,"issued":1767196800,"key_id":"0a1b...","lists":{"sha":7},
     "seq":1767196800123,"source":"hl1","type":"gatewatch-timestamp"}

The signature covers ``b"GWT1" + u32 little-endian length + signed``: another magic than a list
file's ``GWL1``, so a list signature can never pass for a timestamp nor the other way round.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import time
from typing import Dict, Optional

from agent.core import listfile
from agent.core.errors import GatewatchError, TrustError
from agent.lists.trust import TrustStore, check_name

SCHEMA = 1
FORMAT = 1
MAGIC = b"GWT1"
TYPE = "gatewatch-timestamp"
MAX_PAYLOAD = 64 * 1024  # a timestamp names versions only: a few hundred bytes in practice
MAX_LISTS = 1000
MAX_SEQ = (1 << 53) - 1  # exact in every JSON reader
MAX_TIME = 0xFFFFFFFFFF  # the manifests' bound on created/expires
MAX_VERSION = 0xFFFFFFFFFFFF  # the manifests' bound on version
FIELDS = ("expires", "format", "issued", "key_id", "lists", "seq", "source", "type")


class TimestampRefused(TrustError):
    """A timestamp was refused; the message says why (nothing the device holds changes)."""


def signed_message(signed: bytes) -> bytes:
    """The bytes a timestamp signature covers."""
    return MAGIC + struct.pack("<I", len(signed)) + signed


def encode_signed(doc: dict) -> bytes:
    """Canonical bytes of the signed part (sorted keys, compact, ASCII: the manifests' encoding)."""
    return listfile.encode_manifest(doc)


def wire(signed: bytes, signature: bytes) -> bytes:
    """The retained message: the signed text and its signature."""
    return json.dumps({"schema": SCHEMA, "signed": signed.decode("ascii"),
                       "signature": base64.b64encode(signature).decode("ascii")},
                      sort_keys=True, separators=(",", ":")).encode("ascii")


class Timestamp:
    """A timestamp that parsed and passed every check of ``verify_timestamp``."""

    def __init__(self, doc: dict, signed: bytes, payload: bytes, key_id: str):
        self.doc = doc
        self.signed = signed
        self.payload = payload
        self.source: str = doc["source"]
        self.seq: int = doc["seq"]
        self.issued: int = doc["issued"]
        self.expires: int = doc["expires"]
        self.lists: Dict[str, int] = dict(doc["lists"])
        self.key_id = key_id  # the trusted key that verified it

    def expired(self, now: float) -> bool:
        return self.expires <= now

    def as_dict(self) -> dict:
        return {"seq": self.seq, "issued": self.issued, "expires": self.expires, "lists": dict(self.lists)}


def _int(doc: dict, name: str, lo: int, hi: int) -> int:
    v = doc.get(name)
    # type() rather than isinstance: True is an int too
    if type(v) is not int or not lo <= v <= hi:
        raise TimestampRefused("timestamp field %r must be a whole number in %d..%d" % (name, lo, hi))
    return v


def parse_payload(payload: bytes):
    """Split a retained timestamp message into (signed bytes, signature, doc); checks the layout and
    every field's type and range, not the signature."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > MAX_PAYLOAD:
        raise TimestampRefused("timestamp message is larger than %d bytes" % MAX_PAYLOAD)
    try:
        outer = json.loads(bytes(payload))
    except (ValueError, RecursionError):  # UnicodeDecodeError and huge integers are ValueErrors too
        raise TimestampRefused("timestamp message is not JSON")
    if not isinstance(outer, dict) or set(outer) != {"schema", "signed", "signature"}:
        raise TimestampRefused("timestamp message must hold exactly schema, signed and signature")
    if type(outer["schema"]) is not int or outer["schema"] != SCHEMA:
        raise TimestampRefused("timestamp schema %r is not supported (this agent reads %d)"
                               % (outer["schema"], SCHEMA))
    text, sig = outer["signed"], outer["signature"]
    if type(text) is not str or type(sig) is not str or not text.isascii() or not sig.isascii():
        raise TimestampRefused("timestamp signed text and signature must be ASCII strings")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (ValueError, binascii.Error):
        raise TimestampRefused("timestamp signature is not base64")
    if len(signature) != 64:
        raise TimestampRefused("timestamp signature is %d bytes, not 64 (Ed25519)" % len(signature))
    signed = text.encode("ascii")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise TimestampRefused("timestamp signed part is not JSON")
    if not isinstance(doc, dict) or set(doc) != set(FIELDS):
        raise TimestampRefused("timestamp signed part must hold exactly the fields %s" % ", ".join(FIELDS))
    if doc["type"] != TYPE:
        raise TimestampRefused("signed part is not a gatewatch timestamp (type %r)" % (doc["type"],))
    _int(doc, "format", FORMAT, FORMAT)
    try:
        check_name("source", doc["source"])
        for name in doc["lists"] if isinstance(doc["lists"], dict) else ():
            check_name("list", name)
    except GatewatchError as exc:
        raise TimestampRefused("timestamp names are invalid: %s" % exc)
    if type(doc["key_id"]) is not str or not 1 <= len(doc["key_id"]) <= 64 or not doc["key_id"].isalnum() \
            or not doc["key_id"].isascii():
        raise TimestampRefused("timestamp key_id must be 1-64 ASCII letters or digits")
    _int(doc, "seq", 1, MAX_SEQ)
    _int(doc, "issued", 0, MAX_TIME)
    _int(doc, "expires", 0, MAX_TIME)
    if doc["expires"] <= doc["issued"]:
        raise TimestampRefused("timestamp expires before it was issued")
    lists = doc["lists"]
    if not isinstance(lists, dict) or len(lists) > MAX_LISTS:
        raise TimestampRefused("timestamp lists must be an object of at most %d list versions" % MAX_LISTS)
    for name, version in lists.items():
        if type(version) is not int or not 1 <= version <= MAX_VERSION:
            raise TimestampRefused("timestamp version of list %r must be a whole number in 1..%d"
                                   % (name, MAX_VERSION))
    # one text per meaning: no duplicate keys, spaces, escapes or other spellings of a number
    if encode_signed(doc) != signed:
        raise TimestampRefused("timestamp signed part is not in canonical form")
    return signed, signature, doc


def verify_timestamp(payload: bytes, trust: TrustStore, *, topic_source: Optional[str] = None,
                     now: Optional[float] = None, check_expiry: bool = True,
                     clock_skew: float = 600) -> Timestamp:
    """Every rule a timestamp must pass (not yet its order against the last one seen: the caller's).

    Layout and fields; it arrived on its own source's topic; a trusted key *of that source* signed
    it; not expired (unless ``check_expiry`` is False: a stored one, re-read at start); not issued
    in the device's future beyond ``clock_skew``. Raises TimestampRefused with the reason.
    """
    signed, signature, doc = parse_payload(payload)
    source = doc["source"]
    if topic_source is not None and source != topic_source:
        raise TimestampRefused("timestamp of source %r arrived on the topic of source %r" % (source, topic_source))
    if source not in trust.sources():
        raise TimestampRefused("timestamp of source %r, which has no trusted key here" % source)
    kid = trust.verify_signature(source, signed_message(signed), signature)
    if kid is None:
        raise TimestampRefused("timestamp of %r seq %d: signature does not verify with any trusted key of %r "
                               "(tampered, or signed by another key)" % (source, doc["seq"], source))
    now = time.time() if now is None else now
    if check_expiry:
        if doc["expires"] <= now:
            raise TimestampRefused("timestamp of %r seq %d expired at %s (replayed, or the hub stopped "
                                   "refreshing it)" % (source, doc["seq"], _iso(doc["expires"])))
        if doc["issued"] > now + clock_skew:
            raise TimestampRefused("timestamp of %r seq %d claims issue in the future (%s); check the device "
                                   "clock" % (source, doc["seq"], _iso(doc["issued"])))
    return Timestamp(doc, signed, bytes(payload), kid)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
