"""Device-side list updates: follow retained manifests, fetch a delta or a snapshot, verify, install.

Owns the decision to accept an update (the folder it installs into is ``agent.lists.store.ListStore``).
Every rule of DESIGN.md (Lists) is checked: the signed head before anything is downloaded
(trusted key of that source, a version newer than the one held, not expired, announced size within
the cap), then every chunk (announced size and digest), then the assembled file in full
(``agent.lists.verify.verify_bytes``: signature, content digest, expiry, version, cap). A refusal at any
step leaves the last good list in force, is logged and is shown in the status with its reason.
Must not touch: the network beyond the MqttClient it is given, scanning, reports.

Installing is crash safe: the new file is written atomically (temp, fsync, rename, fsync of the
folder) under its own versioned name, and only then is the older version deleted; on start the
newest file that verifies wins, so a power cut at any point leaves the old or the new list.

Freshness (docs/lists-over-mqtt.md, "Timestamps"): the hub's signed timestamp per source
(``agent.updates.timestamp``) names the current version of each list; a device that hears no fresh
one for ``stale_after`` seconds marks the source stale, and one that names a newer version than held
makes the updater try that list's announcement again. ``check_freshness`` (called periodically by
the daemon) also drops expired lists from the lists in force, as a restart would. The highest
version accepted of each list and the last timestamp survive a reset of ``lists/`` in
``<state>/versions.json`` (``agent.updates.freshness``): no version older than either is accepted.

Transparency log (docs/transparency.md): a list of a source that a trusted log key names is
installed only with its inclusion proof (``<p>/lists/<source>/<list>/v<N>/proof``), checked before
anything is downloaded by the store's ``agent.lists.translog.LogVerifier``; the steps between heads
come from ``<p>/log/<log>/step/<size>``, and new heads on ``<p>/log/<log>/head`` are followed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import queue
import struct
import threading
import time
from typing import Callable, Dict, List, Optional

from agent.core import delta as core_delta
from agent.core import listfile
from agent.core.errors import GatewatchError, TrustError
from agent.lists.store import ListStore
from agent.lists.verify import CLOCK_SKEW, LoadedList, iso, verify_bytes
from agent.updates.freshness import VersionRecord, default_path, is_stale, split_expired
from agent.updates.timestamp import Timestamp, TimestampRefused, verify_timestamp

log = logging.getLogger("gatewatch.updater")

SCHEMA = 1
DEFAULT_STALE_AFTER = 6 * 3600.0
#: a timestamp that names the same versions is written to versions.json at most this often (flash wear)
PERSIST_EVERY = 3600


class UpdateRefused(TrustError):
    """An update was refused; the message says why (and the last good list stays in force).

    ``transient``: the same announcement may succeed later (chunks missing, no connection), so the
    updater tries it again after a backoff; every other refusal waits for a new announcement.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


# ----------------------------------------------------------------------------- announcements

class Announcement:
    """A parsed retained manifest message (see tools/publish.py); only ``head`` is signed."""

    def __init__(self, doc: dict, head: bytes, manifest: dict, lf: listfile.ListFile):
        self.doc = doc
        self.head = head
        self.manifest = manifest
        self.file = lf
        self.source = manifest["source"]
        self.name = manifest["list"]
        self.version = manifest["version"]

    @property
    def ident(self) -> str:
        return "%s/%s" % (self.source, self.name)


def parse_head(head: bytes) -> listfile.ListFile:
    """Parse the signed head of a list file (everything before the content)."""
    if len(head) < 10 or head[:4] != listfile.MAGIC:
        raise UpdateRefused("announced head is not a gatewatch list head (bad magic)")
    h = struct.unpack_from("<I", head, 4)[0]
    if 8 + h + 2 > len(head):
        raise UpdateRefused("announced head is truncated")
    mbytes = bytes(head[8:8 + h])
    s = struct.unpack_from("<H", head, 8 + h)[0]
    if 10 + h + s != len(head):
        raise UpdateRefused("announced head has the wrong length")
    try:
        manifest = listfile.check_manifest(json.loads(mbytes))
    except (ValueError, GatewatchError) as exc:
        raise UpdateRefused("announced manifest is malformed: %s" % exc)
    return listfile.ListFile(manifest, mbytes, bytes(head[10 + h:]), b"")


def _claimed_version(payload: bytes):
    """The version an announcement claims (unverified; for the status only)."""
    try:
        v = json.loads(payload).get("version")
        return v if isinstance(v, int) else None
    except (ValueError, AttributeError):
        return None


def _int(doc, name, lo=0, hi=1 << 40):
    v = doc.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise UpdateRefused("announcement field %r is missing or out of range" % name)
    return v


def _part(doc: dict, cap: int, chunk_size: int, what: str) -> dict:
    """Validate the size/chunks part of an announcement (snapshot or delta)."""
    size = _int(doc, "size")
    if size > cap:
        raise UpdateRefused("announced %s of %d bytes is over the cap of %d bytes; not downloading"
                            % (what, size, cap))
    chunks = _int(doc, "chunks", 1, 1 << 20)
    if chunks != max(1, (size + chunk_size - 1) // chunk_size):
        raise UpdateRefused("announced %s chunk count %d does not fit its size %d" % (what, chunks, size))
    digests = doc.get("chunk_sha256")
    if not isinstance(digests, list) or len(digests) != chunks or not all(isinstance(d, str) for d in digests):
        raise UpdateRefused("announced %s chunk digests are missing or malformed" % what)
    if not isinstance(doc.get("sha256"), str):
        raise UpdateRefused("announced %s digest is missing" % what)
    return doc


# ----------------------------------------------------------------------------- fetching chunks

class ChunkFetcher:
    """Collects the retained chunks under one topic base (``<base>/<i>``) from an MqttClient."""

    def __init__(self, client, timeout: float):
        self.client = client
        self.timeout = timeout

    def fetch(self, base: str, part: dict, chunk_size: int, what: str) -> bytes:
        """Download and check every chunk; raise UpdateRefused on a missing, oversized or bad chunk."""
        n = part["chunks"]
        size = part["size"]
        got: Dict[int, bytes] = {}
        problem: List[str] = []
        done = threading.Event()
        lock = threading.Lock()
        prefix = base + "/"

        def on_chunk(msg):
            try:
                i = int(msg.topic[len(prefix):])
            except ValueError:
                return
            if not 0 <= i < n or not msg.payload:
                return
            expected = chunk_size if i < n - 1 else size - chunk_size * (n - 1)
            with lock:
                if len(msg.payload) != expected:
                    problem.append("%s chunk %d is %d bytes, announced %d; refusing an oversized or "
                                   "altered update" % (what, i, len(msg.payload), expected))
                    done.set()
                    return
                if hashlib.sha256(msg.payload).hexdigest() != part["chunk_sha256"][i]:
                    problem.append("%s chunk %d does not match its announced digest (tampered or corrupt)"
                                   % (what, i))
                    done.set()
                    return
                got[i] = msg.payload
                if len(got) == n:
                    done.set()

        topic_filter = prefix + "+"
        self.client.subscribe(topic_filter, on_chunk, qos=1)
        try:
            done.wait(self.timeout)
        finally:
            self.client.unsubscribe(topic_filter)
        with lock:
            if problem:
                raise UpdateRefused(problem[0])
            if len(got) != n:
                missing = [i for i in range(n) if i not in got]
                raise UpdateRefused("%s chunk%s %s of %d missing after %.0fs; keeping the last good list"
                                    % (what, "s" if len(missing) > 1 else "",
                                       ",".join(str(i) for i in missing[:8]), n, self.timeout), transient=True)
            data = b"".join(got[i] for i in range(n))
        if len(data) != size or hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise UpdateRefused("%s does not match its announced size or digest" % what)
        return data

    def fetch_one(self, topic: str, max_bytes: int = 64 * 1024) -> Optional[bytes]:
        """The retained message on ``topic`` (first non-empty one, at most ``max_bytes``), or None
        after the timeout."""
        got: List[bytes] = []
        done = threading.Event()

        def on_message(msg):
            if msg.payload and not got:
                got.append(msg.payload if len(msg.payload) <= max_bytes else b"")
                done.set()
        self.client.subscribe(topic, on_message, qos=1)
        try:
            done.wait(self.timeout)
        finally:
            self.client.unsubscribe(topic)
        return got[0] if got and got[0] else None


# ----------------------------------------------------------------------------- the updater

class ListStatus:
    """What the device knows about one list, for the status topic and file (no subscriber data)."""

    def __init__(self, ident: str):
        self.ident = ident
        self.version: Optional[int] = None
        self.installed_at: Optional[float] = None
        self.via: Optional[str] = None
        self.announced: Optional[int] = None
        self.last_refusal: Optional[dict] = None
        self.bytes_downloaded = 0
        self.dropped: Optional[dict] = None  # {"version", "expired_at", "at"} once dropped at expiry

    def as_dict(self) -> dict:
        return {"version": self.version, "installed_at": self.installed_at, "via": self.via,
                "announced": self.announced, "last_refusal": self.last_refusal,
                "bytes_downloaded": self.bytes_downloaded, "dropped": self.dropped}


class Updater:
    """Follows retained manifests on the broker and keeps ``store`` at the newest acceptable versions.

    ``on_lists(dict ident -> LoadedList)`` is called after each install, and after expired lists are
    dropped, with every list in force, so the caller swaps its scanner in one step. ``on_status()``
    after every outcome. Manifest and timestamp messages arrive on the network thread; the work
    happens on the updater's own thread. ``versions_path``: the version record (default
    ``<state>/versions.json`` beside the store's ``lists/``); ``stale_after``: seconds without a
    fresh timestamp before a source is stale (0: never).
    """

    def __init__(self, client, topics, store: ListStore, *, fetch_timeout: float = 30.0,
                 on_lists: Optional[Callable] = None, on_status: Optional[Callable] = None,
                 use_deltas: bool = True, retry: tuple = (30.0, 3600.0),
                 versions_path: Optional[str] = None, stale_after: float = DEFAULT_STALE_AFTER):
        self.client = client
        self.topics = topics
        self.store = store
        self.trust = store.trust
        self.log = store.log  # the transparency-log rule and the heads seen (agent.lists.translog)
        self.fetcher = ChunkFetcher(client, fetch_timeout) if client is not None else None
        self.on_lists = on_lists
        self.on_status = on_status
        self.use_deltas = use_deltas
        self.retry = retry  # (first delay, longest delay) in seconds for transient refusals
        self._retries: Dict[str, list] = {}  # topic -> [due (monotonic), delay, payload]
        self.lists: Dict[str, LoadedList] = store.load()
        self.data: Dict[str, bytes] = {}
        self.status: Dict[str, ListStatus] = {}
        for ident, lst in self.lists.items():
            st = self._status(ident)
            st.version = lst.version
            st.via = "disk"
        self.stale_after = stale_after
        self.started = store.clock()
        self.record = VersionRecord(versions_path or default_path(store.directory))
        for ident, lst in self.lists.items():  # lists held count even if the record was lost
            self.record.note_version(ident, lst.version)
        self.timestamps: Dict[str, Timestamp] = {}  # source -> newest accepted
        self._stored: Dict[str, Timestamp] = {}  # source -> the one in versions.json
        for source, text in sorted(self.record.timestamps.items()):
            try:
                ts = verify_timestamp(text.encode("ascii"), self.trust, topic_source=source, check_expiry=False)
            except (GatewatchError, UnicodeEncodeError) as exc:
                log.warning("stored timestamp of %s no longer verifies (%s); ignoring it", source, exc)
                continue
            self.timestamps[source] = self._stored[source] = ts
        self.timestamp_refusals: Dict[str, dict] = {}
        self._stale: Dict[str, bool] = {}
        self._last_manifest: Dict[str, bytes] = {}  # manifest topic -> last payload seen
        self._asked: set = set()  # (ident, version) the updater already tried to catch up to
        self._commit = threading.RLock()  # self.lists changes: installs, and drops at expiry
        self._queue: "queue.Queue" = queue.Queue()
        self._pending: Dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.idle = threading.Event()
        self.idle.set()

    def _status(self, ident: str) -> ListStatus:
        st = self.status.get(ident)
        if st is None:
            st = self.status[ident] = ListStatus(ident)
        return st

    # -- threads
    def start(self) -> "Updater":
        """Subscribe to manifests and start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="gatewatch-updater", daemon=True)
        self._thread.start()
        if self.client is not None:
            self.client.subscribe(self._manifest_filter(), self._on_manifest, qos=1)
            self.client.subscribe(self.topics.lists_filter()[:-1] + "+/timestamp", self._on_timestamp, qos=1)
            if self.trust.logs():
                self.client.subscribe(self.topics.log_head_filter(), self._on_log_head, qos=1)
        return self

    def _manifest_filter(self) -> str:
        return self.topics.lists_filter().rsplit("/", 1)[0] + "/+/+/manifest"

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _on_manifest(self, msg) -> None:
        if not msg.payload:
            return
        source = self._ident_of_topic(msg.topic).split("/")[0]
        if source not in self.trust.sources():
            # lists of sources this device does not trust are none of its business
            log.debug("ignoring %s: no trusted key for source %r", msg.topic, source)
            return
        with self._lock:
            self._last_manifest[msg.topic] = msg.payload
        self._enqueue(msg.topic, msg.payload)

    def _enqueue(self, topic: str, payload: bytes) -> None:
        with self._lock:
            fresh = topic not in self._pending
            self._pending[topic] = payload  # newest message of a topic wins
            self.idle.clear()
        if fresh:
            self._queue.put(topic)

    def _on_timestamp(self, msg) -> None:
        if not msg.payload:
            return
        source = self._source_of_timestamp_topic(msg.topic)
        if source not in self.trust.sources():
            log.debug("ignoring %s: no trusted key for source %r", msg.topic, source)
            return
        self._enqueue(msg.topic, msg.payload)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                topic = self._queue.get(timeout=self._next_retry_in())
            except queue.Empty:
                self._requeue_due()
                continue
            if topic is None:
                break
            with self._lock:
                payload = self._pending.pop(topic, None)
            if payload is not None:
                try:
                    if topic.endswith("/timestamp"):
                        outcome = self.handle_timestamp(payload, topic)
                    elif self._log_of_head_topic(topic) is not None:
                        outcome = self.handle_log_head(payload, topic)
                    else:
                        outcome = self.handle(payload, topic)
                except Exception:  # never let one bad announcement stop updates
                    log.exception("update handling failed")
                    outcome = "refused"
                self._plan_retry(topic, payload, outcome)
            with self._lock:
                if not self._pending:
                    self.idle.set()

    def _next_retry_in(self) -> Optional[float]:
        with self._lock:
            if not self._retries:
                return None
            return max(0.0, min(r[0] for r in self._retries.values()) - time.monotonic())

    def _requeue_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            for topic, r in list(self._retries.items()):
                if r[0] <= now and topic not in self._pending:
                    self._pending[topic] = r[2]
                    self.idle.clear()
                    self._queue.put(topic)

    def _plan_retry(self, topic: str, payload: bytes, outcome: str) -> None:
        with self._lock:
            old = self._retries.pop(topic, None)
            if outcome != "transient":
                return
            delay = self.retry[0] if old is None or old[2] != payload else min(old[1] * 2, self.retry[1])
            self._retries[topic] = [time.monotonic() + delay, delay, payload]
            log.info("will try %s again in %.0fs", topic, delay)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no announcement is waiting or being handled (tests, the demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle.wait(max(0.0, deadline - time.monotonic())) and self._queue.empty():
                return True
        return False

    # -- one announcement
    def handle(self, payload: bytes, topic: Optional[str] = None) -> str:
        """Handle one manifest message; returns 'installed', 'current', 'refused' or 'transient'
        (refused for now, worth trying again: chunks missing, no connection)."""
        ident = self._ident_of_topic(topic)
        self._status(ident).announced = _claimed_version(payload)
        try:
            ann = self.check_announcement(payload, topic)
            ident = ann.ident
            st = self._status(ident)
            st.announced = ann.version
            held = self.lists.get(ident)
            if held is not None and ann.version == held.version and ann.head == self._head_of(held):
                return "current"
            if held is not None and ann.version <= held.version:
                raise UpdateRefused("v%d is not newer than v%d held: rollback or replay refused"
                                    % (ann.version, held.version))
            floor, why = self.floor(ident)
            if ann.version < floor:
                raise UpdateRefused("v%d is older than v%d %s: rollback refused" % (ann.version, floor, why))
            proof = self._log_proof(ann)
            data, via = self._download(ann, held)
            lst = verify_bytes(data, self.trust, now=self.store.clock(), max_bytes=self.store.max_bytes,
                               held_version=held.version if held is not None else None)
            if lst.file.manifest_bytes != ann.file.manifest_bytes:
                raise UpdateRefused("downloaded list does not carry the announced manifest")
            with self._commit:
                self.store.install(lst, data, proof)
                self.record.note_version(ident, lst.version)
                self.lists[ident] = lst
                self.data[ident] = data
                st.version, st.via, st.installed_at, st.dropped = lst.version, via, time.time(), None
                log.info("list %s: installed v%d via %s", ident, lst.version, via)
                if self.on_lists:
                    self.on_lists(dict(self.lists))
            return "installed"
        except GatewatchError as exc:
            st = self._status(ident)
            held = self.lists.get(ident)
            st.last_refusal = {"reason": str(exc), "at": int(time.time()),
                               "kept_version": held.version if held is not None else None}
            log.warning("list %s: update refused: %s (keeping %s)", ident, exc,
                        "v%d" % held.version if held is not None else "no list")
            return "transient" if getattr(exc, "transient", False) else "refused"
        finally:
            self._notify_status()

    def _notify_status(self) -> None:
        """Tell the daemon that the status changed; its failure never stops an update."""
        if self.on_status:
            try:
                self.on_status()
            except Exception:
                log.exception("status callback failed")

    # -- the transparency log
    def _log_proof(self, ann: Announcement) -> Optional[bytes]:
        """The announced version's log proof, checked before anything is downloaded (None when its
        source needs none); LogRefused (transient when a proof or step is not on the broker yet)."""
        if not self.log.required(ann.source):
            return None
        if self.fetcher is None:
            raise UpdateRefused("no broker connection to fetch the log proof from", transient=True)
        proof = self.fetcher.fetch_one(self.topics.log_proof(ann.source, ann.name, ann.version))
        if proof is None:
            raise UpdateRefused("v%d: no log proof on the broker after %.0fs; a list the log does not show is "
                                "refused (trying again later)" % (ann.version, self.fetcher.timeout), transient=True)
        self.log.check_list(ann.manifest, ann.file.signed_bytes(), proof, self._log_step)
        return proof

    def _log_step(self, log_name: str, from_size: int) -> Optional[bytes]:
        if self.fetcher is None:
            return None
        return self.fetcher.fetch_one(self.topics.log_step(log_name, from_size))

    def _log_of_head_topic(self, topic: Optional[str]) -> Optional[str]:
        base = self.topics.log_head_filter()
        if topic and topic.startswith(base[:-len("+/head")]) and topic.endswith("/head"):
            parts = topic[len(base) - len("+/head"):].split("/")
            if len(parts) == 2:
                return parts[0]
        return None

    def _on_log_head(self, msg) -> None:
        name = self._log_of_head_topic(msg.topic)
        if msg.payload and name in self.trust.logs():
            self._enqueue(msg.topic, msg.payload)

    def handle_log_head(self, payload: bytes, topic: Optional[str] = None) -> str:
        """A log's newest head: checked against the head held (consistency, forks); 'refused' changes
        nothing but the log's status (a fork also keeps its evidence and shows a fault)."""
        try:
            return self.log.offer_step(payload, self._log_step)
        except GatewatchError as exc:
            return "transient" if getattr(exc, "transient", False) else "refused"
        finally:
            self._notify_status()

    def floor(self, ident: str):
        """(version, why): the oldest version of ``ident`` this device may still accept."""
        best, why = 0, ""
        recorded = self.record.floor(ident)
        if recorded:
            best, why = recorded, "already accepted on this device (versions.json)"
        source, name = ident.split("/", 1) if "/" in ident else (ident, "")
        ts = self.timestamps.get(source)
        named = ts.lists.get(name) if ts is not None else None
        if named is not None and named > best:
            best, why = named, "named by the hub's signed timestamp (seq %d)" % ts.seq
        return best, why

    # -- timestamps
    def handle_timestamp(self, payload: bytes, topic: Optional[str] = None) -> str:
        """Handle one timestamp message; returns 'accepted', 'current' (the one already held, e.g.
        re-delivered on reconnect: no fresh word) or 'refused' (nothing changes)."""
        source = self._source_of_timestamp_topic(topic) if topic is not None else None
        try:
            ts = verify_timestamp(payload, self.trust, topic_source=source, now=self.store.clock(),
                                  clock_skew=CLOCK_SKEW)
            source = ts.source
            last = self.timestamps.get(source)
            if last is not None and ts.seq <= last.seq:
                if ts.seq == last.seq and ts.signed == last.signed:
                    return "current"
                raise TimestampRefused("timestamp of %r seq %d is not newer than seq %d already seen: "
                                       "replay refused" % (source, ts.seq, last.seq))
            self.timestamps[source] = ts
            self.timestamp_refusals.pop(source, None)
            stored = self._stored.get(source)
            if stored is None or stored.lists != ts.lists or ts.issued - stored.issued >= PERSIST_EVERY:
                self.record.note_timestamp(source, ts.payload)
                self._stored[source] = ts
            log.debug("timestamp of %s seq %d accepted (expires %s)", source, ts.seq, iso(ts.expires))
            for name, version in sorted(ts.lists.items()):
                ident = "%s/%s" % (source, name)
                self._status(ident)
                held = self.lists.get(ident)
                if held is None or held.version < version:
                    self._catch_up(ident, version, held.version if held is not None else None)
            return "accepted"
        except GatewatchError as exc:
            label = source or "?"
            self.timestamp_refusals[label] = {"reason": str(exc), "at": int(time.time())}
            log.warning("timestamp of %s refused: %s (nothing changes)", label, exc)
            return "refused"
        finally:
            self._notify_status()

    def _catch_up(self, ident: str, version: int, held: Optional[int]) -> None:
        """The hub's timestamp names ``version``, newer than held: try its announcement again, or ask
        the broker for the retained announcements again (once per version)."""
        if (ident, version) in self._asked:
            return
        self._asked.add((ident, version))
        source, name = ident.split("/", 1)
        topic = self.topics.manifest(source, name)
        with self._lock:
            last = self._last_manifest.get(topic)
        claimed = _claimed_version(last) if last else None
        if claimed is not None and claimed >= version:
            log.info("list %s: the hub's timestamp names v%d (holding %s); trying its announcement now",
                     ident, version, "v%d" % held if held else "none")
            with self._lock:
                self._retries.pop(topic, None)
            self._enqueue(topic, last)
        else:
            log.warning("list %s: the hub's timestamp names v%d but the broker announced %s (holding %s); "
                        "asking the broker again", ident, version,
                        "v%d" % claimed if claimed is not None else "nothing", "v%d" % held if held else "none")
            if self.client is not None:
                self.client.subscribe(self._manifest_filter(), self._on_manifest, qos=1)

    def _source_of_timestamp_topic(self, topic: Optional[str]) -> Optional[str]:
        base = self.topics.lists_filter()[:-1]  # "<p>/lists/"
        if topic and topic.startswith(base) and topic.endswith("/timestamp"):
            parts = topic[len(base):].split("/")
            if len(parts) == 2:
                return parts[0]
        return None

    # -- freshness and expiry at run time
    def sources_in_play(self):
        """Sources the device holds or follows lists of, or has heard a timestamp from."""
        return sorted({i.split("/")[0] for i in list(self.status) + list(self.lists)} | set(self.timestamps))

    def stale(self, source: str, now: Optional[float] = None) -> bool:
        """No fresh signed word from ``source`` within ``stale_after`` (``freshness.is_stale``)."""
        ts = self.timestamps.get(source)
        return is_stale(ts.issued if ts else None, ts.expires if ts else None, self.started,
                        self.store.clock() if now is None else now, self.stale_after)

    def check_freshness(self, now: Optional[float] = None, stale_after: Optional[float] = None) -> dict:
        """Drop expired lists from the lists in force (``on_lists``), and mark sources stale.

        Returns {"dropped": idents dropped now, "stale": stale sources, "expired": idents dropped at
        expiry and not replaced yet, "fault": stale or expired (the LED shows a fault)}. Logs each change once.
        """
        now = self.store.clock() if now is None else now
        if stale_after is not None:
            self.stale_after = stale_after
        with self._commit:
            _kept, dropped = split_expired(self.lists, now)
            for ident, lst in sorted(dropped.items()):
                del self.lists[ident]
                self.data.pop(ident, None)
                st = self._status(ident)
                st.version = None
                st.dropped = {"version": lst.version, "expired_at": lst.manifest["expires"], "at": int(now)}
                log.warning("list %s v%d expired at %s: dropped from the lists in force (as a restart "
                            "would); the hub must publish a fresh version", ident, lst.version,
                            iso(lst.manifest["expires"]))
            if dropped and self.on_lists:
                self.on_lists(dict(self.lists))
        stale = []
        for source in self.sources_in_play():
            s = self.stale(source, now)
            if s:
                stale.append(source)
            if s != self._stale.get(source, False):
                ts = self.timestamps.get(source)
                if s:
                    log.warning("source %s is stale: no fresh signed timestamp for over %.1f h (last issued %s); "
                                "the broker may be withholding updates", source, self.stale_after / 3600.0,
                                iso(ts.issued) if ts else "never")
                else:
                    log.info("source %s is fresh again (timestamp seq %d)", source, ts.seq if ts else 0)
            self._stale[source] = s
        if dropped and self.on_status:
            try:
                self.on_status()
            except Exception:
                log.exception("status callback failed")
        expired = sorted(i for i, st in self.status.items() if st.dropped is not None and i not in self.lists)
        return {"dropped": sorted(dropped), "stale": stale, "expired": expired, "fault": bool(stale or expired)}

    def _ident_of_topic(self, topic: Optional[str]) -> str:
        base = self.topics.lists_filter()[:-1]  # "<p>/lists/"
        if topic and topic.startswith(base) and topic.endswith("/manifest"):
            parts = topic[len(base):].split("/")
            if len(parts) == 3:
                return "%s/%s" % (parts[0], parts[1])
        return "?"

    def _head_of(self, lst: LoadedList) -> bytes:
        lf = lst.file
        return listfile.signed_part(lf.manifest_bytes) + struct.pack("<H", len(lf.signature)) + lf.signature

    def check_announcement(self, payload: bytes, topic: Optional[str] = None) -> Announcement:
        """Every check possible before downloading: signature, source, expiry, announced size."""
        if len(payload) > 1024 * 1024:
            raise UpdateRefused("announcement of %d bytes is implausibly large" % len(payload))
        try:
            doc = json.loads(payload)
        except ValueError:
            raise UpdateRefused("announcement is not JSON")
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise UpdateRefused("announcement schema %r is not supported (this agent reads %d)"
                                % (doc.get("schema") if isinstance(doc, dict) else None, SCHEMA))
        try:
            head = base64.b64decode(doc.get("head") or "", validate=True)
        except (ValueError, TypeError):
            raise UpdateRefused("announcement head is not base64")
        lf = parse_head(head)
        m = lf.manifest
        if topic is not None and topic != self.topics.manifest(m["source"], m["list"]):
            raise UpdateRefused("manifest of %s/%s arrived on another list's topic %s"
                                % (m["source"], m["list"], topic))
        self.trust.verify(lf)  # raises TrustError: unknown source, wrong key, tampered manifest
        now = self.store.clock()
        if m["expires"] <= now:
            raise UpdateRefused("v%d expired at %s; not downloading"
                                % (m["version"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m["expires"]))))
        if m["created"] > now + CLOCK_SKEW:
            raise UpdateRefused("v%d claims creation in the future; check the device clock" % m["version"])
        chunk_size = _int(doc, "chunk_size", 1, 128 * 1024)
        cap = self.store.max_bytes
        _part(doc, cap, chunk_size, "snapshot")
        if doc["size"] != len(head) + m["content_length"]:
            raise UpdateRefused("announced size %d does not match the signed manifest (%d bytes)"
                                % (doc["size"], len(head) + m["content_length"]))
        deltas = doc.get("deltas", [])
        if not isinstance(deltas, list):
            raise UpdateRefused("announcement deltas are malformed")
        for d in deltas:
            if not isinstance(d, dict):
                raise UpdateRefused("announcement delta is malformed")
            _int(d, "from")
            _part(d, cap, chunk_size, "delta")
        return Announcement(doc, head, m, lf)

    def _download(self, ann: Announcement, held: Optional[LoadedList]):
        st = self._status(ann.ident)
        chunk_size = ann.doc["chunk_size"]
        if self.fetcher is None:
            raise UpdateRefused("no broker connection to download from", transient=True)
        if self.use_deltas and held is not None:
            for d in ann.doc.get("deltas", []):
                if d["from"] != held.version:
                    continue
                base = self.topics.delta_chunk(ann.source, ann.name, d["from"], ann.version, 0).rsplit("/", 1)[0]
                try:
                    delta = self.fetcher.fetch(base, d, chunk_size, "delta")
                    st.bytes_downloaded += len(delta)
                    source = self.data.get(ann.ident)
                    if source is None:
                        source = held.file.to_bytes()
                    return core_delta.apply(source, delta, max_len=self.store.max_bytes), "delta"
                except GatewatchError as exc:
                    # the snapshot is still a correct way forward; say why the delta failed
                    log.warning("list %s: delta v%d->v%d refused (%s); fetching the snapshot",
                                ann.ident, d["from"], ann.version, exc)
        base = self.topics.snapshot_chunk(ann.source, ann.name, ann.version, 0).rsplit("/", 1)[0]
        data = self.fetcher.fetch(base, ann.doc, chunk_size, "snapshot")
        st.bytes_downloaded += len(data)
        return data, "snapshot"

    def snapshot(self) -> dict:
        """Status of every list, for the status file and topic."""
        out = {}
        now = self.store.clock()
        for ident, st in sorted(self.status.items()):
            d = st.as_dict()
            lst = self.lists.get(ident)
            if lst is not None:
                d["created"] = lst.manifest["created"]
                d["expires"] = lst.manifest["expires"]
                d["age_s"] = int(now - lst.manifest["created"])
                # in force until the next freshness check drops it, and said so
                d["expired"] = lst.manifest["expires"] <= now
                d["signal"] = lst.signal
                d["entries"] = lst.entries
            elif st.dropped is not None:
                d["expired"] = True
            source, name = ident.split("/", 1) if "/" in ident else (ident, "")
            ts = self.timestamps.get(source)
            named = ts.lists.get(name) if ts is not None else None
            d["last_timestamp"] = ts.issued if ts is not None else None
            d["timestamp_expires"] = ts.expires if ts is not None else None
            d["timestamp_version"] = named
            d["behind"] = named is not None and (lst.version if lst is not None else 0) < named
            d["stale"] = self.stale(source, now)
            d["timestamp_refusal"] = self.timestamp_refusals.get(source)
            out[ident] = d
        return out
