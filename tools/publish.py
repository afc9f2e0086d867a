"""Publish built lists over MQTT: retained manifests, snapshot chunks and deltas between versions.

Owns the announcement format (the retained manifest message) and chunking. Must not touch list
building or signing (agent.lists does that; this module only moves signed files) and never needs
a private key: the signature inside each list file protects it end to end.

The retained message on ``<p>/lists/<source>/<list>/manifest`` is JSON (schema 1)::

    {"schema": 1, "source": S, "list": L, "version": N,
     "head": base64 of the list file up to its content (magic, manifest, signature),
     "size": file bytes, "sha256": hex digest of the file, "chunk_size": C, "chunks": n,
     "chunk_sha256": [hex, ...],
     "deltas": [{"from": M, "size": bytes, "sha256": hex, "chunks": n, "chunk_sha256": [...]}]}

Only ``head`` is signed. The rest is an unsigned announcement that lets a device refuse early (size
over its cap, a chunk that does not match) before the signed result is checked in full.
Every chunk and the manifest are retained, so a device that connects later finds them. Chunks go
out before the manifest, so a manifest never announces chunks that are not there yet.

With ``--sign-key`` (a source's signing key) the hub also publishes, after the manifests, that source's
signed timestamp on ``<p>/lists/<source>/timestamp`` (retained; format in
``agent.updates.timestamp``): the current version of each of its lists, a strictly increasing
``seq``, an expiry a few hours out. ``--every SECONDS`` keeps the publisher running and refreshes
the timestamps that often (and republishes a list whose newest version in the folder changed), so a
device can tell a broker that stopped passing on updates (a freeze) from a quiet hub.

With ``--log DIR`` (the hub's transparency log, ``tools.translog``) it first publishes the log's new
steps and newest head (``<p>/log/<log>/step/<size>``, ``<p>/log/<log>/head``), then with each list
the proof that its newest version is in the log (``<p>/lists/<source>/<list>/v<N>/proof``, before
the manifest); a newest version that is not in the log is refused (append it first).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from tools import delta as list_delta
from agent.core import listfile
from agent.core.errors import ConfigError, GatewatchError
from agent.lists.trust import TrustStore, check_name, key_id, parse_public_key
from agent.updates import timestamp as ts_format
from tools.broker_args import add_broker_arguments, client_from_args, topics_from_args

HELP = 'publish built lists to the broker (retained manifests, chunks, deltas, signed timestamps)'
DESCRIPTION = "Publishes every *.gwl in --lists as retained MQTT messages. No private key is needed for the lists (each list's signature protects it end to end); --sign-key signs the timestamps that let devices notice a frozen broker."

log = logging.getLogger("gatewatch.publish")

SCHEMA = 1
#: 124 KiB of payload per chunk: under the 128 KB limit with room for brokers that count headers.
DEFAULT_CHUNK = 124 * 1024
MAX_CHUNK = 128 * 1024
#: a timestamp's life: a few hours, so a device notices a freeze well before any list expires
DEFAULT_TIMESTAMP_HOURS = 8.0
#: how often ``--every`` refreshes the timestamps by default (seconds)
DEFAULT_EVERY = 300


class PublishError(GatewatchError, RuntimeError):
    """The broker did not acknowledge what we published."""


class BuiltList:
    """One list file on disk: its parsed header and bytes."""

    def __init__(self, path: str, data: bytes):
        self.path = path
        self.data = data
        parsed = listfile.parse(data)
        self.manifest = parsed.manifest
        self.source = parsed.manifest["source"]
        self.list = parsed.manifest["list"]
        self.version = int(parsed.manifest["version"])
        self.head = bytes(data[:len(data) - parsed.manifest["content_length"]])

    @classmethod
    def load(cls, path: str) -> "BuiltList":
        with open(path, "rb") as f:
            return cls(path, f.read())


def retained_payload(client, topic: str, wait: float) -> List[bytes]:
    """The retained message on ``topic`` (a one-item list), or [] when none arrives within ``wait``."""
    import threading

    got: List[bytes] = []
    event = threading.Event()

    def on_message(msg):
        got.append(msg.payload)
        event.set()
    ack = client.subscribe(topic, on_message, qos=1)
    try:
        ack.wait(10)
        event.wait(wait)
    finally:
        client.unsubscribe(topic)
    return got


def find_lists(directory: str) -> Dict[Tuple[str, str], List[BuiltList]]:
    """Every ``*.gwl`` directly in ``directory``, grouped by (source, list), oldest version first."""
    if not os.path.isdir(directory):
        raise ConfigError("lists folder %r does not exist; point --lists at a `lists build` output" % directory)
    groups: Dict[Tuple[str, str], List[BuiltList]] = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".gwl"):
            continue
        try:
            item = BuiltList.load(os.path.join(directory, name))
        except GatewatchError as exc:
            raise ConfigError("%s is not a valid list file: %s" % (name, exc)) from None
        groups.setdefault((item.source, item.list), []).append(item)
    for key, items in groups.items():
        items.sort(key=lambda b: b.version)
        versions = [b.version for b in items]
        if len(set(versions)) != len(versions):
            raise ConfigError("%s/%s: two files carry the same version %s" % (key + (versions,)))
    if not groups:
        raise ConfigError("no .gwl list files in %r" % directory)
    return groups


def split(data: bytes, chunk_size: int) -> List[bytes]:
    """Split into chunks of ``chunk_size`` (the last may be shorter); at least one chunk."""
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise ConfigError("chunk size must be 1..%d bytes" % MAX_CHUNK)
    return [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]


def _describe(data: bytes, chunks: List[bytes]) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": len(chunks),
            "chunk_sha256": [hashlib.sha256(c).hexdigest() for c in chunks]}


class Plan:
    """Everything to publish for one list: chunk messages, then the manifest, plus stale topics."""

    def __init__(self, newest: BuiltList, previous: Optional[BuiltList], chunk_size: int):
        self.newest = newest
        self.previous = previous
        self.chunk_size = chunk_size
        self.snapshot_chunks = split(newest.data, chunk_size)
        self.delta: Optional[bytes] = None
        self.delta_chunks: List[bytes] = []
        if previous is not None:
            delta = list_delta.encode(previous.data, newest.data)
            # a delta no smaller than the list itself (a binary fuse list is rebuilt whole for every
            # version) is not offered: it would only double what the broker retains
            if len(delta) < len(newest.data):
                self.delta = delta
                self.delta_chunks = split(self.delta, chunk_size)

    def announcement(self) -> dict:
        n = self.newest
        ann = {"schema": SCHEMA, "source": n.source, "list": n.list, "version": n.version,
               "head": base64.b64encode(n.head).decode("ascii"), "chunk_size": self.chunk_size,
               "deltas": []}
        ann.update(_describe(n.data, self.snapshot_chunks))
        if self.delta is not None:
            d = {"from": self.previous.version}
            d.update(_describe(self.delta, self.delta_chunks))
            ann["deltas"].append(d)
        return ann

    def messages(self, topics) -> List[Tuple[str, bytes]]:
        """(topic, payload) in publishing order; all retained."""
        n = self.newest
        out = [(topics.snapshot_chunk(n.source, n.list, n.version, i), c)
               for i, c in enumerate(self.snapshot_chunks)]
        if self.delta is not None:
            out += [(topics.delta_chunk(n.source, n.list, self.previous.version, n.version, i), c)
                    for i, c in enumerate(self.delta_chunks)]
        out.append((topics.manifest(n.source, n.list),
                    json.dumps(self.announcement(), sort_keys=True).encode("utf-8")))
        return out


def stale_topics(topics, items: List[BuiltList], chunk_size: int, previous: Optional[dict] = None) -> List[str]:
    """Retained chunk topics that nothing announces any more, to clear with an empty retained message:
    the snapshots of older versions in the folder, and whatever the previous announcement on the
    broker (``previous``) named."""
    out = []
    for old in items[:-1]:
        n = max(1, (len(old.data) + chunk_size - 1) // chunk_size)
        out += [topics.snapshot_chunk(old.source, old.list, old.version, i) for i in range(n)]
    if previous:
        try:
            src, name, v = previous["source"], previous["list"], int(previous["version"])
            out += [topics.snapshot_chunk(src, name, v, i) for i in range(int(previous["chunks"]))]
            for d in previous.get("deltas", []):
                out += [topics.delta_chunk(src, name, int(d["from"]), v, i) for i in range(int(d["chunks"]))]
        except (KeyError, TypeError, ValueError, GatewatchError):
            log.warning("previous announcement of %s/%s is malformed; not clearing after it",
                        items[-1].source, items[-1].list)
    return out


def previous_announcement(client, topics, source: str, name: str, wait: float = 0.25) -> Optional[dict]:
    """The announcement retained on the broker for a list now, or None.

    A broker sends retained messages right after the SUBACK, so this waits for the SUBACK and then
    at most ``wait`` seconds more."""
    got = retained_payload(client, topics.manifest(source, name), wait)
    try:
        doc = json.loads(got[0]) if got and got[0] else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


# ----------------------------------------------------------------------------- timestamps

class TimestampSigner:
    """Signs the timestamps of one source with its private key; ``seq`` only ever grows.

    ``seq`` is the time in milliseconds, or one more than the last one signed or found on the
    broker if that is larger (a hub clock that steps back never makes a device refuse it)."""

    def __init__(self, source: str, key, hours: float = DEFAULT_TIMESTAMP_HOURS, last_seq: int = 0):
        self.source = check_name("source", source)
        if not 0 < hours <= 24 * 30:
            raise ConfigError("timestamp lifetime must be more than 0 and at most 720 hours, not %r" % hours)
        self.key = key
        self.key_id = key_id(key.public_key())
        self.hours = hours
        self.last_seq = last_seq

    def sign(self, lists: Dict[str, int], now: Optional[float] = None) -> bytes:
        """The retained timestamp message naming ``lists`` (list name -> current version)."""
        now = time.time() if now is None else now
        seq = max(int(now * 1000), self.last_seq + 1)
        if seq > ts_format.MAX_SEQ:
            raise PublishError("timestamp seq of %s would exceed %d" % (self.source, ts_format.MAX_SEQ))
        doc = {"type": ts_format.TYPE, "format": ts_format.FORMAT, "source": self.source, "seq": seq,
               "issued": int(now), "expires": int(now + self.hours * 3600), "key_id": self.key_id,
               "lists": {check_name("list", n): int(v) for n, v in sorted(lists.items())}}
        signed = ts_format.encode_signed(doc)
        payload = ts_format.wire(signed, self.key.sign(ts_format.signed_message(signed)))
        self.last_seq = seq
        return payload

    def trust(self) -> TrustStore:
        """A trust store with this signer's own public key (to read back what the broker holds)."""
        store = TrustStore()
        store.add(self.source, self.key.public_key())
        return store


def load_signers(specs: Sequence[str], hours: float = DEFAULT_TIMESTAMP_HOURS) -> Dict[str, TimestampSigner]:
    """``--sign-key`` items: ``PATH`` (the source is named in the ``.pub`` beside it, as ``keys generate``
    writes them) or ``SOURCE=PATH``."""
    from tools.build import load_private_key

    out: Dict[str, TimestampSigner] = {}
    for spec in specs or ():
        source, path = None, spec
        if "=" in spec and not os.path.exists(spec):
            source, path = spec.split("=", 1)
        key = load_private_key(path)
        if source is None:
            pub = os.path.splitext(path)[0] + ".pub"
            try:
                with open(pub, "r", encoding="utf-8") as f:
                    public, source = parse_public_key(f.read(), pub)
            except (OSError, UnicodeDecodeError):
                raise ConfigError("--sign-key %s: cannot read %s to learn its source; use --sign-key SOURCE=%s"
                                  % (path, pub, path)) from None
            if key_id(public) != key_id(key.public_key()):
                raise ConfigError("--sign-key %s does not belong to %s" % (path, pub))
        if source in out:
            raise ConfigError("two --sign-key options for source %r" % source)
        out[check_name("source", source)] = TimestampSigner(source, key, hours)
    return out


def previous_timestamp_seq(client, topics, signer: TimestampSigner, wait: float = 0.25) -> int:
    """The seq of the timestamp of ``signer``'s source retained on the broker (0: none that verifies
    with its own key), so that a restarted hub continues above it."""
    got = retained_payload(client, topics.timestamp(signer.source), wait)
    if not got or not got[0]:
        return 0
    try:
        return ts_format.verify_timestamp(got[0], signer.trust(), topic_source=signer.source,
                                          check_expiry=False).seq
    except GatewatchError as exc:
        log.warning("timestamp of %s on the broker does not verify with our key (%s); starting afresh",
                    signer.source, exc)
        return 0


def publish_timestamps(client, topics, versions: Dict[str, Dict[str, int]], signers: Dict[str, TimestampSigner],
                       timeout: float = 60.0, now: Optional[float] = None) -> Dict[str, bytes]:
    """Sign and publish (retained) the timestamp of every source in ``versions`` that has a signer;
    returns source -> payload. Raises PublishError if the broker does not acknowledge."""
    out = {}
    for source in sorted(versions):
        signer = signers.get(source)
        if signer is None:
            continue
        payload = signer.sign(versions[source], now)
        if not client.publish(topics.timestamp(source), payload, qos=1, retain=True).wait(timeout):
            raise PublishError("broker did not acknowledge the timestamp of %s" % source)
        out[source] = payload
    return out


def newest_versions(directory: str) -> Dict[str, Dict[str, int]]:
    """source -> list -> newest version in ``directory`` (what a timestamp names)."""
    out: Dict[str, Dict[str, int]] = {}
    for (source, name), items in find_lists(directory).items():
        out.setdefault(source, {})[name] = items[-1].version
    return out


def publish_lists(client, topics, directory: str, chunk_size: int = DEFAULT_CHUNK,
                  timeout: float = 60.0, clear_stale: bool = True,
                  signers: Optional[Dict[str, TimestampSigner]] = None, translog=None) -> List[dict]:
    """Publish the newest version of every list in ``directory`` (with a delta from the one before),
    then the signed timestamp of every source that has a signer in ``signers``.

    Waits for every PUBACK; raises PublishError if the broker does not acknowledge in time.
    Returns the announcements published.
    """
    from agent.mqtt import wait_all

    groups = find_lists(directory)
    proofs = log_proofs(translog, groups) if translog is not None else {}  # refuses lists not in the log first
    if translog is not None:
        publish_log(client, topics, translog, timeout)
    anns = []
    for key in sorted(groups):
        items = groups[key]
        plan = Plan(items[-1], items[-2] if len(items) > 1 else None, chunk_size)
        msgs = plan.messages(topics)
        if key in proofs:  # with the chunks, before the manifest that a device acts on
            msgs.insert(-1, (topics.log_proof(key[0], key[1], items[-1].version), proofs[key]))
        previous = previous_announcement(client, topics, key[0], key[1]) if clear_stale else None
        # chunks first and acknowledged, then the manifest that announces them
        acks = [client.publish(t, p, qos=1, retain=True) for t, p in msgs[:-1]]
        if wait_all(acks, timeout) != len(acks):
            raise PublishError("broker did not acknowledge %s/%s chunks within %.0fs" % (key + (timeout,)))
        if not client.publish(msgs[-1][0], msgs[-1][1], qos=1, retain=True).wait(timeout):
            raise PublishError("broker did not acknowledge the %s/%s manifest" % key)
        if clear_stale:
            # only now: a device that is still fetching by the old manifest gets a fresh one first
            current = {t for t, _ in msgs}
            stale = [t for t in dict.fromkeys(stale_topics(topics, items, chunk_size, previous)
                                              + stale_proof_topics(topics, items, previous)) if t not in current]
            acks = [client.publish(t, b"", qos=1, retain=True) for t in stale]
            if wait_all(acks, timeout) != len(acks):
                raise PublishError("broker did not acknowledge clearing old %s/%s chunks" % key)
        ann = plan.announcement()
        log.info("published %s/%s v%d: %d snapshot chunks, %s", key[0], key[1], plan.newest.version,
                 len(plan.snapshot_chunks),
                 "delta from v%d (%d bytes)" % (plan.previous.version, len(plan.delta)) if plan.delta
                 else "no delta")
        anns.append(ann)
    versions: Dict[str, Dict[str, int]] = {}
    for key in sorted(groups):
        versions.setdefault(key[0], {})[key[1]] = groups[key][-1].version
    signers = signers or {}
    for source in sorted(versions):
        signer = signers.get(source)
        if signer is None:
            log.warning("no --sign-key for source %s: no timestamp published; devices cannot tell a frozen broker "
                        "from a quiet hub and mark %s stale after lists.stale_hours", source, source)
            continue
        kids = {b.manifest["key_id"] for (s, _n), items in groups.items() if s == source for b in items[-1:]}
        if kids != {signer.key_id}:
            log.warning("the timestamp key of %s (%s) is not the key that signed its lists (%s); devices must "
                        "trust both", source, signer.key_id, ", ".join(sorted(kids)))
    publish_timestamps(client, topics, versions, signers, timeout)
    return anns


# ----------------------------------------------------------------------------- the transparency log

def log_proofs(translog, groups) -> Dict[Tuple[str, str], bytes]:
    """(source, list) -> the proof of its newest version under the log's newest head, for the sources the
    log holds; ConfigError naming the first newest version that is not in the log."""
    from tools.translog import leaf_of_file

    out = {}
    for key in sorted(groups):
        if key[0] in translog.sources:
            out[key] = translog.proof_for(leaf_of_file(groups[key][-1].data)[0])
    return out


def publish_log(client, topics, translog, timeout: float = 60.0) -> int:
    """Publish (retained) the log's steps that the broker does not hold yet and its newest head; returns
    how many messages went out. Raises PublishError if the broker does not acknowledge."""
    from agent.lists import translog as device
    from agent.mqtt import wait_all

    after = 0
    got = retained_payload(client, topics.log_head(translog.name), 0.25)
    if got and got[0]:
        try:  # the newest head the broker holds, if it is this log's own
            after = device.verify_head(device.parse_step(got[0])["head"], translog.trust()).size
        except GatewatchError:
            after = 0
    msgs = translog.messages(topics, after)
    acks = [client.publish(t, p, qos=1, retain=True) for t, p in msgs]
    if wait_all(acks, timeout) != len(acks):
        raise PublishError("broker did not acknowledge the log %s's heads within %.0fs" % (translog.name, timeout))
    return len(msgs)


def stale_proof_topics(topics, items: List[BuiltList], previous: Optional[dict]) -> List[str]:
    """The log proofs of versions no longer announced (cleared like their chunks)."""
    out = [topics.log_proof(old.source, old.list, old.version) for old in items[:-1]]
    try:
        if previous:
            out.append(topics.log_proof(previous["source"], previous["list"], int(previous["version"])))
    except (KeyError, TypeError, ValueError, GatewatchError):
        pass
    return out


def add_arguments(parser) -> None:
    add_broker_arguments(parser, "gatewatch-hub-publish-%d" % os.getpid())
    parser.add_argument("--lists", required=True, help="folder of built .gwl files (`lists build` output)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK,
                        help="bytes per chunk, at most %d (default %d)" % (MAX_CHUNK, DEFAULT_CHUNK))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the broker")
    parser.add_argument("--json", action="store_true", help="print the announcements as JSON lines")
    parser.add_argument("--sign-key", action="append", default=[], metavar="[SOURCE=]PATH",
                        help="a source's private key: also publish its signed timestamp (repeatable; "
                        "the source is read from the .pub beside PATH unless given)")
    parser.add_argument("--every", type=float, default=0, metavar="SECONDS",
                        help="keep running: refresh the timestamps this often (%d is a good value), and "
                        "republish a list when a newer version appears in --lists; 0 (default): once" % DEFAULT_EVERY)
    parser.add_argument("--log", metavar="DIR", help="the hub's transparency log (log init): publish its heads and "
                        "each list's proof; a list version not in the log is refused")
    parser.add_argument("--timestamp-hours", type=float, default=DEFAULT_TIMESTAMP_HOURS,
                        help="how long a timestamp stays valid (default %g hours)" % DEFAULT_TIMESTAMP_HOURS)


def main(args) -> int:
    """Publish built lists to the broker: retained manifests, chunks, deltas."""

    try:
        find_lists(args.lists)  # fail on a bad folder or chunk size before connecting
        split(b"", args.chunk_size)
        signers = load_signers(args.sign_key, args.timestamp_hours)
        if args.every < 0 or (args.every and not signers):
            raise ConfigError("--every needs at least one --sign-key (it refreshes the signed timestamps)"
                              if args.every > 0 else "--every must not be negative")
        client = client_from_args(args)
        topics = topics_from_args(args)
        with client.connect(timeout=args.timeout):
            for signer in signers.values():
                signer.last_seq = previous_timestamp_seq(client, topics, signer)
            anns = publish_lists(client, topics, args.lists, args.chunk_size, args.timeout, signers=signers,
                                 translog=_log_of(args))
            _print(anns, args.json)
            if args.every > 0:
                return _keep_publishing(client, topics, args, signers)
    except GatewatchError as exc:
        print("gatewatch-hub publish: %s" % exc, file=sys.stderr)
        return 2
    return 0


def _log_of(args):
    """The transparency log of ``--log`` (read afresh: a build may have appended), or None."""
    if not getattr(args, "log", None):
        return None
    from tools.translog import LogStore

    return LogStore(args.log)


def _pause(seconds: float) -> None:
    """The wait between ``--every`` rounds (a seam for tests)."""
    time.sleep(seconds)


def _keep_publishing(client, topics, args, signers) -> int:
    """``--every``: refresh the timestamps, and republish when the folder's newest versions change."""
    published = newest_versions(args.lists)
    try:
        while True:
            _pause(args.every)
            try:
                now = newest_versions(args.lists)
            except ConfigError as exc:  # a half-written folder: keep the last word, say why
                log.warning("not republishing: %s", exc)
                now = published
            try:
                if now != published:
                    _print(publish_lists(client, topics, args.lists, args.chunk_size, args.timeout,
                                         signers=signers, translog=_log_of(args)), args.json)
                    published = now
                else:
                    publish_timestamps(client, topics, published, signers, args.timeout)
                    log.info("timestamps refreshed: %s", ", ".join(sorted(set(published) & set(signers))))
            except PublishError as exc:  # the broker is away: the client reconnects, try again next round
                log.warning("%s; trying again in %.0fs", exc, args.every)
    except KeyboardInterrupt:
        return 0


def _print(anns, as_json) -> None:
    for ann in anns:
        if as_json:
            ann = dict(ann)
            ann.pop("head")
            print(json.dumps(ann, sort_keys=True), flush=True)
        else:
            print("%s/%s v%d: %d bytes in %d chunks%s" % (
                ann["source"], ann["list"], ann["version"], ann["size"], ann["chunks"],
                "".join(", delta from v%d: %d bytes" % (d["from"], d["size"]) for d in ann["deltas"])),
                flush=True)
